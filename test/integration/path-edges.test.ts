/**
 * Path and cookie edges, in both lanes (the fast-lane app and one on the same runtime with
 * `fastLane: false`; paths that keep a percent-escape take the Fastify path in either):
 *
 * - a route prefix written with a trailing slash also covers the path without it (`/public/admin/`
 *   protected under a public `/public/`: `/public/admin` needs a session);
 * - `match.caseInsensitive` folds case and trailing dots and spaces per segment (`/ADMIN`, `/admin.`,
 *   `/Admin%20/x` hit a protected `/admin`), and without it `/ADMIN` is another path;
 * - a path still percent-encoded after decoding (`%25XX`) is a 400, unless `server.allowDoubleEncoding`;
 * - the session cookie is `__Host-<name>` under an https publicUrl without `session.cookieDomain`;
 *   made-up chunk and transaction cookies get a bounded number of `Set-Cookie` lines back.
 *
 * Targets are written on raw sockets: `new URL()` (and so ordinary clients) would normalize them.
 * The https stacks serve plain http on loopback with an https `server.publicUrl` (TLS would end in
 * front); the login runs to the provider's redirect and the callback is then requested over http.
 */
import t, { type Test } from 'tap'
import { releaseHeldPort, reserveHeldPort, startApp, startPortcullis, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, parseSetCookie, request, type SetCookie } from '../helpers/http.ts'
import { rawRequest, type RawResponse } from '../helpers/raw-http.ts'
import { startTestProvider, DEMO_USERS } from '../helpers/provider.ts'
import { startTestUpstream, type EchoRecord, type EchoUpstream } from '../helpers/upstream.ts'
import { configFor } from '../helpers/config.ts'

const alice = DEMO_USERS[0]!
const API: Array<[string, string]> = [['Accept', 'application/json']]
const NAV: Array<[string, string]> = Object.entries(NAVIGATION_HEADERS)
const portOf = (app: RunningPortcullis): number => Number(new URL(app.url).port)

interface App {
  label: string
  app: RunningPortcullis
}

async function bothApps(t: Test, stack: Stack): Promise<App[]> {
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  return [
    { label: 'fast-lane app', app: stack.proxy },
    { label: 'fastLane: false', app: slow },
  ]
}

function routesFor(upstream: string): unknown[] {
  return [
    { match: { pathPrefix: '/' }, upstream, public: true },
    { match: { pathPrefix: '/public/' }, upstream, public: true },
    { match: { pathPrefix: '/public/admin/' }, upstream },
    { match: { pathPrefix: '/admin', caseInsensitive: true }, upstream },
    // The same shape without caseInsensitive, on a host of its own.
    { match: { host: 'nofold.example', pathPrefix: '/' }, upstream, public: true },
    { match: { host: 'nofold.example', pathPrefix: '/admin' }, upstream },
  ]
}

/** What the upstream got for one request, if anything. */
async function send(stack: Stack, app: RunningPortcullis, target: string, headers: Array<[string, string]>): Promise<{ res: RawResponse; record: EchoRecord | null }> {
  const before = stack.upstream.requests.length
  const res = await rawRequest(portOf(app), target, { headers })
  const after = stack.upstream.requests.length
  return { res, record: after === before + 1 ? (stack.upstream.requests.at(-1) as EchoRecord) : after === before ? null : ({ url: `${after - before} requests` } as EchoRecord) }
}

/**
 * `target` needs a session: a navigation is sent to the login, an API client gets 401, nothing
 * reaches the upstream; with the session it is forwarded, as alice (so on the protected route: the
 * public one injects no identity).
 */
async function needsSession(t: Test, stack: Stack, a: App, target: string, cookie: string, host?: string): Promise<void> {
  const forwardedAs = NORMALIZED[target] ?? target
  const label = `${a.label}: ${target}${host === undefined ? '' : ` (Host ${host})`}`
  const hostHeader: Array<[string, string]> = host === undefined ? [] : [['Host', host]]
  const nav = await send(stack, a.app, target, [...hostHeader, ...NAV])
  t.equal(nav.res.status, 302, `${label}: a navigation without a session → 302`)
  t.match(nav.res.headers.location?.[0] ?? '', /\/oauth2\/start\?rd=/, `${label}: to the login`)
  t.equal(nav.record, null, `${label}: nothing reached the upstream`)
  const api = await send(stack, a.app, target, [...hostHeader, ...API])
  t.equal(api.res.status, 401, `${label}: an API client without a session → 401`)
  t.equal(api.record, null, `${label}: nothing reached the upstream`)
  const ok = await send(stack, a.app, target, [...hostHeader, ...API, ['Cookie', cookie]])
  t.equal(ok.res.status, 200, `${label}: with a session → forwarded`)
  t.equal(ok.record?.url, forwardedAs, `${label}: forwarded as ${forwardedAs}`)
  t.equal(ok.record?.headers['x-auth-request-user'], alice.id, `${label}: as alice (the protected route)`)
}

