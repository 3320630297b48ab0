import { randomUUID } from 'node:crypto'
import { createServer, type Server, type ServerOptions } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import { pino, type Logger, type LoggerOptions } from 'pino'
import type { Runtime } from './runtime.ts'
import { PortcullisError } from './errors.ts'
import { normalizeTarget, verifySuffix } from './http/facts.ts'
import { requestIdOf, type RequestContext, type RuntimeHolder } from './http/context.ts'
import { createFastLane, OwnPaths, PROXIED_METHODS } from './http/fast-lane.ts'
import { createFastifyLane, PATH_REJECTED } from './http/fastify-lane.ts'
import { UpstreamPools } from './http/upstream.ts'
import { decide as pipelineDecide, type Decide } from './http/pipeline.ts'
import { createTunnels, type Tunnels } from './http/tunnel.ts'
import { trackConnections, type ConnectionTracker } from './http/drain.ts'
import { markExpectsContinue } from './http/execute.ts'
import { registerStart } from './http/routes/start.ts'
import { registerSignIn } from './http/routes/sign-in.ts'
import { registerCallback } from './http/routes/callback.ts'
import { registerSignOut } from './http/routes/sign-out.ts'
import { registerUserinfo } from './http/routes/userinfo.ts'
import { registerBackchannel } from './http/routes/backchannel.ts'
import { registerAuthCheck, registerVerify } from './http/routes/auth-check.ts'
import { registerAssertionJwks } from './http/routes/assertion-jwks.ts'
import { registerDebug } from './http/routes/debug.ts'
import { registerResourceMetadata } from './http/routes/resource-metadata.ts'
import { registerOps } from './http/ops.ts'
import { registerRateLimits, type RateLimitStats } from './http/rate-limit.ts'
import { registerProxy } from './http/proxy.ts'
import { sendError } from './http/errors.ts'
import { logRequest, loggerOptions } from './http/logging.ts'
import { countedDecide } from './http/observe.ts'
import { listenMetrics, type MetricsListener } from './http/metrics-listener.ts'
import type { Metrics } from './metrics.ts'

export { loggerOptions, safeError } from './http/logging.ts'
export { listenMetrics } from './http/metrics-listener.ts'

/**
 * The Fastify application: plugins and routes in pipeline order. Never listens: `main.ts` and the
 * tests do. Reading one proxied request top-down: this file (`serverFactory`) → `http/fast-lane.ts`
 * (or `http/fastify-lane.ts`) → `decide` in `http/pipeline.ts` → `execute` in `http/execute.ts` →
 * `http/upstream.ts`; docs/architecture.md walks it, and one login.
 */
export interface AppOptions {
  /** A pino logger to use, or pino options; defaults to JSON at the configured level on stdout. */
  readonly logger?: Logger | LoggerOptions
  /** Overrides `server.upstreamTimeout` (tests). */
  readonly upstreamTimeoutMs?: number
  /**
   * The pipeline's decision function. Tests give another one to show that neither lane decides
   * anything of its own; nothing else should.
   */
  readonly decide?: Decide
  /** Answer in the fast lane (default true); false sends every request through Fastify (tests). */
  readonly fastLane?: boolean
  /** How often open WebSockets' sessions are checked, in ms (default 15 s; at most 30 s). */
  readonly tunnelCheckMs?: number
  /**
   * The process's instruments (`createMetrics` in `metrics.ts`), made once and kept across reloads;
   * the runtime is built with `metrics.runtimeDeps()`. Given, not made here: only a process that
   * serves loads prom-client (the CLI's check, explain and healthcheck do not).
   */
  readonly metrics: Metrics
}

export interface App {
  readonly fastify: FastifyInstance
  /** Swap in a new runtime (reload); in-flight requests keep theirs. The auth prefix cannot change. */
  swap(next: Runtime): void
  /** Open WebSockets, and their session check (tests run it instead of waiting for the timer). */
  readonly tunnels: Pick<Tunnels, 'size' | 'sweep'>
  /**
   * Drain and close: stop accepting, close idle connections at once, let requests in flight finish
   * (each with `Connection: close`), close WebSockets with 1001; whatever is still open after
   * `timeoutMs` is cut. Resolves when everything is closed.
   */
  drain(timeoutMs: number): Promise<{ readonly cut: number }>
  /** Write out access lines still gathered for a batch (the process is exiting). */
  flushLogs(): void
  /** The rate limits' counters (429s by endpoint, requests counted locally while Redis was down). */
  readonly rateLimits: RateLimitStats
  readonly metrics: Metrics
  /**
   * Serve GET /metrics on `metrics.listen` (a listener of its own, closed with the app); resolves to
   * its URL as bound (port 0 picks one), or null when `metrics.listen` is "".
   */
  listenMetrics(): Promise<string | null>
}

const REJECTED_TARGET = '/__portcullis/rejected'

