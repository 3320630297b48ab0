import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { verifyLogoutToken } from '../../oidc/logout.ts'
import type { RuntimeHolder } from '../context.ts'
import { registerFormScope } from '../forms.ts'

/**
 * POST {prefix}/backchannel-logout (OpenID Connect Back-Channel Logout 1.0): the provider posts a
 * `logout_token`; once it validates (`oidc/logout.ts`), the matching sessions are revoked — by `sid`,
 * or by `sub` for sessions created before the token when it carries no `sid` — and we answer 200.
 * A bad token is a 400 with a JSON `invalid_request` error (§2.8). Register
 * `{publicUrl}{prefix}/backchannel-logout` as the client's back-channel logout URI.
 */
export function registerBackchannel(app: FastifyInstance, holder: RuntimeHolder): void {
  registerFormScope(app, (scope) => {
    scope.post(`${holder.current.prefix}/backchannel-logout`, { config: { kind: 'auth', label: 'auth:backchannel', readsBody: true } }, async (request, reply) => {
      const rt = request.portcullis.runtime
      void reply.header('cache-control', 'no-store')
      const form = request.body instanceof URLSearchParams ? request.body : new URLSearchParams()
      const tokens = form.getAll('logout_token')
      if (tokens.length !== 1 || tokens[0] === '') {
        holder.metrics.backchannelLogout('invalid')
        return reply.code(400).send({ error: 'invalid_request', error_description: 'exactly one logout_token form field is required' })
      }
      let replay = false
      try {
        const logout = await verifyLogoutToken(rt.provider.get(), tokens[0] as string, rt.clock.now(), (jti, until) => (replay = rt.seenLogoutJti(jti, until)))
        if (logout.sid !== undefined) await rt.revocations.revokeSid(logout.sid)
        else await rt.revocations.revokeSubBefore(logout.sub as string, logout.issuedAt)
        request.log.info({ sid: logout.sid !== undefined, sub: logout.sub }, 'back-channel logout: sessions revoked')
        holder.metrics.backchannelLogout('accepted')
        return reply.code(200).send()
      } catch (err) {
        if (err instanceof PortcullisError && err.code === 'TOKEN_INVALID') {
          holder.metrics.backchannelLogout(replay ? 'replay' : 'invalid')
          request.log.info({ err }, 'back-channel logout refused')
          return reply.code(400).send({ error: 'invalid_request', error_description: err.publicMessage })
        }
        holder.metrics.backchannelLogout('error')
        throw err
      }
    })
  })
}