/** Targets the upstream gets normalized (escapes of unreserved characters decoded, dot segments and `//` resolved). */
const NORMALIZED: Record<string, string> = {
  '/public/%61dmin': '/public/admin',
  '/public/%61dmin/': '/public/admin/',
  '/public//admin': '/public/admin',
  '/public/x/../admin': '/public/admin',
  '/%41DMIN': '/ADMIN',
  '/ADMIN%3bjsessionid=1': '/ADMIN%3Bjsessionid=1',
}

/** `target` is on a public route: forwarded without a session, with no identity. */
async function isPublic(t: Test, stack: Stack, a: App, target: string, host?: string): Promise<void> {
  const label = `${a.label}: ${target}${host === undefined ? '' : ` (Host ${host})`}`
  const got = await send(stack, a.app, target, [...(host === undefined ? [] : ([['Host', host]] as Array<[string, string]>)), ...API])
  t.equal(got.res.status, 200, `${label}: public, forwarded without a session`)
  t.equal(got.record?.url, target, `${label}: the path as sent`)
  t.equal(got.record?.headers['x-auth-request-user'], undefined, `${label}: no identity (a public route)`)
}

async function refused(t: Test, stack: Stack, a: App, target: string, status: number, headers: Array<[string, string]> = API): Promise<RawResponse> {
  const got = await send(stack, a.app, target, headers)
  t.equal(got.res.status, status, `${a.label}: ${target} → ${status}`)
  t.equal(got.record, null, `${a.label}: ${target}: nothing reached the upstream`)
  return got.res
}

// ===================================================================================================

