/**
 * Session refresh end to end (issue #3 points 1–4, and point 10's "sub changing on refresh"): JWT
 * access tokens verified against the provider's JWKS, refresh ahead of expiry shared by concurrent
 * requests, rotated refresh tokens and the result cache for requests still carrying the old cookie,
 * `invalid_grant` and a changed `sub` ending the session, a failing provider not dropping it, and the
 * provider rotating its signing key mid-run.
 *
 * Clocks: the provider mints tokens on real time; Portcullis runs on a fake clock. Every jump stays
 * below the lifetimes the provider issues (300 s access tokens, refreshAhead 30 s: login, then
 * `advance(280_000)`), or the provider is given longer ID-token lifetimes where a test needs two jumps.
 *
 * @see src/session/refresher.ts, src/oidc/refresh.ts
 */
import t, { type Test } from 'tap'
import { decodeProtectedHeader } from 'jose'
import { reserveHeldPort, startPortcullis, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse, parseSetCookie, type SetCookie } from '../helpers/http.ts'
import { configFor } from '../helpers/config.ts'
import { DEMO_USERS, type RunningProvider } from '../helpers/provider.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { startBadProvider, type BadProvider, type BadProviderOptions } from '../helpers/bad-provider.ts'
import { startTestUpstream, type EchoUpstream } from '../helpers/upstream.ts'
import { join, split } from '../../src/session/chunks.ts'
import type { Session } from '../../src/session/model.ts'

const NAME = '_portcullis'
const API = { accept: 'application/json' }
const alice = DEMO_USERS[0]!
/** Inside the default refreshAhead (30 s) of a 300 s access token, well before it expires. */
const INTO_REFRESH_WINDOW = 280_000

// ---------------------------------------------------------------------------------------------------
// Cookie helpers

const parseSetCookies = (res: TestResponse): SetCookie[] => res.setCookies.map(parseSetCookie)

const isSessionChunk = (name: string): boolean => name === NAME || /^_portcullis_\d+$/.test(name)

/** Empty value and Max-Age <= 0 or an Expires in the past: the browser drops the cookie. */
function isDeletion(c: SetCookie): boolean {
  const maxAge = c.attrs.get('max-age')
  const expires = c.attrs.get('expires')
  return c.value === '' && ((maxAge !== undefined && Number(maxAge) <= 0) || (expires !== undefined && Date.parse(expires) < Date.now()))
}

/** The session cookie value the response sets (chunks joined), or null when it sets none. */
function setSessionValue(res: TestResponse): string | null {
  const chunks: Record<string, string> = {}
  for (const c of parseSetCookies(res)) if (isSessionChunk(c.name) && !isDeletion(c)) chunks[c.name] = c.value
  return join(NAME, chunks)
}

/** Does the response delete the session cookie? */
function clearsSession(res: TestResponse): boolean {
  return parseSetCookies(res).some((c) => c.name === NAME && isDeletion(c))
}

/** The session cookie value a jar holds (chunks joined). */
function jarSession(jar: CookieJar): string {
  const value = join(NAME, Object.fromEntries(jar.all().filter((c) => isSessionChunk(c.name)).map((c) => [c.name, c.value])))
  if (value === null) throw new Error('the jar holds no session')
  return value
}

/** A `Cookie` header carrying this session value (in chunks, as Portcullis would set it). */
function cookieHeader(value: string): string {
  return split(NAME, value)
    .map(([n, v]) => `${n}=${v}`)
    .join('; ')
}

async function sessionOf(proxy: RunningPortcullis, value: string): Promise<Session> {
  const loaded = await proxy.runtime.sessions.load(value)
  if (loaded === null) throw new Error('the cookie value does not open as a session')
  return loaded.session
}

function api(url: string, cookie: string): Promise<TestResponse> {
  return request(url, { headers: { ...API, cookie } })
}

function navigate(url: string, cookie: string): Promise<TestResponse> {
  return request(url, { headers: { ...NAVIGATION_HEADERS, cookie } })
}

function refreshGrants(provider: RunningProvider): number {
  return provider.requests.filter((r) => r.grantType === 'refresh_token').length
}

