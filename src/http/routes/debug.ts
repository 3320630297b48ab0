import { isIP } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { ExplainInputError, explainRequest, explainSettingsOf } from '../../policy/explain.ts'
import type { RuntimeHolder } from '../context.ts'
import { openSession } from '../pipeline.ts'
import { readQuery, single } from '../query.ts'

/**
 * GET {prefix}/debug?url=URL[&method=M]: the pipeline's explanation (`policy/explain.ts`, what
 * `portcullis explain` prints) of the request named by `url` (a path, or an absolute URL on
 * `server.publicUrl`'s origin; default `/`), made with the session of this request: its claims and
 * `auth_time`. Served only with `server.debug: true` and to a peer on loopback or in
 * `server.trustedProxies`; anyone else gets the 404 of an unknown path. Read-only: the session is
 * opened, never refreshed or written, and no cookie is set. Never shows a token, a cookie or the
 * session's id.
 */
export function registerDebug(app: FastifyInstance, holder: RuntimeHolder): void {
  app.get(`${holder.current.prefix}/debug`, { config: { kind: 'auth', label: 'auth:debug' } }, async (request, reply) => {
    const rt = request.portcullis.runtime
    const peer = request.socket.remoteAddress ?? ''
    if (!rt.config.server.debug || !(isLoopback(peer) || rt.isTrustedProxy(peer))) throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
    void reply.header('cache-control', 'no-store')
    const query = readQuery(request.url)
    const url = single(query, 'url') ?? '/'
    const method = single(query, 'method')
    if (!url.startsWith('/') && originOf(url) !== rt.publicUrl.origin) {
      throw new PortcullisError('REQUEST_REJECTED', `The url parameter must be a path or an absolute URL on ${rt.publicUrl.origin}.`)
    }
    const opened = await openSession(rt, request.headers)
    const session = opened.loaded?.session ?? null
    const now = rt.clock.now()
    let explanation
    try {
      explanation = explainRequest({
        routes: rt.routes,
        settings: explainSettingsOf(rt.config),
        method,
        url,
        claims: session?.claims ?? null,
        authTime: session?.authTime,
        now,
      })
    } catch (err) {
      if (err instanceof ExplainInputError) throw new PortcullisError('REQUEST_REJECTED', `The ${err.field} parameter cannot be explained: ${err.message}`)
      throw err
    }
    if (session !== null) request.portcullis.identity = { sub: session.sub, claims: session.claims }
    return reply.send({
      session:
        session === null
          ? { present: false, cookie: opened.sent === null ? 'none sent' : 'not valid (expired, revoked, or sealed with an unknown secret)' }
          : { present: true, sub: session.sub, authTime: session.authTime ?? null, createdAt: session.createdAt, lastSeenAt: session.lastSeenAt },
      ...explanation,
    })
  })
}

/** The TCP peer is this machine: 127.0.0.0/8, ::1, or either mapped into IPv6. */
export function isLoopback(peer: string): boolean {
  const addr = peer.startsWith('::ffff:') ? peer.slice(7) : peer
  if (isIP(addr) === 4) return addr.startsWith('127.')
  return addr === '::1'
}

function originOf(url: string): string | null {
  try {
    return new URL(url).origin
  } catch {
    return null
  }
}