t.test('paths, default configuration', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({ server: { trustedProxies: ['127.0.0.1'] }, routes: routesFor(upstream) }),
  })
  const apps = await bothApps(t, stack)
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/admin' })
  const cookie = jar.header(`${stack.proxy.url}/`)
  t.match(cookie, /(^|; )_portcullis=/, 'logged in')

  t.test('7a. a protected /public/admin/ under a public /public/: /public/admin needs a session', async (t) => {
    for (const a of apps) {
      for (const target of ['/public/admin', '/public/admin/', '/public/admin/x', '/public/admin?x=1', '/public/%61dmin', '/public//admin', '/public/x/../admin', '/public/admin;x=1', '/public/admin%3Bx=1', '/public/admin/x%20y']) {
        await needsSession(t, stack, a, target, cookie)
      }
      for (const target of ['/public/', '/public/x', '/public/adminx', '/public/administrator/']) await isPublic(t, stack, a, target)
      // A public match yields to a longer protected prefix the path matches without case: in doubt, a session.
      await needsSession(t, stack, a, '/public/ADMIN', cookie)
    }
  })

  t.test('7b. caseInsensitive: /ADMIN, /admin., /Admin%20/x, /admin./x hit the protected /admin', async (t) => {
    const folded = ['/admin', '/ADMIN', '/Admin', '/admin.', '/admin..', '/ADMIN.', '/Admin%20/x', '/admin%20', '/admin./x', '/AdMiN/x', '/admin.%20./y', '/ADMIN;jsessionid=1', '/ADMIN%3bjsessionid=1', '/%41DMIN']
    for (const a of apps) {
      for (const target of folded) await needsSession(t, stack, a, target, cookie)
      for (const target of ['/administrator', '/admin.x', '/ADMINS', '/x/admin']) await isPublic(t, stack, a, target)
    }
  })

  t.test('7b. without caseInsensitive, a public route still yields /ADMIN, /admin. to the protected /admin', async (t) => {
    for (const a of apps) {
      for (const target of ['/admin', '/admin/x', '/ADMIN', '/Admin/x', '/admin.', '/admin%20']) await needsSession(t, stack, a, target, cookie, 'nofold.example')
      for (const target of ['/administrator', '/x/ADMIN']) await isPublic(t, stack, a, target, 'nofold.example')
    }
  })

  t.test('7c. a path still percent-encoded after decoding: 400 by default', async (t) => {
    for (const a of apps) {
      for (const target of ['/public/%2561dmin/', '/public/%2561dmin', '/%2561dmin', '/public/%252e%252e/admin/', '/x/%25%32%66', '/public/%252F']) {
        const res = await refused(t, stack, a, target, 400)
        t.match(res.body, /PATH_REJECTED/, `${a.label}: ${target}: PATH_REJECTED`)
        await refused(t, stack, a, target, 400, [...API, ['Cookie', cookie]])
      }
      // Control: one decoding leaves no escape: the protected route.
      await needsSession(t, stack, a, '/public/%61dmin/', cookie)
      // `%25` alone (no two hex digits after it) is a plain percent sign.
      await isPublic(t, stack, a, '/public/100%25')
    }
  })

  t.test('7c. the forward-auth check refuses a double-encoded original URL (403)', async (t) => {
    for (const a of apps) {
      const check = (url: string, withCookie: boolean) =>
        rawRequest(portOf(a.app), '/oauth2/auth', { headers: [['X-Original-URL', url], ...(withCookie ? ([['Cookie', cookie]] as Array<[string, string]>) : [])] })
      t.equal((await check('http://app.example/public/%2561dmin/', false)).status, 403, `${a.label}: double-encoded original URL → 403`)
      t.equal((await check('http://app.example/public/%2561dmin/', true)).status, 403, `${a.label}: also with a session`)
      t.equal((await check('http://app.example/public/x', false)).status, 200, `${a.label}: control, a public original URL → 200`)
      t.equal((await check('http://app.example/public/admin', false)).status, 401, `${a.label}: control, /public/admin needs a session → 401`)
    }
  })

  t.test('8c. 500 made-up session chunk cookies: at most 8 Set-Cookie lines back', async (t) => {
    const chunks = Array.from({ length: 500 }, (_, i) => `_portcullis_${i + 1}=x${i}`).join('; ')
    const allowed = new Set(['_portcullis', ...Array.from({ length: 7 }, (_, i) => `_portcullis_${i + 1}`)])
    for (const a of apps) {
      for (const [label, target, value] of [
        ['chunks only, protected route', '/admin', chunks],
        ['a base cookie and 500 chunks, protected route', '/admin/x', `_portcullis=garbage; ${chunks}`],
        ['the valid session cookie and 500 chunks, protected route', '/admin/y', `${cookie}; ${chunks}`],
        ['chunks only, /oauth2/userinfo', '/oauth2/userinfo', chunks],
        ['chunks only, the forward-auth check', '/oauth2/auth', chunks],
      ] as const) {
        const res = await rawRequest(portOf(a.app), target, { headers: [...API, ['Cookie', value]] })
        t.equal(res.status, 401, `${a.label}: ${label}: no session`)
        const lines = (res.headers['set-cookie'] ?? []).map(parseSetCookie)
        t.ok(lines.length >= 1 && lines.length <= 8, `${a.label}: ${label}: ${lines.length} Set-Cookie lines (1-8)`)
        t.ok(lines.every(isDeletion), `${a.label}: ${label}: all deletions`)
        t.same(lines.filter((c) => !allowed.has(c.name)).map((c) => c.name), [], `${a.label}: ${label}: only names Portcullis could have written`)
      }
    }
  })

  t.test('8c. on a public route the made-up chunk and transaction cookies are not answered, and never forwarded', async (t) => {
    const made = [
      ...Array.from({ length: 500 }, (_, i) => `_portcullis_${i + 1}=x${i}`),
      ...Array.from({ length: 50 }, (_, i) => `_portcullis_tx_${i.toString(16).padStart(16, 'a')}=y${i}`),
      'app_cookie=kept',
    ].join('; ')
    for (const a of apps) {
      const got = await send(stack, a.app, '/public/cookies', [...API, ['Cookie', made]])
      t.equal(got.res.status, 200, `${a.label}: forwarded`)
      t.notOk(got.res.headers['set-cookie'], `${a.label}: no Set-Cookie (a public route opens no session)`)
      t.equal(got.record?.headers.cookie, 'app_cookie=kept', `${a.label}: only the app's own cookie reaches the upstream`)
    }
  })

  t.test('8d. 100 made-up transaction cookies at /oauth2/start: at most 21 Set-Cookie lines back', async (t) => {
    const hex = (i: number) => i.toString(16).padStart(16, '0')
    const made = Array.from({ length: 100 }, (_, i) => `_portcullis_tx_${hex(i + 1)}=made-up-${i}`).join('; ')
    for (const a of apps) {
      const res = await rawRequest(portOf(a.app), '/oauth2/start?rd=/admin', { headers: [...NAV, ['Cookie', made]] })
      t.equal(res.status, 302, `${a.label}: the login starts`)
      const lines = (res.headers['set-cookie'] ?? []).map(parseSetCookie)
      t.ok(lines.length <= 21, `${a.label}: ${lines.length} Set-Cookie lines (at most 21)`)
      const set = lines.filter((c) => !isDeletion(c))
      t.equal(set.length, 1, `${a.label}: one new transaction cookie`)
      t.match(set[0]?.name, /^_portcullis_tx_[0-9a-f]{16}$/, `${a.label}: named as a transaction`)
      const cleared = lines.filter(isDeletion)
      t.ok(cleared.length >= 1 && cleared.length <= 20, `${a.label}: ${cleared.length} made-up ones cleared (1-20)`)
      t.ok(cleared.every((c) => /^_portcullis_tx_[0-9a-f]{16}$/.test(c.name) && c.attrs.get('path') === '/oauth2/'), `${a.label}: only transaction cookies, on their path`)
    }
  })
})