function keyFetches(requests: ReadonlyArray<{ path: string }>): number {
  return requests.filter((r) => r.path === '/keys').length
}

/** Log in through the proxy as alice (or `user`) and return the session cookie value. */
async function loggedIn(proxyUrl: string, user = alice): Promise<string> {
  const { jar } = await login({ proxyUrl, user })
  return jarSession(jar)
}

/**
 * The session is over: a browser navigation goes to the login (302 to /oauth2/start), an API call
 * gets 401, both responses delete the session cookie and set no new one, nothing reaches the upstream.
 */
async function assertEnded(t: Test, proxyUrl: string, cookie: string, upstream: EchoUpstream): Promise<void> {
  const before = upstream.requests.length
  const nav = await navigate(`${proxyUrl}/app?from=browser`, cookie)
  t.equal(nav.status, 302, 'browser: sent to the login')
  const location = new URL(String(nav.headers.location), proxyUrl)
  t.equal(`${location.origin}${location.pathname}`, `${proxyUrl}/oauth2/start`, 'browser: Location is /oauth2/start')
  t.equal(location.searchParams.get('rd'), '/app?from=browser', 'browser: coming back where it was')
  t.ok(clearsSession(nav), 'browser: the session cookie is cleared in that response')
  t.equal(setSessionValue(nav), null, 'browser: no new session cookie')

  const call = await api(`${proxyUrl}/api/data`, cookie)
  t.equal(call.status, 401, 'API: 401')
  t.equal(call.json<{ error: string }>().error, 'UNAUTHENTICATED')
  t.match(call.headers['www-authenticate'], /^Bearer/)
  t.ok(clearsSession(call), 'API: the session cookie is cleared in that response')
  t.equal(setSessionValue(call), null, 'API: no new session cookie')
  t.equal(upstream.requests.length, before, 'nothing reached the upstream')
}

async function clockStack(t: Test, opts: Parameters<typeof startStack>[1] = {}): Promise<Stack & { clock: FakeClock }> {
  const clock = fakeClock()
  const stack = await startStack(t, { ...opts, runtime: { ...opts.runtime, clock } })
  return { ...stack, clock }
}

// ---------------------------------------------------------------------------------------------------
// Bad-provider setup (opaque access tokens; refresh grant with defects)

const BAD_CLIENT_ID = 'portcullis-refresh'
const BAD_CLIENT_SECRET = 'bad-provider-refresh-secret-0123456789'

interface BadSetup {
  bad: BadProvider
  upstream: EchoUpstream
  proxy: RunningPortcullis
  clock: FakeClock
  url: string
}

async function badStack(t: Test, opts: Partial<BadProviderOptions> = {}): Promise<BadSetup> {
  const port = await reserveHeldPort()
  const url = `http://127.0.0.1:${port}`
  const bad = await startBadProvider(t, { defect: 'none', redirectUri: `${url}/oauth2/callback`, clientId: BAD_CLIENT_ID, clientSecret: BAD_CLIENT_SECRET, ...opts })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: bad.issuer, clientId: BAD_CLIENT_ID, clientSecret: BAD_CLIENT_SECRET, upstream: upstream.url, publicUrl: url })
  const clock = fakeClock()
  const proxy = await startPortcullis(t, config, { port, clock })
  await proxy.runtime.provider.whenReady()
  return { bad, upstream, proxy, clock, url }
}

/** start → the bad provider's authorize (an immediate 302) → callback; the callback's response and jar. */
async function badLogin(s: BadSetup): Promise<{ jar: CookieJar; callback: TestResponse }> {
  const jar = new CookieJar()
  const start = await request(`${s.url}/oauth2/start?rd=/app`, { jar, headers: NAVIGATION_HEADERS })
  if (start.status !== 302) throw new Error(`start answered ${start.status}`)
  const authorize = await request(String(start.headers.location), { jar, headers: NAVIGATION_HEADERS })
  if (authorize.status !== 302) throw new Error(`authorize answered ${authorize.status}`)
  const callback = await request(String(authorize.headers.location), { jar, headers: NAVIGATION_HEADERS })
  return { jar, callback }
}

