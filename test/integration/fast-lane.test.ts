/**
 * The fast lane (src/http/fast-lane.ts, issue #4 point 6): proxied requests whose session needs
 * nothing written are answered before Fastify. It must be invisible: the same answers, headers, upstream
 * requests and access lines as the full pipeline, and it must never take a request that is Portcullis's
 * own. These tests put the two lanes side by side (an idle-clock move sends a request through the full
 * pipeline; the next one with the new cookie takes the fast lane) and probe the edges of what it takes.
 */
import t from 'tap'
import { createServer, get as httpGet } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { fakeClock } from '../helpers/clock.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { eventually } from '../helpers/wait.ts'
import type { EchoRecord } from '../helpers/upstream.ts'

const alice = DEMO_USERS[0]!

/** An upstream request's headers without the ones that differ per request. */
function stable(record: EchoRecord | undefined): Record<string, unknown> {
  const { 'x-request-id': _id, ...rest } = record?.headers ?? {}
  return rest
}

t.test('both lanes: the same upstream request, the same answer, the same access line', async (t) => {
  const clock = fakeClock()
  const { proxy, upstream } = await startStack(t, { runtime: { clock } })
  const { jar } = await login({ proxyUrl: proxy.url })
  clock.advance(61_000)
  const headers = { accept: 'application/json', 'x-request-id': 'req-slow', 'x-custom': 'kept', 'x-auth-request-user': 'mallory' }
  const slow = await request(`${proxy.url}/app/page?q=1&q=2`, { jar, headers }) // idle-clock move: full pipeline
  t.equal(slow.setCookies.length, 1, 'the first request re-sealed the cookie (full pipeline)')
  const slowRecord = upstream.requests.at(-1)
  const fast = await request(`${proxy.url}/app/page?q=1&q=2`, { jar, headers: { ...headers, 'x-request-id': 'req-fast' } })
  t.same(fast.setCookies, [], 'the second wrote nothing (fast lane)')
  const fastRecord = upstream.requests.at(-1)
  t.equal(fast.status, 200)
  t.equal(fastRecord?.url, '/app/page?q=1&q=2', 'the query as sent')
  t.equal(fastRecord?.headers['x-auth-request-user'], alice.id)
  t.equal(fastRecord?.headers['x-custom'], 'kept')
  t.equal(fastRecord?.headers['x-request-id'], 'req-fast', "the client's request id passes on")
  t.notMatch(String(fastRecord?.headers.cookie ?? ''), /_portcullis/, 'our cookie never reaches the upstream')
  t.same(stable(fastRecord), stable(slowRecord), 'the upstream saw the same headers from both lanes')
  t.equal(fast.headers['x-request-id'], 'req-fast')
  t.equal(slow.headers['cache-control'], 'private, no-store', 'a response carrying a re-sealed cookie is not cacheable')
  t.equal(fast.headers['cache-control'], undefined)
  const { 'x-request-id': _a, 'set-cookie': _b, 'cache-control': _c, date: _d, ...slowRest } = slow.headers
  const { 'x-request-id': _e, date: _f, ...fastRest } = fast.headers
  t.same(fastRest, slowRest, 'the same response headers apart from the cookie')
  t.same(JSON.parse(fast.body).headers['x-forwarded-for'], JSON.parse(slow.body).headers['x-forwarded-for'])

  const line = (id: string) => proxy.logs.find((l) => l.msg === 'request' && l.reqId === id)
  t.ok(await eventually(() => line('req-fast') !== undefined && line('req-slow') !== undefined), 'both access lines written')
  const pick = (l: Record<string, unknown> | undefined) => ({ method: l?.method, path: l?.path, route: l?.route, status: l?.status, sub: l?.sub, level: l?.level })
  t.same(pick(line('req-fast')), pick(line('req-slow')), 'the same access line fields')
  t.match(line('req-fast'), { path: '/app/page', status: 200, sub: alice.id, durationMs: Number })
  t.notMatch(proxy.logText.join('\n'), /q=1|_portcullis=/, 'no query and no cookie in the log')
})

