/**
 * The callback against the real provider, when something is off: the provider answers with an
 * `error` (403 page with a retry link that keeps the page the user wanted, no session, no loop), or
 * the response does not belong to a live login of this browser — no state, a changed state, no or
 * another login's transaction cookie, a replayed code, duplicated parameters, a tampered RFC 9207
 * `iss`, an expired transaction (400).
 *
 * Every refusal also checks: no session cookie, no stack trace, no token or code in the body; the
 * provider's `error_description` (attacker-controlled text) shown only with its `error`, HTML-escaped,
 * cleaned and shortened, never as markup, and not echoed at all by the other refusals; and each
 * stack's logs hold no code, no JWT and no client secret.
 */
import t from 'tap'
import type { Test } from 'tap'
import { configFor } from '../helpers/config.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS, parseForm } from '../helpers/login.ts'
import { reserveHeldPort, startPortcullis, startStack, type Stack } from '../helpers/portcullis.ts'
import { startTestProvider, type RunningProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'

const JSON_HEADERS = { accept: 'application/json' }
/** Attacker-controlled provider text: must never be shown. */
const DESCRIPTION_MARKER = 'MARKER-9c1e'
const DESCRIPTION = `User denied <b>${DESCRIPTION_MARKER}</b>`
const TX_PREFIX = '_portcullis_tx_'
const SESSION_COOKIE = /^_portcullis(?:_\d+)?=([^;]*)/

/** What a stack's tests saw that must never be shown or logged. */
interface Secrets {
  codes: Set<string>
  clientSecret: string
}

function assertNoSessionSet(t: Test, res: TestResponse): void {
  const set = res.setCookies.filter((line) => {
    const m = SESSION_COOKIE.exec(line)
    return m !== null && m[1] !== ''
  })
  t.same(set, [], 'no session cookie set')
}

/** `DESCRIPTION` as the error page shows it: HTML-escaped. */
const DESCRIPTION_ESCAPED = `User denied &#60;b&#62;${DESCRIPTION_MARKER}&#60;/b&#62;`

/**
 * The properties every refusal has, whatever its status. `description`: whether the provider's
 * `error_description` belongs on this answer (it does only next to the provider's `error`).
 */
function assertClean(t: Test, res: TestResponse, secrets: Secrets, description: 'shown' | 'hidden' = 'hidden'): void {
  assertNoSessionSet(t, res)
  t.equal(res.headers.location, undefined, 'no Location (no redirect loop)')
  t.notMatch(res.body, /\n\s*at |\bat \S+\.(?:ts|js):\d+|Error:/, 'no stack trace')
  t.notMatch(res.body, /eyJ/, 'no JWT in the body')
  t.same([...secrets.codes].filter((c) => res.body.includes(c)), [], 'no authorization code in the body')
  t.notOk(res.body.includes(secrets.clientSecret), 'no client secret in the body')
  t.notMatch(res.body, /<b>/, 'no markup from the provider')
  if (description === 'hidden') {
    t.notOk(res.body.includes(DESCRIPTION_MARKER) || res.body.includes('User denied'), 'error_description not echoed')
  } else if (/^text\/html/.test(String(res.headers['content-type']))) {
    t.ok(res.body.includes(`<q>${DESCRIPTION_ESCAPED}</q>`), "the provider's error_description is shown, HTML-escaped")
  } else {
    t.equal(res.json<{ providerDescription?: string }>().providerDescription, DESCRIPTION, "the provider's error_description is in the JSON")
  }
}

/** The `href` of the page's "Try again" link, HTML entities decoded. */
function tryAgainHref(body: string): string | undefined {
  const href = /<a href="([^"]*)">Try again<\/a>/.exec(body)?.[1]
  return href?.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
}

function assertLogsClean(t: Test, logText: string[], secrets: Secrets): void {
  const text = logText.join('\n')
  t.ok(text.length > 0, 'logs were captured')
  t.same([...secrets.codes].filter((c) => text.includes(c)), [], 'logs: no authorization code')
  t.notMatch(text, /eyJ/, 'logs: no JWT')
  t.notOk(text.includes(secrets.clientSecret), 'logs: no client secret')
}