async function badSession(s: BadSetup): Promise<string> {
  const { jar, callback } = await badLogin(s)
  if (callback.status !== 302) throw new Error(`callback answered ${callback.status}: ${callback.body.slice(0, 200)}`)
  return jarSession(jar)
}

function badRefreshes(bad: BadProvider): Array<{ status: number }> {
  return bad.requests.filter((r) => r.path === '/oauth/token' && r.params.grant_type === 'refresh_token')
}

// ---------------------------------------------------------------------------------------------------
// 1. One refresh for many parallel requests

t.test('50 parallel requests on an expiring session: ONE refresh_token grant, all 200 with alice, all get the new cookie', async (t) => {
  const { proxy, provider, upstream, clock } = await clockStack(t)
  const value = await loggedIn(proxy.url)
  const old = await sessionOf(proxy, value)
  t.equal(refreshGrants(provider), 0, 'no refresh at login')

  clock.advance(INTO_REFRESH_WINDOW)
  const cookie = cookieHeader(value)
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, (_, i) => api(`${proxy.url}/parallel?i=${i}`, cookie)))

  t.equal(refreshGrants(provider), 1, 'the provider saw exactly one refresh_token grant')
  t.same(
    responses.map((r) => r.status),
    Array.from({ length: 50 }, () => 200),
    'all 50 answered 200',
  )
  const seen = upstream.requests.slice(before)
  t.equal(seen.length, 50, 'all 50 reached the upstream')
  t.same(
    seen.map((r) => r.url).sort(),
    Array.from({ length: 50 }, (_, i) => `/parallel?i=${i}`).sort(),
    'each request once',
  )
  t.ok(
    seen.every((r) => r.headers['x-auth-request-user'] === alice.id && r.headers['x-auth-request-email'] === alice.email && r.headers['x-forwarded-user'] === alice.id),
    "every one with alice's identity headers",
  )

  const values = responses.map(setSessionValue)
  t.ok(values.every((v) => v !== null), 'every response sets a session cookie')
  const sessions = await Promise.all(values.map((v) => sessionOf(proxy, v as string)))
  const fresh = sessions[0] as Session
  t.not(fresh.accessToken, old.accessToken, 'with a new access token')
  t.not(fresh.refreshToken, old.refreshToken, 'and the rotated refresh token')
  t.ok(fresh.accessExpiresAt > old.accessExpiresAt, 'that expires later')
  t.ok(
    sessions.every((s) => s.accessToken === fresh.accessToken && s.refreshToken === fresh.refreshToken && s.id === old.id && s.sub === alice.id),
    'all 50 cookies hold the one refreshed session',
  )
  t.notOk(responses.some(clearsSession), 'no response clears the session')
})

// ---------------------------------------------------------------------------------------------------
// 2. Rotation and the result cache

