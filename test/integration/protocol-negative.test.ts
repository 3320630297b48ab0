/**
 * Negative protocol cases against a misbehaving provider (test/helpers/bad-provider.ts), one subtest
 * per defect. Each starts its own bad provider, echo upstream and Portcullis, runs the login the way a
 * browser would (start → authorize → callback), and checks that the proxy refuses with the right
 * status, sets no session cookie, lets nothing reach the upstream, and shows no token or code — in
 * the HTML page for a browser and in the JSON body for anything else.
 *
 * `none` proves the same flow logs in against the same provider, so every refusal below is caused
 * by its one defect.

 */
import { createHash } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import { startBadProvider, type BadProvider, type BadProviderOptions, type Defect } from '../helpers/bad-provider.ts'
import { configFor } from '../helpers/config.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { NAVIGATION_HEADERS } from '../helpers/login.ts'
import { reserveHeldPort, startPortcullis, type RunningPortcullis } from '../helpers/portcullis.ts'
import { startTestUpstream, type EchoUpstream } from '../helpers/upstream.ts'
import type { ErrorCode, PortcullisError } from '../../src/errors.ts'

const CLIENT_ID = 'portcullis-negative'
const CLIENT_SECRET = 'bad-provider-client-secret-0123456789'
const JSON_HEADERS = { accept: 'application/json' }

interface Expectation {
  status: number
  code: ErrorCode
  /**
   * How the bad provider's token endpoint answered the one exchange, or null when Portcullis must not
   * get that far (authorization-response defects). 200 proves the refusal came from Portcullis'
   * checks of a token response, not from the provider turning the code down.
   */
  tokenStatus: number | null
  /** `providerError` in the body (the token endpoint's OAuth error code). */
  providerError?: string
}

const LOGIN_FAILED: Expectation = { status: 400, code: 'LOGIN_FAILED', tokenStatus: 200 }

const EXPECTED: Record<Exclude<Defect, 'none' | 'discovery-wrong-issuer'>, Expectation> = {
  'alg-none': LOGIN_FAILED,
  'bad-signature': LOGIN_FAILED,
  'unknown-kid': LOGIN_FAILED,
  'hs256-with-public-key': LOGIN_FAILED,
  'wrong-iss': LOGIN_FAILED,
  'wrong-aud': LOGIN_FAILED,
  'azp-mismatch': LOGIN_FAILED,
  'nonce-mismatch': LOGIN_FAILED,
  'missing-nonce': LOGIN_FAILED,
  'expired-id-token': LOGIN_FAILED,
  'iat-future': LOGIN_FAILED,
  'token-missing-id-token': LOGIN_FAILED,
  // RFC 9207: the authorization response is refused before the code is sent anywhere.
  'missing-iss-param': { status: 400, code: 'LOGIN_FAILED', tokenStatus: null },
  'wrong-iss-param': { status: 400, code: 'LOGIN_FAILED', tokenStatus: null },
  // Any 5xx of the token endpoint is an outage, whatever its body.
  'token-500': { status: 503, code: 'IDP_UNAVAILABLE', tokenStatus: 500 },
  'token-500-json': { status: 503, code: 'IDP_UNAVAILABLE', tokenStatus: 500 },
  'token-garbage': { status: 502, code: 'IDP_REJECTED', tokenStatus: 200 },
  'token-invalid-client': { status: 502, code: 'IDP_CLIENT_AUTH', tokenStatus: 400, providerError: 'invalid_client' },
}

interface Setup {
  bad: BadProvider
  upstream: EchoUpstream
  proxy: RunningPortcullis
  publicUrl: string
}