/** `GET /oauth2/start?rd=/x` with `jar`; the state the authorize URL carries. */
async function startLogin(t: Test, proxyUrl: string, jar: CookieJar): Promise<string> {
  const res = await request(`${proxyUrl}/oauth2/start?rd=/x`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(res.status, 302, 'start redirects to the provider')
  const state = new URL(String(res.headers.location)).searchParams.get('state')
  if (!state) throw new Error('no state in the authorize URL')
  return state
}

function txCookies(jar: CookieJar): Array<{ name: string; value: string }> {
  return jar
    .all()
    .filter((c) => c.name.startsWith(TX_PREFIX))
    .map((c) => ({ name: c.name, value: c.value }))
}

/** A fresh jar holding only copies of `cookies`, scoped as Portcullis scopes transaction cookies. */
function jarWith(proxyUrl: string, cookies: Array<{ name: string; value: string }>): CookieJar {
  const jar = new CookieJar()
  for (const c of cookies) jar.set(c.name, c.value, { url: proxyUrl, path: '/oauth2/' })
  return jar
}

function tokenExchanges(provider: RunningProvider): number {
  return provider.requests.filter((r) => r.method === 'POST' && r.path === '/oauth/token').length
}

/** Run the real login up to the callback; remember its code. */
async function untilCallback(proxyUrl: string, secrets: Secrets, jar?: CookieJar): Promise<{ jar: CookieJar; callbackUrl: URL; code: string }> {
  const { jar: filled, callbackUrl } = await authorizeUntilCallback({ proxyUrl, path: '/x', ...(jar ? { jar } : {}) })
  const url = new URL(callbackUrl)
  const code = url.searchParams.get('code')
  if (!code) throw new Error('no code in the callback URL')
  secrets.codes.add(code)
  return { jar: filled, callbackUrl: url, code }
}

function secretsOf(stack: Stack): Secrets {
  return { codes: new Set(), clientSecret: stack.clientSecret }
}

t.test('provider errors at the callback: 403 with a retry link, no session, no loop', async (t) => {
  const stack = await startStack(t)
  const { proxy, provider } = stack
  const secrets = secretsOf(stack)
  const retryHref = new RegExp(`<a href="${proxy.url.replace(/\./g, '\\.')}/oauth2/start[^"]*">Try again</a>`)

  interface Case {
    name: string
    error: string
    withIss: boolean
    /** 'real': the state of a started login, its cookie in the jar; 'orphan': a state with no cookie; 'none': no state. */
    state: 'real' | 'orphan' | 'none'
  }
  const cases: Case[] = [
    { name: 'access_denied with iss', error: 'access_denied', withIss: true, state: 'real' },
    { name: 'access_denied without iss', error: 'access_denied', withIss: false, state: 'real' },
    { name: 'invalid_request', error: 'invalid_request', withIss: true, state: 'real' },
    { name: 'server_error', error: 'server_error', withIss: true, state: 'real' },
    { name: 'an unknown code', error: 'temporarily_unavailable', withIss: false, state: 'real' },
    { name: 'a state without a transaction cookie', error: 'access_denied', withIss: true, state: 'orphan' },
    { name: 'no state at all', error: 'access_denied', withIss: false, state: 'none' },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      for (const [label, headers, html] of [
        ['browser', NAVIGATION_HEADERS, true],
        ['API client', JSON_HEADERS, false],
      ] as const) {
        const jar = new CookieJar()
        const params = new URLSearchParams({ error: c.error, error_description: DESCRIPTION })
        if (c.state === 'real') params.set('state', await startLogin(t, proxy.url, jar))
        if (c.state === 'orphan') params.set('state', 'c3RhdGUtd2l0aC1uby1jb29raWU')
        if (c.withIss) params.set('iss', provider.issuer)
        const hadTx = txCookies(jar).length
        const res = await request(`${proxy.url}/oauth2/callback?${params}`, { jar, headers })

        t.equal(res.status, 403, `${label}: 403`)
        // The provider's words only for a login this browser started: a crafted link to the callback
        // must not put text of its choosing on our origin.
        assertClean(t, res, secrets, c.state === 'real' ? 'shown' : 'hidden')
        if (c.state === 'real') {
          t.equal(hadTx, 1, `${label}: the login had a transaction cookie`)
          t.same(txCookies(jar), [], `${label}: the transaction cookie is cleared`)
        }
        // The login of a real state was started for /x: "Try again" goes back to it. Without this
        // browser's transaction there is no page to return to, and the link starts a plain login.
        const expectedRetry = c.state === 'real' ? `${proxy.url}/oauth2/start?rd=${encodeURIComponent(`${proxy.url}/x`)}` : `${proxy.url}/oauth2/start`
        if (html) {
          t.match(res.headers['content-type'], /^text\/html/, `${label}: HTML`)
          t.ok(res.body.includes(`<code>${c.error}</code>`), `${label}: the page shows the provider's code`)
          t.match(res.body, /LOGIN_DENIED/, `${label}: and our error code`)
          t.match(res.body, retryHref, `${label}: a "Try again" link to /oauth2/start`)
          t.equal(tryAgainHref(res.body), expectedRetry, `${label}: ${c.state === 'real' ? 'keeping the original rd' : 'without an rd'}`)
        } else {
          t.match(res.headers['content-type'], /^application\/json/, `${label}: JSON`)
          const body = res.json<{ error: string; providerError?: string; retry?: string }>()
          t.equal(body.error, 'LOGIN_DENIED')
          t.equal(body.providerError, c.error)
          t.ok(body.retry?.startsWith(`${proxy.url}/oauth2/start`), `${label}: a retry URL`)
          t.equal(body.retry, expectedRetry, `${label}: ${c.state === 'real' ? 'keeping the original rd' : 'without an rd'}`)
        }
      }
    })
  }

  await t.test('an error code with HTML, quotes, CR/LF or excessive length is escaped and cleaned', async (t) => {
    const payloads = [
      '<script>alert(1)</script>',
      '"><img src=x onerror=alert(1)>\r\nSet-Cookie: _portcullis=forged',
      `access_denied${'A'.repeat(500)}`,
      '\u0000\u00e9\u2028',
    ]
    for (const error of payloads) {
      for (const html of [true, false]) {
        const jar = new CookieJar()
        const state = await startLogin(t, proxy.url, jar)
        const params = new URLSearchParams({ error, error_description: DESCRIPTION, state, iss: provider.issuer })
        const res = await request(`${proxy.url}/oauth2/callback?${params}`, { jar, headers: html ? NAVIGATION_HEADERS : JSON_HEADERS })
        t.equal(res.status, 403)
        assertClean(t, res, secrets, 'shown')
        t.notOk(res.setCookies.some((l) => l.includes('forged')), 'no header injection')
        if (html) {
          t.notMatch(res.body, /<script|<img|onerror=alert\(1\)>/i, 'no markup from the provider')
          const shown = /<code>([^<]*)<\/code>/.exec(res.body)?.[1] ?? ''
          t.notMatch(shown, /["<>\r\n\s]/, 'the shown code has no raw quote, angle bracket, space or line break')
          if (error.startsWith('<script')) t.ok(res.body.includes('&#60;script&#62;'), 'angle brackets are HTML-escaped')
        } else {
          t.match(res.headers['content-type'], /^application\/json/)
          const { providerError } = res.json<{ providerError: string }>()
          t.match(providerError, /^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/, 'providerError is cleaned to the RFC 6749 error charset, at most 64 characters')
        }
      }
    }
  })

  await t.test('an error_description is cleaned (control characters, separators, bidi overrides) and cut at 200 characters', async (t) => {
    const long = `<script>alert(1)</script> ${'A'.repeat(500)}`
    const cases = [
      { description: long, shown: `&#60;script&#62;alert(1)&#60;/script&#62; ${'A'.repeat(200 - 27)}…` },
      { description: 'one\r\nSet-Cookie: _portcullis=forged\u0000two\u2028three\u202eevil', shown: 'one Set-Cookie: _portcullis=forged two three evil' },
      { description: '  \t\r\n\u0000 ', shown: null },
    ]
    for (const c of cases) {
      for (const html of [true, false]) {
        const jar = new CookieJar()
        const state = await startLogin(t, proxy.url, jar)
        const params = new URLSearchParams({ error: 'access_denied', error_description: c.description, state, iss: provider.issuer })
        const res = await request(`${proxy.url}/oauth2/callback?${params}`, { jar, headers: html ? NAVIGATION_HEADERS : JSON_HEADERS })
        t.equal(res.status, 403)
        assertClean(t, res, secrets)
        t.notOk(res.setCookies.some((l) => l.includes('forged')), 'no header injection')
        t.notMatch(res.body, /<script/i, 'no markup')
        if (html) {
          const quoted = /<q>([^<]*)<\/q>/.exec(res.body)?.[1]
          if (c.shown === null) t.equal(quoted, undefined, 'nothing shown when nothing is left after cleaning')
          else t.equal(quoted, c.shown, 'shown escaped, cleaned and shortened')
        } else {
          const { providerDescription } = res.json<{ providerDescription?: string }>()
          if (c.shown === null) t.equal(providerDescription, undefined, 'no providerDescription when nothing is left')
          else {
            t.ok(providerDescription !== undefined && [...providerDescription].length <= 200, 'at most 200 characters')
            t.notMatch(providerDescription ?? '', /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/, 'no control character, separator or bidi override')
          }
        }
      }
    }
  })

  await t.test('the real provider\'s Cancel (access_denied): the page shows its answer, and "Try again" returns to the page the user wanted', async (t) => {
    const jar = new CookieJar()
    const wanted = `${proxy.url}/wanted/page?tab=2`
    // The browser asks for a protected page and is sent through /oauth2/start to the provider's login form.
    let url = wanted
    let res = await request(url, { jar, headers: NAVIGATION_HEADERS })
    for (let i = 0; i < 10 && res.status >= 300 && res.status < 400; i++) {
      url = new URL(String(res.headers.location), url).href
      res = await request(url, { jar, headers: NAVIGATION_HEADERS })
    }
    t.equal(res.status, 200, 'the provider shows its login form')
    const cancel = /<form method="post" action="([^"]*\/abort)">/.exec(res.body)?.[1]
    t.ok(cancel, 'with a Cancel button')
    t.ok(parseForm(res.body, url)?.fields.login !== undefined, 'the first form is the login form')
    res = await request(new URL(cancel ?? '', url).href, { method: 'POST', jar, headers: NAVIGATION_HEADERS })
    let callback: string | undefined
    for (let i = 0; i < 10 && res.status >= 300 && res.status < 400; i++) {
      const next = new URL(String(res.headers.location), url)
      if (next.origin === new URL(proxy.url).origin && next.pathname === '/oauth2/callback') {
        callback = next.href
        break
      }
      url = next.href
      res = await request(url, { jar, headers: NAVIGATION_HEADERS })
    }
    t.ok(callback, 'the provider sends the browser back to the callback')
    const back = new URL(callback ?? proxy.url)
    t.equal(back.searchParams.get('error'), 'access_denied', 'with error=access_denied')
    t.equal(back.searchParams.get('error_description'), 'The user cancelled the sign-in.', 'and its error_description')

    const page = await request(callback ?? '', { jar, headers: NAVIGATION_HEADERS })
    t.equal(page.status, 403)
    assertClean(t, page, secrets)
    t.ok(page.body.includes('<code>access_denied</code>'), "the page shows the provider's code")
    t.ok(page.body.includes('<q>The user cancelled the sign-in.</q>'), 'and its explanation')
    const retry = tryAgainHref(page.body)
    t.equal(retry, `${proxy.url}/oauth2/start?rd=${encodeURIComponent(wanted)}`, '"Try again" keeps the original rd')

    const again = await login({ proxyUrl: proxy.url, startUrl: retry ?? '', jar })
    t.equal(again.finalLocation, wanted, 'and signing in from it lands on the page the user wanted')
  })

  t.equal(stack.upstream.requests.length, 0, 'the upstream saw nothing')
  assertLogsClean(t, proxy.logText, secrets)
})