t.test('paths, server.allowDoubleEncoding: true', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({ server: { allowDoubleEncoding: true, trustedProxies: ['127.0.0.1'] }, routes: routesFor(upstream) }),
  })
  const apps = await bothApps(t, stack)
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/admin' })
  const cookie = jar.header(`${stack.proxy.url}/`)
  for (const a of apps) {
    for (const target of ['/public/%2561dmin/', '/%2561dmin', '/public/%252e%252e/admin/']) await isPublic(t, stack, a, target)
    // Matched as sent: a protected prefix still needs a session with an escape after it.
    await needsSession(t, stack, a, '/public/admin/%2561', cookie)
    await needsSession(t, stack, a, '/ADMIN/%2561', cookie)
    const check = await rawRequest(portOf(a.app), '/oauth2/auth', { headers: [['X-Original-URL', 'http://app.example/public/%2561dmin/']] })
    t.equal(check.status, 200, `${a.label}: the check takes the double-encoded original URL (a public route)`)
  }
})

// ===================================================================================================
// Cookies under an https publicUrl

function isDeletion(c: SetCookie): boolean {
  return c.value === '' && (c.attrs.get('max-age') === '0' || /1970/.test(c.attrs.get('expires') ?? ''))
}

interface HttpsStack {
  proxy: RunningPortcullis
  upstream: EchoUpstream
  publicUrl: string
}

