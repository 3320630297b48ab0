/**
 * `/oauth2/sign_out` (issue #3 point 6), end to end with the real provider: GET and POST clear every
 * session cookie chunk, revoke the session locally (a copy of the cookie taken before stops working),
 * and send the browser to the provider's end-session endpoint with `id_token_hint`, `client_id` and
 * `post_logout_redirect_uri`; the test then confirms the provider's logout form and checks that the
 * provider returns to that URI and that its own session is gone. A return target off the allowlist is
 * refused (400) and the session is left alone. Against a provider without an end-session endpoint
 * (the bad provider with `endSessionEndpoint: false`), sign-out goes straight to the validated `rd`.
 *
 * Real provider, not a mock; the bad provider only for what the real one will not do (no end-session
 * endpoint).
 *
 * @see OpenID Connect RP-Initiated Logout 1.0
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { decodeJwt } from 'jose'
import { reserveHeldPort, startPortcullis, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse, parseSetCookie, type SetCookie } from '../helpers/http.ts'
import { DEMO_USERS, PROVIDER_ROUTES } from '../helpers/provider.ts'
import { startBadProvider, type BadProvider } from '../helpers/bad-provider.ts'
import { startTestUpstream, type EchoUpstream } from '../helpers/upstream.ts'
import { configFor } from '../helpers/config.ts'
import { split } from '../../src/session/chunks.ts'
import type { Session } from '../../src/session/model.ts'

const alice = DEMO_USERS[0]!
const JSON_HEADERS = { accept: 'application/json' }
const SESSION_NAME = /^_portcullis(?:_\d+)?$/

const cookiesOf = (lines: string[]): SetCookie[] => lines.map(parseSetCookie)

/** A Set-Cookie that deletes its cookie (empty value with Max-Age=0 or an Expires in the past). */
function isDeletion(c: SetCookie): boolean {
  const maxAge = c.attrs.get('max-age')
  const expires = c.attrs.get('expires')
  return c.value === '' && (maxAge === '0' || (expires !== undefined && Date.parse(expires) <= Date.now()))
}

/** Names of the session cookies (any chunk) the response deletes, sorted. */
function deletedSessionCookies(res: TestResponse): string[] {
  return cookiesOf(res.setCookies)
    .filter((c) => SESSION_NAME.test(c.name) && isDeletion(c))
    .map((c) => c.name)
    .sort()
}

/** Session cookies the response sets to a value (none may be set at sign-out). */
function setSessionCookies(res: TestResponse): string[] {
  return cookiesOf(res.setCookies)
    .filter((c) => SESSION_NAME.test(c.name) && !isDeletion(c))
    .map((c) => c.name)
}

function sessionNamesIn(jar: CookieJar): string[] {
  return jar.names().filter((n) => SESSION_NAME.test(n))
}

/** A jar holding only the given session cookies for the proxy's origin (a copy taken off the browser). */
function copyJar(proxyUrl: string, cookies: Array<[string, string]>): CookieJar {
  const jar = new CookieJar()
  for (const [name, value] of cookies) jar.set(name, value, { url: proxyUrl })
  return jar
}

/** Session cookies of `jar` as name/value pairs, for a copy. */
function sessionCookiesOf(jar: CookieJar): Array<[string, string]> {
  return jar
    .all()
    .filter((c) => SESSION_NAME.test(c.name))
    .map((c): [string, string] => [c.name, c.value])
}

/**
 * The session cookies of `jar` no longer work here: navigation → login, API → 401; nothing proxied.
 * Each request carries the cookies `jar` holds now (a refused cookie is cleared by the first answer;
 * someone replaying a copy would send it again anyway).
 */