/** Fail (instead of hanging until tap's timeout) when `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function setup(
  t: Test,
  defect: Defect,
  opts: Partial<BadProviderOptions> & { waitReady?: boolean; onProviderError?: (err: PortcullisError) => void } = {},
): Promise<Setup> {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const bad = await startBadProvider(t, {
    defect,
    redirectUri: `${publicUrl}/oauth2/callback`,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    ...(opts.issParameterSupported !== undefined ? { issParameterSupported: opts.issParameterSupported } : {}),
  })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: bad.issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, {
    port,
    ...(opts.onProviderError ? { providerEvents: { onError: opts.onProviderError } } : {}),
  })
  if (opts.waitReady !== false) await within(proxy.runtime.provider.whenReady(), 10_000, 'provider connection')
  return { bad, upstream, proxy, publicUrl }
}

interface Flow {
  jar: CookieJar
  code: string
  callbackUrl: URL
  callback: TestResponse
}

/** start → the bad provider's authorize (an immediate 302) → the callback, with one jar. */
async function runFlow(t: Test, s: Setup, headers: Record<string, string>): Promise<Flow> {
  const jar = new CookieJar()
  const start = await request(`${s.publicUrl}/oauth2/start?rd=/x`, { jar, headers })
  t.equal(start.status, 302, 'start redirects to the provider')
  const authorizeUrl = new URL(String(start.headers.location))
  t.equal(`${authorizeUrl.origin}${authorizeUrl.pathname}`, `${s.bad.issuer}/oauth/authorize`, 'to its authorize endpoint')
  t.ok(jar.names().some((n) => n.startsWith('_portcullis_tx_')), 'a transaction cookie was set')

  const authorize = await request(authorizeUrl.href, { jar, headers })
  t.equal(authorize.status, 302, 'the provider answers at once')
  const callbackUrl = new URL(String(authorize.headers.location))
  t.equal(`${callbackUrl.origin}${callbackUrl.pathname}`, `${s.publicUrl}/oauth2/callback`, 'back to the callback')
  const code = callbackUrl.searchParams.get('code') ?? ''
  t.ok(code, 'with a code')

  const callback = await request(callbackUrl.href, { jar, headers })
  return { jar, code, callbackUrl, callback }
}

const SESSION_COOKIE = /^_portcullis(?:_\d+)?=([^;]*)/

function assertNoSession(t: Test, res: TestResponse, jar: CookieJar): void {
  const set = res.setCookies.filter((line) => {
    const m = SESSION_COOKIE.exec(line)
    return m !== null && m[1] !== ''
  })
  t.same(set, [], 'no session cookie set')
  t.equal(jar.get('_portcullis'), undefined, 'the jar holds no session')
}

/** None of the provider's codes and tokens, no JWT, no client secret in `text`. */
function assertNoSecrets(t: Test, text: string, bad: BadProvider, what: string): void {
  t.notMatch(text, /eyJ/, `${what}: no JWT`)
  t.notOk(text.includes(CLIENT_SECRET), `${what}: no client secret`)
  const leaked = [
    ...bad.codes,
    ...bad.tokens.flatMap((x) => [x.access_token, x.refresh_token, ...(x.id_token ? [x.id_token] : [])]),
  ].filter((v) => text.includes(v))
  t.same(leaked, [], `${what}: no authorization code or token`)
}

function assertRefusal(t: Test, s: Setup, flow: Flow, expected: Expectation, html: boolean): void {
  const res = flow.callback
  t.equal(res.status, expected.status, `status ${expected.status} (${expected.code})`)
  t.equal(res.headers.location, undefined, 'no redirect')
  assertNoSession(t, res, flow.jar)
  t.notOk(flow.jar.names().some((n) => n.startsWith('_portcullis_tx_')), 'the transaction cookie is cleared (one attempt per login)')
  assertNoSecrets(t, res.body, s.bad, 'body')
  t.notOk(res.body.includes(flow.code), 'the code is not echoed')
  t.notMatch(res.body, /\n\s+at |Error:/, 'no stack trace')
  const retryPrefix = `${s.publicUrl}/oauth2/start`
  if (html) {
    t.match(res.headers['content-type'], /^text\/html/, 'an HTML page for a browser')
    t.match(res.body, new RegExp(`<a href="${retryPrefix.replace(/[.]/g, '\\.')}[^"]*">Try again</a>`), 'with a "Try again" link to a fresh login')
    t.ok(res.body.includes(expected.code), 'the page names the error code')
  } else {
    t.match(res.headers['content-type'], /^application\/json/, 'JSON for a non-browser')
    const body = res.json<{ error: string; retry?: string; providerError?: string }>()
    t.equal(body.error, expected.code, 'JSON carries the error code')
    t.ok(body.retry?.startsWith(retryPrefix), 'and a retry URL to a fresh login')
    t.equal(body.providerError, expected.providerError, 'providerError only for an OAuth error of the provider')
  }
  const exchanges = s.bad.requests.filter((r) => r.method === 'POST' && r.path === '/oauth/token' && r.params.code === flow.code)
  if (expected.tokenStatus === null) {
    t.equal(exchanges.length, 0, 'the code was never sent to the token endpoint')
  } else {
    t.same(
      exchanges.map((r) => r.status),
      [expected.tokenStatus],
      `the code was exchanged once and the provider answered ${expected.tokenStatus}`,
    )
  }
  if (expected.status === 503) t.ok(res.headers['retry-after'], 'Retry-After on an outage')
}

