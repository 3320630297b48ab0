/**
 * Step-up end to end (issue #10 point 2) with the real provider: a route that requires MFA, an acr or
 * a recent login sends a session that falls short through login again (browser: 302 to
 * `{prefix}/start`, API: 401 with RFC 9470's `insufficient_user_authentication`), with `acr_values`,
 * `max_age` and `prompt=login` on the authorize request; the session keeps serving other routes
 * meanwhile. The callback checks what the provider answered (acr, amr, auth_time): a user who strips
 * the parameters from the authorize URL ends at a 403 there, not in a loop, and keeps the session she
 * had.
 *
 * Clocks: the provider runs on real time, Portcullis on a fake clock (test/helpers/clock.ts) that the
 * maxAuthAge tests move. The provider's tokens are given an hour so the jumps do not expire them.
 *
 * @see src/policy/access.ts, src/http/pipeline.ts (refuse), src/http/routes/start.ts, src/http/routes/callback.ts
 */
import t, { type Test } from 'tap'
import { startApp, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS, type LoginStep } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { DEMO_USERS, PROVIDER_ROUTES, type DemoUser } from '../helpers/provider.ts'
import { ACR_MFA, ACR_PASSWORD } from '../../src/demo/provider.ts'

const [alice, bob] = DEMO_USERS as [DemoUser, DemoUser]
const OTP = alice.otp as string
const API = { accept: 'application/json' }
const NAME = '_portcullis'

/** Routes by index, for the rule paths. */
const ADMIN = 1
const STRONG = 2
const RECENT = 3
const INSTANT = 4

interface StepUp {
  stack: Stack
  clock: FakeClock
  fast: RunningPortcullis
  slow: RunningPortcullis
  url: string
}

async function stepUpStack(t: Test): Promise<StepUp> {
  const clock = fakeClock()
  const stack = await startStack(t, {
    provider: { idTokenTtl: 3600, accessTokenTtl: 3600 },
    runtime: { clock },
    overrides: ({ upstream }) => ({
      access: { mfaAcrValues: [ACR_MFA] },
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/admin' }, upstream, allow: { groups: ['admins', 'engineering'] }, require: { mfa: true } },
        { match: { pathPrefix: '/strong' }, upstream, require: { acr: [ACR_MFA] } },
        { match: { pathPrefix: '/recent' }, upstream, require: { maxAuthAge: '5m' } },
        { match: { pathPrefix: '/instant' }, upstream, require: { maxAuthAge: '1s' } },
      ],
    }),
  })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  return { stack, clock, fast: stack.proxy, slow, url: stack.proxy.url }
}

/** The session cookie lines among an answer's `Set-Cookie`s (the chunks included), not the login transactions'. */
function sessionCookieLines(res: TestResponse): string[] {
  return res.setCookies.filter((line) => new RegExp(`^${NAME}(_\\d+)?=`).test(line))
}

/** The session cookie lines that clear a cookie (an empty value or `Max-Age=0`). */
function clearedSessionCookies(res: TestResponse): string[] {
  return sessionCookieLines(res).filter((line) => /^[^=]+=;/.test(line) || /;\s*max-age=0\b/i.test(line))
}

/** The same request to both lanes; their answers must agree. Returns the fast lane's. */
async function both(t: Test, s: StepUp, path: string, headers: Record<string, string>): Promise<TestResponse> {
  const slow = await request(`${s.slow.url}${path}`, { headers })
  const fast = await request(`${s.fast.url}${path}`, { headers })
  t.equal(fast.status, slow.status, `${path}: the same status in both lanes`)
  t.equal(fast.headers.location, slow.headers.location, `${path}: the same Location`)
  t.equal(fast.headers['www-authenticate'], slow.headers['www-authenticate'], `${path}: the same challenge`)
  t.same(fast.setCookies, slow.setCookies, `${path}: the same cookies`)
  return fast
}

