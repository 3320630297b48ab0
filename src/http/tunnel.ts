import { createHash } from 'node:crypto'
import http, { ServerResponse, type IncomingMessage } from 'node:http'
import https from 'node:https'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { PortcullisError } from '../errors.ts'
import { requestIdOf, type RuntimeHolder } from './context.ts'
import type { Decision, ForwardDecision } from './decision.ts'
import { writeError } from './errors.ts'
import { execute } from './execute.ts'
import { factsOf, normalizeTarget } from './facts.ts'
import { elapsedMs, type OwnPaths } from './fast-lane.ts'
import { CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, closeFrame, FrameBoundaries } from './frames.ts'
import { logAccess } from './logging.ts'
import { writeNotes } from './notes.ts'
import { isStoreOutage, stillLive, type Decide } from './pipeline.ts'
import type { UpstreamPools } from './upstream.ts'

/**
 * WebSocket upgrades, relayed the way nginx and Apache's mod_proxy_wstunnel relay them:
 * - the handshake is decided by the pipeline like any request (`decide`): a refusal is written as
 *   the pipeline's answer, and the upstream is never asked;
 * - an allowed handshake goes to the upstream first, with the identity headers injected; its answer
 *   is relayed as it came: 101 only when the upstream switched protocols, its own status otherwise;
 * - after a 101, bytes are piped both ways with backpressure; frames are never parsed or held (only
 *   their headers are counted, to know where one ends: `http/frames.ts`);
 * - the handshake has a bound (`server.upstreamTimeout`): unreachable is a 502, too slow a 504;
 * - an open WebSocket ends with its session: revocations (sign-out, back-channel logout) close it at
 *   once, lifetimes (absolute, idle, a store that lost the session) are checked every
 *   `checkEveryMs`; it is closed with a 1008 close frame, then both sockets end. A drain closes every
 *   one with 1001.
 * @fastify/http-proxy's WebSocket mode cannot do this: it accepts the client (101) before it
 * connects upstream, and its `ws` server buffers whole messages.
 */
export interface Tunnels {
  /** The server's `upgrade` listener. */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void
  /** Check every open WebSocket's session now (the timer does this every `checkEveryMs`). */
  sweep(): Promise<void>
  /** Refuse new upgrades and close every open WebSocket with 1001 (the process is draining). */
  drain(): void
  /** Open WebSockets. */
  readonly size: number
  /** Destroy every WebSocket and upstream handshake still open (the shutdown bound has passed). */
  cut(): void
  /** Stop the timer and the revocation subscription (the server has closed). */
  close(): void
}

export interface TunnelOptions {
  readonly holder: RuntimeHolder
  readonly logger: Logger
  readonly decide: Decide
  readonly ownPaths: OwnPaths
  /** The handshake's bound. */
  readonly timeoutMs: number
  /** How often open WebSockets' sessions are checked (at most 30 s). */
  readonly checkEveryMs: number
}

/** How long a closing WebSocket waits for its peers to finish before its sockets are destroyed. */
const CLOSE_GRACE_MS = 2_000

