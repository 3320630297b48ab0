import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { requestIdOf, type RuntimeHolder } from './context.ts'
import type { Decide, Mode } from './pipeline.ts'
import type { Decision } from './decision.ts'
import { factsOf, normalizeTarget, verifySuffix } from './facts.ts'
import { execute } from './execute.ts'
import { CLIENT_CLOSED, type RelayOutcome, type UpstreamPools } from './upstream.ts'
import { writeError } from './errors.ts'
import { createAccessWriter, type AccessEntry } from './logging.ts'
import { writeNotes } from './notes.ts'

/**
 * The fast lane: a proxied request, and the forward-auth check, are decided and answered on Node's
 * raw request and response, before Fastify builds its request and reply objects, parses cookies,
 * routes and runs hooks (about a third of a proxied request's CPU; `npm run bench`).
 *
 * It decides nothing itself: the decision is the pipeline's (`decide` in `http/pipeline.ts`), and it
 * is carried out by `execute` (`http/execute.ts`), as on the Fastify path. What the lane chooses is
 * only which requests it takes: a proxied method, on a path that is none of Portcullis's own routes
 * and that Fastify's router would not read differently (a percent-escape left after normalization
 * is decoded by the router: those go to Fastify, which runs the same pipeline). Everything else — the
 * auth endpoints, ops, methods the proxy does not take — goes to Fastify untouched, and WebSocket
 * upgrades never arrive here (`http/tunnel.ts`).
 */
export interface FastLaneOptions {
  readonly holder: RuntimeHolder
  readonly pools: UpstreamPools
  readonly logger: Logger
  /** Paths Fastify serves itself (not the proxy): exact paths, and prefixes of wildcard routes. */
  readonly ownPaths: OwnPaths
  readonly decide: Decide
}

export interface FastLane {
  /** The server's `request` listener: answers, or hands the request to Fastify's handler. */
  wrap(fastify: RawHandler): RawHandler
  /** Stop taking requests (the server is closing; Fastify answers 503). */
  close(): void
  /** Write out the access lines gathered for a batch. */
  flushLogs(): void
}

type RawHandler = (req: IncomingMessage, res: ServerResponse) => void

/** Portcullis's own routes, collected from Fastify's `onRoute` hook as they are registered. */
export class OwnPaths {
  readonly #exact = new Set<string>()
  readonly #prefixes: string[] = []

  add(url: string): void {
    if (url.endsWith('*')) this.#prefixes.push(url.slice(0, -1))
    else this.#exact.add(url)
  }

  has(path: string): boolean {
    if (this.#exact.has(path)) return true
    for (const prefix of this.#prefixes) if (path.startsWith(prefix)) return true
    return false
  }
}

/** The methods the proxy route takes (@fastify/http-proxy's defaults). */
export const PROXIED_METHODS: ReadonlySet<string> = new Set(['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'])

export function createFastLane(opts: FastLaneOptions): FastLane {
  const { holder, pools, logger, ownPaths, decide } = opts
  const metrics = holder.metrics
  const logAccess = createAccessWriter(logger)
  let open = true

  function take(req: IncomingMessage, res: ServerResponse, url: string, path: string | null, target: string, mode: Mode): void {
    const started = performance.now()
    const rt = holder.current
    const id = requestIdOf(req.headers)
    decide(rt, factsOf(req, { path, target }, id, rt.clock.now()), mode)
      .then((decision) => carry(decision, req, res, id, path ?? pathOf(url), started, rt.config.logging.requests))
      .catch((err: unknown) => failed(err, req, res, path ?? pathOf(url)))
  }

  function carry(decision: Decision, req: IncomingMessage, res: ServerResponse, id: string, path: string, started: number, everyRequest: boolean): void {
    if (decision.notes.length > 0) writeNotes(logger, decision.notes, id)
    const method = req.method as string
    execute(decision, pools, req, res, (outcome: RelayOutcome) => {
      const status = res.headersSent ? res.statusCode : CLIENT_CLOSED
      const ms = performance.now() - started
      metrics.request(decision.label, status, ms / 1000)
      const error = outcome.error ?? decision.error
      // With `logging.requests: false` only failures are written: 5xx, cut answers, clients gone.
      if (!everyRequest && status < 500 && outcome.logFields === undefined) return
      const entry: AccessEntry = { reqId: id, method, path, route: decision.label, status, durationMs: Math.round(ms * 100) / 100, sub: decision.session?.sub ?? decision.bearer?.sub }
      // Only failures carry more (no spread of empty objects on every request).
      logAccess(error === undefined && outcome.logFields === undefined ? entry : { ...entry, ...(error === undefined ? {} : { err: error }), ...outcome.logFields })
    })
  }

  function failed(err: unknown, req: IncomingMessage, res: ServerResponse, path: string): void {
    // A bug, not a request's fault: answer 500 (never a stack trace) unless an answer has begun, and
    // say so in the log. Never throws: this runs in a promise's last catch.
    const id = requestIdOf(req.headers)
    logger.error({ err, path, reqId: id }, 'fast lane failed')
    if (res.headersSent || res.writableEnded) {
      res.destroy()
      return
    }
    try {
      writeError(res, err, req.headers, id, { 'x-request-id': id })
    } catch {
      res.destroy()
    }
  }

  return {
    wrap(fastify) {
      const prefix = holder.current.prefix
      const checkPath = `${prefix}/auth`
      const verifyPath = `${prefix}/verify`
      return function fastLane(req: IncomingMessage, res: ServerResponse): void {
        const url = req.url ?? ''
        const method = req.method as string
        if (!open || url.charCodeAt(0) !== SLASH) return fastify(req, res)
        if (!PROXIED_METHODS.has(method)) return fastify(req, res)
        // The relay check, any method (Envoy sends the original's), on its raw target: the path
        // after it is the original's as written, never normalized into one of ours.
        if (verifySuffix(verifyPath, url) !== null) return take(req, res, url, verifyPath, url, 'verify')
        const { path, target } = normalizeTarget(url)
        if (path === checkPath && method === 'GET') return take(req, res, url, path, target, 'check')
        if (path !== null && (path.includes('%') || ownPaths.has(path))) return fastify(req, res)
        take(req, res, url, path, target, 'proxy')
      }
    },
    close() {
      open = false
      // Requests still in flight log one line each from here on.
      logAccess.close()
    },
    flushLogs() {
      logAccess.flush()
    },
  }
}

const SLASH = 0x2f

function pathOf(url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

/** Milliseconds since `started` (performance.now()), to two decimals, for the access line. */
export function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100
}
