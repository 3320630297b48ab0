/**
 * Bench reference (r): the least a Node proxy can do per request, to tell Node's own ceiling on this
 * core apart from Fastify's and Portcullis's. A plain `node:http` server that hands each request to an
 * undici Pool with `dispatch` and a raw handler (as Portcullis's relay does): no auth, no header
 * rewriting beyond Host and hop-by-hop, no logging. Not a product: it forwards blindly. Prints
 * `{"ready":true,"port":N}` once it listens.
 *
 *   node --import tsx bench/servers/raw-proxy.ts <upstream URL>
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Pool, type Dispatcher } from 'undici'

const upstream = process.argv[2]
if (upstream === undefined) {
  process.stderr.write('usage: raw-proxy.ts <upstream URL>\n')
  process.exit(2)
}
const pool = new Pool(upstream, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 })
const host = new URL(upstream).host
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding'])

class Handler implements Dispatcher.DispatchHandler {
  readonly res: http.ServerResponse
  constructor(res: http.ServerResponse) {
    this.res = res
  }
  onConnect(): void {}
  onHeaders(status: number, raw: Buffer[]): boolean {
    const out: string[] = []
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as Buffer).toString('latin1')
      if (!HOP.has(name.toLowerCase())) out.push(name, (raw[i + 1] as Buffer).toString('latin1'))
    }
    this.res.writeHead(status, out)
    return true
  }
  onData(chunk: Buffer): boolean {
    return this.res.write(chunk)
  }
  onComplete(): void {
    this.res.end()
  }
  onError(): void {
    if (!this.res.headersSent) this.res.writeHead(502)
    this.res.end()
  }
}

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, host }
  delete headers.connection
  pool.dispatch({ method: req.method as Dispatcher.HttpMethod, path: req.url ?? '/', headers: headers as Record<string, string | string[]>, body: null }, new Handler(res))
})
server.keepAliveTimeout = 120_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port })}\n`)
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