export function createTunnels(opts: TunnelOptions): Tunnels {
  const { holder, logger } = opts
  const open = new Set<Tunnel>()
  let draining = false
  /** Upstream handshakes under way. */
  const pending = new Set<http.ClientRequest>()
  let timer: NodeJS.Timeout | null = null
  let unsubscribe: (() => void) | null = null
  /** The revocation list subscribed to: a reload may bring another one (Redis added or changed). */
  let subscribedTo: RuntimeHolder['current']['revocations'] | null = null

  const watch = (): void => {
    if (timer === null) {
      timer = setInterval(() => void sweep(), opts.checkEveryMs)
      timer.unref()
    }
    const list = holder.current.revocations
    if (unsubscribe !== null && subscribedTo === list) return
    unsubscribe?.()
    subscribedTo = list
    unsubscribe = list.subscribe(() => void sweep())
  }
  const unwatch = (): void => {
    if (open.size > 0) return
    if (timer !== null) clearInterval(timer)
    timer = null
    unsubscribe?.()
    unsubscribe = null
  }

  async function sweep(): Promise<void> {
    const rt = holder.current
    if (open.size > 0 && subscribedTo !== rt.revocations) watch()
    await Promise.all(
      [...open].map(async (tunnel) => {
        if (tunnel.sessionValue === null || tunnel.sessionId === null) return
        let live: boolean
        try {
          live = await stillLive(rt, tunnel.sessionValue, tunnel.sessionId, tunnel.route)
        } catch (err) {
          // The session cannot be checked (the store is unreachable): the WebSocket does not outlive
          // what could not be verified. 1013 (try again later): the client's reconnect gets the
          // handshake's 503 until the store is back, then is decided again.
          logger.warn({ err, sessionChecked: false }, 'websocket closed: its session could not be checked')
          tunnel.end(isStoreOutage(err) ? CLOSE_TRY_AGAIN_LATER : CLOSE_INTERNAL_ERROR, 'session could not be checked')
          return
        }
        if (!live) tunnel.end(CLOSE_POLICY_VIOLATION, 'session ended')
      }),
    )
  }

  function handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const started = performance.now()
    const rt = holder.current
    const id = requestIdOf(req.headers)
    const res = responseOn(req, socket)
    const url = req.url ?? '/'
    const target = normalizeTarget(url)
    const path = target.path ?? url.split('?')[0] ?? url
    const line = (status: number, label: string, sub: string | undefined, extra: Record<string, unknown> = {}): void => {
      holder.metrics.request(label, status, (performance.now() - started) / 1000)
      if (!rt.config.logging.requests && status < 500 && extra.upstreamError === undefined) return
      logAccess(logger, { reqId: id, method: req.method ?? 'GET', path, route: label, status, durationMs: elapsedMs(started), sub, websocket: true, ...extra })
    }
    if (draining || url.charCodeAt(0) !== 0x2f || (target.path !== null && opts.ownPaths.has(target.path))) {
      // Nothing of Portcullis's own takes an upgrade; while draining, none is accepted.
      const err = draining
        ? new PortcullisError('NOT_READY', 'The service is shutting down.')
        : new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
      writeError(res, err, req.headers, id, { 'x-request-id': id })
      line(res.statusCode, draining ? 'closing' : 'own', undefined, { err })
      return
    }
    // A client that leaves while the handshake is decided: nothing is asked of the upstream.
    let gone = false
    socket.once('close', () => (gone = true))
    opts
      .decide(rt, factsOf(req, target, id, rt.clock.now()), 'proxy')
      .then((decision: Decision) => {
        if (decision.notes.length > 0) writeNotes(logger, decision.notes, id)
        if (decision.action === 'answer') {
          execute(decision, NO_POOLS, req, res, () => line(decision.status, decision.label, decision.session?.sub, decision.error === undefined ? {} : { err: decision.error }))
          return
        }
        if (gone || socket.destroyed) {
          line(499, decision.label, decision.session?.sub, { clientClosed: true })
          return
        }
        connect(decision, req, socket, head, res, (status, extra) => line(status, decision.label, decision.session?.sub, extra))
      })
      .catch((err: unknown) => {
        logger.error({ err, path, reqId: id }, 'websocket upgrade failed')
        if (!res.headersSent) writeError(res, err, req.headers, id, { 'x-request-id': id })
        else socket.destroy()
      })
  }

  /** Ask the upstream; relay its answer; after a 101 (a WebSocket one), pipe. */
  function connect(decision: ForwardDecision, req: IncomingMessage, socket: Duplex, head: Buffer, res: ServerResponse, log: (status: number, extra?: Record<string, unknown>) => void): void {
    const route = decision.route
    const headers = { ...decision.upstream, host: route.upstreamHost }
    const client = route.upstreamOrigin.startsWith('https:') ? https : http
    const origin = new URL(route.upstreamOrigin)
    const upReq = client.request({
      protocol: origin.protocol,
      hostname: origin.hostname.replace(/^\[|\]$/g, ''),
      port: origin.port,
      method: req.method,
      path: route.upstreamBasePath + decision.target,
      headers,
      agent: false,
    })
    pending.add(upReq)
    let settled = false
    const settle = (): boolean => {
      if (settled) return false
      settled = true
      clearTimeout(bound)
      pending.delete(upReq)
      socket.off('close', onClientGone)
      return true
    }
    const fail = (err: PortcullisError, code: string): void => {
      if (!settle()) return
      upReq.destroy()
      writeError(res, err, req.headers, decision.respond['x-request-id'] as string, decision.respond)
      log(res.statusCode, { err, upstreamError: code })
    }
    const onClientGone = (): void => {
      if (!settle()) return
      upReq.destroy()
      log(499, { clientClosed: true })
    }
    socket.once('close', onClientGone)
    // The whole handshake, TCP connect included (a socket timeout would start only once connected).
    const bound = setTimeout(() => fail(new PortcullisError('UPSTREAM_TIMEOUT', 'The application did not answer in time.'), 'UND_ERR_HEADERS_TIMEOUT'), opts.timeoutMs)
    bound.unref()
    upReq.on('error', (err: Error & { code?: string }) =>
      fail(new PortcullisError('UPSTREAM_UNAVAILABLE', 'The application is not reachable right now.', { cause: err }), err.code ?? err.name),
    )
    upReq.on('response', (upRes) => {
      // No upgrade: the upstream's own answer, relayed as it came (hop-by-hop headers aside).
      if (!settle()) {
        upRes.destroy()
        return
      }
      res.writeHead(upRes.statusCode ?? 502, [...relayedHeaders(upRes.rawHeaders, false, decision.respond), ...ownPairs(decision, false)])
      upRes.pipe(res)
      upRes.on('error', () => socket.destroy())
      res.once('finish', () => log(upRes.statusCode ?? 502))
    })
    upReq.on('upgrade', (upRes, upSocket, upHead) => {
      // Only a WebSocket answer to this handshake is piped: the protocol asked for, and the accept
      // key derived from the client's (RFC 6455 §4.1). Anything else would be a raw tunnel.
      const key = String(req.headers['sec-websocket-key'])
      const isWebSocket = String(upRes.headers.upgrade ?? '').toLowerCase() === 'websocket' && upRes.headers['sec-websocket-accept'] === acceptKey(key)
      if (!isWebSocket) {
        upSocket.destroy()
        fail(new PortcullisError('UPSTREAM_UNAVAILABLE', 'The application is not reachable right now.'), 'NOT_A_WEBSOCKET_UPGRADE')
        return
      }
      if (!settle() || socket.destroyed) {
        upSocket.destroy()
        return
      }
      // The 101 as the upstream sent it, with our request id and any re-written session cookie.
      const lines = [`HTTP/1.1 101 ${upRes.statusMessage || 'Switching Protocols'}`]
      const pairs = [...relayedHeaders(upRes.rawHeaders, true, decision.respond), ...ownPairs(decision, true)]
      for (let i = 0; i < pairs.length; i += 2) lines.push(`${pairs[i]}: ${pairs[i + 1]}`)
      res.detachSocket(socket as never)
      socket.write(`${lines.join('\r\n')}\r\n\r\n`)
      log(101)
      // Bytes that came with either side's handshake are the first frames of each direction.
      const tunnel = new Tunnel(socket, upSocket, head, upHead, decision.sessionValue, decision.session?.id ?? null, decision.route, (t) => {
        open.delete(t)
        unwatch()
      })
      open.add(tunnel)
      watch()
      // A handshake that was under way when the drain began: closed like the others.
      if (draining) tunnel.end(CLOSE_GOING_AWAY, 'server shutting down')
    })
    upReq.end()
  }

  return {
    handle,
    sweep,
    drain() {
      draining = true
      for (const tunnel of open) tunnel.end(CLOSE_GOING_AWAY, 'server shutting down')
    },
    get size() {
      return open.size
    },
    cut() {
      for (const upReq of pending) upReq.destroy()
      for (const tunnel of open) tunnel.destroy()
    },
    close() {
      if (timer !== null) clearInterval(timer)
      timer = null
      unsubscribe?.()
      unsubscribe = null
    },
  }
}

