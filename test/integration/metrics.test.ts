/**
 * `/metrics` (issue #12 point 5, and the provider's state of point 6): a real provider, a real login,
 * and the Prometheus text read back from the metrics listener (`metrics.listen: 127.0.0.1:0`), parsed
 * and compared step by step: each request moves exactly the counters it should.
 *
 * @see src/metrics.ts, src/http/metrics-listener.ts, src/http/observe.ts
 */
import { randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { pino } from 'pino'
import { reserveHeldPort, reservePort, startPortcullis, startStack, type Stack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { CookieJar, request } from '../helpers/http.ts'
import { configFor } from '../helpers/config.ts'
import { fakeClock } from '../helpers/clock.ts'
import { DEMO_USERS, PROVIDER_ROUTES, startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { waitUntil } from '../helpers/wait.ts'
import { startBadProvider } from '../helpers/bad-provider.ts'
import { publicOnlyConfig, startPortcullisProcess } from '../helpers/process.ts'
import { BACKCHANNEL_LOGOUT_EVENT } from '../../src/oidc/logout.ts'
import { createRuntime } from '../../src/runtime.ts'
import { createMetrics } from '../../src/metrics.ts'
import { runtimeDeps } from '../../src/main.ts'

const API = { accept: 'application/json' }
const ROUTE = 'routes[0]'
/** Inside the default refreshAhead (30 s) of the provider's 300 s access tokens. */
const INTO_REFRESH_WINDOW = 280_000
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** One scrape: every sample by `name{label="value",...}` (labels sorted), and the raw text. */
interface Scrape {
  readonly text: string
  get(name: string, labels?: Record<string, string>): number
  has(name: string, labels?: Record<string, string>): boolean
}

function keyOf(name: string, labels: Record<string, string>): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`
}

function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not an exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = JSON.parse(`"${l[2]}"`) as string
    out.set(keyOf(m[1] as string, labels), Number(m[3]))
  }
  return out
}

async function scrape(t: Test, metricsUrl: string | null): Promise<Scrape> {
  if (metricsUrl === null) throw new Error('no metrics listener')
  const res = await request(`${metricsUrl}/metrics`)
  t.equal(res.status, 200, 'GET /metrics: 200')
  const samples = parseExposition(res.body)
  return {
    text: res.body,
    get: (name, labels = {}) => samples.get(keyOf(name, labels)) ?? 0,
    has: (name, labels = {}) => samples.has(keyOf(name, labels)),
  }
}

/** What moved between two scrapes, for the named samples. */
function delta(before: Scrape, after: Scrape, name: string, labels: Record<string, string> = {}): number {
  return after.get(name, labels) - before.get(name, labels)
}

function withMetrics(over: Record<string, unknown> = {}) {
  return { metrics: { listen: '127.0.0.1:0' }, session: { store: 'memory' }, ...over }
}

async function metricsStack(t: Test): Promise<Stack & { clock: ReturnType<typeof fakeClock> }> {
  const clock = fakeClock()
  const stack = await startStack(t, { overrides: withMetrics(), runtime: { clock } })
  return { ...stack, clock }
}

t.test('each step moves exactly its counters: login, proxied, refused, refresh, back-channel logout, failed callbacks', async (t) => {
  const { proxy, upstream, provider, clock } = await metricsStack(t)
  t.match(proxy.metricsUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'the metrics listener is bound on its own port')
  t.not(new URL(String(proxy.metricsUrl)).port, new URL(proxy.url).port, 'not the proxy listener')

  const start = await scrape(t, proxy.metricsUrl)
  t.equal(start.get('portcullis_provider_up'), 1, 'provider up once connected')
  t.equal(start.get('portcullis_build_info', { version: VERSION }), 1, 'build info names the version')
  t.ok(start.get('portcullis_provider_requests_total', { endpoint: 'discovery', result: 'ok' }) >= 1, 'the discovery fetch was counted')
  t.ok(start.get('portcullis_provider_requests_total', { endpoint: 'jwks', result: 'ok' }) >= 1, 'the JWKS fetch was counted')
  t.ok(start.get('portcullis_provider_request_duration_seconds_count', { endpoint: 'jwks' }) >= 1, 'and timed')
  t.equal(start.get('portcullis_sessions', { store: 'memory' }), 0, 'no session yet')
  t.ok(start.has('process_cpu_user_seconds_total') && /^nodejs_heap_size_total_bytes /m.test(start.text), "prom-client's default metrics")
  t.equal(start.get('portcullis_requests_in_flight'), 0, 'nothing in flight')

  // A login: the navigation is redirected (a decision), start, provider, callback.
  const { jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  const afterLogin = await scrape(t, proxy.metricsUrl)
  t.equal(delta(start, afterLogin, 'portcullis_auth_decisions_total', { result: 'login', mode: 'proxy' }), 1, 'one login decision')
  t.equal(delta(start, afterLogin, 'portcullis_logins_total', { stage: 'started' }), 1, 'one login started')
  t.equal(delta(start, afterLogin, 'portcullis_logins_total', { stage: 'completed' }), 1, 'one login completed')
  t.equal(delta(start, afterLogin, 'portcullis_requests_total', { route: ROUTE, code: '302' }), 1, 'the redirect, by route and code')
  t.equal(delta(start, afterLogin, 'portcullis_requests_total', { route: 'auth:start', code: '302' }), 1, 'the start')
  t.equal(delta(start, afterLogin, 'portcullis_requests_total', { route: 'auth:callback', code: '302' }), 1, 'the callback')
  t.equal(delta(start, afterLogin, 'portcullis_provider_requests_total', { endpoint: 'token', result: 'ok' }), 1, 'one code exchange at the token endpoint')
  t.equal(delta(start, afterLogin, 'portcullis_provider_request_duration_seconds_count', { endpoint: 'token' }), 1, 'timed')
  t.equal(afterLogin.get('portcullis_sessions', { store: 'memory' }), 1, 'the memory store holds one session')
  t.equal(delta(start, afterLogin, 'portcullis_request_duration_seconds_count', { route: 'auth:callback' }), 1, 'the callback timed')

  // A proxied request with the session.
  const ok = await request(`${proxy.url}/app/data`, { jar, headers: API })
  t.equal(ok.status, 200)
  const afterProxied = await scrape(t, proxy.metricsUrl)
  t.equal(delta(afterLogin, afterProxied, 'portcullis_requests_total', { route: ROUTE, code: '200' }), 1, 'one 200 on the route')
  t.equal(delta(afterLogin, afterProxied, 'portcullis_auth_decisions_total', { result: 'allow', mode: 'proxy' }), 1, 'one allow')
  t.equal(delta(afterLogin, afterProxied, 'portcullis_upstream_response_seconds_count', { route: ROUTE }), 1, 'one upstream answer timed')
  t.equal(delta(afterLogin, afterProxied, 'portcullis_request_duration_seconds_count', { route: ROUTE }), 1, 'one request timed')
  t.ok(delta(afterLogin, afterProxied, 'portcullis_request_duration_seconds_sum', { route: ROUTE }) > 0, 'with its time')
  t.equal(delta(afterLogin, afterProxied, 'portcullis_auth_decisions_total', { result: 'login', mode: 'proxy' }), 0, 'no other decision moved')

  // Refused: an API call without a session (401), a forward-auth check without one (401, mode check).
  const refused = await request(`${proxy.url}/app/data`, { headers: API })
  t.equal(refused.status, 401)
  const check = await request(`${proxy.url}/oauth2/auth`, { headers: API })
  t.equal(check.status, 401)
  const afterRefused = await scrape(t, proxy.metricsUrl)
  t.equal(delta(afterProxied, afterRefused, 'portcullis_requests_total', { route: ROUTE, code: '401' }), 1, 'one 401 on the route')
  t.equal(delta(afterProxied, afterRefused, 'portcullis_auth_decisions_total', { result: 'unauthenticated', mode: 'proxy' }), 1, 'one unauthenticated (proxy)')
  t.equal(delta(afterProxied, afterRefused, 'portcullis_auth_decisions_total', { result: 'unauthenticated', mode: 'check' }), 1, 'one unauthenticated (check)')
  t.equal(delta(afterProxied, afterRefused, 'portcullis_requests_total', { route: 'auth:check', code: '401' }), 1, 'the check by its label')
  t.equal(delta(afterProxied, afterRefused, 'portcullis_upstream_response_seconds_count', { route: ROUTE }), 0, 'nothing went upstream')

  // A back-channel logout: alice signs out at the provider, which posts a logout token; then a forged one.
  const endSession = `${provider.issuer}${PROVIDER_ROUTES.end_session}`
  const page = await request(endSession, { headers: NAVIGATION_HEADERS, jar })
  t.ok(parseForm(page.body, endSession), "the provider's logout confirmation")
  await submitForm({ url: endSession, body: page.body }, jar)
  await waitUntil(async () => (await scrape(t, proxy.metricsUrl)).get('portcullis_backchannel_logouts_total', { outcome: 'accepted' }) === 1, 'the logout token', 10_000)
  const forged = await request(`${proxy.url}/oauth2/backchannel-logout`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'logout_token=not.a.token',
  })
  t.equal(forged.status, 400)
  const afterLogout = await scrape(t, proxy.metricsUrl)
  t.equal(afterLogout.get('portcullis_backchannel_logouts_total', { outcome: 'accepted' }), 1, 'one accepted')
  t.equal(delta(afterRefused, afterLogout, 'portcullis_backchannel_logouts_total', { outcome: 'invalid' }), 1, 'one invalid')
  t.equal(afterLogout.get('portcullis_backchannel_logouts_total', { outcome: 'replay' }), 0, 'no replay')

  // A refresh, with bob (alice's session has ended): his access token is due.
  const bob = await login({ proxyUrl: proxy.url, path: '/app', user: DEMO_USERS[1] })
  const beforeRefresh = await scrape(t, proxy.metricsUrl)
  clock.advance(INTO_REFRESH_WINDOW)
  const refreshed = await request(`${proxy.url}/app/data`, { jar: bob.jar, headers: API })
  t.equal(refreshed.status, 200)
  const afterRefresh = await scrape(t, proxy.metricsUrl)
  t.equal(delta(beforeRefresh, afterRefresh, 'portcullis_refreshes_total', { outcome: 'ok' }), 1, 'one refresh, ok')
  t.equal(delta(beforeRefresh, afterRefresh, 'portcullis_refreshes_total', { outcome: 'failed' }), 0, 'none failed')
  t.equal(delta(beforeRefresh, afterRefresh, 'portcullis_provider_requests_total', { endpoint: 'token', result: 'ok' }), 1, 'one refresh grant at the token endpoint')

  // Failed callbacks: an expired or foreign login (no transaction), the provider's error, a tampered state.
  const noState = await request(`${proxy.url}/oauth2/callback?code=abc`, { headers: NAVIGATION_HEADERS })
  t.equal(noState.status, 400)
  const denied = await request(`${proxy.url}/oauth2/callback?error=access_denied&state=xyz`, { headers: NAVIGATION_HEADERS })
  t.equal(denied.status, 403)
  const pending = await authorizeUntilCallback({ proxyUrl: proxy.url, path: '/app' })
  const tampered = new URL(pending.callbackUrl)
  tampered.searchParams.set('state', 'not-the-state-of-this-login')
  const bad = await request(tampered.href, { jar: pending.jar, headers: NAVIGATION_HEADERS })
  t.equal(bad.status, 400)
  const afterFailures = await scrape(t, proxy.metricsUrl)
  t.equal(delta(afterRefresh, afterFailures, 'portcullis_login_failures_total', { reason: 'LOGIN_FAILED' }), 2, 'two LOGIN_FAILED')
  t.equal(delta(afterRefresh, afterFailures, 'portcullis_login_failures_total', { reason: 'LOGIN_DENIED' }), 1, 'one LOGIN_DENIED')
  t.equal(delta(afterRefresh, afterFailures, 'portcullis_logins_total', { stage: 'started' }), 1, 'the tampered login had started')
  t.equal(delta(afterRefresh, afterFailures, 'portcullis_logins_total', { stage: 'completed' }), 0, 'none completed')
  t.equal(delta(afterRefresh, afterFailures, 'portcullis_provider_requests_total', { endpoint: 'token', result: 'ok' }), 0, 'no code was exchanged')

  // The proxy's own listener does not serve metrics: /metrics there is a proxied path like any other.
  const relayed = await request(`${proxy.url}/metrics`, { headers: API })
  t.equal(relayed.status, 401, 'on the proxy listener, /metrics is a protected path (no session here)')
  t.notMatch(relayed.body, /portcullis_/, 'no metrics in it')
  t.notOk(upstream.requests.some((r) => r.url === '/metrics'), 'and nothing reached the upstream')
  t.notMatch(afterFailures.text, /\/app\/data|abc|xyz/, 'no raw path or query value becomes a label')
})

t.test('the metrics listener serves GET and HEAD /metrics only', async (t) => {
  const { proxy } = await metricsStack(t)
  const url = String(proxy.metricsUrl)
  const get = await request(`${url}/metrics`)
  t.match(String(get.headers['content-type']), /^text\/plain; version=0\.0\.4/, 'the Prometheus text format')
  t.equal(get.headers['cache-control'], 'no-store')
  const head = await request(`${url}/metrics`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.body, '')
  t.equal((await request(`${url}/`)).status, 404, 'another path: 404')
  t.equal((await request(`${url}/metrics/x`)).status, 404)
  const post = await request(`${url}/metrics`, { method: 'POST', body: 'x' })
  t.equal(post.status, 405)
  t.equal(post.headers.allow, 'GET, HEAD')
  t.equal((await request(`${url}/metrics?name[]=x`)).status, 200, 'a query is ignored')
})

t.test('/metrics is never served on the proxy listener: a 404 where no route takes it', async (t) => {
  const stack = await startStack(t, { overrides: withMetrics({ routes: [{ match: { pathPrefix: '/app' }, upstream: 'http://127.0.0.1:9' }] }) })
  const res = await request(`${stack.proxy.url}/metrics`, { headers: API })
  t.equal(res.status, 404)
  t.notMatch(res.body, /portcullis_|# TYPE/)
  const m = await scrape(t, stack.proxy.metricsUrl)
  t.equal(m.get('portcullis_requests_total', { route: 'no-route', code: '404' }), 1, 'counted as no-route, not by its path')
  t.equal(m.get('portcullis_auth_decisions_total', { result: 'rejected', mode: 'proxy' }), 1)
})

t.test('metrics.listen "" (the default): no listener', async (t) => {
  const stack = await startStack(t)
  t.equal(stack.config.metrics.listen, '')
  t.equal(stack.proxy.metricsUrl, null, 'nothing listens')
  t.equal(await stack.proxy.app.listenMetrics(), null, 'and asking again starts nothing')
  // The instruments still count (a later scrape through the registry sees them).
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/app' })
  t.equal((await request(`${stack.proxy.url}/app`, { jar, headers: API })).status, 200)
  t.match(await stack.proxy.app.metrics.registry.metrics(), /portcullis_requests_total\{route="routes\[0\]",code="200"\} 1/)
})

t.test('counters survive a reload: the app keeps its instruments when a new runtime is swapped in', async (t) => {
  const { proxy, config, clock } = await metricsStack(t)
  const { jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  for (let i = 0; i < 3; i++) t.equal((await request(`${proxy.url}/app`, { jar, headers: API })).status, 200)
  const before = await scrape(t, proxy.metricsUrl)
  t.equal(before.get('portcullis_requests_total', { route: ROUTE, code: '200' }), 3)

  // As main.ts reloads: a new runtime from the (same) config, reporting to the same instruments.
  const next = createRuntime(config, proxy.app.metrics.runtimeDeps({ previous: proxy.runtime, clock, retry: { initialMs: 50, maxMs: 400 } }))
  t.teardown(() => next.close())
  await next.provider.whenReady()
  proxy.app.swap(next)
  proxy.runtime.close()

  for (let i = 0; i < 2; i++) t.equal((await request(`${proxy.url}/app`, { jar, headers: API })).status, 200, 'the memory store and its session carried over')
  clock.advance(INTO_REFRESH_WINDOW)
  t.equal((await request(`${proxy.url}/app`, { jar, headers: API })).status, 200)
  const after = await scrape(t, proxy.metricsUrl)
  t.equal(after.get('portcullis_requests_total', { route: ROUTE, code: '200' }), 6, 'counted on from 3, not from 0')
  t.equal(after.get('portcullis_logins_total', { stage: 'completed' }), 1, 'the login before the reload is still counted')
  t.equal(after.get('portcullis_refreshes_total', { outcome: 'ok' }), 1, "the new runtime's refresh reaches the same counter")
  t.equal(delta(before, after, 'portcullis_provider_requests_total', { endpoint: 'discovery', result: 'ok' }), 1, "the new runtime's discovery too")
  t.equal(after.get('portcullis_provider_up'), 1, "the gauge reads the new runtime's provider (the old one is closed)")
  t.equal(after.get('portcullis_sessions', { store: 'memory' }), 1)
})

t.test('the provider going down after startup: portcullis_provider_up 0, one log line per change, /readyz still 200', async (t) => {
  const providerPort = await reservePort()
  const proxyPort = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const upstream = await startTestUpstream(t)
  const clientId = 'metrics-outage'
  const clientSecret = 'metrics-outage-secret-long-enough'
  const client = { clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`] }
  let provider = await startTestProvider(t, { port: providerPort, clients: [client] })
  const config = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl, overrides: withMetrics() })

  // main.ts's own deps: its log lines and the counters, with a probe every 100 ms while idle.
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
      cb()
    },
  })
  const metrics = createMetrics({ defaultMetrics: false })
  const deps = runtimeDeps(pino({ level: 'info' }, sink), metrics)
  const proxy = await startPortcullis(t, config, { ...deps, port: proxyPort, retry: { initialMs: 50, maxMs: 400, probeMs: 100 }, app: { metrics } })
  await proxy.runtime.provider.whenReady()
  const { jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  t.equal((await scrape(t, proxy.metricsUrl)).get('portcullis_provider_up'), 1)

  const down = (l: Record<string, unknown>) => typeof l.msg === 'string' && l.msg.startsWith('provider not reachable: existing sessions are still served')
  const back = (l: Record<string, unknown>) => l.msg === 'provider reachable again'
  await provider.close()
  await waitUntil(async () => (await scrape(t, proxy.metricsUrl)).get('portcullis_provider_up') === 0, 'provider_up to drop to 0', 10_000)
  // Several probes fail; the change is logged once.
  await waitUntil(async () => (await scrape(t, proxy.metricsUrl)).get('portcullis_provider_requests_total', { endpoint: 'jwks', result: 'unavailable' }) >= 3, 'three failed probes', 10_000)
  t.equal(lines.filter(down).length, 1, 'one log line for the outage, however many requests failed')
  t.equal(lines.find(down)?.level, 50, 'at error level')
  t.equal((await request(`${proxy.url}/readyz`)).status, 200, '/readyz stays 200: existing sessions are still served')
  t.equal((await request(`${proxy.url}/app`, { jar, headers: API })).status, 200, 'and they are')

  provider = await startTestProvider(t, { port: providerPort, clients: [client] })
  await waitUntil(async () => (await scrape(t, proxy.metricsUrl)).get('portcullis_provider_up') === 1, 'provider_up back to 1', 10_000)
  t.equal(lines.filter(back).length, 1, 'one line when it answers again')
  t.equal(lines.filter(down).length, 1, 'still one for the outage')
})

