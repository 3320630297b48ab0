import type { FastifyInstance } from 'fastify'
import type { RuntimeHolder } from '../context.ts'
import { CHECK_LABEL } from '../forward-auth.ts'
import type { FastifyLane } from '../fastify-lane.ts'

/**
 * GET {prefix}/auth: the forward-auth check for the nginx family (ingress-nginx `auth-url`, plain
 * nginx `auth_request`). It answers only 200, 401 or 403, because nginx turns any other status into
 * a 500:
 * - 200 with every configured identity header (empty when unknown, so a client's copy is overwritten),
 *   and the re-sealed session cookie when it moved (nginx can pass the first `Set-Cookie` on);
 * - 401 when there is no valid session (nginx then sends the browser to `auth-signin`), also while
 *   the provider is unreachable: a refusal, never a 5xx;
 * - 403 when the original URL cannot be normalized safely.
 * The original request is read from `X-Original-URL` only when a peer in `server.trustedProxies` sent
 * it: a route it matches that is public is allowed without a session; any other URL needs one. The
 * check's own query is ignored (Caddy appends the original query to it).
 * The decision is the pipeline's (`decide(…, 'check')` in `http/pipeline.ts`); the fast lane answers
 * GET here before Fastify, this route the rest (HEAD, and everything while the fast lane is off).
 */
export function registerAuthCheck(app: FastifyInstance, holder: RuntimeHolder, lane: FastifyLane): void {
  app.get(`${holder.current.prefix}/auth`, { config: { kind: 'auth', label: CHECK_LABEL, decides: true } }, async (request, reply) => {
    await lane.carryOut(request, reply, 'check')
  })
}
