import type { FastifyInstance, FastifyRequest } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { RESOURCE_METADATA_PATH, resourceFor } from '../../policy/routes.ts'
import type { RuntimeHolder } from '../context.ts'
import { hostCount, normalizeTarget } from '../facts.ts'
import type { FastifyLane } from '../fastify-lane.ts'
import { screenRequest } from '../pipeline.ts'

/**
 * OAuth 2.0 Protected Resource Metadata (RFC 9728) for the bearer routes that name a `resource`:
 * `GET /.well-known/oauth-protected-resource` and the path-suffixed form of §3.1
 * (`/.well-known/oauth-protected-resource/mcp` for `https://host/mcp`), which the
 * `resource_metadata` of those routes' 401 challenges points to (§5.1). An MCP client (or any OAuth
 * client) learns there which authorization servers issue tokens for the resource and which scopes to
 * ask for:
 *
 *   { resource, authorization_servers: [provider.issuer, ...provider.extraIssuers],
 *     scopes_supported: the routes' requiredScopes (when there are any), bearer_methods_supported: ["header"] }
 *
 * The bare path answers for a resource at its origin's root, or for the only resource there is;
 * another path, or an ambiguous one, is a 404 (`resourceFor` in `policy/routes.ts`). The metadata is
 * public: `Cache-Control: public, max-age=300`, and `Access-Control-Allow-Origin: *` on every answer
 * (the 404 too, so a browser-based client can see it and try the other form), with a CORS preflight
 * answered here.
 *
 * A configuration without any resource leaves these paths to the pipeline, as any other path (an
 * app behind Portcullis may serve metadata of its own): the handler carries out the pipeline's
 * proxy decision. The paths are registered once, at start, whatever the configuration, because a
 * reload may add or remove resources; being Fastify routes, the fast lane leaves them to Fastify
 * (`OwnPaths` in `http/fast-lane.ts`, the wildcard as a prefix).
 */
export function registerResourceMetadata(app: FastifyInstance, holder: RuntimeHolder, lane: FastifyLane): void {
  const opts = { config: { kind: 'auth' as const, label: LABEL, decides: true } }
  for (const url of [RESOURCE_METADATA_PATH, `${RESOURCE_METADATA_PATH}/*`]) {
    app.get(url, opts, async (request, reply) => {
      if (!screened(request, holder)) return lane.carryOut(request, reply, 'proxy')
      const rt = request.portcullis.runtime
      void reply.header('access-control-allow-origin', '*')
      const path = normalizeTarget(request.url).path ?? ''
      const found = resourceFor(rt.routes.resources, request.headers.host, path)
      if (found === null) throw new PortcullisError('NOT_FOUND', 'No protected resource is described at this address.')
      const body: Record<string, unknown> = {
        resource: found.resource,
        authorization_servers: [rt.config.provider.issuer, ...rt.config.provider.extraIssuers.map((e) => e.issuer)],
        ...(found.scopes.length > 0 ? { scopes_supported: found.scopes } : {}),
        bearer_methods_supported: ['header'],
      }
      return reply.header('cache-control', 'public, max-age=300').type('application/json; charset=utf-8').send(JSON.stringify(body))
    })
    app.options(url, opts, async (request, reply) => {
      if (!screened(request, holder)) return lane.carryOut(request, reply, 'proxy')
      // A CORS preflight (a client that sends MCP-Protocol-Version, say): anyone may read the metadata.
      const asked = request.headers['access-control-request-headers']
      void reply.header('access-control-allow-origin', '*').header('access-control-allow-methods', 'GET, HEAD, OPTIONS').header('access-control-max-age', '86400')
      if (typeof asked === 'string' && HEADER_LIST.test(asked)) void reply.header('access-control-allow-headers', asked)
      return reply.header('cache-control', 'public, max-age=300').code(204).send()
    })
  }
}

const LABEL = 'auth:resource-metadata'
/** A comma-separated list of header names (RFC 9110 tokens), as `Access-Control-Request-Headers` carries. */
const HEADER_LIST = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$/

/**
 * Whether this runtime describes resources (else the request is the pipeline's, step 1 included);
 * when it does, step 1 of the pipeline first, as for Portcullis's other routes (`decides` skipped it
 * in the onRequest hook so that a proxied request is screened only once, by `decide`).
 */
function screened(request: FastifyRequest, holder: RuntimeHolder): boolean {
  const rt = request.portcullis?.runtime ?? holder.current
  if (rt.routes.resources.length === 0) return false
  const refused = screenRequest(rt, { headers: request.raw.headers, hostCount: hostCount(request.raw.rawHeaders) })
  if (refused !== null) throw refused
  return true
}
