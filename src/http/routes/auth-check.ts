import type { FastifyInstance } from 'fastify'
import type { RuntimeHolder } from '../context.ts'
import { CHECK_LABEL, VERIFY_LABEL } from '../forward-auth.ts'
import type { FastifyLane } from '../fastify-lane.ts'
import { PROXIED_METHODS } from '../fast-lane.ts'

/**
 * GET {prefix}/auth: the forward-auth check for the nginx family (ingress-nginx `auth-url`, plain
 * nginx `auth_request`). It answers only 200, 401 or 403, because nginx turns any other status into
 * a 500:
 * - 200 with every configured identity header (empty when unknown, so a client's copy is overwritten),
 *   and the re-sealed session cookie when it moved (nginx can pass the first `Set-Cookie` on);
 * - 401 when there is no valid session (nginx then sends the browser to `auth-signin`), also while
 *   the provider is unreachable: a refusal, never a 5xx;
 * - 403 when the original URL cannot be normalized safely.
 * The original request is read from `X-Original-URL` / `X-Original-Method`, or `X-Forwarded-Uri`
 * with `-Host`, `-Proto` and `-Method`, only when a peer in `server.trustedProxies` sent them
 * (`originalRequest` in `http/forward-auth.ts`): a route it matches that is public is allowed without
 * a session; any other URL needs one. The check's own query is ignored (Caddy appends the original
 * query to it).
 * The decision is the pipeline's (`decide(…, 'check')` in `http/pipeline.ts`); the fast lane answers
 * GET here before Fastify, this route the rest (HEAD, and everything while the fast lane is off).
 */
export function registerAuthCheck(app: FastifyInstance, holder: RuntimeHolder, lane: FastifyLane): void {
  app.get(`${holder.current.prefix}/auth`, { config: { kind: 'auth', label: CHECK_LABEL, decides: true } }, async (request, reply) => {
    await lane.carryOut(request, reply, 'check')
  })
}

/**
 * {prefix}/verify and {prefix}/verify/*, any method the proxy takes: the forward-auth check for the
 * relay family (Traefik `forwardAuth`, Caddy `forward_auth`, Envoy / Istio / Envoy Gateway ext_authz),
 * whose refusals the gateway hands to the browser as they are:
 * - 200 with every configured identity header, and the session cookie when it moved;
 * - 302 to {prefix}/start (absolute `Location`, `rd` = the original absolute URL) for a browser
 *   navigation without a session, or one whose route asks for a step-up;
 * - 401 JSON for an API client, 403 for a user the route's rules refuse (an HTML page for a
 *   browser), 503 while the provider is unreachable and a login cannot start.
 * Envoy sends the check with the original method and Host, on `path_prefix` + the original path
 * (`{prefix}/verify/app/x?y`): the path after `{prefix}/verify` is the original's, as written.
 * The decision is the pipeline's (`decide(…, 'verify')`), made in the `onRequest` hook before any
 * body is read; the fast lane takes these requests first, this route those it leaves to Fastify.
 */
export function registerVerify(app: FastifyInstance, holder: RuntimeHolder): void {
  for (const url of [`${holder.current.prefix}/verify`, `${holder.current.prefix}/verify/*`]) {
    app.route({
      method: [...PROXIED_METHODS],
      url,
      config: { kind: 'auth', label: VERIFY_LABEL, decidesEarly: 'verify' },
      handler: async () => {
        throw new Error('a relay check reached its route handler: it is answered in onRequest')
      },
    })
  }
}