t.test('rotation: the session holds the rotated refresh token; the old cookie right after the refresh is served from the result cache', async (t) => {
  // Two clock jumps: ID tokens must outlive the second one (access tokens keep the reference 300 s).
  const { proxy, provider, upstream, clock } = await clockStack(t, { provider: { idTokenTtl: 3600 } })
  const { jar } = await login({ proxyUrl: proxy.url })
  const oldValue = jarSession(jar)
  const old = await sessionOf(proxy, oldValue)

  clock.advance(INTO_REFRESH_WINDOW)
  const first = await request(`${proxy.url}/one`, { jar, headers: API })
  t.equal(first.status, 200, 'the refreshing request is served')
  t.equal(refreshGrants(provider), 1)
  const newValue = setSessionValue(first)
  t.ok(newValue, 'and sets the new session cookie')
  const refreshed = await sessionOf(proxy, jarSession(jar))
  t.ok(refreshed.refreshToken !== undefined && refreshed.refreshToken !== old.refreshToken, 'the session holds the rotated refresh token')
  t.not(refreshed.accessToken, old.accessToken)

  // A request that left before the browser stored the new cookie: same old refresh token.
  const late = await api(`${proxy.url}/late`, cookieHeader(oldValue))
  t.equal(late.status, 200, 'the old cookie right after the refresh gets 200')
  t.equal(refreshGrants(provider), 1, 'from the result cache: no extra grant (a replay would be invalid_grant)')
  t.equal(upstream.requests.at(-1)?.url, '/late')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  const lateValue = setSessionValue(late)
  t.ok(lateValue, 'and it is handed the new session')
  t.equal((await sessionOf(proxy, lateValue as string)).refreshToken, refreshed.refreshToken, 'with the rotated refresh token')

  // Without the clock moving, the new session is fresh: no refresh.
  t.equal((await request(`${proxy.url}/two`, { jar, headers: API })).status, 200)
  t.equal(refreshGrants(provider), 1, 'a fresh session is not refreshed')

  // The second refresh uses the rotated token: it works (a replayed token would be invalid_grant).
  clock.advance(INTO_REFRESH_WINDOW)
  const second = await request(`${proxy.url}/three`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(second.status, 200, 'the second refresh works')
  t.equal(refreshGrants(provider), 2, 'one more grant')
  t.notOk(clearsSession(second), 'the session is kept')
  const again = await sessionOf(proxy, jarSession(jar))
  t.ok(again.refreshToken !== undefined && again.refreshToken !== refreshed.refreshToken, 'rotated again')
  t.equal(again.id, old.id, 'the same login session throughout')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
})

// ---------------------------------------------------------------------------------------------------
// 3. invalid_grant

t.test('invalid_grant ends the session: the old cookie refreshed on a second instance replays a rotated-away token', async (t) => {
  const { proxy: a, provider, upstream, config, clock: clockA, clientId, clientSecret } = await clockStack(t)
  const portB = await reserveHeldPort()
  const configB = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl: `http://127.0.0.1:${portB}` })
  t.same(configB.session.secrets, config.session.secrets, 'B has the same secrets')
  const clockB = fakeClock()
  const b = await startPortcullis(t, configB, { port: portB, clock: clockB })
  await b.runtime.provider.whenReady()

  const { jar } = await login({ proxyUrl: a.url })
  const oldValue = jarSession(jar)
  t.equal((await api(`${b.url}/before`, cookieHeader(oldValue))).status, 200, 'B serves the session A issued (same secrets)')

  clockA.advance(INTO_REFRESH_WINDOW)
  const viaA = await request(`${a.url}/refresh`, { jar, headers: API })
  t.equal(viaA.status, 200, 'A refreshed (the refresh token rotated)')
  t.equal(refreshGrants(provider), 1)

  clockB.advance(INTO_REFRESH_WINDOW)
  await assertEnded(t, b.url, cookieHeader(oldValue), upstream)
  t.equal(refreshGrants(provider), 2, "B's refresh was one grant with the rotated-away token (answered invalid_grant)")
  t.ok(
    b.logs.some((l) => l.msg === 'session ended at refresh'),
    'B logged why the session ended',
  )
})

// ---------------------------------------------------------------------------------------------------
// 4. sub changing on refresh (negative provider)

t.test('sub changing on refresh ends the session (bad provider)', async (t) => {
  const s = await badStack(t)
  const control = await badSession(s)
  const victim = await badSession(s)
  t.equal((await api(`${s.url}/app`, cookieHeader(victim))).status, 200, 'the session works before the refresh')
  t.equal(s.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'bad-provider-user')

  s.clock.advance(INTO_REFRESH_WINDOW)
  // Control: the same refresh with the provider behaving keeps the session.
  const ok = await api(`${s.url}/app`, cookieHeader(control))
  t.equal(ok.status, 200, 'control: a refresh with the same sub is fine')
  t.ok(setSessionValue(ok), 'control: new session cookie')
  t.same(
    badRefreshes(s.bad).map((r) => r.status),
    [200],
    'control: one refresh grant, answered 200',
  )

  s.bad.setDefect('sub-changes-on-refresh')
  await assertEnded(t, s.url, cookieHeader(victim), s.upstream)
  t.same(
    badRefreshes(s.bad).map((r) => r.status),
    [200, 200],
    'the provider answered the refresh (200): Portcullis refused the new ID token',
  )
  const refreshed = s.bad.tokens.at(-1)?.id_token ?? ''
  t.equal(JSON.parse(Buffer.from(refreshed.split('.')[1] ?? '', 'base64url').toString('utf8')).sub, 'another-bad-provider-user', 'which named another subject')
})