t.test('a logout token posted twice: accepted, then counted as a replay', async (t) => {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const clientId = 'metrics-backchannel'
  const clientSecret = 'bad-provider-client-secret-0123456789'
  const bad = await startBadProvider(t, { defect: 'none', redirectUri: `${publicUrl}/oauth2/callback`, clientId, clientSecret, sid: true })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: bad.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl, overrides: withMetrics() })
  const proxy = await startPortcullis(t, config, { port })
  await proxy.runtime.provider.whenReady()
  // start → the bad provider's authorize (an immediate 302) → callback.
  const jar = new CookieJar()
  const start = await request(`${publicUrl}/oauth2/start?rd=/x`, { jar, headers: NAVIGATION_HEADERS })
  const authorize = await request(String(start.headers.location), { jar, headers: NAVIGATION_HEADERS })
  t.equal((await request(String(authorize.headers.location), { jar, headers: NAVIGATION_HEADERS })).status, 302, 'logged in')
  const sid = (await proxy.runtime.sessions.load(jar.get('_portcullis') ?? ''))?.session.sid
  const token = await bad.signLogoutToken({ iss: bad.issuer, aud: clientId, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { [BACKCHANNEL_LOGOUT_EVENT]: {} }, sid })
  const post = () =>
    request(`${publicUrl}/oauth2/backchannel-logout`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ logout_token: token }).toString() })
  t.equal((await post()).status, 200, 'accepted')
  t.equal((await post()).status, 400, 'the same token again: refused')
  const m = await scrape(t, proxy.metricsUrl)
  t.equal(m.get('portcullis_backchannel_logouts_total', { outcome: 'accepted' }), 1)
  t.equal(m.get('portcullis_backchannel_logouts_total', { outcome: 'replay' }), 1)
  t.equal(m.get('portcullis_backchannel_logouts_total', { outcome: 'invalid' }), 0, 'a replay is not counted as invalid too')
})

