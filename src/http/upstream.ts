import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { PortcullisError } from '../errors.ts'
import type { Route } from '../policy/routes.ts'

/**
 * The HTTP half of the proxy step, straight on undici (issue #4 point 6): one keep-alive `Pool` per
 * upstream origin, the request target sent byte for byte (normalized path + the client's query), the
 * body streamed both ways, no retries. The stock @fastify/reply-from path re-parses the destination
 * URL, copies the headers twice and re-encodes the query on every request; this does none of that.
 * WebSocket upgrades stay with @fastify/http-proxy (`http/proxy.ts`).
 */
export class UpstreamPools {
  readonly #pools = new Map<string, Pool>()
  readonly #timeoutMs: number
  /** Told when an upstream's response headers arrive: the route and the seconds since the request was sent (metrics). */
  readonly onHeaders: ((route: Route, seconds: number) => void) | null

  constructor(timeoutMs: number, onHeaders?: (route: Route, seconds: number) => void) {
    this.#timeoutMs = timeoutMs
    this.onHeaders = onHeaders ?? null
  }

  get(origin: string): Pool {
    let pool = this.#pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: 256,
        pipelining: 1,
        keepAliveTimeout: 60_000,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      })
      this.#pools.set(origin, pool)
    }
    return pool
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#pools.values()].map((p) => p.close()))
    this.#pools.clear()
  }
}

const TIMEOUT_CODES: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/**
 * Hop-by-hop response headers (RFC 9110 §7.6.1): they describe the upstream connection, not ours.
 * `Trailer` too: trailers are not relayed, so announcing them would be false.
 */
const HOP_BY_HOP_RESPONSE: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'trailer'])

/** What to send upstream: `headers` were prepared by `upstreamHeaders` (`http/proxy.ts`). */
export interface RelayRequest {
  readonly route: Route
  readonly method: string
  /** The normalized request target (path and query), as routed. */
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

/** How a relay ended, for the caller's answer and access line. */
export interface RelayOutcome {
  /** The upstream failed: before answering (the caller sends the error page) or mid-body (the response was cut). */
  readonly error?: PortcullisError
  readonly responded: boolean
  readonly logFields?: Readonly<Record<string, string | boolean>>
}

/** The access-log status of a request whose client left before it was answered (nginx's convention). */
export const CLIENT_CLOSED = 499

/**
 * Send one request upstream and stream the answer to `res`. `own` are Portcullis's response headers
 * (request id, re-sealed cookies, a forced Cache-Control): they replace the upstream's headers of the
 * same name, except Set-Cookie, where both are kept. `done` is called once, when the exchange is over
 * or failed; on a failure before the upstream answered nothing was written and the caller answers.
 */
export function relay(
  pools: UpstreamPools,
  target: RelayRequest,
  req: IncomingMessage,
  res: ServerResponse,
  own: Readonly<Record<string, string | readonly string[]>>,
  done: (outcome: RelayOutcome) => void,
): void {
  const headers = target.headers
  headers.host = target.route.upstreamHost
  // undici frames the body itself; a client's Transfer-Encoding would be refused by it.
  delete headers['transfer-encoding']
  // Whether there is a body comes from the request as received (its framing headers), not from the
  // prepared copy: a client could name them in `Connection` to have them dropped from the copy.
  const framing = req.headers
  const hasBody = framing['transfer-encoding'] !== undefined || (framing['content-length'] !== undefined && framing['content-length'] !== '0')
  pools.get(target.route.upstreamOrigin).dispatch(
    {
      method: target.method as Dispatcher.HttpMethod,
      path: target.route.upstreamBasePath + target.url,
      headers: headers as Record<string, string | string[]>,
      body: hasBody ? req : null,
    },
    new RelayHandler(res, own, done, pools.onHeaders === null ? null : { route: target.route, tell: pools.onHeaders }),
  )
}

const HANDLER = Symbol('portcullis.relay')
type RelayedResponse = ServerResponse & { [HANDLER]?: RelayHandler }
// Listeners shared by every response (no closure per request); they find their handler on the response.
function onClientClose(this: RelayedResponse): void {
  this[HANDLER]?.clientClosed()
}
function onDrain(this: RelayedResponse): void {
  this[HANDLER]?.drained()
}

/**
 * undici's raw handler interface (onConnect/onHeaders/onData/onComplete/onError, marked deprecated in
 * its types in favour of the controller one). This one is used on purpose: the pool calls it directly
 * with the raw header pairs, which go to `writeHead` in one array; the controller interface wraps
 * every handler and parses the headers into an object first (undici lib/handler/unwrap-handler.js).
 */
class RelayHandler implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse
  readonly #own: Readonly<Record<string, string | readonly string[]>>
  readonly #done: (outcome: RelayOutcome) => void
  #abort: ((err?: Error) => void) | null = null
  #resume: (() => void) | null = null
  #responded = false
  #finished = false
  #clientGone = false
  readonly #timed: { readonly route: Route; readonly tell: (route: Route, seconds: number) => void } | null
  readonly #sentAt: number

