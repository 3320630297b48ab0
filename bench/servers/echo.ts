/**
 * Bench echo upstream: plain node:http, one small JSON body for every request, keep-alive. Prints one
 * JSON line `{"ready":true,"port":N}` on stdout once it listens (bench/lib/procs.ts waits for it).
 *
 *   node bench/servers/echo.ts [port]
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

const BODY = Buffer.from(JSON.stringify({ ok: true, service: 'echo', message: 'hello from the bench upstream' }))
const HEADERS = { 'content-type': 'application/json', 'content-length': String(BODY.length) }

const server = http.createServer((req, res) => {
  // Drain a request body (none in the bench) so the connection stays reusable.
  if (req.method !== 'GET' && req.method !== 'HEAD') req.resume()
  res.writeHead(200, HEADERS)
  res.end(req.method === 'HEAD' ? undefined : BODY)
})
// Longer than any client pool's idle timeout, so the server never closes a pooled connection under
// a proxy mid-run (Node's default is 5 s).
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port })}\n`)
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
