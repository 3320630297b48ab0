import * as client from 'openid-client'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
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
    const rd = validateRedirect(single(readQuery(request.url), 'rd'), rt.publicUrl, rt.config.redirects.allowedDomains)
    const session = await authenticate(rt, request, reply)
    clearSessionCookies(rt, request, reply)
    let location = rd ?? new URL('/', rt.publicUrl).href
    if (rt.provider.ready) {
      const oidc = rt.provider.get()
      if (oidc.summary.endSessionEndpoint !== undefined) {
        const params: Record<string, string> = { client_id: oidc.clientId }
        if (session !== null) params.id_token_hint = session.idToken
        if (rd !== null) params.post_logout_redirect_uri = rd
        location = client.buildEndSessionUrl(oidc.configuration, params).href
      }
    }
    return reply.code(302).header('location', location).header('cache-control', 'no-store').send()
  }
  const path = `${holder.current.prefix}/sign_out`
  app.route({ method: ['GET', 'POST'], url: path, config: { kind: 'auth', label: 'auth:sign_out' }, handler })
}
