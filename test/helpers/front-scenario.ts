/**
 * One forward-auth scenario for every real front proxy (nginx, Caddy): the app behind the front, not
 * behind Portcullis, and Portcullis's /oauth2/* routed through the same front so its cookies are the
 * app's. `startFrontStack` brings up provider, echo app and Portcullis (publicUrl = the front's URL,
 * the front's address trusted); the test starts its front on `frontPort`; `runFrontScenario` then
 * drives it: API clients, spoofed identity and original-URL headers, a real chromium login, a user
 * an access rule refuses, sign-out.
 */
import type { Test } from 'tap'
import { launchBrowser } from './browser.ts'
import { configFor } from './config.ts'
import { fakeClock, type FakeClock } from './clock.ts'
import { CookieJar, request, type TestResponse } from './http.ts'
import { rawRequest } from './raw-http.ts'
import { login, NAVIGATION_HEADERS } from './login.ts'
import { releaseHeldPort, reserveHeldPort, startPortcullis, type RunningPortcullis } from './portcullis.ts'
import { DEMO_USERS, startTestProvider, type RunningProvider } from './provider.ts'
import { startTestUpstream, type EchoRecord, type EchoUpstream } from './upstream.ts'

export const alice = DEMO_USERS[0]!
export const bob = DEMO_USERS[1]!

export const API_HEADERS: Record<string, string> = { accept: 'application/json' }

/** Client-sent copies of identity headers, ours and other layers': none may reach the app. */
export const SPOOFED: Record<string, string> = {
  'X-Auth-Request-User': 'mallory',
  'X-Auth-Request-Email': 'mallory@evil.example',
  'X-Forwarded-User': 'mallory',
  'X-Forwarded-Email': 'mallory@evil.example',
  'Remote-User': 'mallory',
}

export interface FrontStack {
  /** The front's URL, Portcullis's publicUrl. */
  publicUrl: string
  /** Held for the front: release it right before starting it. */
  frontPort: number
  proxy: RunningPortcullis
  proxyPort: number
  provider: RunningProvider
  app: EchoUpstream
  clock: FakeClock
}

/**
 * Routes: `/` for any signed-in user, `/public` public, `/admin` for the admins group (alice is in
 * it, bob is not). `session` merges into the session section (e.g. `{ store: 'memory' }`);
 * `trustedProxies` is the front's address (default 127.0.0.1/32).
 */
export async function startFrontStack(t: Test, opts: { session?: Record<string, unknown>; trustedProxies?: string[] } = {}): Promise<FrontStack> {
  // Held until the front and Portcullis listen: the provider and the app bind port 0 meanwhile.
  const [frontPort, proxyPort] = [await reserveHeldPort(), await reserveHeldPort()]
  const publicUrl = `http://127.0.0.1:${frontPort}`
  const clientId = 'front-forward-auth'
  const clientSecret = 'front-forward-auth-secret-long-enough'
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`], tokenEndpointAuthMethod: 'client_secret_basic' }],
    allowLoopbackFetch: true,
  })
  const app = await startTestUpstream(t)
  const config = configFor({
    issuer: provider.issuer,
    clientId,
    clientSecret,
    upstream: app.url,
    publicUrl,
    overrides: {
      server: { trustedProxies: opts.trustedProxies ?? ['127.0.0.1/32'] },
      ...(opts.session ? { session: opts.session } : {}),
      routes: [
        { match: { pathPrefix: '/' }, upstream: app.url },
        { match: { pathPrefix: '/public' }, upstream: app.url, public: true },
        { match: { pathPrefix: '/admin' }, upstream: app.url, allow: { groups: ['admins'] } },
      ],
    },
  })
  const clock = fakeClock()
  const proxy = await startPortcullis(t, config, { port: proxyPort, clock })
  await proxy.runtime.provider.whenReady()
  return { publicUrl, frontPort, proxy, proxyPort, provider, app, clock }
}

/** Start the front on the held port (the caller's `start`), after releasing it. */
export async function withFront(s: FrontStack, start: () => Promise<boolean>): Promise<boolean> {
  await releaseHeldPort(s.frontPort)
  return start()
}

export interface ScenarioOptions {
  /**
   * What a client without a session that is not a browser navigation gets: `json` (a 401 JSON, from
   * Portcullis) or `signin` (the front's sign-in redirect for every client, as ingress-nginx's
   * auth-signin does).
   */
  apiRefusal: 'json' | 'signin'
  /** The page the browser asks for first (its query must come back). */
  target: string
  /** Asserts the Location a browser navigation without a session is sent to. */
  signinLocation: (t: Test, location: string | undefined, target: string) => void
  /**
   * The front passes a client's `X-Forwarded-Uri`/`-Host` on to the check beside its own
   * `X-Original-URL` (ingress-nginx does): Portcullis then refuses the disagreement with a 403.
   */
  passesClientForwarding?: boolean
}

function spoofFree(t: Test, seen: EchoRecord | undefined, what: string): void {
  t.ok(seen, `${what}: the app got the request`)
  const values = Object.entries(seen?.headers ?? {}).filter(([, v]) => String(v).includes('mallory'))
  t.same(values, [], `${what}: no client-sent identity header reached the app`)
}

function refusedApi(t: Test, res: TestResponse, opts: ScenarioOptions, what: string): void {
  if (opts.apiRefusal === 'json') {
    t.equal(res.status, 401, `${what}: 401`)
    t.match(res.headers['content-type'], /^application\/json/, `${what}: JSON`)
    t.match(res.json(), { error: 'UNAUTHENTICATED' }, `${what}: Portcullis's body`)
  } else {
    t.equal(res.status, 302, `${what}: the front's sign-in redirect (as for everyone)`)
    t.match(res.headers.location, /\/oauth2\/start\?rd=/, `${what}: to the login`)
  }
}