/** Upgrades carry no body through a pool: `execute` only writes answers for them. */
const NO_POOLS = null as unknown as UpstreamPools

/**
 * A response written on an upgrade request's socket (refusals, and an upstream's non-101 answer): a
 * ServerResponse like any other, closing the connection when it is done.
 */
function responseOn(req: IncomingMessage, socket: Duplex): ServerResponse {
  const res = new ServerResponse(req)
  // assignSocket takes a net.Socket; an upgrade's socket is one (a TLSSocket under https).
  res.assignSocket(socket as never)
  res.shouldKeepAlive = false
  res.once('finish', () => {
    res.detachSocket(socket as never)
    socket.end()
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref()
  })
  socket.once('error', () => socket.destroy())
  return res
}

/** Hop-by-hop headers of an upstream's answer (RFC 9110 §7.6.1); kept on a 101, where they are the point. */
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'trailer'])

function relayedHeaders(raw: readonly string[], upgrade: boolean, own: ForwardDecision['respond']): string[] {
  // Names the upstream listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1), except on a 101.
  let listed: Set<string> | null = null
  if (!upgrade) {
    for (let i = 0; i < raw.length; i += 2) {
      if ((raw[i] as string).toLowerCase() === 'connection') {
        listed ??= new Set()
        for (const n of (raw[i + 1] as string).toLowerCase().split(',')) listed.add(n.trim())
      }
    }
  }
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const lower = name.toLowerCase()
    if (lower === 'x-request-id') continue
    if (!upgrade && (HOP_BY_HOP.has(lower) || listed?.has(lower) === true)) continue
    // Ours replace the upstream's (Set-Cookie aside: both are kept).
    if (lower !== 'set-cookie' && own[lower] !== undefined && !(upgrade && lower === 'cache-control')) continue
    out.push(name, raw[i + 1] as string)
  }
  return out
}

