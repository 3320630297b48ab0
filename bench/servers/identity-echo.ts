/**
 * Soak upstream (`npm run soak`): plain node:http, keep-alive; answers every request with a small JSON
 * body naming the identity Portcullis sent (`X-Auth-Request-User`), the path, and the number of body
 * bytes it read, so the soak can check that each answer was made for the user whose cookie was sent
 * and that a request body came through whole. Prints `{"ready":true,"port":N}` once it listens.
 *
 *   node --import tsx bench/servers/identity-echo.ts [port]
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

const server = http.createServer((req, res) => {
  let bytes = 0
  req.on('data', (chunk: Buffer) => (bytes += chunk.length))
  req.on('end', () => {
    const user = req.headers['x-auth-request-user']
    const body = Buffer.from(JSON.stringify({ user: typeof user === 'string' ? user : null, path: req.url ?? '', bytes }))
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
})
// Longer than Portcullis's pool idle timeout, so the server never closes a pooled connection mid-run.
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port })}\n`)
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
