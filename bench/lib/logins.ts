/**
 * Logins for the bench: the one-time login that yields the session cookie the load runs send, the
 * login loop of measurement (g), and the fast "SSO" logins the memory measurement uses to create
 * thousands of distinct sessions. All on the test helpers' plain node:http client and cookie jar.
 */
import http from 'node:http'
import { CookieJar, request } from '../../test/helpers/http.ts'
import { NAVIGATION_HEADERS, login, parseForm } from '../../test/helpers/login.ts'
import { DEMO_USERS } from '../../src/demo/provider.ts'

export { login }

/** Keep-alive agent for the login traffic (Node 20's global agent keeps alive too; this one is ours). */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })

/** The `Cookie` header holding only the named session cookie and its chunks (`NAME`, `NAME_1`, ...). */
export function sessionCookieHeader(jar: CookieJar, name: string): string | null {
  const chunk = new RegExp(`^${name.replace(/[^A-Za-z0-9_-]/g, '')}_\\d+$`)
  const pairs = jar
    .all()
    .filter((c) => c.name === name || chunk.test(c.name))
    .sort((x, y) => x.name.localeCompare(y.name, 'en', { numeric: true }))
    .map((c) => `${c.name}=${c.value}`)
  return pairs.length === 0 ? null : pairs.join('; ')
}

/** Time spent per origin during one login, in ms (client-observed, request start to body end). */
export interface LoginTiming {
  proxyMs: number
  providerMs: number
  requests: number
}

/**
 * Walk a browser login from `startUrl`: follow redirects with `jar`, fill the provider's login form
 * (alice), stop at the redirect back to a non-`prefix` path of `proxyOrigin` (not requested).
 * Returns that last response's `Set-Cookie`s and the time per origin.
 */
async function drive(jar: CookieJar, startUrl: string, proxyOrigin: string, prefix: string, timing: LoginTiming): Promise<string[]> {
  const user = DEMO_USERS[0]
  if (user === undefined) throw new Error('no demo user')
  let method = 'GET'
  let url = startUrl
  let body: string | undefined
  let submitted = false
  for (let step = 0; step < 20; step++) {
    const headers: Record<string, string> = { ...NAVIGATION_HEADERS }
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const t0 = performance.now()
    const res = await request(url, { method, headers, jar, agent, ...(body !== undefined ? { body } : {}) })
    const ms = performance.now() - t0
    timing.requests++
    if (new URL(url).origin === proxyOrigin) timing.proxyMs += ms
    else timing.providerMs += ms
    const location = res.headers.location
    if (res.status >= 300 && res.status < 400 && location !== undefined) {
      const next = new URL(location, url)
      if (next.origin === proxyOrigin && !next.pathname.startsWith(`${prefix}/`)) return res.setCookies
      method = 'GET'
      body = undefined
      url = next.href
      continue
    }
    const form = res.status === 200 ? parseForm(res.body, url) : undefined
    if (form !== undefined && 'login' in form.fields && 'password' in form.fields && !submitted) {
      submitted = true
      method = form.method
      url = form.action
      body = new URLSearchParams({ ...form.fields, login: user.email, password: user.password }).toString()
      continue
    }
    throw new Error(`login: unexpected ${res.status} at ${method} ${url}: ${res.body.replace(/\s+/g, ' ').slice(0, 200)}`)
  }
  throw new Error('login: more than 20 steps')
}

export interface LoginLoopResult {
  logins: number
  failures: number
  firstError?: string
  durationSec: number
  loginsPerSec: number
  /** Mean client-observed ms per login, split by origin (the callback's time includes Portcullis's own token request to the provider). */
  meanMs: { total: number; proxy: number; provider: number }
  requestsPerLogin: number
}

/**
 * Measurement (g): full logins for `durationSec` with `concurrency` workers, each login with a fresh
 * jar (no provider session, so the provider shows and checks its login form every time):
 * GET / → 302 start → 302 provider → login form → POST → 302 → callback → 302 back to the app.
 */
export async function loginLoop(opts: { proxyUrl: string; prefix?: string; durationSec: number; concurrency: number }): Promise<LoginLoopResult> {
  const origin = new URL(opts.proxyUrl).origin
  const prefix = opts.prefix ?? '/oauth2'
  const timing: LoginTiming = { proxyMs: 0, providerMs: 0, requests: 0 }
  let logins = 0
  let failures = 0
  let firstError: string | undefined
  const started = performance.now()
  const deadline = started + opts.durationSec * 1000
  const worker = async () => {
    while (performance.now() < deadline) {
      try {
        await drive(new CookieJar(), new URL('/', origin).href, origin, prefix, timing)
        logins++
      } catch (err) {
        failures++
        firstError ??= (err as Error).message
        if (failures > 20 && logins === 0) throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker))
  const durationSec = (performance.now() - started) / 1000
  const n = Math.max(1, logins)
  return {
    logins,
    failures,
    ...(firstError !== undefined ? { firstError } : {}),
    durationSec,
    loginsPerSec: logins / durationSec,
    meanMs: { total: (timing.proxyMs + timing.providerMs) / n, proxy: timing.proxyMs / n, provider: timing.providerMs / n },
    requestsPerLogin: timing.requests / n,
  }
}

/**
 * `count` distinct sessions, fast: one full login gives a jar with a provider session; every further
 * login starts at `{prefix}/start` with that jar, so the provider redirects straight back with a code
 * (no form): start → authorize → callback (Portcullis's real code exchange and session save). Each new
 * session then makes one request to `/` (must be 200). `onProgress` is called every 1,000.
 */
export async function ssoSessions(opts: {
  proxyUrl: string
  cookieName: string
  count: number
  concurrency: number
  prefix?: string
  onProgress?: (done: number) => void
}): Promise<{ sessions: number; seconds: number }> {
  const origin = new URL(opts.proxyUrl).origin
  const prefix = opts.prefix ?? '/oauth2'
  const first = await login({ proxyUrl: opts.proxyUrl })
  // The provider's cookies only: Portcullis's session and transaction cookies are per login.
  const providerJar = new CookieJar()
  for (const c of first.jar.all()) {
    if (!c.name.startsWith(opts.cookieName)) providerJar.set(c.name, c.value, { domain: c.domain, path: c.path })
  }
  const timing: LoginTiming = { proxyMs: 0, providerMs: 0, requests: 0 }
  let next = 0
  let done = 0
  const started = performance.now()
  const worker = async () => {
    while (next < opts.count) {
      next++
      const jar = new CookieJar()
      for (const c of providerJar.all()) jar.set(c.name, c.value, { domain: c.domain, path: c.path })
      await drive(jar, new URL(`${prefix}/start?rd=%2F`, origin).href, origin, prefix, timing)
      const cookie = sessionCookieHeader(jar, opts.cookieName)
      if (cookie === null) throw new Error('sso login: no session cookie set')
      const res = await request(new URL('/', origin).href, { headers: { cookie }, agent })
      if (res.status !== 200) throw new Error(`sso login: request with the new session answered ${res.status}`)
      done++
      if (done % 1000 === 0) opts.onProgress?.(done)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker))
  return { sessions: done, seconds: (performance.now() - started) / 1000 }
}

/** One GET with optional headers; resolves with the status (for probes). */
export async function probe(url: string, headers: Record<string, string> = {}): Promise<{ status: number; location?: string; body: string }> {
  const res = await request(url, { headers, agent })
  return { status: res.status, ...(res.headers.location !== undefined ? { location: res.headers.location } : {}), body: res.body }
}
