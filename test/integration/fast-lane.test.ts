/**
 * The two lanes side by side (issue #8 point 1): the fast lane (src/http/fast-lane.ts) and the
 * Fastify path (src/http/fastify-lane.ts) carry out the pipeline's one decision. Each test sends the
 * same request to two apps on one runtime (same config, keys, caches and sessions): the usual one,
 * and one with the fast lane off, where every request takes the Fastify path. For every kind of
 * decision the upstream request, the answer and the access line must be the same.
 */
import t, { type Test } from 'tap'
import { createServer, get as httpGet } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { startApp, startStack, type RunningPortcullis, type Stack, type StackOptions } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { eventually } from '../helpers/wait.ts'
import type { EchoRecord } from '../helpers/upstream.ts'
import { RESEND_MS } from '../../src/http/pipeline.ts'

const alice = DEMO_USERS[0]!

interface Lanes {
  stack: Stack
  clock: FakeClock
  /** The usual app: the fast lane in front of Fastify. */
  fast: RunningPortcullis
  /** The same runtime with the fast lane off: every request takes the Fastify path. */
  slow: RunningPortcullis
}

async function lanes(t: Test, opts: StackOptions = {}): Promise<Lanes> {
  const clock = fakeClock()
  const stack = await startStack(t, { ...opts, runtime: { clock, ...opts.runtime } })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false, upstreamTimeoutMs: opts.runtime?.upstreamTimeoutMs })
  return { stack, clock, fast: stack.proxy, slow }
}

/** What the upstream saw of a request. */
function stable(record: EchoRecord | undefined): Record<string, unknown> {
  if (record === undefined) return { none: true }
  return { method: record.method, url: record.url, headers: record.headers, body: record.body }
}

/** An answer without what differs per moment. */
function answerOf(res: TestResponse): Record<string, unknown> {
  const { date: _date, ...headers } = res.headers
  return { status: res.status, headers, body: res.body }
}

/** The access line for `reqId`, without its time. */
async function accessLine(lane: RunningPortcullis, reqId: string): Promise<Record<string, unknown>> {
  const find = () => lane.logs.find((l) => l.msg === 'request' && l.reqId === reqId)
  await eventually(() => find() !== undefined)
  const { time: _time, durationMs, ...rest } = find() ?? { missing: reqId }
  return { ...rest, durationMs: typeof durationMs }
}

interface Compared {
  fast: TestResponse
  slow: TestResponse
}

let seq = 0
/**
 * Send one request to each lane, the Fastify path first (so a state it writes, such as a re-sealed
 * cookie, is what the fast lane then finds), and compare the three things.
 */
async function sideBySide(t: Test, l: Lanes, path: string, opts: { headers?: Record<string, string>; method?: string; body?: string; kind: string }): Promise<Compared> {
  const reqId = `side-${++seq}`
  const results: Array<{ res: TestResponse; record: EchoRecord | undefined; line: Record<string, unknown> }> = []
  for (const lane of [l.slow, l.fast]) {
    const before = l.stack.upstream.requests.length
    const res = await request(`${lane.url}${path}`, { method: opts.method, body: opts.body, headers: { ...opts.headers, 'x-request-id': reqId } })
    const record = l.stack.upstream.requests.length > before ? l.stack.upstream.requests.at(-1) : undefined
    results.push({ res, record, line: await accessLine(lane, reqId) })
  }
  const [slow, fast] = results as [(typeof results)[0], (typeof results)[0]]
  t.same(stable(fast.record), stable(slow.record), `${opts.kind}: the same upstream request`)
  t.same(answerOf(fast.res), answerOf(slow.res), `${opts.kind}: the same answer`)
  t.same(fast.line, slow.line, `${opts.kind}: the same access line`)
  return { fast: fast.res, slow: slow.res }
}

const API = { accept: 'application/json' }
const NAV = { accept: 'text/html', 'sec-fetch-mode': 'navigate' }

