/**
 * A browser-like login against a running Portcullis and the embedded provider: navigate to a
 * protected path, follow every redirect with one cookie jar (across origins), fill the provider's
 * login form, and stop when the proxy sends the browser back to the app.
 *
 * `authorizeUntilCallback()` stops one step earlier, at the redirect to `/oauth2/callback`, WITHOUT
 * requesting it, so negative tests can tamper with `code`, `state` or `iss` first.
 *
 * @see docs/architecture.md ("One login")
 */
import { DEMO_USERS } from '../../src/demo/provider.ts'
import type { DemoUser } from '../../src/demo/provider.ts'
import { CookieJar, request } from './http.ts'
import type { TestResponse } from './http.ts'

export interface LoginOptions {
  /** Portcullis' origin (and base), e.g. `http://127.0.0.1:4180`. */
  proxyUrl: string
  /** Protected path to navigate to. Default `/`. */
  path?: string
  /** Jar to use (and fill). Default: a new one. */
  jar?: CookieJar
  /** Default alice. A wrong `password` makes the login throw with the form's error message. */
  user?: DemoUser
  /** Begin here (e.g. `${proxyUrl}/oauth2/start?rd=/x&login_hint=...`) instead of at the protected path. */
  startUrl?: string
  /** Portcullis' `server.authPrefix`. Default `/oauth2`. */
  authPrefix?: string
  /** Also enter this one-time code (a second factor: the demo user's `otp`). Default none. */
  otp?: string
}

export interface LoginStep {
  method: string
  url: string
  status: number
}

export interface LoginResult {
  jar: CookieJar
  /** The `Location` of the redirect back to the app (absolute); not requested. */
  finalLocation: string
  steps: LoginStep[]
}

export interface CallbackResult {
  jar: CookieJar
  /** The provider's redirect to Portcullis' callback (absolute); not requested. */
  callbackUrl: string
  steps: LoginStep[]
}

/** Headers of a top-level browser navigation (what `isBrowserNavigation` in src/http/negotiate.ts checks for). */
export const NAVIGATION_HEADERS: Record<string, string> = {
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'sec-fetch-mode': 'navigate',
  'sec-fetch-dest': 'document',
  'user-agent': 'portcullis-tests/1.0',
}

const MAX_STEPS = 20

export interface ParsedForm {
  method: string
  /** Absolute URL the form posts to (resolved against the page URL). */
  action: string
  /** Every named `<input>` with its value (hidden fields included). */
  fields: Record<string, string>
  /** Text of an element with class "error", if the page shows one. */
  error?: string
}

function decodeEntities(value: string): string {
  return value
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&#x2F;/gi, '/')
    .replace(/&amp;/g, '&')
}

function attribute(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(tag)
  if (!m) return undefined
  return decodeEntities(m[1] ?? m[2] ?? m[3] ?? '')
}

/**
 * The first `<form>` of an HTML page, or undefined. Enough HTML parsing for the provider's own pages
 * (login form, logout confirmation), not a general parser.
 */
export function parseForm(html: string, pageUrl: string): ParsedForm | undefined {
  const formMatch = /<form\b[^>]*>([\s\S]*?)<\/form>/i.exec(html)
  if (!formMatch) return undefined
  const openTag = /<form\b[^>]*>/i.exec(formMatch[0])?.[0] ?? ''
  const fields: Record<string, string> = {}
  for (const input of formMatch[1]?.match(/<(?:input|button)\b[^>]*>/gi) ?? []) {
    const name = attribute(input, 'name')
    if (name) fields[name] = attribute(input, 'value') ?? ''
  }
  const errorMatch = /<[a-z]+[^>]*class="[^"]*\berror\b[^"]*"[^>]*>([\s\S]*?)<\//i.exec(html)
  return {
    method: (attribute(openTag, 'method') ?? 'get').toUpperCase(),
    action: new URL(attribute(openTag, 'action') ?? pageUrl, pageUrl).href,
    fields,
    ...(errorMatch ? { error: decodeEntities(errorMatch[1] ?? '').trim() } : {}),
  }
}

/** Is this page the provider's login form? */
function isLoginForm(form: ParsedForm | undefined): form is ParsedForm {
  return form !== undefined && 'login' in form.fields && 'password' in form.fields
}

function snippet(res: TestResponse): string {
  const text = res.body.replace(/\s+/g, ' ').trim()
  return text.length > 300 ? `${text.slice(0, 300)}...` : text
}

function describeSteps(steps: LoginStep[]): string {
  return steps.map((s) => `  ${s.method} ${s.url} -> ${s.status}`).join('\n')
}

