import type { FastifyInstance } from 'fastify'
import type { RuntimeHolder } from './context.ts'

/**
 * GET /healthz (liveness: the process answers) and GET /readyz (readiness: provider metadata and JWKS
 * loaded). Neither touches the provider on the request path; the connection loop keeps the state.
 */
export function registerOps(app: FastifyInstance, holder: RuntimeHolder): void {
  app.get('/healthz', { config: { kind: 'ops', label: 'ops:healthz' } }, async (_request, reply) => {
    return reply.header('cache-control', 'no-store').send({ status: 'ok' })
  })
  app.get('/readyz', { config: { kind: 'ops', label: 'ops:readyz' } }, async (_request, reply) => {
    const rt = holder.current
    void reply.header('cache-control', 'no-store')
    if (rt.provider.ready) return reply.send({ status: 'ready', provider: 'ok' })
    return reply
      .code(503)
      .header('retry-after', '5')
      .send({ status: 'not ready', provider: rt.provider.lastError?.publicMessage ?? 'connecting' })
  })
}