async function assertSignedOut(t: Test, proxyUrl: string, upstream: EchoUpstream, jar: CookieJar, what: string): Promise<void> {
  const held = sessionCookiesOf(jar)
  const before = upstream.requests.length
  const nav = await request(`${proxyUrl}/after-sign-out`, { headers: NAVIGATION_HEADERS, jar: copyJar(proxyUrl, held) })
  t.equal(nav.status, 302, `${what}: a navigation is sent to login`)
  const loc = new URL(String(nav.headers.location), proxyUrl)
  t.equal(`${loc.origin}${loc.pathname}`, `${proxyUrl}/oauth2/start`, `${what}: to /oauth2/start`)
  const api = await request(`${proxyUrl}/api/after-sign-out`, { headers: JSON_HEADERS, jar: copyJar(proxyUrl, held) })
  t.equal(api.status, 401, `${what}: an API call gets 401`)
  t.equal(api.json<{ error: string }>().error, 'UNAUTHENTICATED')
  t.equal(upstream.requests.length, before, `${what}: nothing reached the upstream`)
}

/** The session in `jar` still works: 200 from the upstream with the user's identity. */
async function assertSignedIn(t: Test, proxyUrl: string, upstream: EchoUpstream, jar: CookieJar, sub: string, what: string): Promise<void> {
  const res = await request(`${proxyUrl}/api/still-here`, { headers: JSON_HEADERS, jar })
  t.equal(res.status, 200, `${what}: the session still works`)
  t.equal(upstream.requests.at(-1)?.url, '/api/still-here')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], sub, `${what}: with the same identity`)
}

/** The redirect of a sign-out to the real provider: its parameters, checked. */
function assertEndSessionRedirect(
  t: Test,
  res: TestResponse,
  stack: Stack,
  postLogoutRedirectUri: string,
): URL {
  t.equal(res.status, 302, 'sign-out redirects')
  t.equal(res.headers['cache-control'], 'no-store', 'not cached')
  const loc = new URL(String(res.headers.location))
  t.equal(`${loc.origin}${loc.pathname}`, `${stack.provider.issuer}${PROVIDER_ROUTES.end_session}`, "to the provider's end-session endpoint")
  t.equal(loc.searchParams.get('client_id'), stack.clientId, 'with client_id')
  t.equal(loc.searchParams.get('post_logout_redirect_uri'), postLogoutRedirectUri, 'with post_logout_redirect_uri')
  const hint = loc.searchParams.get('id_token_hint')
  t.ok(hint, 'with id_token_hint')
  const claims = decodeJwt(hint ?? '')
  t.equal(claims.sub, alice.id, 'the hint is an ID token for alice')
  t.equal(claims.iss, stack.provider.issuer, 'issued by the provider')
  t.ok(claims.aud === stack.clientId || (Array.isArray(claims.aud) && claims.aud.includes(stack.clientId)), 'for this client')
  for (const name of loc.searchParams.keys()) t.equal(loc.searchParams.getAll(name).length, 1, `${name} given once`)
  return loc
}

/**
 * Follow the end-session redirect to the provider's confirmation page, submit its form with the jar,
 * and return the provider's answer (not followed).
 */
async function confirmAtProvider(t: Test, endSession: URL, jar: CookieJar): Promise<TestResponse> {
  const page = await request(endSession.href, { headers: NAVIGATION_HEADERS, jar })
  t.equal(page.status, 200, "the provider shows its logout confirmation")
  const form = parseForm(page.body, endSession.href)
  t.ok(form, 'with a form')
  t.equal(form?.method, 'POST')
  const confirmed = await submitForm({ url: endSession.href, body: page.body }, jar)
  t.ok(confirmed.status === 302 || confirmed.status === 303, `the provider redirects after the confirmation (${confirmed.status})`)
  return confirmed
}

/**
 * Start a login with `jar` and follow it until the provider either shows a page (its login form when
 * it has no session) or sends the browser back to Portcullis' callback (it still had a session).
 */
async function startLoginAgain(proxyUrl: string, jar: CookieJar): Promise<{ loginForm: boolean; backToCallback: boolean }> {
  let url = `${proxyUrl}/oauth2/start?rd=/again`
  for (let i = 0; i < 10; i++) {
    const res = await request(url, { headers: NAVIGATION_HEADERS, jar })
    const location = res.headers.location
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url)
      if (next.href.startsWith(`${proxyUrl}/oauth2/callback`)) return { loginForm: false, backToCallback: true }
      url = next.href
      continue
    }
    const form = res.status === 200 ? parseForm(res.body, url) : undefined
    return { loginForm: form !== undefined && 'login' in form.fields && 'password' in form.fields, backToCallback: false }
  }
  throw new Error('startLoginAgain: too many redirects')
}

