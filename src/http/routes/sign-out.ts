import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { endSessionUrl } from '../../oidc/logout.ts'
import { validateRedirect } from '../../policy/redirects.ts'
import { clearSessionCookies } from '../cookies.ts'
import type { RuntimeHolder } from '../context.ts'
import { authenticate } from '../pipeline.ts'
import { readQuery, single } from '../query.ts'

/**
 * GET|POST {prefix}/sign_out?rd=URL: clear every session cookie chunk, then send the browser to the
 * provider's end_session endpoint with `id_token_hint`, `client_id` and `post_logout_redirect_uri`
 * (the validated `rd`), or straight to `rd` when the provider has none. (Local revocation of a copied
 * cookie arrives with the session lifecycle issue.)
 */
export function registerSignOut(app: FastifyInstance, holder: RuntimeHolder): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const rt = request.portcullis.runtime
    const form = request.body instanceof URLSearchParams ? request.body : undefined
    const rd = validateRedirect(single(form ?? readQuery(request.url), 'rd'), rt.publicUrl, rt.config.redirects.allowedDomains)
    const session = await authenticate(rt, request, reply)
    clearSessionCookies(rt, request, reply)
    let location = rd ?? new URL('/', rt.publicUrl).href
    if (rt.provider.ready) {
      const url = endSessionUrl(rt.provider.get(), {
        idTokenHint: session?.idToken || undefined, // '' when the ID token did not fit the cookie
        postLogoutRedirectUri: rd ?? undefined,
      })
      if (url !== null) location = url
    }
    return reply.code(302).header('location', location).header('cache-control', 'no-store').send()
  }
  const path = `${holder.current.prefix}/sign_out`
  // Own scope: form bodies are parsed here only. Registered at the root, a form parser would be
  // inherited by the proxy's scope and proxied form posts would no longer be streamed as they are.
  void app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
      done(null, new URLSearchParams(body as string))
    })
    scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, _body, done) => done(null, undefined))
    scope.route({ method: ['GET', 'POST'], url: path, config: { kind: 'auth', label: 'auth:sign_out' }, handler })
  })
}