t.test('every kind of decision, carried out alike by both lanes', async (t) => {
  const l = await lanes(t, {
    overrides: ({ upstream }) => ({
      server: { trustedProxies: ['127.0.0.1'] },
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/' }, upstream },
        { match: { host: 'other.example', pathPrefix: '/only' }, upstream },
      ],
    }),
  })
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  const spoof = { 'x-auth-request-user': 'mallory', x_forwarded_user: 'mallory', 'x-custom': 'kept' }

  await sideBySide(t, l, '/public/page?q=1', { kind: 'forward, public route', headers: { ...API, ...spoof } })
  const fresh = await sideBySide(t, l, '/app/page?q=1&q=2', { kind: 'forward, session', headers: { ...API, ...spoof, cookie } })
  t.equal(fresh.fast.status, 200)
  t.match(JSON.parse(fresh.fast.body), { url: '/app/page?q=1&q=2', headers: { 'x-auth-request-user': alice.id, 'x-custom': 'kept' } })
  t.same(fresh.fast.setCookies, [], 'a fresh session: nothing written')
  await sideBySide(t, l, '/app/upload', { kind: 'forward, a body', method: 'POST', body: 'a=1&b=2', headers: { ...API, cookie, 'content-type': 'text/plain' } })

  l.clock.advance(61_000)
  const aged = await sideBySide(t, l, '/app/aged', { kind: 'forward, aged session (idle clock moves)', headers: { ...API, cookie } })
  t.equal(aged.fast.setCookies.length, 1, 'the fast lane sets the re-sealed cookie')
  t.equal(aged.fast.setCookies[0], aged.slow.setCookies[0], 'the one the Fastify path computed: sealed once for that value and window')
  t.equal(aged.fast.headers['cache-control'], 'private, no-store', 'an answer that carries a session cookie is not cacheable')

  await sideBySide(t, l, '/app/page', { kind: 'redirect (navigation without a session)', headers: NAV })
  await sideBySide(t, l, '/app/page', { kind: 'unauthenticated (API client)', headers: API })
  const bad = await sideBySide(t, l, '/app/page', { kind: 'unauthenticated, a bad cookie is cleared', headers: { ...API, cookie: '_portcullis=garbage; _portcullis_1=more' } })
  t.equal(bad.fast.setCookies.length, 2, 'both chunks cleared')
  await sideBySide(t, l, '/a%2Fb', { kind: 'rejected (path)', headers: API })
  await sideBySide(t, l, '/only/x', { kind: 'rejected (no route for the host)', headers: { ...API, host: 'elsewhere.example', cookie } })
  const check = { 'x-original-url': 'http://app.example/app/x' }
  const allowed = await sideBySide(t, l, '/oauth2/auth', { kind: 'check: allow', headers: { ...check, cookie } })
  t.equal(allowed.fast.status, 200)
  t.equal(allowed.fast.headers['x-auth-request-user'], alice.id)
  await sideBySide(t, l, '/oauth2/auth', { kind: 'check: unauthenticated', headers: check })
  await sideBySide(t, l, '/oauth2/auth', { kind: 'check: public original', headers: { 'x-original-url': 'http://app.example/public/x' } })
  const denied = await sideBySide(t, l, '/oauth2/auth', { kind: 'check: forbidden', headers: { 'x-original-url': 'http://app.example/a\\..\\public', cookie } })
  t.equal(denied.fast.status, 403)
})