// ---------------------------------------------------------------------------------------------------
// 5. Provider failing during refresh

t.test('provider answering 500 at refresh: served while the access token is valid, then 503 + Retry-After, session kept, recovers', async (t) => {
  // ID tokens outlive the clock jumps; access tokens keep the 300 s expires_in.
  const s = await badStack(t, { idTokenTtl: 3600 })
  const { jar } = await badLogin(s)
  const value = jarSession(jar)
  const cookie = cookieHeader(value)
  const before = await sessionOf(s.proxy, value)

  s.bad.setDefect('token-500')
  s.clock.advance(INTO_REFRESH_WINDOW)
  const valid = await api(`${s.url}/still-valid`, cookie)
  t.equal(valid.status, 200, 'inside refreshAhead, before expiry: served')
  t.equal(s.upstream.requests.at(-1)?.url, '/still-valid')
  t.notOk(clearsSession(valid), 'the session cookie is not cleared')
  t.same(
    badRefreshes(s.bad).map((r) => r.status),
    [500],
    'the refresh was attempted and failed with 500',
  )
  const nav = await navigate(`${s.url}/still-valid-nav`, cookie)
  t.equal(nav.status, 200, 'a browser navigation too')
  t.notOk(clearsSession(nav))
  t.equal(badRefreshes(s.bad).length, 1, 'the outage is remembered: the provider is not asked by every request')

  s.clock.advance(before.accessExpiresAt - s.clock.now() + 1_000) // the access token has expired
  const upstreamBefore = s.upstream.requests.length
  const expired = await api(`${s.url}/expired`, cookie)
  t.equal(expired.status, 503, 'after the access token expired: 503')
  t.ok(expired.headers['retry-after'], 'with Retry-After')
  t.equal(expired.json<{ error: string }>().error, 'IDP_UNAVAILABLE')
  t.notOk(clearsSession(expired), 'the session cookie is not cleared')
  const rewritten = setSessionValue(expired) // the idle clock may move; the session must stay the same
  t.ok(rewritten === null || (await sessionOf(s.proxy, rewritten)).refreshToken === before.refreshToken, 'nor replaced by another session')
  const expiredNav = await navigate(`${s.url}/expired-nav`, cookie)
  t.equal(expiredNav.status, 503, 'a browser gets the 503 page, not a login')
  t.ok(expiredNav.headers['retry-after'], 'with Retry-After')
  t.equal(expiredNav.headers.location, undefined)
  t.notOk(clearsSession(expiredNav))
  t.equal(s.upstream.requests.length, upstreamBefore, 'nothing reached the upstream with an expired token')
  t.same(
    badRefreshes(s.bad).map((r) => r.status),
    [500, 500],
    'one more attempt once the failure memory ran out',
  )

  s.bad.setDefect('none')
  s.clock.advance(10_000) // past the failure memory
  const back = await api(`${s.url}/back`, cookie)
  t.equal(back.status, 200, 'once the provider works again, the next request refreshes and is served')
  t.same(
    badRefreshes(s.bad).map((r) => r.status),
    [500, 500, 200],
    'with the same (unconsumed) refresh token',
  )
  const newValue = setSessionValue(back)
  t.ok(newValue, 'the new session cookie is set')
  const after = await sessionOf(s.proxy, newValue as string)
  t.ok(after.accessExpiresAt > s.clock.now(), 'with a valid access token')
  t.equal(after.id, before.id, 'the same session')
  t.equal(s.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'bad-provider-user')
})

t.test('provider answering 500 with a JSON error body at refresh is an outage too (session kept)', async (t) => {
  const s = await badStack(t)
  const cookie = cookieHeader(await badSession(s))
  s.bad.setDefect('token-500-json')
  s.clock.advance(INTO_REFRESH_WINDOW)
  const res = await api(`${s.url}/app`, cookie)
  t.equal(res.status, 200)
  t.notOk(clearsSession(res))
  t.same(badRefreshes(s.bad).map((r) => r.status), [500])
})

