/**
 * Rate limits (issue #12 point 7): `{prefix}/start`, `{prefix}/callback` and
 * `{prefix}/backchannel-logout` are limited per client address, each with its own numbers; over the
 * limit a 429 `RATE_LIMITED` error page (HTML for a browser, JSON otherwise) with `Retry-After` in
 * seconds until the window frees. The address is the peer, or the client a trusted proxy's
 * `X-Forwarded-For` names (rightmost hop that is not a trusted proxy); an untrusted peer's
 * `X-Forwarded-For` is never read. Nothing else is limited (proxied requests, the redirect of a
 * protected page, the forward-auth checks, ops), on either lane. A reload applies new limits at once
 * and keeps the counters. Without `session.redis` the counters are the process's (the Redis-backed
 * ones are in test/system/rate-limit-redis.test.ts).
 *
 * Time is a fake clock (the runtime's): windows end when the test moves it, never by waiting.
 *
 * @see src/http/rate-limit.ts, clientAddress in src/http/facts.ts
 */
import { Agent } from 'node:http'
import t, { type Test } from 'tap'
import { startApp, startStack, type Stack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, request, type RequestOptions, type TestResponse } from '../helpers/http.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { createRuntime } from '../../src/runtime.ts'
import { configFor } from '../helpers/config.ts'

const alice = DEMO_USERS[0]!
const JSON_ACCEPT = { accept: 'application/json' }
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
/** A second loopback address to send from: the trusted proxy of these tests. */
const PROXY_ADDRESS = '127.0.0.2'

const LIMITS = {
  start: { max: 3, window: '1m' },
  callback: { max: 2, window: '1m' },
  backchannelLogout: { max: 4, window: '30s' },
}

interface Limited {
  stack: Stack
  clock: FakeClock
  url: string
}

async function limitedStack(t: Test, rateLimits: Record<string, unknown> = LIMITS, routes?: (upstream: string) => unknown[]): Promise<Limited> {
  const clock = fakeClock()
  const stack = await startStack(t, {
    overrides: (s) => ({ server: { trustedProxies: [PROXY_ADDRESS] }, rateLimits, ...(routes === undefined ? {} : { routes: routes(s.upstream) }) }),
    runtime: { clock },
  })
  return { stack, clock, url: stack.proxy.url }
}

/** An agent whose connections come from `address` (a loopback address other than 127.0.0.1). */
function from(t: Test, address: string): Agent {
  const agent = new Agent({ localAddress: address, keepAlive: false })
  t.teardown(() => agent.destroy())
  return agent
}

const start = (url: string, opts: RequestOptions = {}): Promise<TestResponse> => request(`${url}/oauth2/start?rd=%2Fpage`, opts)

/** A login began: a 302 to the provider with a transaction cookie. */
function began(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 302, `${what}: 302`)
  t.notOk(String(res.headers.location).includes('/oauth2/'), `${what}: to the provider`)
  t.ok(res.setCookies.some((l) => l.startsWith('_portcullis_tx')), `${what}: with a transaction cookie`)
}

/** A 429 of the error model: Retry-After between 1 and `windowSec`, no cookie, no stack. Returns Retry-After. */
function limited(t: Test, res: TestResponse, windowSec: number, what: string): number {
  t.equal(res.status, 429, `${what}: 429`)
  const after = Number(res.headers['retry-after'])
  t.ok(Number.isInteger(after) && after >= 1 && after <= windowSec, `${what}: Retry-After ${res.headers['retry-after']} is whole seconds in [1, ${windowSec}]`)
  t.equal(res.headers['set-cookie'], undefined, `${what}: no cookie set`)
  t.ok(typeof res.headers['x-request-id'] === 'string', `${what}: a request id`)
  t.notMatch(res.body, /\n\s+at |node_modules|Error:/, `${what}: no stack or internals`)
  return after
}