t.test('unavailable: the provider is down and the token has expired, or it never connected', async (t) => {
  const l = await lanes(t)
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  await l.stack.provider.close()
  l.clock.advance(10 * 60_000)
  const down = await sideBySide(t, l, '/app/page', { kind: 'unavailable (refresh failed, token expired)', headers: { ...API, cookie } })
  t.equal(down.fast.status, 503)
  t.equal(down.fast.headers['retry-after'], '5')
  await sideBySide(t, l, '/app/page', { kind: 'unavailable, as a page', headers: { ...NAV, cookie } })

  const never = await lanes(t, { waitReady: false, overrides: { provider: { issuer: 'http://127.0.0.1:1' } } })
  const res = await sideBySide(t, never, '/app/page', { kind: 'unavailable (no provider yet, no session)', headers: NAV })
  t.equal(res.fast.status, 503)
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

t.test('large bodies stream both ways with backpressure, in both lanes', async (t) => {
  const l = await lanes(t)
  const { jar } = await login({ proxyUrl: l.fast.url })
  const body = 'x'.repeat(4 * 1024 * 1024)
  for (const lane of [l.fast, l.slow]) {
    const res = await request(`${lane.url}/upload`, { method: 'POST', jar, body, headers: { 'content-type': 'text/plain', accept: 'application/json' } })
    t.equal(res.status, 200)
    t.equal(l.stack.upstream.requests.at(-1)?.body.length, body.length, 'the upstream got every byte')
    t.equal(JSON.parse(res.body).body.length, body.length, 'and the client got its echo back')
    t.same(res.setCookies, [])
    const listed = await request(`${lane.url}/upload`, { method: 'POST', jar, body: 'a=1', headers: { 'content-type': 'text/plain', connection: 'content-length' } })
    t.equal(listed.status, 200)
    t.equal(l.stack.upstream.requests.at(-1)?.body, 'a=1', 'naming Content-Length in Connection does not make the body vanish')
  }
})

t.test('URL-rewrite headers never reach the upstream, in any spelling, in either lane', async (t) => {
  const l = await lanes(t)
  const { jar } = await login({ proxyUrl: l.fast.url })
  const spoof: Array<[string, string]> = [
    ['X-Original-URL', '/admin'],
    ['X_Original_URL', '/admin'],
    ['x_rewrite_url', '/admin'],
    ['X_Forwarded_Prefix', '/admin'],
    ['X-HTTP-Method-Override', 'DELETE'],
    ['x_http_method_override', 'DELETE'],
  ]
  for (const lane of [l.fast, l.slow]) {
    const res = await request(`${lane.url}/page`, { headers: [...spoof, ['cookie', jar.header(`${l.fast.url}/`)]] })
    t.equal(res.status, 200)
    const raw = l.stack.upstream.requests.at(-1)?.rawHeaders ?? []
    const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase().replaceAll('_', '-'))
    for (const [name] of spoof) t.notOk(names.includes(name.toLowerCase().replaceAll('_', '-')), `${lane === l.fast ? 'fast lane' : 'Fastify path'}: no ${name}`)
  }
})

t.test('upstream down: the same 502 page, a request id and an error line, in both lanes', async (t) => {
  // An application that is down: it takes each connection and drops it at once (a port kept bound,
  // so no other server in the test can be given it).
  const dropper = createNetServer((socket) => socket.destroy())
  await new Promise<void>((resolve) => dropper.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => dropper.close(() => resolve())))
  const downPort = (dropper.address() as AddressInfo).port
  const l = await lanes(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/down' }, upstream: `http://127.0.0.1:${downPort}` },
      ],
    }),
  })
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  const res = await sideBySide(t, l, '/down/x', { kind: 'upstream down', headers: { ...API, cookie } })
  t.equal(res.fast.status, 502)
  t.match(res.fast.json(), { error: 'UPSTREAM_UNAVAILABLE' })
  t.equal(res.fast.headers['retry-after'], '5')
  const line = l.fast.logs.find((x) => x.msg === 'request' && x.status === 502)
  t.match(line, { level: 50, status: 502, route: String, upstreamError: String, sub: alice.id })
  const html = await sideBySide(t, l, '/down/x', { kind: 'upstream down, as a page', headers: { accept: 'text/html', cookie } })
  t.match(html.fast.body, /The application is not available/)
  t.notMatch(html.fast.body, /ECONNREFUSED|at \S+\.(ts|js):\d+/, 'no internals')
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
  const l = await lanes(t, {
    overrides: ({ upstream }) => ({ routes: [{ match: { pathPrefix: '/' }, upstream }, { match: { pathPrefix: '/cut' }, upstream: cutUrl }] }),
  })
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  const line = (lane: RunningPortcullis, id: string) => lane.logs.find((x) => x.msg === 'request' && x.reqId === id)
  for (const [name, lane] of [['fast lane', l.fast], ['Fastify path', l.slow]] as const) {
    const id = `cut-${name.replace(' ', '-')}`
    const got = await rawGet(`${lane.url}/cut/x`, { cookie, 'x-request-id': id })
    t.equal(got.status, 200, `${name}: the status line was already sent`)
    t.ok(got.body.length < 1000 && got.broken, `${name}: the client sees a cut answer (${got.body.length} bytes), not a complete one`)
    t.ok(await eventually(() => line(lane, id) !== undefined), `${name}: access line written`)
    t.match(line(lane, id), { status: 200, upstreamError: String }, `${name}: with the upstream's error`)

    const gone = `gone-${name.replace(' ', '-')}`
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 200)
    await request(`${lane.url}/slow?ms=5000`, { signal: ac.signal, headers: { cookie, 'x-request-id': gone, accept: 'application/json' } }).catch(() => undefined)
    t.ok(await eventually(() => line(lane, gone) !== undefined), `${name}: access line for a client that left`)
    t.match(line(lane, gone), { status: 499, clientClosed: true }, `${name}: status 499, clientClosed`)
    t.notOk(line(lane, gone)?.upstreamError, `${name}: not blamed on the upstream`)
  }
})

