import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { verifyLogoutToken } from '../../oidc/logout.ts'
import type { RuntimeHolder } from '../context.ts'
import { registerFormScope } from '../forms.ts'
import type { RateLimits } from '../rate-limit.ts'

/**
 * POST {prefix}/backchannel-logout (OpenID Connect Back-Channel Logout 1.0): the provider posts a
 * `logout_token`; once it validates (`oidc/logout.ts`), the matching sessions are revoked — by `sid`,
 * or by `sub` for sessions created before the token when it carries no `sid` — and we answer 200.
 * A bad token is a 400 with a JSON `invalid_request` error (§2.8). Register
 * `{publicUrl}{prefix}/backchannel-logout` as the client's back-channel logout URI.
 *
 * With `session.redis`, the jti replay cache and the revocations are shared by the replicas. While
 * Redis cannot be reached, a valid token is still taken into this replica's revocations (they are
 * written back to Redis once it answers), but the answer is a 503 with Retry-After, so the provider
 * tries again (§2.8): a logout is never answered 200 unless its replay check and its revocation both
 * reached every replica. A jti recorded for a logout that could not be shared is taken back, so the
 * retry is not refused as a replay.
 */
export function registerBackchannel(app: FastifyInstance, holder: RuntimeHolder, limits: RateLimits): void {
  registerFormScope(app, (scope) => {
    scope.post(`${holder.current.prefix}/backchannel-logout`, { config: { kind: 'auth', label: 'auth:backchannel', readsBody: true }, onRequest: limits.hook('backchannelLogout') }, async (request, reply) => {
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
        // The replay check unreachable: the logout is carried out here all the same, then refused
        // with 503 (never accepted unchecked).
        let unchecked: PortcullisError | null = null
        const seen = async (jti: string, until: number): Promise<boolean> => {
          try {
            replay = await rt.seenLogoutJti(jti, until)
            return replay
          } catch (err) {
            if (!(err instanceof PortcullisError && err.code === 'STORE_UNAVAILABLE')) throw err
            unchecked = err
            return false
          }
        }
        const logout = await verifyLogoutToken(rt.provider.get(), tokens[0] as string, rt.clock.now(), seen)
        try {
          if (logout.sid !== undefined) await rt.revocations.revokeSid(logout.sid)
          else await rt.revocations.revokeSubBefore(logout.sub as string, logout.issuedAt)
        } catch (err) {
          if (unchecked === null) await rt.forgetLogoutJti(logout.jti).catch(() => undefined)
          request.log.error({ err, sid: logout.sid !== undefined, sub: logout.sub }, 'back-channel logout: revoked on this instance only, not shared; answering 503 so the provider retries')
          throw err
        }
        if (unchecked !== null) {
          request.log.error({ err: unchecked, sid: logout.sid !== undefined, sub: logout.sub }, 'back-channel logout: revoked, but the replay check could not be made; answering 503 so the provider retries')
          throw unchecked
        }
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
