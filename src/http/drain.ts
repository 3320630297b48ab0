import type { Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'

/**
 * A clean drain, the way nginx and Envoy drain: the server stops accepting; connections that are
 * idle (a finished keep-alive exchange, or a browser's preconnect that never sent a request) are
 * closed at once; requests in flight finish, each with `Connection: close`, and their connection
 * closes after them. `cut()` ends whatever is still open when the bound runs out. WebSockets are not
 * tracked here: they leave this list at their upgrade (`http/tunnel.ts` closes them with 1001).
 */
export interface ConnectionTracker {
  /** Start draining: idle connections close now; busy ones after their response. */
  drain(): void
  /** Destroy every connection still open (the shutdown bound has passed); returns how many. */
  cut(): number
  /** Open connections (not counting WebSockets). */
  readonly size: number
  /** Requests received and not yet answered (metrics; counted when asked). */
  readonly inFlight: number
}

export function trackConnections(server: Server): ConnectionTracker {
  /** Each open connection and its responses in flight. */
  const sockets = new Map<Socket, Set<ServerResponse>>()
  let draining = false

  /** After its last response: end the connection once what was written is flushed. */
  const closeIfIdle = (socket: Socket): void => {
    const busy = sockets.get(socket)
    if (busy === undefined || busy.size > 0) return
    socket.end()
    setTimeout(() => socket.destroy(), 1_000).unref()
  }
  const onRequest = (req: { socket: Socket }, res: ServerResponse): void => {
    const socket = req.socket
    let busy = sockets.get(socket)
    if (busy === undefined) {
      busy = new Set()
      sockets.set(socket, busy)
    }
    busy.add(res)
    if (draining) res.shouldKeepAlive = false
    // 'close' comes after 'finish', and also when the response was cut off: one listener does.
    res.once('close', () => {
      busy.delete(res)
      if (draining) closeIfIdle(socket)
    })
  }

  const track = (socket: Socket): void => {
    sockets.set(socket, new Set())
    socket.once('close', () => sockets.delete(socket))
  }
  /**
   * An HTTPS listener: requests arrive on the TLS socket ('secureConnection'); until its handshake is
   * done a connection is only the TCP socket ('connection'), kept here by its peer's address and port
   * (unique while it is open) so that a drain closes it (it has no request) and a cut ends it.
   */
  const handshaking = new Map<string, Socket>()
  const peerOf = (socket: Socket): string => `${socket.remoteAddress ?? ''}|${socket.remotePort ?? ''}`
  if (server instanceof TlsServer) {
    server.on('connection', (raw: Socket) => {
      const peer = peerOf(raw)
      handshaking.set(peer, raw)
      raw.once('close', () => {
        if (handshaking.get(peer) === raw) handshaking.delete(peer)
      })
    })
    server.on('secureConnection', (socket: Socket) => {
      handshaking.delete(peerOf(socket))
      track(socket)
    })
  } else {
    server.on('connection', track)
  }
  server.prependListener('request', onRequest)
  server.prependListener('checkContinue', onRequest)
  // An upgraded connection belongs to its WebSocket from here on.
  server.prependListener('upgrade', (_req, socket: Socket) => sockets.delete(socket))

  return {
    drain() {
      draining = true
      for (const raw of handshaking.values()) raw.destroy()
      handshaking.clear()
      for (const [socket, busy] of sockets) {
        if (busy.size === 0) {
          socket.destroy()
          continue
        }
        // In flight: its answer says the connection closes (Node writes `Connection: close` and
        // ends the socket after it); an answer already under way ends its connection when done.
        for (const res of busy) if (!res.headersSent) res.shouldKeepAlive = false
      }
    },
    cut() {
      const n = sockets.size + handshaking.size
      for (const socket of sockets.keys()) socket.destroy()
      for (const raw of handshaking.values()) raw.destroy()
      return n
    },
    get size() {
      return sockets.size + handshaking.size
    },
    get inFlight() {
      let n = 0
      for (const busy of sockets.values()) n += busy.size
      return n
    },
  }
}