t.test('none: the same flow logs in against the bad provider when it behaves', async (t) => {
  const s = await setup(t, 'none')
  const flow = await runFlow(t, s, NAVIGATION_HEADERS)
  t.equal(flow.callback.status, 302, 'the callback succeeds')
  t.equal(flow.callback.headers.location, `${s.publicUrl}/x`, 'back to rd')
  t.ok(flow.callback.setCookies.some((line) => /^_portcullis=[^;]+/.test(line)), 'the session cookie is set')
  t.ok(flow.jar.get('_portcullis'), 'the jar holds the session')
  t.notOk(flow.jar.names().some((n) => n.startsWith('_portcullis_tx_')), 'the transaction cookie is cleared')
  t.equal(s.bad.tokens.length, 1, 'one token response')
  assertNoSecrets(t, flow.callback.body, s.bad, 'callback body')

  const page = await request(`${s.publicUrl}/x`, { jar: flow.jar, headers: JSON_HEADERS })
  t.equal(page.status, 200, 'the session opens the app')
  t.equal(s.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'bad-provider-user', 'as the provider\'s subject')
  assertNoSecrets(t, s.proxy.logText.join('\n'), s.bad, 'logs')
})

t.test('the bad provider itself is strict: client auth, redirect_uri, PKCE and single use are enforced', async (t) => {
  const redirectUri = 'http://127.0.0.1:1/oauth2/callback'
  const bad = await startBadProvider(t, { defect: 'none', redirectUri, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET })
  const verifier = 'v'.repeat(43)
  const challenge = createHash('sha256').update(verifier).digest('base64url')
  const authorize = async (): Promise<string> => {
    const q = new URLSearchParams({
      client_id: CLIENT_ID,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'openid',
      state: 's',
      nonce: 'n',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    })
    const res = await request(`${bad.issuer}/oauth/authorize?${q}`)
    t.equal(res.status, 302)
    return new URL(String(res.headers.location)).searchParams.get('code') as string
  }
  const exchange = (form: Record<string, string>, secret = CLIENT_SECRET): Promise<TestResponse> =>
    request(`${bad.issuer}/oauth/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${encodeURIComponent(secret)}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'authorization_code', redirect_uri: redirectUri, ...form }).toString(),
    })

  const badRedirect = await request(`${bad.issuer}/oauth/authorize?client_id=${CLIENT_ID}&redirect_uri=https%3A%2F%2Fevil.example%2F&response_type=code&scope=openid&code_challenge=x&code_challenge_method=S256`)
  t.equal(badRedirect.status, 400, 'an unregistered redirect_uri is refused, not redirected to')
  t.equal(badRedirect.headers.location, undefined)

  t.equal((await exchange({ code: await authorize(), code_verifier: verifier }, 'wrong-secret')).status, 401, 'wrong client secret')
  t.equal((await exchange({ code: await authorize(), code_verifier: 'w'.repeat(43) })).json<{ error: string }>().error, 'invalid_grant', 'wrong PKCE verifier')
  t.equal((await exchange({ code: await authorize(), code_verifier: verifier, redirect_uri: 'http://127.0.0.1:1/other' })).status, 400, 'another redirect_uri')
  const code = await authorize()
  const ok = await exchange({ code, code_verifier: verifier })
  t.equal(ok.status, 200, 'the right secret, verifier and redirect_uri get tokens')
  const body = ok.json<{ id_token: string; token_type: string; expires_in: number }>()
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 300)
  const idClaims = JSON.parse(Buffer.from(body.id_token.split('.')[1] as string, 'base64url').toString('utf8')) as Record<string, unknown>
  t.equal(idClaims.nonce, 'n', 'the ID token echoes the nonce')
  t.equal((await exchange({ code, code_verifier: verifier })).status, 400, 'a code is single use')
})

for (const [defect, expected] of Object.entries(EXPECTED) as Array<[keyof typeof EXPECTED, Expectation]>) {
  t.test(`${defect}: ${expected.status} ${expected.code}, no session`, async (t) => {
    const s = await setup(t, defect)
    for (const [label, headers, html] of [
      ['browser', NAVIGATION_HEADERS, true],
      ['API client', JSON_HEADERS, false],
    ] as const) {
      await t.test(label, async (t) => {
        const flow = await runFlow(t, s, headers)
        assertRefusal(t, s, flow, expected, html)
      })
    }
    t.equal(s.upstream.requests.length, 0, 'the upstream saw nothing')
    assertNoSecrets(t, s.proxy.logText.join('\n'), s.bad, 'logs')
  })
}

t.test('without RFC 9207 advertised, a callback without iss is accepted (the missing-iss-param refusal is about the advertisement)', async (t) => {
  const s = await setup(t, 'none', { issParameterSupported: false })
  const flow = await runFlow(t, s, NAVIGATION_HEADERS)
  t.equal(flow.callbackUrl.searchParams.get('iss'), null, 'the callback has no iss')
  t.equal(flow.callback.status, 302)
  t.ok(flow.jar.get('_portcullis'), 'session set')
})

t.test('discovery-wrong-issuer: Portcullis never sends anyone to that provider', async (t) => {
  let firstError: ((err: PortcullisError) => void) | undefined
  const refused = new Promise<PortcullisError>((resolve) => {
    firstError = resolve
  })
  const s = await setup(t, 'discovery-wrong-issuer', {
    waitReady: false,
    onProviderError: (err) => firstError?.(err),
  })
  const err = await within(refused, 10_000, 'the first discovery failure')
  t.equal(err.code, 'IDP_REJECTED', 'the discovery document is refused')
  t.equal(s.proxy.runtime.provider.ready, false)

  const ready = await request(`${s.publicUrl}/readyz`)
  t.equal(ready.status, 503, '/readyz is 503')

  for (const [label, headers, html] of [
    ['browser', NAVIGATION_HEADERS, true],
    ['API client', JSON_HEADERS, false],
  ] as const) {
    const jar = new CookieJar()
    const start = await request(`${s.publicUrl}/oauth2/start?rd=/x`, { jar, headers })
    t.equal(start.status, 503, `${label}: /oauth2/start is 503`)
    t.equal(start.headers.location, undefined, `${label}: no Location`)
    t.same(jar.names(), [], `${label}: no cookie at all`)
    if (html) t.match(start.body, /NOT_READY/)
    else t.equal(start.json<{ error: string }>().error, 'NOT_READY')

    const nav = await request(`${s.publicUrl}/x`, { jar, headers })
    t.equal(nav.status, 503, `${label}: a protected request is 503, not a redirect to the login`)
    t.equal(nav.headers.location, undefined, `${label}: no Location`)
  }
  t.same(
    s.bad.requests.filter((r) => r.path !== '/.well-known/openid-configuration'),
    [],
    'the provider saw discovery requests only: no JWKS, no authorize, no token',
  )
  t.equal(s.upstream.requests.length, 0, 'the upstream saw nothing')

  // Once the provider's metadata is right, the retry loop connects and logins work: the refusal above
  // was the issuer check and nothing else.
  s.bad.setDefect('none')
  await within(s.proxy.runtime.provider.whenReady(), 10_000, 'reconnect after the fix')
  t.equal((await request(`${s.publicUrl}/readyz`)).status, 200, '/readyz recovers')
  const flow = await runFlow(t, s, NAVIGATION_HEADERS)
  t.equal(flow.callback.status, 302, 'a login now succeeds')
  t.ok(flow.jar.get('_portcullis'), 'with a session')
})
