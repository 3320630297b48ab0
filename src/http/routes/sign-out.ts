import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { endSessionUrl } from '../../oidc/logout.ts'
import { validateRedirect } from '../../policy/redirects.ts'
import { clearSessionCookieLines, putCookies } from '../cookies.ts'
import type { RuntimeHolder } from '../context.ts'
import { registerFormScope } from '../forms.ts'
import { openSession } from '../pipeline.ts'
import { readQuery, single } from '../query.ts'

/**
 * GET|POST {prefix}/sign_out?rd=URL (issue #3 point 6): revoke the session locally (a copied cookie
 * stops working on this instance), forget it in the store, clear every session cookie chunk, then send
 * the browser to the provider's end_session endpoint with `id_token_hint`, `client_id` and
 * `post_logout_redirect_uri` (`session.postLogoutRedirect`, else the validated `rd`); without an
 * end-session endpoint, straight to the validated `rd`. An `rd` off the allowlist is refused (400).
 *
 * With `session.redis` the revocation is shared by every replica. While Redis cannot be reached the
 * user is still signed out: the cookies are cleared, this replica revokes the session (and writes it
 * back to Redis once it answers), and the failure is logged.
 */
export function registerSignOut(app: FastifyInstance, holder: RuntimeHolder): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const rt = request.portcullis.runtime
    const form = request.body instanceof URLSearchParams ? request.body : undefined
    const rdRaw = single(form ?? readQuery(request.url), 'rd')
    let rd: string | null = null
    if (rdRaw !== undefined && rdRaw !== '') {
      rd = validateRedirect(rdRaw, rt.publicUrl, rt.config.redirects.allowedDomains)
      if (rd === null) throw new PortcullisError('REDIRECT_REJECTED', 'The address to return to after signing out is not allowed.')
    }
    // Revoked or not, the session is ended: the check is skipped (it cannot answer while the shared
    // revocations are out of sync with Redis, and revoking again changes nothing).
    const found = await openSession(rt, request.headers, { checkRevoked: false })
    const session = found.loaded?.session ?? null
    if (session !== null) {
      try {
        await rt.revocations.revokeSession(session.id)
      } catch (err) {
        request.log.error({ err }, 'sign-out: the revocation could not be shared with the other instances; revoked on this one, shared once Redis answers')
      }
    }
    for (const value of new Set([found.sent, found.loaded?.value])) if (typeof value === 'string') await rt.sessions.clear(value)
    putCookies(reply, clearSessionCookieLines(rt, Object.keys(request.cookies)))
    let location = rd ?? rt.postLogoutRedirect ?? new URL('/', rt.publicUrl).href
    if (rt.provider.ready) {
      const postLogout = rt.postLogoutRedirect ?? rd ?? undefined
      const url = endSessionUrl(rt.provider.get(), {
        idTokenHint: session?.idToken || undefined, // '' when the ID token did not fit the cookie
        postLogoutRedirectUri: postLogout,
      })
      if (url !== null) location = url
    }
    return reply.code(302).header('location', location).header('cache-control', 'no-store').send()
  }
  registerFormScope(app, (scope) => {
    scope.route({ method: ['GET', 'POST'], url: `${holder.current.prefix}/sign_out`, config: { kind: 'auth', label: 'auth:sign_out', readsBody: true }, handler })
  })
}