t.test('a client that keeps its login cookie: the re-seal is computed once, and both lanes write it', async (t) => {
  const l = await lanes(t)
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  for (let window = 1; window <= 3; window++) {
    l.clock.advance(61_000)
    // The parallel requests of one page, all with the cookie from login, split over both lanes.
    const all = await Promise.all(
      Array.from({ length: 30 }, (_, i) => request(`${(i % 2 === 0 ? l.fast : l.slow).url}/asset/${i}`, { headers: { ...API, cookie } })),
    )
    t.same(new Set(all.map((r) => r.status)), new Set([200]), `window ${window}: all served`)
    const values = new Set(all.map((r) => r.setCookies.find((c) => c.startsWith('_portcullis='))?.split(';')[0]))
    t.equal(values.size, 1, `window ${window}: every answer carries the same new cookie (one seal for the value and window)`)
    t.notOk(values.has(undefined), `window ${window}: every answer carries it`)
    const checks = await Promise.all(Array.from({ length: 10 }, () => request(`${l.fast.url}/oauth2/auth`, { headers: { cookie } })))
    t.same(new Set(checks.map((r) => r.status)), new Set([200]), `window ${window}: the forward-auth check allows the kept cookie`)
    t.same(new Set(checks.map((r) => r.setCookies.find((c) => c.startsWith('_portcullis='))?.split(';')[0])), values, `window ${window}: and sets the same value`)
  }
})

t.test('the new cookie is handed over for a few seconds after it was written; the old one keeps working', async (t) => {
  const l = await lanes(t)
  const { jar } = await login({ proxyUrl: l.fast.url })
  const cookie = jar.header(`${l.fast.url}/`)
  const newValue = (r: TestResponse) => r.setCookies.find((c) => c.startsWith('_portcullis='))?.split(';')[0]
  l.clock.advance(61_000)
  const first = await request(`${l.fast.url}/a`, { headers: { ...API, cookie } })
  const written = newValue(first)
  t.ok(written, 'the request that moved the idle clock gets the new cookie')
  l.clock.advance(RESEND_MS - 1)
  for (const lane of [l.fast, l.slow]) t.equal(newValue(await request(`${lane.url}/b`, { headers: { ...API, cookie } })), written, 'so do the answers just after it')
  l.clock.advance(1)
  for (const lane of [l.fast, l.slow]) {
    const later = await request(`${lane.url}/c`, { headers: { ...API, cookie } })
    t.equal(later.status, 200, 'later, the old cookie is still served (the newest state)')
    t.same(later.setCookies, [], 'without 2 KB of Set-Cookie on every answer')
    t.match(JSON.parse(later.body), { headers: { 'x-auth-request-user': alice.id } })
  }
  l.clock.advance(60_000)
  const next = newValue(await request(`${l.slow.url}/d`, { headers: { ...API, cookie } }))
  t.ok(next !== undefined && next !== written, 'the next idle-clock move hands over the next value')
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