/** Sets `jar` from a chromium context's cookies for `url`. */
function jarFrom(cookies: ReadonlyArray<{ name: string; value: string }>, url: string): CookieJar {
  const jar = new CookieJar()
  for (const c of cookies) jar.set(c.name, c.value, { url })
  return jar
}

export async function runFrontScenario(t: Test, s: FrontStack, opts: ScenarioOptions): Promise<void> {
  const { publicUrl, app } = s
  const target = `${publicUrl}${opts.target}`

  // No session, an API client and a POST: refused, the app sees nothing.
  const api = await request(target, { headers: API_HEADERS })
  refusedApi(t, api, opts, 'API GET without a session')
  const apiPost = await request(`${publicUrl}/reports`, { method: 'POST', body: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  refusedApi(t, apiPost, opts, 'POST without a session')
  t.equal(app.requests.length, 0, 'the app saw nothing')

  // No session, a browser navigation: to the login.
  const nav = await request(target, { headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 302, 'a navigation without a session is redirected (never a 500)')
  opts.signinLocation(t, nav.headers.location, target)

  // A public route passes without a session; the client's identity headers stay behind.
  const pub = await request(`${publicUrl}/public/page`, { headers: SPOOFED })
  t.equal(pub.status, 200, 'a public route needs no session')
  t.equal(app.requests.at(-1)?.url, '/public/page')
  spoofFree(t, app.requests.at(-1), 'public route')

  // A client naming another (public) original request in forwarding headers is not believed.
  const beforeForged = app.requests.length
  const forged = await request(`${publicUrl}/reports`, {
    headers: {
      ...API_HEADERS,
      'X-Original-URL': `${publicUrl}/public/x`,
      'X-Original-Method': 'GET',
      'X-Forwarded-Uri': '/public/x',
      'X-Forwarded-Host': new URL(publicUrl).host,
      'X-Forwarded-Method': 'GET',
      'X-Forwarded-Proto': 'http',
    },
  })
  if (opts.passesClientForwarding === true) t.equal(forged.status, 403, 'a client-sent original URL that disagrees with the front\'s: refused (403)')
  else refusedApi(t, forged, opts, 'a client-sent original URL of a public route')
  t.equal(app.requests.length, beforeForged, 'the app did not get it')

  // A real browser: the provider's login page, then back at the page it asked for.
  const launched = await launchBrowser(t)
  if (!launched) return
  const { context, page } = launched
  await page.goto(target)
  t.equal(new URL(page.url()).origin, new URL(s.provider.issuer).origin, `the browser is on the provider (${page.url()})`)
  t.equal(await page.locator('input[name="login"]').count(), 1, 'the login form')
  await page.fill('input[name="login"]', alice.email)
  await page.fill('input[name="password"]', alice.password)
  await Promise.all([page.waitForURL(target), page.locator('form [type="submit"], form button').first().click()])
  t.equal(page.url(), target, 'back at the page first asked for, query included')
  const seen = app.requests.filter((r) => r.url === opts.target)
  t.equal(seen.length, 1, 'the app got the original path and query, once')
  t.equal(seen[0]?.headers['x-auth-request-user'], alice.id, 'with X-Auth-Request-User')
  t.equal(seen[0]?.headers['x-auth-request-email'], alice.email, 'with X-Auth-Request-Email')
  t.equal(seen[0]?.headers['x-forwarded-user'], alice.id, 'with X-Forwarded-User')
  t.match(String(seen[0]?.headers['x-auth-request-groups']), /admins/, 'with X-Auth-Request-Groups')
  t.match((await page.textContent('body')) ?? '', alice.email, "the app's page shows her")

  const jar = jarFrom(await context.cookies(publicUrl), publicUrl)
  t.ok(jar.get('_portcullis'), 'the session cookie is on the front host')

  // Signed in, with spoofed headers: the identity is the check's.
  const ok = await request(`${publicUrl}/reports`, { jar, headers: { ...API_HEADERS, ...SPOOFED } })
  t.equal(ok.status, 200, 'with a session the app answers')
  const at = app.requests.at(-1)
  t.equal(at?.url, '/reports')
  t.equal(at?.headers['x-auth-request-user'], alice.id, 'identity from the check, not the client')
  t.equal(at?.headers['x-forwarded-email'], alice.email)
  spoofFree(t, at, 'signed in')
  t.ok(!at?.headers['remote-user'], 'no Remote-User')

  const post = await request(`${publicUrl}/reports`, { method: 'POST', jar, body: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(post.status, 200, 'a POST with a session')
  t.equal(app.requests.at(-1)?.method, 'POST')
  t.equal(app.requests.at(-1)?.body, 'a=1', 'the body reaches the app')

  // An access rule: alice (admins) passes, bob is refused with a 403 and the app sees nothing.
  t.equal((await request(`${publicUrl}/admin/panel`, { jar, headers: API_HEADERS })).status, 200, 'alice (admins) on /admin')
  const bobLogin = await login({ proxyUrl: publicUrl, path: '/admin/panel', user: bob })
  t.equal(bobLogin.finalLocation, `${publicUrl}/admin/panel`, 'bob signs in (the login itself is not refused)')
  const before = app.requests.length
  const denied = await request(`${publicUrl}/admin/panel`, { jar: bobLogin.jar, headers: API_HEADERS })
  t.equal(denied.status, 403, 'bob (not admins) gets a 403 through the front')
  const deniedNav = await request(`${publicUrl}/admin/panel`, { jar: bobLogin.jar, headers: NAVIGATION_HEADERS })
  t.equal(deniedNav.status, 403, 'also as a browser navigation (no login loop)')
  t.equal(deniedNav.headers.location, undefined)
  t.equal(app.requests.length, before, 'the app saw neither')
  t.equal((await request(`${publicUrl}/reports`, { jar: bobLogin.jar, headers: API_HEADERS })).status, 200, 'bob elsewhere')
  // A dot-segment path into /admin, sent as written: the app must not get it for bob.
  const beforeDots = app.requests.length
  const dots = await rawRequest(s.frontPort, '/public/../admin/panel', { headers: [['Host', new URL(publicUrl).host], ['Accept', 'application/json'], ['Cookie', bobLogin.jar.header(`${publicUrl}/`)]] })
  t.not(dots.status, 200, `bob on /public/../admin/panel: refused (${dots.status}; the app got ${app.requests.at(-1)?.url})`)
  t.equal(app.requests.length, beforeDots, 'bob on /public/../admin/panel: the app saw nothing')

  // Sign-out through the front: the same cookie no longer opens anything.
  const cookie = jar.header(`${publicUrl}/`)
  const out = await request(`${publicUrl}/oauth2/sign_out`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(out.status, 302, 'sign-out redirects')
  t.ok(out.setCookies.some((c) => c.startsWith('_portcullis=')), 'and clears the session cookie')
  const afterApi = await request(`${publicUrl}/reports`, { headers: { ...API_HEADERS, cookie } })
  refusedApi(t, afterApi, opts, 'the signed-out cookie, as an API client')
  const afterNav = await request(target, { headers: { ...NAVIGATION_HEADERS, cookie } })
  t.equal(afterNav.status, 302, 'the signed-out cookie, in a browser: to the login again')
  opts.signinLocation(t, afterNav.headers.location, target)
}

/**
 * `signinLocation` for a front that hands Portcullis's own refusal on: an absolute Location on the
 * front to `/oauth2/start`, with the whole original URL (every query parameter) as `rd`.
 */
export function absoluteStart(publicUrl: string, why: string): ScenarioOptions['signinLocation'] {
  return (t, location, target) => {
    const url = new URL(location ?? '', 'http://relative.invalid')
    t.equal(url.origin, publicUrl, `an absolute Location on the front (${location})`)
    t.equal(url.pathname, '/oauth2/start')
    t.equal(url.searchParams.get('rd'), target, `rd is the whole original URL (${why})`)
  }
}