t.test('the process: metrics on their own port from the config, reloads counted, counters kept across SIGHUP', async (t) => {
  const upstream = await startTestUpstream(t)
  let yaml = ''
  const proc = await startPortcullisProcess(t, (port) => {
    yaml = `${publicOnlyConfig(port, upstream.url)}metrics:\n  listen: 127.0.0.1:0\n`
    return yaml
  })
  await waitUntil(() => proc.logs.some((l) => l.msg === 'metrics listening'), 'the metrics listener', 10_000)
  const metricsUrl = String(proc.logs.find((l) => l.msg === 'metrics listening')?.url).replace(/\/metrics$/, '')
  t.not(new URL(metricsUrl).port, String(proc.port), 'its own port')
  t.equal((await request(`${proc.url}/page`)).status, 200, 'a public route')
  const file = join(t.testdirName, 'portcullis.yaml')

  const reloaded = (n: number) => proc.logs.filter((l) => l.msg === 'configuration reloaded').length === n
  proc.child.kill('SIGHUP')
  await waitUntil(() => reloaded(1), 'the reload', 10_000)
  writeFileSync(file, yaml.replace('  listen: 127.0.0.1:0\n', '  listen: 127.0.0.1:1\n'))
  proc.child.kill('SIGHUP')
  await waitUntil(() => proc.logs.some((l) => l.msg === 'reload refused: these settings need a restart; the running configuration was kept'), 'the refusal', 10_000)
  writeFileSync(file, 'routes: [')
  proc.child.kill('SIGHUP')
  await waitUntil(() => proc.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('reload refused: the config file has problems')), 'the second refusal', 10_000)
  t.equal((await request(`${proc.url}/page`)).status, 200, 'still served')

  const m = await scrape(t, metricsUrl)
  t.equal(m.get('portcullis_config_reloads_total', { result: 'ok' }), 1, 'one reload')
  t.equal(m.get('portcullis_config_reloads_total', { result: 'refused' }), 2, 'two refused (metrics.listen needs a restart; a broken file)')
  t.equal(m.get('portcullis_requests_total', { route: ROUTE, code: '200' }), 2, 'the requests before and after the reload, in one counter')
  t.equal(m.get('portcullis_auth_decisions_total', { result: 'public', mode: 'proxy' }), 2, 'public routes: result public')
  t.equal(m.get('portcullis_provider_up'), 0, 'the provider of this config was never reached')
  t.equal(m.get('portcullis_build_info', { version: VERSION }), 1)
  t.ok(m.has('process_resident_memory_bytes'), 'the process metrics')
})
