import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import { pino, type Logger, type LoggerOptions } from 'pino'
import type { Runtime } from './runtime.ts'
import { PortcullisError } from './errors.ts'
import { normalizePath } from './policy/path.ts'
import type { RequestContext, RuntimeHolder } from './http/context.ts'
import { createPipeline, PATH_REJECTED } from './http/pipeline.ts'
import { registerStart } from './http/routes/start.ts'
import { registerCallback } from './http/routes/callback.ts'
import { registerSignOut } from './http/routes/sign-out.ts'
import { registerUserinfo } from './http/routes/userinfo.ts'
import { registerBackchannel } from './http/routes/backchannel.ts'
import { registerOps } from './http/ops.ts'
import { registerProxy } from './http/proxy.ts'
import { sendError } from './http/errors.ts'
import { logRequest, loggerOptions } from './http/logging.ts'

export { loggerOptions, safeError } from './http/logging.ts'

/**
 * The Fastify application: plugins and routes in pipeline order. Never listens (STYLE.md rule 14);
 * `main.ts` and the tests do. Reading one request top-down: this file → `http/pipeline.ts` →
 * `session/` → `policy/` → `http/proxy.ts`.
 */
export interface AppOptions {
  /** A pino logger to use, or pino options; defaults to JSON at the configured level on stdout. */
  readonly logger?: Logger | LoggerOptions
  /** Overrides `server.upstreamTimeout` (tests). */
  readonly upstreamTimeoutMs?: number
}

export interface App {
  readonly fastify: FastifyInstance
  /** Swap in a new runtime (reload); in-flight requests keep theirs. The auth prefix cannot change. */
  swap(next: Runtime): void
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const PROXIED_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS']
const REJECTED_TARGET = '/__portcullis/rejected'

export function buildApp(runtime: Runtime, opts: AppOptions = {}): App {
  const holder: RuntimeHolder = { current: runtime }
  const given = opts.logger ?? loggerOptions(runtime.config.logging.level)
  const logger: Logger = typeof (given as Logger).child === 'function' ? (given as Logger) : pino(given as LoggerOptions)
  const app: FastifyInstance = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // One access-log line per request is written by `logRequest` (path without query), not by Fastify.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    trustProxy: false,
    return503OnClosing: true,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    // DESIGN.md §3 step 2: route on the normalized path. A target that cannot be normalized safely is
    // routed to a placeholder and refused by the pipeline with 400.
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
      socket.end(
        `HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
          `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
          `x-request-id: ${id}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
      )
    },
    rewriteUrl: (req) => {
      const url = req.url ?? '/'
      const q = url.indexOf('?')
      const path = q === -1 ? url : url.slice(0, q)
      const normalized = normalizePath(path)
      if (normalized === null) {
        ;(req as { [PATH_REJECTED]?: boolean })[PATH_REJECTED] = true
        return REJECTED_TARGET
      }
      return normalized === path ? url : normalized + (q === -1 ? '' : url.slice(q))
    },
  })

  app.decorateRequest('portcullis', null as unknown as RequestContext)
  void app.register(fastifyCookie)
  app.addHook('onRequest', createPipeline(holder))
  const everyRequest = runtime.config.logging.requests
  app.addHook('onResponse', async (request, reply) => {
    // With `logging.requests: false` (an ingress in front already logs every request), only failures
    // are written: the access line is a tenth of a proxied request's CPU (npm run bench).
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
    // take (TRACE, CONNECT, WebDAV verbs).
    void reply.header('allow', PROXIED_METHODS.join(', '))
    return sendError(new PortcullisError('METHOD_NOT_ALLOWED', 'This method is not supported.'), request, reply, '/')
  })

  registerOps(app, holder)
  registerStart(app, holder)
  registerCallback(app, holder)
  registerSignOut(app, holder)
  registerUserinfo(app, holder)
  registerBackchannel(app, holder)
  app.all(`${runtime.prefix}/*`, { config: { kind: 'auth', label: 'auth:unknown' } }, async () => {
    throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
  })
  app.all(REJECTED_TARGET, { config: { kind: 'auth', label: 'rejected' } }, async () => {
    throw new PortcullisError('PATH_REJECTED', 'The request path is not valid.')
  })
  registerProxy(app, { upstreamTimeoutMs: opts.upstreamTimeoutMs ?? runtime.config.server.upstreamTimeout })

  return {
    fastify: app,
    swap(next: Runtime) {
      if (next.prefix !== holder.current.prefix) throw new Error('server.authPrefix cannot change on reload; restart instead')
      holder.current = next
    },
  }
}