t.test('the 4th /start from one address is a 429 with Retry-After: HTML for a browser, JSON otherwise; the window frees', async (t) => {
  const { url, clock } = await limitedStack(t)
  for (let i = 1; i <= 3; i++) began(t, await start(url, { headers: NAVIGATION_HEADERS }), `start ${i}`)

  const page = await start(url, { headers: NAVIGATION_HEADERS })
  limited(t, page, 60, 'the 4th (browser)')
  t.match(String(page.headers['content-type']), /^text\/html/, 'a browser gets the error page')
  t.match(page.body, /Too many requests/, 'with its heading')
  t.match(page.body, /Try again in \d+ seconds?\./, 'and when to try again')
  t.equal(page.headers['cache-control'], 'no-store', 'never cached')

  const api = await start(url, { headers: JSON_ACCEPT })
  limited(t, api, 60, 'the 5th (API)')
  t.match(String(api.headers['content-type']), /^application\/json/, 'an API client gets JSON')
  const body = api.json<Record<string, unknown>>()
  t.same(Object.keys(body).sort(), ['error', 'message', 'requestId'], 'the error model\'s fields only')
  t.equal(body.error, 'RATE_LIMITED')
  t.equal(body.requestId, api.headers['x-request-id'])

  clock.advance(45_000)
  const later = limited(t, await start(url, { headers: JSON_ACCEPT }), 15, '45 s later, still limited')
  t.ok(later <= 15, 'Retry-After counts down with the window')
  clock.advance(15_000)
  began(t, await start(url, { headers: NAVIGATION_HEADERS }), 'once the window has passed')
})

t.test('every way to reach /start counts in the same bucket (HEAD, an unnormalized path), on both lanes', async (t) => {
  const { stack, url } = await limitedStack(t)
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  for (const [name, base] of [['fast lane', url], ['Fastify path', slow.url]] as const) {
    t.equal((await request(`${base}/oauth2/start?rd=%2F`, { method: 'HEAD' })).status, 302, `${name}: HEAD /oauth2/start`)
    t.equal((await request(`${base}/oauth2/%73tart?rd=%2F`)).status, 302, `${name}: /oauth2/%73tart`)
    t.equal((await request(`${base}/oauth2/x/../start?rd=%2F`)).status, 302, `${name}: /oauth2/x/../start`)
    limited(t, await request(`${base}/oauth2/start?rd=%2F`, { headers: JSON_ACCEPT }), 60, `${name}: the 4th`)
  }
})

t.test('the client address: an untrusted peer\'s X-Forwarded-For is ignored; a trusted proxy\'s names the client', async (t) => {
  const { url } = await limitedStack(t)
  // 127.0.0.1 is no trusted proxy: whatever X-Forwarded-For it sends, it is one client.
  for (let i = 1; i <= 3; i++) began(t, await start(url, { headers: { 'x-forwarded-for': `198.51.100.${i}` } }), `untrusted peer, X-Forwarded-For ${i}`)
  limited(t, await start(url, { headers: { 'x-forwarded-for': '198.51.100.99', ...JSON_ACCEPT } }), 60, 'untrusted peer, yet another X-Forwarded-For')

  const proxy = from(t, PROXY_ADDRESS)
  const via = (xff: string | undefined, headers: Record<string, string> = {}): Promise<TestResponse> =>
    start(url, { agent: proxy, headers: xff === undefined ? headers : { 'x-forwarded-for': xff, ...headers } })
  // Another client behind the trusted proxy: its own bucket, not 127.0.0.1's.
  began(t, await via('203.0.113.7'), 'a client behind the trusted proxy')
  // The client cannot pick its address: what it sent is left of what the proxy appended.
  began(t, await via('10.9.9.9, 203.0.113.7'), 'the same client, with a forged hop before its own')
  began(t, await via('203.0.113.7, 127.0.0.2'), 'the same client, through the proxy twice')
  limited(t, await via('1.2.3.4, 203.0.113.7', JSON_ACCEPT), 60, 'the same client\'s 4th, whatever it prepends')
  began(t, await via('203.0.113.8'), 'the next client behind the proxy')
  began(t, await via('2001:db8:1:2::1'), 'an IPv6 client behind the proxy')
  began(t, await via('2001:db8:1:2::2'), 'its /64 neighbour')
  began(t, await via('[2001:db8:1:2::3]:4433'), 'the same /64, with a port')
  limited(t, await via('2001:db8:1:2:ffff::9', JSON_ACCEPT), 60, 'a /64 is one client')
  // The proxy's own requests (no X-Forwarded-For) are its own address's.
  began(t, await via(undefined), 'the trusted proxy itself')
  began(t, await via('not-an-address'), 'a hop that is no address: the proxy that passed it on')
})