export function buildApp(runtime: Runtime, opts: AppOptions): App {
  const metrics = opts.metrics
  const holder: RuntimeHolder = { current: runtime, metrics }
  // The relay check's path (the auth prefix cannot change on reload).
  const verifyPath = `${runtime.prefix}/verify`
  const given = opts.logger ?? loggerOptions(runtime.config.logging.level)
  const logger: Logger = typeof (given as Logger).child === 'function' ? (given as Logger) : pino(given as LoggerOptions)
  const timeoutMs = opts.upstreamTimeoutMs ?? runtime.config.server.upstreamTimeout
  const pools = new UpstreamPools(timeoutMs, (route, seconds) => metrics.upstream(route.id, seconds))
  const ownPaths = new OwnPaths()
  const decide = countedDecide(opts.decide ?? pipelineDecide, metrics)
  const lane = createFastLane({ holder, pools, logger, ownPaths, decide })
  const fastifyLane = createFastifyLane({ holder, pools, decide })
  const tunnels = createTunnels({ holder, logger, decide, ownPaths, timeoutMs, checkEveryMs: Math.min(opts.tunnelCheckMs ?? 15_000, 30_000) })
  let connections: ConnectionTracker | null = null
  let metricsListener: MetricsListener | null = null
  metrics.watch(
    () => holder.current,
    () => connections?.inFlight ?? 0,
  )
  const app: FastifyInstance = Fastify({
    // Proxied requests and the forward-auth check are answered before Fastify (`http/fast-lane.ts`),
    // WebSocket upgrades at the socket level (`http/tunnel.ts`); the server is otherwise the one
    // Fastify would create (its timeouts applied the same way).
    serverFactory: (handler, given) => {
      // Fastify passes its resolved options (defaults filled in); its types leave them loosely typed.
      const options = given as { http?: ServerOptions | null; keepAliveTimeout?: number; requestTimeout?: number; connectionTimeout?: number; maxRequestsPerSocket?: number }
      const listener = opts.fastLane === false ? handler : lane.wrap(handler)
      // `server.tls`: HTTPS on the same listener (HTTP/1.1 with keep-alive; the fast lane is the
      // request listener either way). A reload loads a new certificate into it (`swap`).
      const tls = runtime.config.server.tls
      const server: Server =
        tls.cert === '' ? createServer(options.http ?? {}, listener) : createHttpsServer({ ...options.http, cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'] }, listener)
      // `Expect: 100-continue`: Node would answer `100 Continue` before anything is decided; the
      // request is decided first, and only a forwarded one is told to send its body (`http/execute.ts`).
      server.on('checkContinue', (req, res) => {
        markExpectsContinue(req)
        listener(req, res)
      })
      server.on('upgrade', (req, socket, head) => tunnels.handle(req, socket, head))
      connections = trackConnections(server)
      if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout
      if (options.requestTimeout !== undefined) server.requestTimeout = options.requestTimeout
      server.setTimeout(options.connectionTimeout ?? 0)
      if (options.maxRequestsPerSocket !== undefined && options.maxRequestsPerSocket > 0) server.maxRequestsPerSocket = options.maxRequestsPerSocket
      return server
    },
    // Fastify reads `https` only to write the scheme of "Server listening at" (the server is ours).
    ...(runtime.config.server.tls.cert === '' ? {} : { https: true }),
    loggerInstance: logger as FastifyBaseLogger,
    // One access-log line per request is written by `logRequest` (path without query), not by Fastify.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    trustProxy: false,
    return503OnClosing: true,
    genReqId: (req) => requestIdOf(req.headers),
    // Step 2 of the pipeline (`http/pipeline.ts`): route on the normalized path. A target that cannot
    // be normalized safely is routed to a placeholder and refused by the pipeline with 400.
    // Fastify's own refusals (an undecodable URL, ...) go through the same error model as ours.
    frameworkErrors: (err, request, reply) => {
      request.log.info({ err, route: 'rejected' }, 'request refused')
      void reply.header('x-request-id', request.id)
      return sendError(new PortcullisError('PATH_REJECTED', 'The request path is not valid.', { cause: err }), request, reply, '/')
    },
    // Requests Node's HTTP parser refuses (ambiguous framing, oversized headers) never reach Fastify:
    // answer with the same JSON shape and a request id, and log one line.
    clientErrorHandler: (err: Error & { code?: string; rawPacket?: unknown }, socket) => {
      if (err.code === 'ECONNRESET' || !socket.writable) return
      const id = randomUUID()
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
      const body = JSON.stringify({ error: 'REQUEST_REJECTED', message: 'The request could not be parsed.', requestId: id })
      logger.info({ reqId: id, parserError: err.code ?? err.name, status }, 'request refused by the HTTP parser')
      metrics.request('rejected', status, 0)
      socket.end(
        `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
          `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
          `x-request-id: ${id}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
      )
    },
    rewriteUrl: (req) => {
      // The relay check is routed on its raw target (the original path follows it as written).
      if (verifySuffix(verifyPath, req.url ?? '/') !== null) return req.url as string
      const { path, target } = normalizeTarget(req.url ?? '/')
      if (path === null) {
        ;(req as { [PATH_REJECTED]?: boolean })[PATH_REJECTED] = true
        return REJECTED_TARGET
      }
      return target
    },
  })

  // Every route but the proxy's is Portcullis's own: the fast lane leaves those paths to Fastify.
  app.addHook('onRoute', (route) => {
    if (route.config?.kind !== 'proxy') ownPaths.add(route.url ?? route.path)
  })
  app.addHook('preClose', async () => {
    lane.close()
    tunnels.drain()
    connections?.drain()
  })
  app.addHook('onClose', async () => {
    tunnels.close()
    await Promise.all([pools.close(), metricsListener?.close()])
  })
  app.decorateRequest('portcullis', null as unknown as RequestContext)
  void app.register(fastifyCookie)
  const limits = registerRateLimits(app, holder, logger)
  metrics.watchRateLimits(() => limits.stats)
  app.addHook('onRequest', fastifyLane.onRequest)
  app.addHook('onResponse', async (request, reply) => {
    // With `logging.requests: false` (an ingress in front already logs every request), only failures
    // are written: the access line is a tenth of a proxied request's CPU (npm run bench). Read from
    // the request's runtime, as the fast lane does, so a reload changes both alike.
    metrics.request(request.portcullis?.label ?? request.routeOptions.config.label ?? 'unknown', reply.statusCode, reply.elapsedTime / 1000)
    const everyRequest = (request.portcullis?.runtime ?? holder.current).config.logging.requests
    if (everyRequest || reply.statusCode >= 500) logRequest(request, reply, request.portcullis?.error, request.portcullis?.logFields)
  })

  app.setErrorHandler((err, request, reply) => {
    if (request.portcullis !== null) request.portcullis.error = err
    else request.log.info({ err }, 'request refused') // refused before the pipeline ran
    const rt = request.portcullis?.runtime ?? holder.current
    const retry = new URL(`${rt.prefix}/start`, rt.publicUrl)
    if (request.portcullis?.retryRd !== undefined) retry.searchParams.set('rd', request.portcullis.retryRd)
    return sendError(err, request, reply, retry.href)
  })
  app.setNotFoundHandler((request, reply) => {
    // Every path has a route (the proxy's catch-all); what lands here is a method the proxy does not
    // take (TRACE, CONNECT, WebDAV verbs). A body it waits to send is never asked for.
    void reply.header('allow', [...PROXIED_METHODS].join(', '))
    return sendError(new PortcullisError('METHOD_NOT_ALLOWED', 'This method is not supported.'), request, reply, '/')
  })

  registerOps(app, holder)
  registerStart(app, holder, limits)
  registerSignIn(app, holder)
  registerCallback(app, holder, limits)
  registerSignOut(app, holder)
  registerUserinfo(app, holder)
  registerBackchannel(app, holder, limits)
  registerAuthCheck(app, holder, fastifyLane)
  registerVerify(app, holder)
  registerAssertionJwks(app)
  registerDebug(app, holder)
  registerResourceMetadata(app, holder, fastifyLane)
  app.all(`${runtime.prefix}/*`, { config: { kind: 'auth', label: 'auth:unknown' } }, async () => {
    throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
  })
  // Targets that cannot be normalized are routed here (`rewriteUrl`); the pipeline refuses them.
  app.all(REJECTED_TARGET, { config: { kind: 'proxy', label: 'rejected' } }, async () => {
    throw new PortcullisError('PATH_REJECTED', 'The request path is not valid.')
  })
  registerProxy(app)

  return {
    fastify: app,
    swap(next: Runtime) {
      if (next.prefix !== holder.current.prefix) throw new Error('server.authPrefix cannot change on reload; restart instead')
      const was = holder.current.config.server.tls
      const now = next.config.server.tls
      if ((was.cert === '') !== (now.cert === '')) throw new Error('server.tls cannot be turned on or off on reload; restart instead')
      // New connections get the new certificate; open ones keep the one they were made with.
      if (now.cert !== '' && (now.cert !== was.cert || now.key !== was.key)) (app.server as unknown as HttpsServer).setSecureContext({ cert: now.cert, key: now.key })
      holder.current = next
    },
    tunnels,
    async drain(timeoutMs) {
      let cut = 0
      const bound = setTimeout(() => {
        cut = (connections?.cut() ?? 0) + tunnels.size
        tunnels.cut()
      }, timeoutMs)
      bound.unref()
      try {
        await app.close()
      } finally {
        clearTimeout(bound)
      }
      return { cut }
    },
    flushLogs: () => lane.flushLogs(),
    rateLimits: limits.stats,
    metrics,
    async listenMetrics() {
      const listen = holder.current.config.metrics.listen
      if (listen === '') return null
      metricsListener ??= await listenMetrics(metrics.registry, listen)
      return metricsListener.url
    },
  }
}