t.test("with a valid session, Portcullis's own paths are never proxied", async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const before = upstream.requests.length
  t.equal((await request(`${proxy.url}/healthz`, { jar })).json<{ status: string }>().status, 'ok')
  t.equal((await request(`${proxy.url}/readyz`, { jar })).json<{ status: string }>().status, 'ready')
  t.equal((await request(`${proxy.url}/oauth2/userinfo`, { jar })).json<{ user: string }>().user, alice.id)
  t.equal((await request(`${proxy.url}/oauth2/nothing-here`, { jar })).status, 404)
  t.equal((await request(`${proxy.url}/oauth2/%75serinfo`, { jar })).json<{ user: string }>().user, alice.id, 'normalized before deciding')
  t.equal((await request(`${proxy.url}/x/../oauth2/userinfo`, { jar })).json<{ user: string }>().user, alice.id, 'dot segments too')
  t.equal((await request(`${proxy.url}/a%2Fb`, { jar })).status, 400, 'a path that cannot be normalized: refused by the pipeline')
  t.equal(upstream.requests.length, before, 'none of these reached the upstream')
  t.equal((await request(`${proxy.url}/oauth2x`, { jar })).status, 200, 'a sibling of the prefix is an app path')
  t.equal((await request(`${proxy.url}/OAUTH2/userinfo`, { jar })).status, 200, 'routing is case-sensitive in both lanes')
  t.equal(upstream.requests.length, before + 2)
  t.same(
    upstream.requests.slice(before).map((r) => r.url),
    ['/oauth2x', '/OAUTH2/userinfo'],
  )
})

t.test('large bodies stream both ways with backpressure', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const body = 'x'.repeat(4 * 1024 * 1024)
  const res = await request(`${proxy.url}/upload`, { method: 'POST', jar, body, headers: { 'content-type': 'text/plain', accept: 'application/json' } })
  t.equal(res.status, 200)
  t.equal(upstream.requests.at(-1)?.body.length, body.length, 'the upstream got every byte')
  t.equal(JSON.parse(res.body).body.length, body.length, 'and the client got its echo back')
  t.same(res.setCookies, [])
  const listed = await request(`${proxy.url}/upload`, { method: 'POST', jar, body: 'a=1', headers: { 'content-type': 'text/plain', connection: 'content-length' } })
  t.equal(listed.status, 200)
  t.equal(upstream.requests.at(-1)?.body, 'a=1', 'naming Content-Length in Connection does not make the body vanish')
})

t.test('URL-rewrite headers never reach the upstream, in any spelling, in either lane', async (t) => {
  const clock = fakeClock()
  const { proxy, upstream } = await startStack(t, { runtime: { clock } })
  const { jar } = await login({ proxyUrl: proxy.url })
  const spoof: Array<[string, string]> = [
    ['X-Original-URL', '/admin'],
    ['X_Original_URL', '/admin'],
    ['x_rewrite_url', '/admin'],
    ['X_Forwarded_Prefix', '/admin'],
    ['X-HTTP-Method-Override', 'DELETE'],
    ['x_http_method_override', 'DELETE'],
  ]
  for (const lane of ['full pipeline', 'fast lane']) {
    if (lane === 'full pipeline') clock.advance(61_000)
    const res = await request(`${proxy.url}/page`, { headers: [...spoof, ['cookie', jar.header(`${proxy.url}/`)]] })
    t.equal(res.status, 200)
    jar.update(`${proxy.url}/`, res.setCookies)
    const raw = upstream.requests.at(-1)?.rawHeaders ?? []
    const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase().replaceAll('_', '-'))
    for (const [name] of spoof) t.notOk(names.includes(name.toLowerCase().replaceAll('_', '-')), `${lane}: no ${name}`)
  }
})