// ---------------------------------------------------------------------------------------------------
// With the real provider

t.test('GET sign-out: cookies cleared, a copied cookie stops working, the provider ends its session and returns to rd', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url, path: '/x' })
  await assertSignedIn(t, proxy.url, upstream, jar, alice.id, 'after login')
  const copy = sessionCookiesOf(jar)
  t.strictSame(copy.map(([n]) => n), ['_portcullis'], 'a login session fits one cookie')

  const out = await request(`${proxy.url}/oauth2/sign_out?rd=${encodeURIComponent('/signed-out')}`, { headers: NAVIGATION_HEADERS, jar })
  // A relative rd is validated and made absolute on the public origin: that is what the provider has registered.
  const endSession = assertEndSessionRedirect(t, out, stack, `${proxy.url}/signed-out`)
  t.strictSame(deletedSessionCookies(out), ['_portcullis'], 'the session cookie is deleted')
  t.strictSame(setSessionCookies(out), [], 'and no new one is set')
  t.strictSame(sessionNamesIn(jar), [], 'the browser holds no session cookie')
  t.ok(proxy.logs.some((l) => l.msg === 'request' && l.route === 'auth:sign_out' && l.status === 302), 'access log names the sign-out route')

  await assertSignedOut(t, proxy.url, upstream, jar, 'the browser')
  await assertSignedOut(t, proxy.url, upstream, copyJar(proxy.url, copy), 'a copy of the cookie taken before sign-out')

  const confirmed = await confirmAtProvider(t, endSession, jar)
  t.equal(confirmed.headers.location, `${proxy.url}/signed-out`, 'the provider returns to the post_logout_redirect_uri')

  const again = await startLoginAgain(proxy.url, jar)
  t.ok(again.loginForm, 'the provider session is gone: a new login shows the login form')
  t.notOk(again.backToCallback, 'and does not come straight back')
})

t.test('GET sign-out without rd: no post_logout_redirect_uri unless configured', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url })
  const copy = sessionCookiesOf(jar)
  const out = await request(`${proxy.url}/oauth2/sign_out`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(out.status, 302)
  const loc = new URL(String(out.headers.location))
  t.equal(`${loc.origin}${loc.pathname}`, `${stack.provider.issuer}${PROVIDER_ROUTES.end_session}`)
  t.equal(loc.searchParams.get('post_logout_redirect_uri'), null, 'nothing to return to: the provider shows its own page')
  t.equal(loc.searchParams.get('client_id'), stack.clientId)
  t.equal(decodeJwt(loc.searchParams.get('id_token_hint') ?? '').sub, alice.id)
  t.strictSame(deletedSessionCookies(out), ['_portcullis'])
  await assertSignedOut(t, proxy.url, upstream, copyJar(proxy.url, copy), 'a copied cookie')
  const confirmed = await confirmAtProvider(t, loc, jar)
  const done = new URL(String(confirmed.headers.location), stack.provider.issuer)
  t.equal(done.origin, stack.provider.issuer, "the provider keeps the browser on its own signed-out page")
})

t.test('POST sign-out (form) with session.postLogoutRedirect: the configured URI wins over rd', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ publicUrl }) => ({ session: { postLogoutRedirect: `${publicUrl}/signed-out` } }),
  })
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url })
  const copy = sessionCookiesOf(jar)
  const out = await request(`${proxy.url}/oauth2/sign_out`, {
    method: 'POST',
    jar,
    headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
    body: `rd=${encodeURIComponent('/elsewhere')}`,
  })
  const endSession = assertEndSessionRedirect(t, out, stack, `${proxy.url}/signed-out`)
  t.strictSame(deletedSessionCookies(out), ['_portcullis'], 'the session cookie is deleted')
  t.strictSame(sessionNamesIn(jar), [])
  await assertSignedOut(t, proxy.url, upstream, jar, 'the browser')
  await assertSignedOut(t, proxy.url, upstream, copyJar(proxy.url, copy), 'a copy of the cookie')

  const confirmed = await confirmAtProvider(t, endSession, jar)
  t.equal(confirmed.headers.location, `${proxy.url}/signed-out`, 'the provider returns to session.postLogoutRedirect')
  const again = await startLoginAgain(proxy.url, jar)
  t.ok(again.loginForm, 'the provider session is gone: the login form again')
})

