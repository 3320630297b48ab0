/**
 * Regressions for the findings of the review of issue #2 (each subtest names the finding): requests
 * that reached a protected app without a session, client headers that could steer the app, uploads
 * that failed, and errors that escaped the error model.
 */
import { connect } from 'node:net'
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { compileRoutes } from '../../src/policy/routes.ts'
import { routeSchema } from '../../src/config/schema.ts'

function raw(port: number, payload: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => socket.destroy(), 5_000)
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      if (/\r\n\r\n/.test(Buffer.concat(chunks).toString('latin1'))) setTimeout(() => socket.destroy(), 100)
    })
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)))
    socket.on('close', () => {
      clearTimeout(timer)
      const text = Buffer.concat(chunks).toString('latin1')
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text })
    })
    socket.write(payload, 'latin1')
  })
}

t.test('`;` path parameters cannot move a request from a protected route to a public one', async (t) => {
  const { proxy, upstream } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream, public: true },
        { match: { pathPrefix: '/admin' }, upstream },
      ],
    }),
  })
  const port = Number(new URL(proxy.url).port)
  for (const path of ['/admin;x', '/admin;/x', '/admin%3Bx', '/admin%3b/x', '/admin;jsessionid=1/y']) {
    const res = await raw(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n`)
    t.equal(res.status, 401, `${path} is the protected /admin route`)
  }
  t.equal(upstream.requests.length, 0, 'nothing reached the app')
  const { jar } = await login({ proxyUrl: proxy.url, path: '/admin' })
  const ok = await request(`${proxy.url}/admin;jsessionid=1`, { jar, headers: { accept: 'application/json' } })
  t.equal(ok.status, 200, 'with a session, matrix parameters still reach the app')
  t.equal(upstream.requests.at(-1)?.url, '/admin;jsessionid=1', 'as sent')
})

t.test('odd Host headers do not fall through to a host-less route', async (t) => {
  const table = compileRoutes(
    routeSchema.array().parse([
      { match: { host: 'app.example.com', pathPrefix: '/' }, upstream: 'http://127.0.0.1:1' },
      { match: { host: '', pathPrefix: '/' }, upstream: 'http://127.0.0.1:2', public: true },
    ]),
  )
  for (const host of ['app.example.com', 'APP.example.com', 'app.example.com.', 'app.example.com.:8080', 'app.example.com:8080']) {
    t.equal(table.match(host, '/x')?.public, false, `${host} → the app's protected route`)
  }
  for (const host of ['app.example.com:', 'app.example.com:80:80', 'app.example.com x', 'app.example.com/']) {
    t.equal(table.match(host, '/x'), null, `${JSON.stringify(host)} → no route`)
  }
  t.equal(table.match('other.example', '/x')?.public, true, 'another host → the host-less route')
})

t.test('forwarding, rewrite and hop-by-hop headers from a client never reach the app', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const spoof: Record<string, string> = {
    forwarded: 'for=6.6.6.6;host=evil.example',
    'x-forwarded-uri': '/admin',
    'x-forwarded-prefix': '/evil',
    'x-forwarded-port': '443',
    'x-forwarded-scheme': 'https',
    'x-forwarded-ssl': 'on',
    'x-original-url': '/admin',
    'x-rewrite-url': '/admin',
    'x-original-host': 'evil.example',
    'x-host': 'evil.example',
    'x-real-ip': '6.6.6.6',
    'x-http-method-override': 'DELETE',
    'proxy-authorization': 'Basic eDp4',
    'keep-alive': 'timeout=5',
  }
  const res = await request(`${proxy.url}/x`, { jar, headers: { accept: 'application/json', ...spoof } })
  t.equal(res.status, 200)
  const seen = upstream.requests.at(-1)?.headers ?? {}
  for (const name of Object.keys(spoof)) t.equal(seen[name], undefined, `${name} not forwarded`)
  t.equal(seen['x-forwarded-host'], new URL(proxy.url).host, 'X-Forwarded-Host is ours')
})

t.test('uploads with Expect: 100-continue reach the app', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const body = 'x'.repeat(200_000)
  const res = await request(`${proxy.url}/upload`, { method: 'POST', jar, headers: { accept: 'application/json', expect: '100-continue', 'content-type': 'application/octet-stream' }, body })
  t.equal(res.status, 200)
  t.equal(upstream.requests.at(-1)?.body.length, body.length, 'the whole body arrived')
  t.equal(upstream.requests.at(-1)?.headers.expect, undefined)
})

t.test('a response that re-sets the session cookie is not cacheable by shared caches', async (t) => {
  const { clock } = await import('../helpers/clock.ts').then((m) => ({ clock: m.fakeClock() }))
  const { proxy } = await startStack(t, { runtime: { clock } })
  const { jar } = await login({ proxyUrl: proxy.url })
  clock.advance(90_000) // past the once-a-minute idle renewal, inside the token lifetime
  const res = await request(`${proxy.url}/cacheable`, { jar, headers: { accept: 'application/json' } })
  t.equal(res.status, 200)
  t.ok(res.setCookies.some((c) => c.startsWith('_portcullis=')), 'the cookie was re-sealed')
  t.equal(res.headers['cache-control'], 'private, no-store')
  const plain = await request(`${proxy.url}/cacheable`, { jar, headers: { accept: 'application/json' } })
  t.equal(plain.setCookies.length, 0)
  t.not(plain.headers['cache-control'], 'private, no-store', "without a cookie the app's caching is untouched")
})

t.test('errors from the HTTP parser and from Fastify use the error model', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const port = Number(new URL(proxy.url).port)
  const bad = await request(`${proxy.url}/admin%c0%af`, { headers: { accept: 'application/json' } })
  t.equal(bad.status, 400)
  t.match(bad.json(), { error: 'PATH_REJECTED', requestId: String })
  t.ok(bad.headers['x-request-id'], 'with a request id')
  t.notMatch(bad.body, /admin/, 'the path is not echoed')
  const smuggle = await raw(port, 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
  t.equal(smuggle.status, 400)
  t.match(smuggle.text, /"error":"REQUEST_REJECTED"/)
  t.match(smuggle.text, /x-request-id: [0-9a-f-]{36}/)
  t.ok(proxy.logs.some((l) => l.msg === 'request refused by the HTTP parser'), 'logged')
  const trace = await request(`${proxy.url}/x`, { method: 'TRACE', headers: { accept: 'application/json' } })
  t.equal(trace.status, 405)
  t.match(trace.headers.allow, /GET/)
  t.equal(upstream.requests.length, 0)
})

t.test('userinfo does not expose the provider session id', async (t) => {
  const { proxy } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const res = await request(`${proxy.url}/oauth2/userinfo`, { jar })
  t.equal(res.status, 200)
  t.equal((res.json<{ claims: Record<string, unknown> }>().claims).sid, undefined)
})