/** Our headers on a relayed answer; a 101 carries no body to cache, any other answer keeps `Cache-Control`. */
function ownPairs(decision: ForwardDecision, upgrade: boolean): string[] {
  const out: string[] = []
  for (const name in decision.respond) {
    if (upgrade && name === 'cache-control') continue
    const value = decision.respond[name] as string | readonly string[]
    if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  return out
}

/**
 * One relayed WebSocket: two sockets piped both ways with backpressure, and where each direction's
 * frames end, so that `end` can put a close frame at a boundary.
 */
class Tunnel {
  readonly sessionValue: string | null
  readonly sessionId: string | null
  /** The route the handshake was decided for (its rules are judged again by `stillLive`). */
  readonly route: ForwardDecision['route'] | null
  readonly #client: Duplex
  readonly #upstream: Duplex
  readonly #toUpstream = new FrameBoundaries()
  readonly #toClient = new FrameBoundaries()
  #closing: { code: number; reason: string } | null = null
  #clientDone = false
  #upstreamDone = false
  #gone = false
  readonly #onGone: (t: Tunnel) => void

  constructor(
    client: Duplex,
    upstream: Duplex,
    clientHead: Buffer,
    upstreamHead: Buffer,
    sessionValue: string | null,
    sessionId: string | null,
    route: ForwardDecision['route'] | null,
    onGone: (t: Tunnel) => void,
  ) {
    this.#client = client
    this.#upstream = upstream
    this.sessionValue = sessionValue
    this.sessionId = sessionId
    this.route = route
    this.#onGone = onGone
    for (const s of [client, upstream] as Array<Duplex & { setNoDelay?: (v: boolean) => void; setTimeout?: (ms: number) => void }>) {
      s.setNoDelay?.(true)
      s.setTimeout?.(0)
    }
    if (clientHead.length > 0) {
      this.#toUpstream.scan(clientHead, false)
      upstream.write(clientHead)
    }
    if (upstreamHead.length > 0) {
      this.#toClient.scan(upstreamHead, false)
      client.write(upstreamHead)
    }
    this.#pump(client, upstream, this.#toUpstream, true)
    this.#pump(upstream, client, this.#toClient, false)
    // A side that ends its half (FIN) ends ours towards the other; once both have, the tunnel is over.
    // The server's sockets are half-open, so this is not automatic.
    let ended = 0
    const onEnd = (other: Duplex) => (): void => {
      if (!other.writableEnded) other.end()
      if (++ended === 2) this.#destroy()
      else setTimeout(() => this.#destroy(), CLOSE_GRACE_MS).unref()
    }
    client.once('end', onEnd(upstream))
    upstream.once('end', onEnd(client))
    const gone = (): void => this.#destroy()
    client.once('close', gone)
    upstream.once('close', gone)
    client.on('error', gone)
    upstream.on('error', gone)
  }

  #pump(src: Duplex, dst: Duplex, frames: FrameBoundaries, towardsUpstream: boolean): void {
    src.on('data', (chunk: Buffer) => {
      if (this.#closing !== null) {
        if (towardsUpstream ? this.#upstreamDone : this.#clientDone) return
        // Closing: pass on the rest of the frame in flight, then the close frame, then nothing.
        const n = frames.scan(chunk, true)
        if (n > 0) dst.write(n === chunk.length ? chunk : chunk.subarray(0, n))
        if (frames.atBoundary) this.#sendClose(towardsUpstream)
        return
      }
      frames.scan(chunk, false)
      if (!dst.write(chunk)) src.pause()
    })
    dst.on('drain', () => src.resume())
  }

  /** Close with `code`: a close frame to each side at its next frame boundary, then the sockets end. */
  end(code: number, reason: string): void {
    if (this.#closing !== null || this.#gone) return
    this.#closing = { code, reason }
    // Whatever the peers still send is only read to find the boundary, never held.
    this.#client.resume()
    this.#upstream.resume()
    if (this.#toClient.atBoundary) this.#sendClose(false)
    if (this.#toUpstream.atBoundary) this.#sendClose(true)
    setTimeout(() => this.#destroy(), CLOSE_GRACE_MS).unref()
  }

  #sendClose(towardsUpstream: boolean): void {
    const closing = this.#closing as { code: number; reason: string }
    if (towardsUpstream) {
      if (this.#upstreamDone) return
      this.#upstreamDone = true
      // As the upstream's client: the close frame, and the TCP close is left to the server (RFC 6455
      // §7.1.1), which may still be finishing a frame of its own towards the client.
      this.#upstream.write(closeFrame(closing.code, closing.reason, true))
    } else {
      if (this.#clientDone) return
      this.#clientDone = true
      // As the client's server: the close frame, then our side of the connection closes.
      this.#client.end(closeFrame(closing.code, closing.reason, false))
    }
    if (this.#upstreamDone && this.#clientDone) this.#client.once('close', () => this.#destroy())
  }

  /** End at once, without a close frame (the shutdown bound has passed). */
  destroy(): void {
    this.#destroy()
  }

  #destroy(): void {
    if (this.#gone) return
    this.#gone = true
    this.#client.destroy()
    this.#upstream.destroy()
    this.#onGone(this)
  }
}

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
function acceptKey(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
}