t.test('GET sign-out with session.postLogoutRedirect and no rd', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ publicUrl }) => ({ session: { postLogoutRedirect: `${publicUrl}/` } }),
  })
  const { proxy } = stack
  const { jar } = await login({ proxyUrl: proxy.url })
  const out = await request(`${proxy.url}/oauth2/sign_out`, { headers: NAVIGATION_HEADERS, jar })
  const endSession = assertEndSessionRedirect(t, out, stack, `${proxy.url}/`)
  const confirmed = await confirmAtProvider(t, endSession, jar)
  t.equal(confirmed.headers.location, `${proxy.url}/`, 'the provider returns to session.postLogoutRedirect')
})

t.test('every session cookie chunk is cleared, and a copy of all of them stops working', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url })
  const loaded = await proxy.runtime.sessions.load(jar.get('_portcullis') ?? '')
  t.ok(loaded, 'the login cookie loads')
  // The same session (same id) made large enough for three cookies, as a session with many claims is.
  // Random text: repeated characters would deflate to nothing and never need chunks.
  const big: Session = { ...loaded!.session, claims: { ...loaded!.session.claims, big: randomBytes(4500).toString('base64url') } }
  const pieces = split('_portcullis', await proxy.runtime.sessions.save(big))
  t.strictSame(pieces.map(([n]) => n), ['_portcullis', '_portcullis_1', '_portcullis_2'], 'three chunks')
  for (const [name, piece] of pieces) jar.set(name, piece, { url: proxy.url })
  // A stray chunk a longer session left behind (not joined: _portcullis_3 is missing).
  jar.set('_portcullis_4', 'stale', { url: proxy.url })
  await assertSignedIn(t, proxy.url, upstream, jar, alice.id, 'the chunked session')
  const copy = sessionCookiesOf(jar)

  const out = await request(`${proxy.url}/oauth2/sign_out?rd=/`, { headers: NAVIGATION_HEADERS, jar })
  assertEndSessionRedirect(t, out, stack, `${proxy.url}/`)
  t.strictSame(
    deletedSessionCookies(out),
    ['_portcullis', '_portcullis_1', '_portcullis_2', '_portcullis_4'],
    'every chunk the browser sent is deleted, the stray one too',
  )
  for (const c of cookiesOf(out.setCookies).filter((c) => SESSION_NAME.test(c.name))) {
    t.equal(c.attrs.get('path'), '/', `${c.name} is deleted on the path it was set on`)
  }
  t.strictSame(sessionNamesIn(jar), [], 'the browser holds no session chunk')
  await assertSignedOut(t, proxy.url, upstream, copyJar(proxy.url, copy), 'a copy of every chunk')
  await assertSignedOut(t, proxy.url, upstream, copyJar(proxy.url, copy.filter(([n]) => n !== '_portcullis_4')), 'a copy of the joined chunks')
})

