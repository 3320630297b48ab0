import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { normalizePath } from '../policy/path.ts'
import { stripHeaders } from '../policy/headers.ts'
import { requestIdOf, type RuntimeHolder } from './context.ts'
import { admit, admitSession, type Admitted } from './pipeline.ts'
import { allowPairs, CHECK_LABEL, originalRoute } from './routes/auth-check.ts'
import type { Session } from '../session/model.ts'
import { upstreamHeaders } from './proxy.ts'
import { CLIENT_CLOSED, relay, type RelayOutcome, type UpstreamPools } from './upstream.ts'
import { writeError } from './errors.ts'
import { createAccessWriter } from './logging.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The fast lane (issue #4 point 6): a proxied request that the pipeline would forward as it is is
 * answered on Node's raw request and response, before Fastify builds its request and reply objects,
 * parses cookies, routes and runs hooks — about a third of a proxied request's CPU (npm run bench).
 *
 * It takes a request only when the answer is certain to be "forward it, write nothing": a proxied
 * method on a path that is none of Portcullis's own routes, a route that matches, and either a public
 * route or a valid session that needs no cookie write, idle-clock move, refresh or redirect. The
 * decision is the pipeline's own (`admit` in `http/pipeline.ts`), the forwarding the proxy step's
 * (`upstreamHeaders`, `relay`), the access line the same as Fastify's. The forward-auth check
 * (`{prefix}/auth`) is answered here too when its session needs nothing written (a 200, built by
 * `http/routes/auth-check.ts`). Everything else — the auth
 * endpoints, ops, logins, refreshes, refusals, WebSocket upgrades (never a `request` event) — goes to
 * Fastify untouched, which runs the full pipeline.
 */
export interface FastLaneOptions {
  readonly holder: RuntimeHolder
  readonly pools: UpstreamPools
  readonly logger: Logger
  /** Paths Fastify serves itself (not the proxy): exact paths, and prefixes of wildcard routes. */
  readonly ownPaths: OwnPaths
}

export interface FastLane {
  /** The server's `request` listener: answers, or hands the request to Fastify's handler. */
  wrap(fastify: RawHandler): RawHandler
  /** Stop taking requests (the server is closing; Fastify answers 503). */
  close(): void
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
const PROXIED_METHODS: ReadonlySet<string> = new Set(['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'])

export function createFastLane(opts: FastLaneOptions): FastLane {
  const { holder, pools, logger, ownPaths } = opts
  const logAccess = createAccessWriter(logger)
  let open = true

  function forward(rt: Runtime, admitted: Admitted, req: IncomingMessage, res: ServerResponse, url: string, path: string, started: number): void {
    const id = requestIdOf(req.headers)
    const { route, session } = admitted
    const identity = session === null ? null : { sub: session.sub, claims: session.claims }
    const headers = upstreamHeaders(rt, { route, identity, session, peer: req.socket.remoteAddress ?? '', requestId: id }, { ...req.headers })
    const own = { 'x-request-id': id }
    const method = req.method as string
    relay(pools, { route, method, url, headers }, req, res, own, (outcome: RelayOutcome) => {
      if (outcome.error !== undefined) writeError(res, outcome.error, req.headers, id, own)
      const status = res.headersSent ? res.statusCode : CLIENT_CLOSED
      // With `logging.requests: false` only failures are written: 5xx, cut answers, clients gone.
      if (!rt.config.logging.requests && status < 500 && outcome.logFields === undefined) return
      logAccess({
        reqId: id,
        method,
        path,
        route: route.id,
        status,
        durationMs: elapsedMs(started),
        sub: session?.sub,
        ...(outcome.error === undefined ? {} : { err: outcome.error }),
        ...outcome.logFields,
      })
    })
  }

  /** The forward-auth check (`{prefix}/auth`) with a session that needs nothing written: a 200. */
  function allow(rt: Runtime, session: Session | null, req: IncomingMessage, res: ServerResponse, path: string, started: number): void {
    const id = requestIdOf(req.headers)
    res.writeHead(200, [...allowPairs(rt, session), 'x-request-id', id, 'content-length', '0'])
    res.end()
    if (!rt.config.logging.requests) return
    logAccess({
      reqId: id,
      method: req.method as string,
      path,
      route: CHECK_LABEL,
      status: 200,
      durationMs: elapsedMs(started),
      sub: session?.sub,
    })
  }

  function check(req: IncomingMessage, res: ServerResponse, path: string, fastify: RawHandler): void {
    const started = performance.now()
    const rt = holder.current
    stripHeaders(req.headers, rt.stripSet)
    const original = originalRoute(rt, req.headers, req.socket.remoteAddress ?? '')
    if (original === 'invalid') return fastify(req, res)
    if (original?.public === true) return allow(rt, null, req, res, path, started)
    admitSession(rt, req.headers.cookie)
      .then(
        (session) => (session === null ? fastify(req, res) : allow(rt, session, req, res, path, started)),
        () => fastify(req, res),
      )
      .catch((err: unknown) => failed(err, req, res, path))
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
      const checkPath = `${holder.current.prefix}/auth`
      return function fastLane(req: IncomingMessage, res: ServerResponse): void {
        const url = req.url ?? ''
        if (!open || !PROXIED_METHODS.has(req.method as string) || url.charCodeAt(0) !== SLASH) return fastify(req, res)
        const q = url.indexOf('?')
        const raw = q === -1 ? url : url.slice(0, q)
        const path = normalizePath(raw)
        if (path === checkPath && req.method === 'GET') return check(req, res, path, fastify)
        // What is left percent-encoded, Fastify's router decodes: let it decide those paths.
        if (path === null || path.includes('%') || ownPaths.has(path)) return fastify(req, res)
        const started = performance.now()
        const rt = holder.current
        // Pipeline step 1, before anything reads the headers (again in Fastify's pipeline if it
        // gets the request: stripping is idempotent).
        stripHeaders(req.headers, rt.stripSet)
        const target = path === raw ? url : q === -1 ? path : path + url.slice(q)
        admit(rt, req.headers.host, path, req.headers.cookie)
          .then(
            (admitted) => (admitted === null ? fastify(req, res) : forward(rt, admitted, req, res, target, path, started)),
            // A store or provider failure: the full pipeline meets it again and answers with its error page.
            () => fastify(req, res),
          )
          .catch((err: unknown) => failed(err, req, res, path))
      }
    },
    close() {
      open = false
    },
  }
}

const SLASH = 0x2f

/** Milliseconds since `started` (performance.now()), to two decimals, for the access line. */
function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100
}