// ---------------------------------------------------------------------------------------------------
// 6. Access-token verification

/** Re-seal the session behind `value` with `change` applied; the cookie header for it. */
async function resealed(proxy: RunningPortcullis, value: string, change: Partial<Session>): Promise<string> {
  const session = await sessionOf(proxy, value)
  return cookieHeader(await proxy.runtime.sessions.save({ ...session, ...change }))
}

t.test('access-token verification: a tampered JWT access token ends the session', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const value = await loggedIn(proxy.url)
  const session = await sessionOf(proxy, value)
  t.equal((await api(`${proxy.url}/app`, cookieHeader(value))).status, 200, 'the untampered session is served')

  const [h, p, s] = session.accessToken.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>
  const forgedPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'bob' })).toString('base64url')
  await t.test('payload changed under the old signature', async (t) => {
    const cookie = await resealed(proxy, value, { accessToken: `${h}.${forgedPayload}.${s}` })
    await assertEnded(t, proxy.url, cookie, upstream)
  })
  await t.test('signature altered', async (t) => {
    const sig = Buffer.from(s, 'base64url')
    sig[5] = (sig[5] ?? 0) ^ 0xff
    const cookie = await resealed(proxy, value, { accessToken: `${h}.${p}.${sig.toString('base64url')}` })
    await assertEnded(t, proxy.url, cookie, upstream)
  })
  t.ok(
    proxy.logs.some((l) => l.msg === 'session access token failed verification; session ended'),
    'the reason is logged',
  )
})

t.test('access-token verification: an opaque access token (accessTokenType auto) is served until its accessExpiresAt', async (t) => {
  const { proxy, provider, upstream, clock } = await clockStack(t)
  const value = await loggedIn(proxy.url)
  const session = await sessionOf(proxy, value)
  const cookie = await resealed(proxy, value, { accessToken: 'opaque-token' })

  const res = await api(`${proxy.url}/opaque`, cookie)
  t.equal(res.status, 200, 'served')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  clock.advance(session.accessExpiresAt - clock.now() - 31_000) // just outside refreshAhead
  t.equal((await api(`${proxy.url}/opaque`, cookie)).status, 200, 'still served just before the refresh window')
  t.equal(refreshGrants(provider), 0, 'without a refresh: the expiry from the token response governs')

  clock.advance(2_000) // inside refreshAhead
  const refreshed = await api(`${proxy.url}/opaque`, cookie)
  t.equal(refreshed.status, 200)
  t.equal(refreshGrants(provider), 1, 'refreshed because of accessExpiresAt')
  const next = await sessionOf(proxy, setSessionValue(refreshed) as string)
  t.not(next.accessToken, 'opaque-token', 'with the new access token from the provider')

  // Without a refresh token there is nothing to refresh with: served up to accessExpiresAt, then over.
  const grants = refreshGrants(provider)
  const noRefresh = await resealed(proxy, value, { accessToken: 'opaque-token', refreshToken: undefined, accessExpiresAt: clock.now() + 10_000 })
  const last = await api(`${proxy.url}/opaque-last-seconds`, noRefresh)
  t.equal(last.status, 200, 'no refresh token: served inside refreshAhead until accessExpiresAt')
  t.notOk(clearsSession(last))
  clock.advance(10_000)
  await assertEnded(t, proxy.url, noRefresh, upstream)
  t.equal(refreshGrants(provider), grants, 'no grant attempted without a refresh token')
})

t.test('access-token verification: provider.accessTokenType jwt refuses an opaque access token', async (t) => {
  const { proxy, upstream } = await startStack(t, { overrides: { provider: { accessTokenType: 'jwt' } } })
  const value = await loggedIn(proxy.url)
  t.equal((await api(`${proxy.url}/app`, cookieHeader(value))).status, 200, "the provider's JWT access token verifies")
  await assertEnded(t, proxy.url, await resealed(proxy, value, { accessToken: 'opaque-token' }), upstream)
})