t.test('stale _portcullis_1 and _portcullis_2 without a session are cleared too', async (t) => {
  const stack = await startStack(t)
  const { proxy } = stack
  const jar = new CookieJar()
  jar.set('_portcullis_1', 'old-piece-1', { url: proxy.url })
  jar.set('_portcullis_2', 'old-piece-2', { url: proxy.url })
  const out = await request(`${proxy.url}/oauth2/sign_out?rd=/`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(out.status, 302)
  const loc = new URL(String(out.headers.location))
  t.equal(`${loc.origin}${loc.pathname}`, `${stack.provider.issuer}${PROVIDER_ROUTES.end_session}`, 'still ends the provider session')
  t.equal(loc.searchParams.get('id_token_hint'), null, 'no session, no id_token_hint')
  t.equal(loc.searchParams.get('post_logout_redirect_uri'), `${proxy.url}/`)
  t.strictSame(deletedSessionCookies(out), ['_portcullis', '_portcullis_1', '_portcullis_2'], 'the stale chunks (and the base name) are deleted')
  t.strictSame(sessionNamesIn(jar), [])
})

t.test('an rd off the allowlist is refused with 400, and the session is not ended', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url })
  const copy = sessionCookiesOf(jar)
  const hostile = ['https://evil.example/', '//evil.example', '/\\evil.example', 'javascript:alert(1)', `${proxy.url}.evil.example/`]
  for (const rd of hostile) {
    for (const [label, send] of [
      ['GET', () => request(`${proxy.url}/oauth2/sign_out?rd=${encodeURIComponent(rd)}`, { headers: NAVIGATION_HEADERS, jar })],
      [
        'POST',
        () =>
          request(`${proxy.url}/oauth2/sign_out`, {
            method: 'POST',
            jar,
            headers: { ...JSON_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
            body: `rd=${encodeURIComponent(rd)}`,
          }),
      ],
    ] as const) {
      const res = await send()
      t.equal(res.status, 400, `${label} rd=${rd}: 400`)
      t.equal(res.headers.location, undefined, `${label} rd=${rd}: no Location`)
      t.strictSame(res.setCookies.filter((l) => /^_portcullis(_\d+)?=/.test(l)), [], `${label} rd=${rd}: no session cookie touched`)
      if (label === 'POST') t.equal(res.json<{ error: string }>().error, 'REDIRECT_REJECTED')
      else t.match(String(res.headers['content-type']), /^text\/html/, 'a browser gets an HTML page')
      t.notMatch(res.body, /evil\.example/, `${label} rd=${rd}: the hostile target is not echoed`)
    }
  }
  t.strictSame(sessionNamesIn(jar), ['_portcullis'], 'the browser keeps its session cookie')
  await assertSignedIn(t, proxy.url, upstream, jar, alice.id, 'after the refused sign-outs')
  await assertSignedIn(t, proxy.url, upstream, copyJar(proxy.url, copy), alice.id, 'a copy of the cookie')
  t.notOk(stack.provider.requests.some((r) => r.path.startsWith(PROVIDER_ROUTES.end_session)), 'nobody was sent to the provider')
})

// ---------------------------------------------------------------------------------------------------
// Without an end-session endpoint

const BAD_CLIENT_ID = 'portcullis-sign-out'
const BAD_CLIENT_SECRET = 'bad-provider-client-secret-0123456789'

interface BadSetup {
  bad: BadProvider
  upstream: EchoUpstream
  proxy: RunningPortcullis
  publicUrl: string
}

async function startWithoutEndSession(t: Test, session: Record<string, unknown> = {}): Promise<BadSetup> {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const bad = await startBadProvider(t, {
    defect: 'none',
    redirectUri: `${publicUrl}/oauth2/callback`,
    clientId: BAD_CLIENT_ID,
    clientSecret: BAD_CLIENT_SECRET,
    endSessionEndpoint: false,
  })
  const upstream = await startTestUpstream(t)
  const config = configFor({
    issuer: bad.issuer,
    clientId: BAD_CLIENT_ID,
    clientSecret: BAD_CLIENT_SECRET,
    upstream: upstream.url,
    publicUrl,
    overrides: { session },
  })
  const proxy = await startPortcullis(t, config, { port })
  await proxy.runtime.provider.whenReady()
  return { bad, upstream, proxy, publicUrl }
}

/** start → the bad provider's authorize (an immediate 302) → callback: a session in a new jar. */
async function loginAtBadProvider(t: Test, s: BadSetup): Promise<CookieJar> {
  const jar = new CookieJar()
  const start = await request(`${s.publicUrl}/oauth2/start?rd=/x`, { jar, headers: NAVIGATION_HEADERS })
  const authorize = await request(String(start.headers.location), { jar, headers: NAVIGATION_HEADERS })
  const callback = await request(String(authorize.headers.location), { jar, headers: NAVIGATION_HEADERS })
  t.equal(callback.status, 302, 'logged in at the bad provider')
  t.ok(jar.get('_portcullis'), 'with a session cookie')
  return jar
}

