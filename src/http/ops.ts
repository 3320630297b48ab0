import type { FastifyInstance } from 'fastify'
import type { RuntimeHolder } from './context.ts'

/**
 * GET /healthz (liveness: the process answers) and GET /readyz (readiness). Neither asks anything on
 * the request path: the provider connection and the Redis connection keep their own state.
 *
 * Ready means this instance can serve its users: the provider was connected once (its metadata and
 * keys are loaded) and, when `session.redis` is configured, Redis is connected and the shared
 * revocations are in sync with it (until they are, signed-in requests get a 503). A provider that
 * goes down after that leaves it ready: existing sessions are still served (only logins and token
 * refreshes need the provider), and taking every replica out of the load balancer would stop those
 * too. Its state stays visible in the body (`provider: unreachable`, with why), in the log and in the
 * metrics. Redis down is not ready: no request that needs a session can be answered.
 *
 * Body: `{ status: ready | not ready, provider: ok | connecting | unreachable, providerError?,
 * redis?: ok | unreachable | syncing }` (`redis` only when configured; `syncing`: connected, revocations
 * not loaded yet).
 */
export function registerOps(app: FastifyInstance, holder: RuntimeHolder): void {
  app.get('/healthz', { config: { kind: 'ops', label: 'ops:healthz' } }, async (_request, reply) => {
    return reply.header('cache-control', 'no-store').send({ status: 'ok' })
  })
  app.get('/readyz', { config: { kind: 'ops', label: 'ops:readyz' } }, async (_request, reply) => {
    const rt = holder.current
    const provider = rt.provider.state
    const problem = rt.provider.lastError
    const redis = rt.redis === null ? undefined : !rt.redis.ready ? 'unreachable' : rt.revocations.ready ? 'ok' : 'syncing'
    const ready = rt.provider.ready && (redis === undefined || redis === 'ok')
    const body = {
      status: ready ? 'ready' : 'not ready',
      provider,
      ...(provider !== 'ok' && problem !== null ? { providerError: problem.publicMessage } : {}),
      ...(redis === undefined ? {} : { redis }),
    }
    void reply.header('cache-control', 'no-store')
    if (ready) return reply.send(body)
    return reply.code(503).header('retry-after', '5').send(body)
  })
}