/** Provider, upstream and Portcullis with `server.publicUrl` https://127.0.0.1:PORT, served over http. */
async function httpsStack(t: Test, session: Record<string, unknown>): Promise<HttpsStack> {
  const port = await reserveHeldPort()
  t.teardown(() => releaseHeldPort(port))
  const publicUrl = `https://127.0.0.1:${port}`
  const clientId = 'portcullis-https'
  const clientSecret = 'test-client-secret-that-is-long-enough'
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`], postLogoutRedirectUris: [`${publicUrl}/`], tokenEndpointAuthMethod: 'client_secret_basic' }],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl, overrides: { session, routes: routesFor(upstream.url) } })
  const proxy = await startPortcullis(t, config, { port })
  await proxy.runtime.provider.whenReady()
  return { proxy, upstream, publicUrl }
}

/** Log in through the provider; the callback (an https URL) is requested over plain http. */
async function httpsLogin(s: HttpsStack): Promise<{ jar: CookieJar; callback: SetCookie[]; status: number; location: string | undefined }> {
  const { jar, callbackUrl } = await authorizeUntilCallback({ proxyUrl: s.publicUrl, startUrl: `${s.proxy.url}/oauth2/start?rd=/admin` })
  const plain = new URL(callbackUrl)
  plain.protocol = 'http:'
  const res = await request(plain.href, { headers: NAVIGATION_HEADERS, jar })
  return { jar, callback: res.setCookies.map(parseSetCookie), status: res.status, location: res.headers.location }
}

t.test('8a. https publicUrl, no cookieDomain: the session cookie is __Host-_portcullis', async (t) => {
  const s = await httpsStack(t, {})
  t.equal(s.proxy.runtime.sessionCookie, '__Host-_portcullis', 'the runtime names it so')
  const start = await request(`${s.proxy.url}/oauth2/start?rd=/admin`, { headers: NAVIGATION_HEADERS })
  const tx = start.setCookies.map(parseSetCookie)
  t.match(tx.map((c) => c.name), [/^_portcullis_tx_[0-9a-f]{16}$/], 'the transaction cookie keeps its name (its Path is the auth prefix)')
  t.ok(tx[0]?.attrs.has('secure'), 'Secure')

  const { jar, callback, status, location } = await httpsLogin(s)
  t.equal(status, 302, 'the callback signs in')
  t.equal(location, `${s.publicUrl}/admin`, 'back to rd')
  const sessionCookies = callback.filter((c) => !isDeletion(c) && !c.name.startsWith('_portcullis_tx_'))
  t.same(sessionCookies.map((c) => c.name), ['__Host-_portcullis'], 'one session cookie, __Host-_portcullis')
  const c = sessionCookies[0]
  t.ok(c?.attrs.has('secure'), 'Secure')
  t.equal(c?.attrs.get('path'), '/', 'Path=/')
  t.notOk(c?.attrs.has('domain'), 'no Domain')
  t.ok(c?.attrs.has('httponly'), 'HttpOnly')
  t.notOk(callback.some((x) => x.name === '_portcullis' && !isDeletion(x)), 'no cookie under the plain name')

  for (const app of [s.proxy, await startApp(t, s.proxy.runtime, { fastLane: false })]) {
    const before = s.upstream.requests.length
    const res = await request(`${app.url}/admin/x`, { headers: { accept: 'application/json' }, jar })
    t.equal(res.status, 200, 'the __Host- cookie is the session')
    t.equal(s.upstream.requests.length, before + 1)
    const seen = s.upstream.requests.at(-1) as EchoRecord
    t.equal(seen.headers['x-auth-request-user'], alice.id, 'as alice')
    t.notMatch(String(seen.headers.cookie ?? ''), /__Host-_portcullis/, 'the session cookie is not forwarded')
    const value = jar.get('__Host-_portcullis') as string
    const plainName = await request(`${app.url}/admin/x`, { headers: { accept: 'application/json', cookie: `_portcullis=${value}` } })
    t.equal(plainName.status, 401, 'the same value under the plain name is no session')
    const chunks = Array.from({ length: 500 }, (_, i) => `__Host-_portcullis_${i + 1}=x`).join('; ')
    const flood = await request(`${app.url}/admin/x`, { headers: { accept: 'application/json', cookie: chunks } })
    t.equal(flood.status, 401)
    t.ok(flood.setCookies.length >= 1 && flood.setCookies.length <= 8, `500 made-up __Host- chunks: ${flood.setCookies.length} Set-Cookie lines (1-8)`)
    t.ok(flood.setCookies.map(parseSetCookie).every((x) => isDeletion(x) && x.name.startsWith('__Host-_portcullis') && x.attrs.has('secure') && !x.attrs.has('domain')), 'deletions of __Host- names, Secure, no Domain')
  }
})

t.test('8b. https publicUrl with session.cookieDomain: the session cookie keeps its name', async (t) => {
  const s = await httpsStack(t, { cookieDomain: '127.0.0.1' })
  t.equal(s.proxy.runtime.sessionCookie, '_portcullis')
  const { jar, callback, status } = await httpsLogin(s)
  t.equal(status, 302, 'the callback signs in')
  const sessionCookies = callback.filter((c) => !isDeletion(c) && !c.name.startsWith('_portcullis_tx_'))
  t.same(sessionCookies.map((c) => c.name), ['_portcullis'], 'one session cookie, _portcullis')
  t.equal(sessionCookies[0]?.attrs.get('domain'), '127.0.0.1', 'with the Domain')
  t.ok(sessionCookies[0]?.attrs.has('secure'), 'Secure')
  t.notOk(callback.some((c) => c.name.startsWith('__Host-')), 'no __Host- cookie')
  const res = await request(`${s.proxy.url}/admin/x`, { headers: { accept: 'application/json' }, jar })
  t.equal(res.status, 200, 'the session works')
  t.equal((s.upstream.requests.at(-1) as EchoRecord).headers['x-auth-request-user'], alice.id)
})