t.test('without an end-session endpoint, sign-out goes to the validated rd', async (t) => {
  const s = await startWithoutEndSession(t)
  t.equal(s.proxy.runtime.provider.get().summary.endSessionEndpoint, undefined, 'discovery has no end_session_endpoint')

  const jar = await loginAtBadProvider(t, s)
  await assertSignedIn(t, s.publicUrl, s.upstream, jar, 'bad-provider-user', 'after login')
  const copy = sessionCookiesOf(jar)
  const out = await request(`${s.publicUrl}/oauth2/sign_out?rd=${encodeURIComponent('/signed-out?x=1')}`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(out.status, 302)
  t.equal(out.headers.location, `${s.publicUrl}/signed-out?x=1`, 'straight to rd, made absolute')
  t.equal(out.headers['cache-control'], 'no-store')
  t.strictSame(deletedSessionCookies(out), ['_portcullis'])
  t.strictSame(sessionNamesIn(jar), [])
  await assertSignedOut(t, s.publicUrl, s.upstream, jar, 'the browser')
  await assertSignedOut(t, s.publicUrl, s.upstream, copyJar(s.publicUrl, copy), 'a copied cookie')
  t.notOk(s.bad.requests.some((r) => r.path === '/oidc/logout'), 'the provider was not involved')

  const jar2 = await loginAtBadProvider(t, s)
  const post = await request(`${s.publicUrl}/oauth2/sign_out`, {
    method: 'POST',
    jar: jar2,
    headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
    body: `rd=${encodeURIComponent(`${s.publicUrl}/bye`)}`,
  })
  t.equal(post.status, 302)
  t.equal(post.headers.location, `${s.publicUrl}/bye`, 'POST: to the validated rd')
  await assertSignedOut(t, s.publicUrl, s.upstream, jar2, 'after the POST')

  const jar3 = await loginAtBadProvider(t, s)
  const bare = await request(`${s.publicUrl}/oauth2/sign_out`, { headers: NAVIGATION_HEADERS, jar: jar3 })
  t.equal(bare.status, 302)
  t.equal(bare.headers.location, `${s.publicUrl}/`, 'no rd: the public URL')
  await assertSignedOut(t, s.publicUrl, s.upstream, jar3, 'without rd')

  const jar4 = await loginAtBadProvider(t, s)
  const evil = await request(`${s.publicUrl}/oauth2/sign_out?rd=${encodeURIComponent('https://evil.example/')}`, { headers: JSON_HEADERS, jar: jar4 })
  t.equal(evil.status, 400, 'an off-list rd is refused here too')
  t.equal(evil.headers.location, undefined)
  await assertSignedIn(t, s.publicUrl, s.upstream, jar4, 'bad-provider-user', 'after the refused sign-out')
})

t.test('without an end-session endpoint and with session.postLogoutRedirect', async (t) => {
  const s = await startWithoutEndSession(t, { postLogoutRedirect: '/signed-out' })
  const jar = await loginAtBadProvider(t, s)
  const bare = await request(`${s.publicUrl}/oauth2/sign_out`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(bare.status, 302)
  t.equal(bare.headers.location, `${s.publicUrl}/signed-out`, 'no rd: session.postLogoutRedirect')
  await assertSignedOut(t, s.publicUrl, s.upstream, jar, 'the browser')

  const jar2 = await loginAtBadProvider(t, s)
  const withRd = await request(`${s.publicUrl}/oauth2/sign_out?rd=/chosen`, { headers: NAVIGATION_HEADERS, jar: jar2 })
  t.equal(withRd.status, 302)
  // Without an end-session endpoint the validated rd wins (issue #3 point 6 says "to the validated rd");
  // with one, session.postLogoutRedirect wins (see the POST test above).
  t.equal(withRd.headers.location, `${s.publicUrl}/chosen`, 'an rd: the validated rd')
})