t.test('callbacks that do not belong to a live login of this browser: 400, no session', async (t) => {
  const stack = await startStack(t)
  const { proxy, provider } = stack
  const secrets = secretsOf(stack)

  const refused = (t: Test, res: TestResponse, code: 'LOGIN_FAILED' | 'REQUEST_REJECTED' = 'LOGIN_FAILED', label = ''): void => {
    const at = label === '' ? '' : `${label}: `
    t.equal(res.status, 400, `${at}400`)
    assertClean(t, res, secrets)
    t.equal(res.json<{ error: string }>().error, code, `${at}${code}`)
  }

  await t.test('missing state', async (t) => {
    const jar = new CookieJar()
    await startLogin(t, proxy.url, jar)
    const params = new URLSearchParams({ code: 'some-code-value-0123456789', iss: provider.issuer, error_description: DESCRIPTION })
    const res = await request(`${proxy.url}/oauth2/callback?${params}`, { jar, headers: JSON_HEADERS })
    refused(t, res)
    const page = await request(`${proxy.url}/oauth2/callback?${params}`, { jar, headers: NAVIGATION_HEADERS })
    t.equal(page.status, 400)
    t.match(page.headers['content-type'], /^text\/html/)
    t.match(page.body, /Try again/, 'the page offers a fresh login')
    assertClean(t, page, secrets)
  })

  await t.test('altered state (the untouched callback still works afterwards)', async (t) => {
    const { jar, callbackUrl } = await untilCallback(proxy.url, secrets)
    const before = tokenExchanges(provider)
    const altered = new URL(callbackUrl)
    const state = altered.searchParams.get('state') as string
    altered.searchParams.set('state', `${state.slice(0, -1)}${state.endsWith('A') ? 'B' : 'A'}`)
    altered.searchParams.set('error_description', DESCRIPTION)
    refused(t, await request(altered.href, { jar, headers: JSON_HEADERS }))
    t.equal(tokenExchanges(provider), before, 'the code was not sent to the token endpoint')

    const ok = await request(callbackUrl.href, { jar, headers: NAVIGATION_HEADERS })
    t.equal(ok.status, 302, 'control: the real callback completes the login')
    t.ok(jar.get('_portcullis'), 'control: session set')
  })

  await t.test('missing transaction cookie (another browser)', async (t) => {
    const { callbackUrl } = await untilCallback(proxy.url, secrets)
    const before = tokenExchanges(provider)
    const fresh = new CookieJar()
    refused(t, await request(callbackUrl.href, { jar: fresh, headers: JSON_HEADERS }))
    t.equal(tokenExchanges(provider), before, 'the code was not sent to the token endpoint')
    t.same(fresh.names(), [], 'nothing set in the other browser')
  })

  await t.test("the transaction cookie of another login, under this login's name", async (t) => {
    const a = await untilCallback(proxy.url, secrets)
    const b = await untilCallback(proxy.url, secrets)
    const [txA] = txCookies(a.jar)
    const [txB] = txCookies(b.jar)
    if (!txA || !txB) throw new Error('each login should hold one transaction cookie')
    t.not(txA.name, txB.name)
    const before = tokenExchanges(provider)
    // A's callback with B's sealed transaction under A's cookie name, and the other way round.
    const swappedA = jarWith(proxy.url, [{ name: txA.name, value: txB.value }])
    refused(t, await request(a.callbackUrl.href, { jar: swappedA, headers: JSON_HEADERS }))
    const swappedB = jarWith(proxy.url, [{ name: txB.name, value: txA.value }])
    refused(t, await request(b.callbackUrl.href, { jar: swappedB, headers: JSON_HEADERS }))
    // Both cookies present, but each callback's own name holds the other's transaction.
    const both = jarWith(proxy.url, [
      { name: txA.name, value: txB.value },
      { name: txB.name, value: txA.value },
    ])
    refused(t, await request(a.callbackUrl.href, { jar: both, headers: JSON_HEADERS }))
    t.equal(tokenExchanges(provider), before, 'no code was sent to the token endpoint')

    const ok = await request(a.callbackUrl.href, { jar: a.jar, headers: NAVIGATION_HEADERS })
    t.equal(ok.status, 302, 'control: A completes with its own cookie')
  })

  await t.test('a replayed code with a copy of the transaction cookie', async (t) => {
    const { jar, callbackUrl } = await untilCallback(proxy.url, secrets)
    const copy = txCookies(jar)
    t.equal(copy.length, 1, 'one transaction cookie to copy')
    const first = await request(callbackUrl.href, { jar, headers: NAVIGATION_HEADERS })
    t.equal(first.status, 302, 'the first use logs in')
    t.ok(jar.get('_portcullis'), 'session set by the first use')

    const before = tokenExchanges(provider)
    const replayJar = jarWith(proxy.url, copy)
    const again = await request(callbackUrl.href, { jar: replayJar, headers: JSON_HEADERS })
    refused(t, again)
    t.equal(replayJar.get('_portcullis'), undefined, 'no new session')
    t.equal(tokenExchanges(provider), before + 1, 'the provider refused the used code')
    const againHtml = await request(callbackUrl.href, { jar: jarWith(proxy.url, copy), headers: NAVIGATION_HEADERS })
    t.equal(againHtml.status, 400, 'the same as a page')
    assertClean(t, againHtml, secrets)
  })

  await t.test('duplicated state, code or iss parameters', async (t) => {
    const { jar, callbackUrl, code } = await untilCallback(proxy.url, secrets)
    const copy = txCookies(jar)
    const state = callbackUrl.searchParams.get('state') as string
    const iss = callbackUrl.searchParams.get('iss') as string
    t.ok(iss, 'the real provider sends iss')
    const before = tokenExchanges(provider)
    for (const [name, value] of [
      ['state', state],
      ['state', 'another-state-value'],
      ['code', code],
      ['code', 'another-code-value-0123456789'],
      ['iss', iss],
      ['iss', 'https://evil.example'],
    ] as const) {
      const dup = new URL(callbackUrl)
      dup.searchParams.append(name, value)
      const res = await request(dup.href, { jar: jarWith(proxy.url, copy), headers: JSON_HEADERS })
      refused(t, res, 'REQUEST_REJECTED', `${name} twice (${value === state || value === code || value === iss ? 'same value' : 'another value'})`)
    }
    t.equal(tokenExchanges(provider), before, 'no code was sent to the token endpoint')
    const ok = await request(callbackUrl.href, { jar, headers: NAVIGATION_HEADERS })
    t.equal(ok.status, 302, 'control: the callback without duplicates completes')
  })

  await t.test('a tampered or missing iss (RFC 9207)', async (t) => {
    const discovery = await request(`${provider.issuer}/.well-known/openid-configuration`)
    t.equal(
      discovery.json<Record<string, unknown>>().authorization_response_iss_parameter_supported,
      true,
      'the real provider advertises RFC 9207',
    )
    const { jar, callbackUrl } = await untilCallback(proxy.url, secrets)
    t.equal(callbackUrl.searchParams.get('iss'), provider.issuer, 'and sends iss')
    // A refused callback clears the transaction cookie: each variant gets its own copy, so each is
    // refused for its iss and not for a missing transaction.
    const copy = txCookies(jar)
    const before = tokenExchanges(provider)
    for (const iss of [`${provider.issuer}/evil`, 'https://evil.example', `${provider.issuer}/`, null]) {
      const tampered = new URL(callbackUrl)
      if (iss === null) tampered.searchParams.delete('iss')
      else tampered.searchParams.set('iss', iss)
      const res = await request(tampered.href, { jar: jarWith(proxy.url, copy), headers: JSON_HEADERS })
      refused(t, res, 'LOGIN_FAILED', iss === null ? 'iss removed' : `iss=${iss}`)
    }
    t.equal(tokenExchanges(provider), before, 'the code was never sent to the token endpoint')
    const ok = await request(callbackUrl.href, { jar: jarWith(proxy.url, copy), headers: NAVIGATION_HEADERS })
    t.equal(ok.status, 302, 'control: the untouched callback completes with the same transaction')
  })

  t.equal(stack.upstream.requests.length, 0, 'the upstream saw nothing')
  assertLogsClean(t, proxy.logText, secrets)
})