t.test('callback and back-channel logout are limited with their own numbers; a real login passes', async (t) => {
  const { url } = await limitedStack(t)
  const jar = new CookieJar()
  const done = await login({ proxyUrl: url, path: '/page', jar, user: alice })
  t.equal(new URL(done.finalLocation).pathname, '/page', 'a login (one start, one callback) goes through')
  const page = await request(`${url}/page`, { jar, headers: JSON_ACCEPT })
  t.equal(page.status, 200, 'and its session is served')

  // The callback's max is 2: the login used one.
  const cb = await request(`${url}/oauth2/callback?state=x&code=y`, { headers: JSON_ACCEPT })
  t.not(cb.status, 429, 'the 2nd callback is not limited (refused for its own reasons)')
  limited(t, await request(`${url}/oauth2/callback?state=x&code=y`, { headers: JSON_ACCEPT }), 60, 'the 3rd callback')
  began(t, await start(url), '/start counts apart from /callback')

  // Back-channel logout: 4 per 30 s; a bad token is a 400 until then.
  for (let i = 1; i <= 4; i++) {
    const res = await request(`${url}/oauth2/backchannel-logout`, { method: 'POST', headers: FORM, body: 'logout_token=x' })
    t.equal(res.status, 400, `back-channel logout ${i}: refused for its token`)
  }
  const over = await request(`${url}/oauth2/backchannel-logout`, { method: 'POST', headers: FORM, body: 'logout_token=x' })
  limited(t, over, 30, 'the 5th back-channel logout')
  t.equal(over.json<{ error: string }>().error, 'RATE_LIMITED', 'as JSON')
  const still = await request(`${url}/page`, { jar, headers: JSON_ACCEPT })
  t.equal(still.status, 200, 'the signed-in user is not affected')
})

t.test('nothing else is limited, on either lane: proxied requests, protected-page redirects, the checks, ops', async (t) => {
  const one = { max: 1, window: '1m' }
  const { stack, url } = await limitedStack(t, { start: one, callback: one, backchannelLogout: one }, (upstream) => [
    { match: { pathPrefix: '/public' }, upstream, public: true },
    { match: { pathPrefix: '/' }, upstream },
  ])
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  const jar = new CookieJar()
  // The login itself uses the one /start and the one /callback of 127.0.0.1 on the fast lane's app.
  await login({ proxyUrl: url, path: '/page', jar, user: alice })
  for (const [name, app] of [['fast lane', stack.proxy], ['Fastify path', slow]] as const) {
    const base = app.url
    const statuses = new Map<string, number[]>()
    const note = (what: string, res: TestResponse): void => {
      statuses.set(what, [...(statuses.get(what) ?? []), res.status])
    }
    for (let i = 0; i < 5; i++) {
      note('proxied, signed in', await request(`${base}/page`, { jar }))
      note('proxied, public', await request(`${base}/public/x`))
      note('protected page, no session (redirect to login)', await request(`${base}/page?n=${i}`, { headers: NAVIGATION_HEADERS }))
      note('protected page, API', await request(`${base}/api`, { headers: JSON_ACCEPT }))
      note('/healthz', await request(`${base}/healthz`))
      note('/readyz', await request(`${base}/readyz`))
      note('/oauth2/auth', await request(`${base}/oauth2/auth`, { jar }))
      note('/oauth2/verify', await request(`${base}/oauth2/verify`, { jar }))
      note('/oauth2/userinfo', await request(`${base}/oauth2/userinfo`, { jar }))
      note('/oauth2/sign_in', await request(`${base}/oauth2/sign_in?rd=%2F`))
    }
    for (const [what, list] of statuses) t.notOk(list.includes(429), `${name}: ${what} never 429 (${[...new Set(list)].join(',')})`)
    t.same(statuses.get('protected page, no session (redirect to login)'), [302, 302, 302, 302, 302], `${name}: every redirect to login is answered`)
  }
  // The redirects created no login and counted nothing: the Fastify path's app still has its one /start.
  began(t, await start(slow.url), 'the Fastify path\'s first /start after five redirects')
  limited(t, await start(slow.url, { headers: JSON_ACCEPT }), 60, 'and its second')
})