/** Where `{prefix}/start` sends the browser for `rd`, as an URL. */
async function startFor(s: StepUp, jar: CookieJar, rd: string): Promise<URL> {
  const res = await request(`${s.url}/oauth2/start?rd=${encodeURIComponent(rd)}`, { jar, headers: NAVIGATION_HEADERS })
  if (res.status !== 302) throw new Error(`start answered ${res.status}`)
  return new URL(String(res.headers.location))
}

const showedLoginForm = (steps: readonly LoginStep[]) => steps.some((s) => s.method === 'POST' && s.url.includes('/interaction/'))

/** Forget the provider's own session cookies (the next authorize request finds no login there). */
function forgetProviderSession(jar: CookieJar): void {
  for (const name of jar.names()) if (!name.startsWith(NAME)) jar.delete(name)
}

t.test('require.mfa: a password-only session is sent to log in again with acr_values and prompt=login; the one-time code gets alice through', async (t) => {
  const s = await stepUpStack(t)
  const { jar, finalLocation } = await login({ proxyUrl: s.url, user: alice })
  t.equal(finalLocation, `${s.url}/`)
  const earlier = jar.header(`${s.url}/`)
  t.match(earlier, `${NAME}=`)
  const claimsOf = async (cookie: string) => (await request(`${s.url}/oauth2/userinfo`, { headers: { ...API, cookie } })).json<{ claims: Record<string, unknown> }>().claims
  const pwd = await claimsOf(earlier)
  t.same([pwd.acr, pwd.amr, typeof pwd.auth_time], [ACR_PASSWORD, ['pwd'], 'number'], "the provider's ID token says: password only")

  // A navigation to /admin: back through login, the cookie left alone.
  const nav = await both(t, s, '/admin/users?page=2', { ...NAVIGATION_HEADERS, cookie: earlier })
  t.equal(nav.status, 302)
  t.equal(nav.headers.location, `${s.url}/oauth2/start?rd=${encodeURIComponent('/admin/users?page=2')}`, 'to start, with rd')
  t.same(sessionCookieLines(nav), [], 'the session cookie is neither cleared nor rewritten')
  t.equal(s.stack.upstream.requests.filter((r) => r.url.startsWith('/admin')).length, 0, 'the upstream never saw /admin')

  // An API client: RFC 9470.
  const api = await both(t, s, '/admin/users', { ...API, cookie: earlier })
  t.equal(api.status, 401)
  t.match(api.headers['www-authenticate'], /^Bearer realm="[^"]+", error="insufficient_user_authentication", error_description="[^"]+"/)
  t.match(api.headers['www-authenticate'], `acr_values="${ACR_MFA}"`)
  t.match(api.json(), { error: 'STEP_UP_REQUIRED', rule: `routes[${ADMIN}].require.mfa`, message: String })
  t.same(sessionCookieLines(api), [], 'no cookie change on the 401 either')

  // Meanwhile the session serves `/`.
  const home = await both(t, s, '/', { ...API, cookie: earlier })
  t.equal(home.status, 200, 'her session still works on /')

  const before = s.stack.provider.authorizations.length
  const authorize = await startFor(s, jar, `${s.url}/admin/users?page=2`)
  t.equal(`${authorize.origin}${authorize.pathname}`, `${s.stack.provider.issuer}${PROVIDER_ROUTES.authorization}`)
  t.equal(authorize.searchParams.get('acr_values'), ACR_MFA, 'acr_values from access.mfaAcrValues')
  t.equal(authorize.searchParams.get('prompt'), 'login', 'prompt=login: the current login falls short')
  t.equal(authorize.searchParams.get('max_age'), null, 'no max_age without maxAuthAge')

  const again = await login({ proxyUrl: s.url, jar, user: alice, otp: OTP, startUrl: authorize.href })
  t.equal(s.stack.provider.authorizations.length, before + 1, 'one authorize request')
  t.match(s.stack.provider.authorizations.at(-1), { acr_values: ACR_MFA, prompt: 'login' }, 'the provider got both')
  t.ok(showedLoginForm(again.steps), 'the provider asked again although it had a session (prompt=login)')
  t.equal(again.finalLocation, `${s.url}/admin/users?page=2`, 'back to the page she wanted')

  const cookie = jar.header(`${s.url}/`)
  t.not(cookie, earlier, 'a new session')
  const mfa = await claimsOf(cookie)
  t.same([mfa.acr, mfa.amr], [ACR_MFA, ['pwd', 'otp']], 'with the one-time code')
  const admin = await both(t, s, '/admin/users?page=2', { ...API, cookie })
  t.equal(admin.status, 200, 'with the one-time code alice gets through')
  t.equal(s.stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  t.equal((await request(`${s.url}/`, { headers: { ...API, cookie } })).status, 200)

  // A new login for a route that needs no step-up asks for nothing more.
  const plain = await startFor(s, new CookieJar(), `${s.url}/`)
  t.equal(plain.searchParams.get('prompt'), null)
  t.equal(plain.searchParams.get('acr_values'), null)
  // A first login that starts at /admin asks for the factor, without prompt=login (nobody to re-ask).
  const first = await startFor(s, new CookieJar(), `${s.url}/admin`)
  t.equal(first.searchParams.get('acr_values'), ACR_MFA)
  t.equal(first.searchParams.get('prompt'), null)
  // bob is allowed on /admin by its allow rule, and stepped up the same way (he has no code: he cannot pass).
  const bobLogin = await login({ proxyUrl: s.url, user: bob })
  const bobNav = await request(`${s.url}/admin`, { headers: { ...NAVIGATION_HEADERS, cookie: bobLogin.jar.header(`${s.url}/`) } })
  t.equal(bobNav.status, 302, 'bob: step-up, not a denial')
})

t.test('require.acr: acr_values sent; a user who strips acr_values and prompt ends at a 403 at the callback, with her session untouched', async (t) => {
  const s = await stepUpStack(t)
  const { jar } = await login({ proxyUrl: s.url, user: alice })
  const earlier = jar.header(`${s.url}/`)
  const earlierValue = jar.get(NAME)

  const nav = await both(t, s, '/strong/page', { ...NAVIGATION_HEADERS, cookie: earlier })
  t.equal(nav.status, 302)
  t.equal(nav.headers.location, `${s.url}/oauth2/start?rd=${encodeURIComponent('/strong/page')}`)
  const api = await both(t, s, '/strong/page', { ...API, cookie: earlier })
  t.equal(api.status, 401)
  t.match(api.headers['www-authenticate'], `error="insufficient_user_authentication"`)
  t.match(api.headers['www-authenticate'], `acr_values="${ACR_MFA}"`)
  t.match(api.json(), { rule: `routes[${STRONG}].require.acr` })

  const authorize = await startFor(s, jar, `${s.url}/strong/page`)
  t.equal(authorize.searchParams.get('acr_values'), ACR_MFA, 'acr_values=urn:portcullis:acr:mfa')
  t.equal(authorize.searchParams.get('prompt'), 'login')

  // The user edits the authorize URL: no acr_values, no prompt; and signs in with her password only.
  authorize.searchParams.delete('acr_values')
  authorize.searchParams.delete('prompt')
  forgetProviderSession(jar)
  const before = s.stack.provider.authorizations.length
  const { callbackUrl, steps } = await authorizeUntilCallback({ proxyUrl: s.url, jar, user: alice, startUrl: authorize.href })
  t.ok(showedLoginForm(steps), 'she signed in at the provider, password only')
  t.equal(s.stack.provider.authorizations.length, before + 1)
  t.notMatch(s.stack.provider.authorizations.at(-1) ?? {}, { acr_values: String }, 'the provider never saw acr_values')

  const callback = await request(callbackUrl, { jar, headers: NAVIGATION_HEADERS })
  t.equal(callback.status, 403, 'refused at the callback')
  t.equal(callback.headers.location, undefined, 'not sent to rd (which would start the same login again: a loop)')
  t.match(callback.headers['content-type'], /^text\/html/)
  t.match(callback.body, 'Additional verification needed')
  t.match(callback.body, `<code>routes[${STRONG}].require.acr</code>`, 'the page names the rule')
  t.match(callback.body, 'STEP_UP_FAILED')
  t.match(callback.body, /<a href="[^"]*\/oauth2\/start\?rd=[^"]*strong[^"]*">Try again<\/a>/, 'a link (not a redirect) to try again')
  for (const text of [ACR_PASSWORD, ACR_MFA, alice.email]) t.notOk(callback.body.includes(text), `the page does not show ${text}`)
  t.same(sessionCookieLines(callback), [], 'no session cookie written or cleared')
  t.equal(jar.get(NAME), earlierValue, 'her earlier session cookie is untouched')
  t.equal(s.stack.upstream.requests.filter((r) => r.url.startsWith('/strong')).length, 0, 'the upstream never saw /strong')

  const home = await request(`${s.url}/`, { jar, headers: API })
  t.equal(home.status, 200, 'the earlier session still works')
  t.equal(s.stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  const stillStepUp = await request(`${s.url}/strong/page`, { jar, headers: API })
  t.equal(stillStepUp.status, 401, 'and is still not enough for /strong')

  // As an API client the refusal at the callback is JSON naming the rule.
  const second = await startFor(s, jar, `${s.url}/strong/page`)
  second.searchParams.delete('acr_values')
  second.searchParams.delete('prompt')
  const cb2 = await authorizeUntilCallback({ proxyUrl: s.url, jar, user: alice, startUrl: second.href })
  const json = await request(cb2.callbackUrl, { jar, headers: API })
  t.equal(json.status, 403)
  t.match(json.json(), { error: 'STEP_UP_FAILED', rule: `routes[${STRONG}].require.acr`, retry: String })

  // Following the parameters, with the code: the acr is urn:portcullis:acr:mfa and /strong opens.
  const honest = await startFor(s, jar, `${s.url}/strong/page`)
  const ok = await login({ proxyUrl: s.url, jar, user: alice, otp: OTP, startUrl: honest.href })
  t.equal(ok.finalLocation, `${s.url}/strong/page`)
  t.equal((await request(`${s.url}/strong/page`, { jar, headers: API })).status, 200)
})

t.test('require.maxAuthAge: a login older than allowed is asked again with max_age; a fresh auth_time lets the user through', async (t) => {
  const s = await stepUpStack(t)
  const { jar } = await login({ proxyUrl: s.url, user: alice })
  const earlier = jar.header(`${s.url}/`)
  t.equal((await both(t, s, '/recent/x', { ...API, cookie: earlier })).status, 200, 'a fresh login is recent enough')

  // auth_time is in whole seconds: age the login to 5 minutes and 1 second on Portcullis's clock.
  const info = await request(`${s.url}/oauth2/userinfo`, { headers: { ...API, cookie: earlier } })
  const loginAt = (info.json<{ claims: { auth_time: number } }>().claims.auth_time) * 1000
  t.ok(loginAt <= Date.now() && loginAt > Date.now() - 60_000, 'the provider sent auth_time')
  s.clock.set(loginAt + 5 * 60_000 + 1000)

  const nav = await both(t, s, '/recent/x', { ...NAVIGATION_HEADERS, cookie: earlier })
  t.equal(nav.status, 302, 'too old: back through login')
  t.equal(nav.headers.location, `${s.url}/oauth2/start?rd=${encodeURIComponent('/recent/x')}`)
  // Five minutes on, the idle clock moves: the session may be re-sealed, never cleared.
  t.same(clearedSessionCookies(nav), [], 'the cookie is kept (not cleared)')
  const api = await both(t, s, '/recent/x', { ...API, cookie: earlier })
  t.equal(api.status, 401)
  t.match(api.headers['www-authenticate'], 'error="insufficient_user_authentication"')
  t.match(api.headers['www-authenticate'], 'max_age=300')
  t.match(api.json(), { rule: `routes[${RECENT}].require.maxAuthAge` })
  t.equal((await both(t, s, '/', { ...API, cookie: earlier })).status, 200, 'the old login still serves /')

  const authorize = await startFor(s, jar, `${s.url}/recent/x`)
  t.equal(authorize.searchParams.get('max_age'), '300', 'max_age in seconds')
  t.equal(authorize.searchParams.get('prompt'), 'login')

  // The provider's clock is real: for it the login is seconds old, and max_age=300 alone would let it
  // reuse its session. prompt=login (sent with it) makes it ask again. The new auth_time must be a
  // later second than the first, or it would be as old on Portcullis's clock.
  while (Date.now() < loginAt + 1000) await new Promise((resolve) => setTimeout(resolve, 50))
  const again = await login({ proxyUrl: s.url, jar, user: alice, startUrl: authorize.href })
  t.ok(showedLoginForm(again.steps), 'the provider re-authenticated')
  t.match(s.stack.provider.authorizations.at(-1), { max_age: '300', prompt: 'login' })
  t.equal(again.finalLocation, `${s.url}/recent/x`, 'the fresh auth_time passes the callback')
  const fresh = jar.header(`${s.url}/`)
  t.equal((await both(t, s, '/recent/x', { ...API, cookie: fresh })).status, 200, 'and /recent opens')

  // Stripping prompt and max_age: the provider reuses its login; the callback sees the old auth_time.
  s.clock.advance(5 * 60_000 + 1000)
  const aged = await startFor(s, jar, `${s.url}/recent/x`)
  aged.searchParams.delete('prompt')
  aged.searchParams.delete('max_age')
  const cb = await authorizeUntilCallback({ proxyUrl: s.url, jar, user: alice, startUrl: aged.href })
  t.notOk(showedLoginForm(cb.steps), 'no form: the provider reused its session')
  const refused = await request(cb.callbackUrl, { jar, headers: API })
  t.equal(refused.status, 403)
  t.match(refused.json(), { error: 'STEP_UP_FAILED', rule: `routes[${RECENT}].require.maxAuthAge` })
  t.same(sessionCookieLines(refused), [])
  t.equal(jar.header(`${s.url}/`), fresh, 'the session cookie is untouched')
})

t.test('the provider honours max_age itself: with prompt=login stripped, a login older than max_age (real time) is asked again', async (t) => {
  const s = await stepUpStack(t)
  const { jar } = await login({ proxyUrl: s.url, user: alice })
  const info = await request(`${s.url}/oauth2/userinfo`, { jar, headers: API })
  const loginAt = info.json<{ claims: { auth_time: number } }>().claims.auth_time * 1000
  // Two real seconds, so the provider's own session is older than max_age=1.
  while (Date.now() < loginAt + 2100) await new Promise((resolve) => setTimeout(resolve, 50))
  s.clock.set(Date.now())
  const nav = await request(`${s.url}/instant`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 302, 'older than 1s: step-up')
  t.match((await request(`${s.url}/instant`, { jar, headers: API })).json(), { rule: `routes[${INSTANT}].require.maxAuthAge` })
  const authorize = await startFor(s, jar, `${s.url}/instant`)
  t.equal(authorize.searchParams.get('max_age'), '1')
  t.equal(authorize.searchParams.get('prompt'), 'login')
  authorize.searchParams.delete('prompt')
  const cb = await authorizeUntilCallback({ proxyUrl: s.url, jar, user: alice, startUrl: authorize.href })
  t.ok(showedLoginForm(cb.steps), 'max_age alone made the provider ask for the password again')
  // The new auth_time is this second (or, rarely, the one before): on Portcullis's clock it is at most 1s old.
  s.clock.set(Math.floor(Date.now() / 1000) * 1000)
  const done = await request(cb.callbackUrl, { jar, headers: NAVIGATION_HEADERS })
  t.equal(done.status, 302)
  t.equal(done.headers.location, `${s.url}/instant`, 'the fresh login passes the callback')
  t.equal((await request(`${s.url}/instant`, { jar, headers: API })).status, 200)
})