  constructor(
    res: ServerResponse,
    own: Readonly<Record<string, string | readonly string[]>>,
    done: (outcome: RelayOutcome) => void,
    timed: { readonly route: Route; readonly tell: (route: Route, seconds: number) => void } | null,
  ) {
    this.#res = res
    this.#own = own
    this.#done = done
    this.#timed = timed
    this.#sentAt = timed === null ? 0 : performance.now()
    ;(res as RelayedResponse)[HANDLER] = this
    res.once('close', onClientClose)
  }

  /** The client went away before the answer was complete: stop the upstream exchange too. */
  clientClosed(): void {
    if (this.#finished) return
    this.#clientGone = true
    this.#abort?.(new Error('client closed the connection'))
  }

  drained(): void {
    this.#resume?.()
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort
    if (this.#res.destroyed) this.clientClosed()
  }

  onHeaders(statusCode: number, raw: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true // 1xx informational: not relayed
    if (this.#timed !== null) this.#timed.tell(this.#timed.route, (performance.now() - this.#sentAt) / 1000)
    this.#resume = resume
    const own = this.#own
    // One pass over the raw pairs; the names the upstream listed in `Connection` are hop-by-hop too
    // (RFC 9110 §7.6.1), and are taken out afterwards in the rare case there are any.
    let out: string[] = []
    let listed: Set<string> | null = null
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as Buffer).toString('latin1')
      const lower = name.toLowerCase()
      if (lower === 'connection') {
        const value = (raw[i + 1] as Buffer).toString('latin1').toLowerCase()
        if (value !== 'keep-alive' && value !== 'close') listed = new Set(value.split(',').map((v) => v.trim()))
        continue
      }
      if (HOP_BY_HOP_RESPONSE.has(lower)) continue
      if (lower !== 'set-cookie' && own[lower] !== undefined) continue
      out.push(name, (raw[i + 1] as Buffer).toString('latin1'))
    }
    if (listed !== null) {
      const kept: string[] = []
      for (let i = 0; i < out.length; i += 2) if (!listed.has((out[i] as string).toLowerCase())) kept.push(out[i] as string, out[i + 1] as string)
      out = kept
    }
    for (const name in own) {
      const value = own[name] as string | readonly string[]
      if (typeof value === 'string') out.push(name, value)
      else for (const v of value) out.push(name, v)
    }
    this.#responded = true
    this.#res.writeHead(statusCode, out)
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.#res.write(chunk)) return true
    // Backpressure: undici pauses the upstream socket until `resume`.
    this.#res.once('drain', onDrain)
    return false
  }

  onComplete(): void {
    this.#finished = true
    this.#res.end()
    this.#done({ responded: true })
  }

  onError(err: Error): void {
    this.#finished = true
    const e = err as Error & { code?: string; cause?: { code?: string } }
    const code = e.code ?? e.name
    if (this.#clientGone) {
      // Nobody to answer: the client left before the answer was complete.
      this.#res.destroy()
      this.#done({ responded: this.#responded, logFields: { clientClosed: true } })
      return
    }
    if (this.#responded) {
      // The upstream broke off while streaming the body: the status line is gone; cut the response.
      this.#res.destroy()
      this.#done({ responded: true, logFields: { upstreamError: code } })
      return
    }
    const error = TIMEOUT_CODES.has(code)
      ? new PortcullisError('UPSTREAM_TIMEOUT', 'The application did not answer in time.', { cause: err })
      : new PortcullisError('UPSTREAM_UNAVAILABLE', 'The application is not reachable right now.', { cause: err })
    this.#done({ error, responded: false, logFields: { upstreamError: code, upstreamCause: e.cause?.code ?? code } })
  }
}