t.test('access-token verification: provider.audience other than the client id refuses the login at the callback (no session that every request would end)', async (t) => {
  const { proxy, upstream } = await startStack(t, { overrides: { provider: { audience: 'urn:some-other-api' } } })
  await t.rejects(loggedIn(proxy.url), /unexpected 400 at GET \S+\/oauth2\/callback\S*: <!doctype html>[\s\S]*<title>Sign-in failed<\/title>/, 'the callback answers with an error page (its text: test/integration/key-rotation.test.ts)')
  t.equal(upstream.requests.length, 0, 'the upstream never saw a request')
})

// ---------------------------------------------------------------------------------------------------
// 7. JWKS: key rotation at the provider, unknown kid

t.test('the provider rotates its signing key mid-run: the refreshed tokens carry the new kid and verify, with one extra JWKS fetch', async (t) => {
  const { proxy, provider, upstream, clock } = await clockStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  t.equal((await request(`${proxy.url}/before`, { jar, headers: API })).status, 200)
  const old = await sessionOf(proxy, jarSession(jar))
  const oldKid = decodeProtectedHeader(old.idToken).kid
  t.equal(decodeProtectedHeader(old.accessToken).kid, oldKid, 'both tokens signed with the first key')

  await provider.rotateSigningKey()
  const fetchesBefore = keyFetches(provider.requests)
  clock.advance(INTO_REFRESH_WINDOW)
  const res = await request(`${proxy.url}/after`, { jar, headers: API })
  t.equal(res.status, 200, 'the refresh with tokens signed by the new key is served')
  t.equal(refreshGrants(provider), 1)
  const fresh = await sessionOf(proxy, jarSession(jar))
  const newKid = decodeProtectedHeader(fresh.idToken).kid
  t.ok(newKid !== undefined && newKid !== oldKid, 'the new ID token carries the new kid')
  t.equal(decodeProtectedHeader(fresh.accessToken).kid, newKid, 'and so does the new access token')
  const check = await proxy.runtime.provider.get().accessTokens.check(fresh.accessToken)
  t.equal(check.status, 'valid', 'the new access token verifies')

  // The new access token is verified on the next request, with the keys already fetched.
  t.equal((await request(`${proxy.url}/again`, { jar, headers: API })).status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  t.equal(keyFetches(provider.requests) - fetchesBefore, 1, 'exactly one extra fetch of /keys')
  const published = (await request(`${provider.issuer}/keys`)).json<{ keys: Array<{ kid: string }> }>()
  t.equal(published.keys[0]?.kid, newKid, 'the new kid is the one the provider publishes first')
})

t.test('a token signed by an unknown key triggers at most one JWKS refetch per cooldown (bad provider)', async (t) => {
  const s = await badStack(t, { defect: 'unknown-kid' })
  const fetches = (): number => keyFetches(s.bad.requests)
  t.equal(fetches(), 1, 'fetched once at connect')

  const attempt = async (label: string): Promise<void> => {
    const { jar, callback } = await badLogin(s)
    t.equal(callback.status, 400, `${label}: the login fails`)
    t.equal(setSessionValue(callback), null, `${label}: no session cookie`)
    t.equal(jar.get(NAME), undefined)
  }
  // The connect-time fetch does not count: the first unknown kid refetches at once.
  await attempt('right after connect')
  t.equal(fetches(), 2, 'one refetch at once')
  await attempt('within the cooldown of that refetch')
  t.equal(fetches(), 2, 'no refetch within the cooldown')
  s.clock.advance(31_000)
  await attempt('after the cooldown')
  t.equal(fetches(), 3, 'one refetch')
  await attempt('again')
  await attempt('and again')
  s.clock.advance(20_000)
  await attempt('20 s later')
  t.equal(fetches(), 3, 'no further refetch within the cooldown')
  s.clock.advance(11_000)
  await attempt('after the next cooldown')
  t.equal(fetches(), 4, 'one more refetch')
  t.equal(s.upstream.requests.length, 0)
})