t.test('a callback for an expired transaction (fake clock, 11 minutes later): 400', async (t) => {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const clientId = 'portcullis-clock'
  const clientSecret = 'clock-client-secret-long-enough-0123'
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`], tokenEndpointAuthMethod: 'client_secret_basic' }],
  })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl })
  t.equal(config.session.loginTimeout, 10 * 60_000, 'the default login timeout is 10 minutes')
  let offset = 0
  const clock = { now: () => Date.now() + offset }
  const proxy = await startPortcullis(t, config, { port, clock })
  await proxy.runtime.provider.whenReady()
  const secrets: Secrets = { codes: new Set(), clientSecret }

  const control = await login({ proxyUrl: proxy.url, path: '/x' })
  t.equal(control.finalLocation, `${publicUrl}/x`, 'control: a login on time completes')

  const { jar, callbackUrl } = await untilCallback(proxy.url, secrets)
  t.equal(txCookies(jar).length, 1, 'the transaction cookie is still held (a browser could be made to send it)')
  const before = tokenExchanges(provider)
  offset += 11 * 60_000
  const res = await request(callbackUrl.href, { jar, headers: JSON_HEADERS })
  t.equal(res.status, 400)
  t.equal(res.json<{ error: string }>().error, 'LOGIN_FAILED')
  assertClean(t, res, secrets)
  t.equal(jar.get('_portcullis'), undefined, 'no session')
  t.equal(tokenExchanges(provider), before, 'the code was not sent to the token endpoint')
  assertLogsClean(t, proxy.logText, secrets)
})
