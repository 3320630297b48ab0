import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import { normalizePath } from '../policy/path.ts'

/**
 * The plain data the pipeline decides on: what a request is, taken from Node's raw request the same
 * way by both lanes (the fast lane and the Fastify path) and by the WebSocket upgrade handler. Nothing
 * here knows Fastify.
 */
export interface RequestFacts {
  readonly method: string
  /** The client's Host header. */
  readonly host: string | undefined
  /** The normalized path (no query); null when the path cannot be normalized safely (a 400). */
  readonly path: string | null
  /** The request target as it goes upstream: the normalized path and the client's query as sent. */
  readonly target: string
  /**
   * The request's headers. Step 1 of the pipeline strips them in place: every later reader (the
   * proxy step, Portcullis's own routes) sees only what a client may send.
   */
  readonly headers: IncomingHttpHeaders
  /** The TCP peer's address ('' when unknown). */
  readonly peer: string
  readonly requestId: string
  /** When the request is decided, in ms (the runtime's clock). */
  readonly now: number
  /** A WebSocket (or other protocol) upgrade handshake. */
  readonly upgrade: boolean
  /** How many `Host` headers the client sent (Node keeps only the first in `headers`). */
  readonly hostCount: number
}

/** A request target split and normalized: the path routes see, and the target sent upstream. */
export interface Target {
  /** Normalized path, or null when it cannot be normalized safely. */
  readonly path: string | null
  /** Normalized path + the raw query (the input itself when nothing changed). */
  readonly target: string
}

/** Normalize a request target (`/a/../b?x` → path `/b`, target `/b?x`). */
export function normalizeTarget(url: string): Target {
  const q = url.indexOf('?')
  const raw = q === -1 ? url : url.slice(0, q)
  const path = normalizePath(raw)
  if (path === null) return { path: null, target: url }
  return { path, target: path === raw ? url : q === -1 ? path : path + url.slice(q) }
}

/** The facts of a raw request whose target was normalized (`normalizeTarget`). */
export function factsOf(req: IncomingMessage, target: Target, requestId: string, now: number): RequestFacts {
  return {
    method: req.method ?? 'GET',
    host: req.headers.host,
    path: target.path,
    target: target.target,
    headers: req.headers,
    peer: req.socket.remoteAddress ?? '',
    requestId,
    now,
    // Set by Node's HTTP parser for requests it hands to the 'upgrade' event; not in @types/node.
    upgrade: (req as { upgrade?: boolean }).upgrade === true,
    hostCount: hostCount(req.rawHeaders),
  }
}

/** The number of `Host` fields among a request's raw headers (name, value, name, value, ...). */
export function hostCount(raw: readonly string[]): number {
  let n = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    if (name.length === 4 && name.toLowerCase() === 'host') n++
  }
  return n
}

/**
 * What follows the relay check's path (`verifyPath`, `{prefix}/verify`) in a raw request target:
 * '' for the bare path (with or without a query), `/rest...` for Envoy's prefixed form, `?...`
 * never (the bare path's query is dropped); null when the target is not the relay check at all
 * (`{prefix}/verifyx`, or anything else). The caller builds `verifyPath` once, not per request.
 */
export function verifySuffix(verifyPath: string, rawTarget: string): string | null {
  if (!rawTarget.startsWith(verifyPath)) return null
  const next = rawTarget.charCodeAt(verifyPath.length)
  if (Number.isNaN(next) || next === QUESTION) return ''
  return next === SLASH ? rawTarget.slice(verifyPath.length) : null
}
const QUESTION = 0x3f
const SLASH = 0x2f

/**
 * The client's address: the TCP peer, unless the peer is in `server.trustedProxies` (`trusted`);
 * then the rightmost `X-Forwarded-For` hop that is not a trusted proxy itself (each trusted proxy
 * appends the address it saw, so hops to the right of the client's are written by proxies we trust,
 * and whatever the client sent itself is to the left). An untrusted peer's `X-Forwarded-For` is
 * never read, so a client cannot pick its own address. A hop that is not an IP address ends the walk
 * at the trusted proxy that passed it on (its address is the client's then); all hops trusted: the
 * leftmost. `1.2.3.4:5678` and `[v6]:port` lose the port. The one place that reads
 * `X-Forwarded-For` (rate limits key on it; `http/upstream-headers.ts` appends to it).
 */
export function clientAddress(headers: IncomingHttpHeaders, peer: string, trusted: (address: string) => boolean): string {
  if (!trusted(peer)) return peer
  const header = headers['x-forwarded-for']
  if (header === undefined) return peer
  const hops = (Array.isArray(header) ? header.join(',') : header).split(',')
  let nearest = peer
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hopAddress(hops[i] as string)
    if (hop === null) return nearest
    if (!trusted(hop)) return hop
    nearest = hop
  }
  return nearest
}

/** One `X-Forwarded-For` entry as a bare IP address, or null when it is none. */
function hopAddress(entry: string): string | null {
  let text = entry.trim()
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    text = end === -1 ? '' : text.slice(1, end)
  } else if (text.indexOf(':') !== -1 && text.indexOf(':') === text.lastIndexOf(':')) {
    text = text.slice(0, text.indexOf(':')) // IPv4 with a port
  }
  return isIP(text) === 0 ? null : text
}