t.test('rateLimits.enabled: false limits nothing', async (t) => {
  const { url } = await limitedStack(t, { ...LIMITS, enabled: false })
  for (let i = 1; i <= 8; i++) began(t, await start(url), `start ${i}`)
  for (let i = 1; i <= 6; i++) t.not((await request(`${url}/oauth2/callback?state=x`, { headers: JSON_ACCEPT })).status, 429, `callback ${i}`)
})

t.test('a reload applies new limits at once and keeps the counters', async (t) => {
  const { stack, url, clock } = await limitedStack(t)
  for (let i = 1; i <= 3; i++) began(t, await start(url), `start ${i}`)
  limited(t, await start(url, { headers: JSON_ACCEPT }), 60, 'the 4th under max 3')

  let current = stack.proxy.runtime
  /** SIGHUP's way: a new runtime from the new config (the old one as `previous`), swapped in. */
  const swap = async (rateLimits: Record<string, unknown>): Promise<void> => {
    const { provider, clientId, clientSecret, upstream } = stack
    const config = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl: url, overrides: { server: { trustedProxies: [PROXY_ADDRESS] }, rateLimits } })
    const next = createRuntime(config, { clock, previous: current })
    t.teardown(() => next.close())
    await next.provider.whenReady()
    stack.proxy.app.swap(next)
    current = next
  }

  // max 5: the count (4, the refused request included) was kept, so one more is allowed.
  await swap({ ...LIMITS, start: { max: 5, window: '1m' } })
  began(t, await start(url), 'the 5th under max 5')
  limited(t, await start(url, { headers: JSON_ACCEPT }), 60, 'the 6th under max 5')

  // A shorter window cuts the running one: Retry-After is at most the new window.
  await swap({ ...LIMITS, start: { max: 5, window: '10s' } })
  limited(t, await start(url, { headers: JSON_ACCEPT }), 10, 'under a 10 s window')
  clock.advance(10_000)
  began(t, await start(url), 'once the 10 s window has passed')

  await swap({ ...LIMITS, enabled: false })
  for (let i = 1; i <= 6; i++) began(t, await start(url), `disabled by a reload, start ${i}`)
})

t.test('a 429 is logged as the request\'s access line with the endpoint and the client address', async (t) => {
  const { url, stack } = await limitedStack(t)
  const proxy = from(t, PROXY_ADDRESS)
  for (let i = 0; i < 4; i++) await start(url, { agent: proxy, headers: { 'x-forwarded-for': '203.0.113.50' } })
  const line = stack.proxy.logs.find((l) => l.msg === 'request' && l.status === 429) as Record<string, unknown> | undefined
  t.ok(line, 'an access line with status 429')
  t.equal(line?.route, 'auth:start')
  t.equal(line?.rateLimit, 'start')
  t.equal(line?.client, '203.0.113.50', 'the client address, not the proxy\'s')
  t.equal((line?.err as { code?: string } | undefined)?.code, 'RATE_LIMITED')
  t.equal(stack.proxy.app.rateLimits.limited.start, 1, 'counted in the stats')
  t.equal(stack.proxy.app.rateLimits.localFallbacks, 0, 'no Redis, no fallback')
})