t.test('upstream down in the fast lane: the same 502 page, a request id and an error line', async (t) => {
  // An application that is down: it takes each connection and drops it at once (a port kept bound,
  // so no other server in the test can be given it).
  const dropper = createNetServer((socket) => socket.destroy())
  await new Promise<void>((resolve) => dropper.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => dropper.close(() => resolve())))
  const downPort = (dropper.address() as AddressInfo).port
  const { proxy } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/down' }, upstream: `http://127.0.0.1:${downPort}` },
      ],
    }),
  })
  const { jar } = await login({ proxyUrl: proxy.url })
  const res = await request(`${proxy.url}/down/x`, { jar, headers: { accept: 'application/json', 'x-request-id': 'down-1' } })
  t.equal(res.status, 502)
  t.match(res.json(), { error: 'UPSTREAM_UNAVAILABLE', requestId: 'down-1' })
  t.equal(res.headers['x-request-id'], 'down-1')
  t.equal(res.headers['retry-after'], '5')
  const line = () => proxy.logs.find((l) => l.reqId === 'down-1' && l.msg === 'request')
  t.ok(await eventually(() => line() !== undefined))
  t.match(line(), { level: 50, status: 502, route: String, upstreamError: String, sub: alice.id })
  const html = await request(`${proxy.url}/down/x`, { jar, headers: { accept: 'text/html' } })
  t.equal(html.status, 502)
  t.match(html.body, /The application is not available/)
  t.notMatch(html.body, /ECONNREFUSED|at \S+\.(ts|js):\d+/, 'no internals')
})

t.test('an answer cut off mid-body, and a client that leaves: logged in both lanes', async (t) => {
  // A misbehaving application: headers and 10 of the 1,000 promised bytes, then the socket closes.
  const cutter = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '1000' })
    res.write('0123456789', () => setTimeout(() => res.socket?.destroy(), 20))
  })
  await new Promise<void>((resolve) => cutter.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => cutter.close(() => resolve())))
  const cutUrl = `http://127.0.0.1:${(cutter.address() as AddressInfo).port}`
  const clock = fakeClock()
  const { proxy } = await startStack(t, {
    runtime: { clock },
    overrides: ({ upstream }) => ({ routes: [{ match: { pathPrefix: '/' }, upstream }, { match: { pathPrefix: '/cut' }, upstream: cutUrl }] }),
  })
  const { jar } = await login({ proxyUrl: proxy.url })
  const line = (id: string) => proxy.logs.find((l) => l.msg === 'request' && l.reqId === id)
  for (const lane of ['full pipeline', 'fast lane']) {
    if (lane === 'full pipeline') clock.advance(61_000) // the idle-clock move takes the full pipeline
    const id = `cut-${lane.replace(' ', '-')}`
    const got = await rawGet(`${proxy.url}/cut/x`, { cookie: jar.header(`${proxy.url}/`), 'x-request-id': id })
    t.equal(got.status, 200, `${lane}: the status line was already sent`)
    t.ok(got.body.length < 1000 && got.broken, `${lane}: the client sees a cut answer (${got.body.length} bytes), not a complete one`)
    t.ok(await eventually(() => line(id) !== undefined), `${lane}: access line written`)
    t.match(line(id), { status: 200, upstreamError: String }, `${lane}: with the upstream's error`)
    if (lane === 'full pipeline') jar.update(`${proxy.url}/`, got.setCookie)
  }
  // Fast lane first: the full pipeline's re-sealed cookie never reaches a client that left.
  for (const lane of ['fast lane', 'full pipeline']) {
    if (lane === 'full pipeline') clock.advance(61_000)
    const id = `gone-${lane.replace(' ', '-')}`
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 200)
    await request(`${proxy.url}/slow?ms=5000`, { jar, signal: ac.signal, headers: { 'x-request-id': id, accept: 'application/json' } }).catch(() => undefined)
    t.ok(await eventually(() => line(id) !== undefined), `${lane}: access line for a client that left`)
    t.match(line(id), { status: 499, clientClosed: true }, `${lane}: status 499, clientClosed`)
    t.notOk(line(id)?.upstreamError, `${lane}: not blamed on the upstream`)
  }
})

/** GET with node:http, tolerating a response that breaks off: status, the bytes that came, whether it broke. */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; body: string; broken: boolean; setCookie: string[] }> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { headers }, (res) => {
      let body = ''
      let broken = false
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('aborted', () => (broken = true))
      res.on('error', () => (broken = true))
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, broken: broken || !res.complete, setCookie: res.headers['set-cookie'] ?? [] }))
    })
    req.on('error', reject)
  })
}