/**
 * Walk the redirect chain from `opts.startUrl` (or the protected path) until `stop(location)` says a
 * redirect target is where we want to be; fill the login form on the way. Returns that target
 * without requesting it.
 */
async function drive(
  opts: LoginOptions,
  stop: (location: URL) => boolean,
): Promise<{ jar: CookieJar; location: URL; steps: LoginStep[] }> {
  const jar = opts.jar ?? new CookieJar()
  const user = opts.user ?? DEMO_USERS[0]
  if (!user) throw new Error('login: no user given and DEMO_USERS is empty')
  const steps: LoginStep[] = []
  let method = 'GET'
  let url = opts.startUrl ?? new URL(opts.path ?? '/', opts.proxyUrl).href
  let body: string | undefined
  let submitted = false

  while (steps.length < MAX_STEPS) {
    const headers: Record<string, string> = { ...NAVIGATION_HEADERS }
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const res = await request(url, { method, headers, jar, ...(body !== undefined ? { body } : {}) })
    steps.push({ method, url, status: res.status })

    const location = res.headers.location
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, url)
      if (stop(next)) return { jar, location: next, steps }
      // 307/308 would repeat the method; nothing in this flow uses them after a POST.
      method = res.status === 307 || res.status === 308 ? method : 'GET'
      if (method === 'GET') body = undefined
      url = next.href
      continue
    }

    const form = res.status === 200 ? parseForm(res.body, url) : undefined
    if (isLoginForm(form)) {
      if (submitted) {
        throw new Error(
          `login: the provider rejected ${user.email}: ${form.error ?? 'login form shown again'}\n${describeSteps(steps)}`,
        )
      }
      submitted = true
      const fields = new URLSearchParams({ ...form.fields, login: user.email, password: user.password, otp: opts.otp ?? '' })
      method = form.method
      url = form.action
      body = fields.toString()
      continue
    }

    throw new Error(
      `login: unexpected ${res.status} at ${method} ${url}${location ? ` (Location: ${location})` : ''}: ${snippet(res)}\n${describeSteps(steps)}`,
    )
  }
  throw new Error(`login: more than ${MAX_STEPS} steps\n${describeSteps(steps)}`)
}

function prefixOf(opts: LoginOptions): string {
  return (opts.authPrefix ?? '/oauth2').replace(/\/+$/, '')
}

/**
 * Log in through Portcullis and the provider like a browser. Resolves when Portcullis redirects back
 * to a non-`/oauth2/` path on its own origin; that redirect's `Location` is `finalLocation` (not
 * requested). The jar then holds the session cookie(s). Throws with the step list on a rejected
 * password, an unexpected status, or more than 20 steps.
 */
export async function login(opts: LoginOptions): Promise<LoginResult> {
  const proxyOrigin = new URL(opts.proxyUrl).origin
  const prefix = `${prefixOf(opts)}/`
  const { jar, location, steps } = await drive(
    opts,
    (next) => next.origin === proxyOrigin && !next.pathname.startsWith(prefix),
  )
  return { jar, finalLocation: location.href, steps }
}

/**
 * Run the login until the provider redirects to Portcullis' callback, and return that URL WITHOUT
 * requesting it: tests tamper with `code` / `state` / `iss` and then request it themselves with the
 * same jar (which holds the login transaction cookie).
 */
export async function authorizeUntilCallback(opts: LoginOptions): Promise<CallbackResult> {
  const proxyOrigin = new URL(opts.proxyUrl).origin
  const callbackPath = `${prefixOf(opts)}/callback`
  const { jar, location, steps } = await drive(
    opts,
    (next) => next.origin === proxyOrigin && next.pathname === callbackPath,
  )
  return { jar, callbackUrl: location.href, steps }
}

/**
 * Submit the first form of an HTML page (e.g. the provider's sign-out confirmation) with its own
 * field values plus `extra`, and return the response (not followed).
 */
export async function submitForm(
  page: { url: string; body: string },
  jar: CookieJar,
  extra: Record<string, string> = {},
): Promise<TestResponse> {
  const form = parseForm(page.body, page.url)
  if (!form) throw new Error(`submitForm: no <form> on ${page.url}`)
  const body = new URLSearchParams({ ...form.fields, ...extra }).toString()
  if (form.method === 'GET') {
    const target = new URL(form.action)
    target.search = body
    return request(target.href, { headers: { ...NAVIGATION_HEADERS }, jar })
  }
  return request(form.action, {
    method: form.method,
    headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
    body,
    jar,
  })
}
