/**
 * `POST /oauth2/backchannel-logout` (issue #3 points 7 and 10; OpenID Connect Back-Channel Logout 1.0).
 *
 * End to end with the real provider: alice and bob are logged in; alice's session is ended AT THE
 * PROVIDER (its end-session endpoint, confirmed in alice's browser, never through Portcullis), the
 * provider posts a real `logout+jwt` to Portcullis, and alice's next request goes to login while bob's
 * is still served.
 *
 * With the bad provider (test/helpers/bad-provider.ts) signing hand-built logout tokens with its key,
 * an unknown key or none: every token §2.6 says to refuse is a 400 `invalid_request` that leaves the
 * session it names alive; valid tokens end the sessions they name — by `sid` (not the same user's
 * other session), or by `sub` for the sessions created before the token's `iat` only.
 *
 * @see src/oidc/logout.ts, src/http/routes/backchannel.ts, src/session/revocations.ts
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import type { JWTPayload } from 'jose'
import { reserveHeldPort, startPortcullis, startStack, type RunningPortcullis } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { DEMO_USERS, PROVIDER_ROUTES } from '../helpers/provider.ts'
import { startBadProvider, type BadProvider, type SignLogoutTokenOptions } from '../helpers/bad-provider.ts'
import { startTestUpstream, type EchoUpstream } from '../helpers/upstream.ts'
import { configFor } from '../helpers/config.ts'
import { BACKCHANNEL_LOGOUT_EVENT, LOGOUT_TOKEN_MAX_AGE_SEC } from '../../src/oidc/logout.ts'
import type { Clock } from '../../src/clock.ts'
import { fakeClock } from '../helpers/clock.ts'
import { waitUntil } from '../helpers/wait.ts'

const alice = DEMO_USERS[0]!
const bob = DEMO_USERS[1]!
const JSON_HEADERS = { accept: 'application/json' }
const FORM = 'application/x-www-form-urlencoded'
const REVOKED_MSG = 'back-channel logout: sessions revoked'


/** A jar holding a copy of `jar`'s session cookies (for Portcullis' origin). */
function copyOf(jar: CookieJar, proxyUrl: string): CookieJar {
  const copy = new CookieJar()
  for (const c of jar.all()) if (/^_portcullis(_\d+)?$/.test(c.name)) copy.set(c.name, c.value, { url: proxyUrl })
  return copy
}

/**
 * The session cookie `jar` holds is refused: navigation → 302 to /oauth2/start and the cookie cleared;
 * API → 401; nothing proxied. Each request sends a copy of the cookie (the first answer clears it in a
 * browser; a copy would be sent again anyway), and the jar itself then gets the first answer.
 */
async function assertLoggedOut(t: Test, proxyUrl: string, upstream: EchoUpstream, jar: CookieJar, what: string): Promise<void> {
  t.ok(jar.get('_portcullis'), `${what}: the browser still holds its session cookie`)
  const copy = copyOf(jar, proxyUrl)
  const before = upstream.requests.length
  const nav = await request(`${proxyUrl}/page`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(nav.status, 302, `${what}: a navigation goes to login`)
  const loc = new URL(String(nav.headers.location), proxyUrl)
  t.equal(`${loc.origin}${loc.pathname}`, `${proxyUrl}/oauth2/start`, `${what}: to /oauth2/start`)
  t.ok(nav.setCookies.some((l) => /^_portcullis=;/.test(l)), `${what}: the revoked session cookie is cleared`)
  const api = await request(`${proxyUrl}/api/data`, { headers: JSON_HEADERS, jar: copy })
  t.equal(api.status, 401, `${what}: an API call gets 401`)
  t.equal(upstream.requests.length, before, `${what}: nothing reached the upstream`)
}

/** 200 from the upstream with `sub` as the identity. */
async function assertLoggedIn(t: Test, proxyUrl: string, upstream: EchoUpstream, jar: CookieJar, sub: string, what: string): Promise<void> {
  const path = `/api/alive-${randomUUID()}`
  const res = await request(`${proxyUrl}${path}`, { headers: JSON_HEADERS, jar })
  t.equal(res.status, 200, `${what}: still served`)
  const seen = upstream.requests.at(-1)
  t.equal(seen?.url, path, `${what}: reached the upstream`)
  t.equal(seen?.headers['x-auth-request-user'], sub, `${what}: as ${sub}`)
}

/** POST a body to the back-channel endpoint, the way a provider does (no cookies). */
function postLogout(proxyUrl: string, body: string, contentType: string | null = FORM): Promise<TestResponse> {
  return request(`${proxyUrl}/oauth2/backchannel-logout`, {
    method: 'POST',
    headers: contentType === null ? {} : { 'content-type': contentType },
    body,
  })
}

function form(token: string): string {
  return new URLSearchParams({ logout_token: token }).toString()
}

/** A refusal: 400, JSON `{ error: 'invalid_request', error_description }`, not cached. */
function assertRefused(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 400, `${what}: 400`)
  t.match(String(res.headers['content-type']), /^application\/json/, `${what}: JSON`)
  t.equal(res.headers['cache-control'], 'no-store', `${what}: no-store`)
  let body: Record<string, unknown> = {}
  try {
    body = res.json<Record<string, unknown>>()
  } catch {
    t.fail(`${what}: body is not JSON: ${res.body}`)
  }
  t.equal(body.error, 'invalid_request', `${what}: error invalid_request`)
  t.type(body.error_description, 'string', `${what}: with an error_description`)
  t.ok(String(body.error_description).length > 0)
  t.notMatch(res.body, /eyJ/, `${what}: the token is not echoed`)
}

function assertAccepted(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 200, `${what}: 200`)
  t.equal(res.headers['cache-control'], 'no-store', `${what}: Cache-Control: no-store`)
  t.equal(res.body, '', `${what}: empty body`)
}

// ---------------------------------------------------------------------------------------------------
// End to end with the real provider

t.test('a session ended at the provider: the provider posts a logout token; alice goes to login, bob stays', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream, provider } = stack
  const aliceLogin = await login({ proxyUrl: proxy.url, user: alice })
  const bobLogin = await login({ proxyUrl: proxy.url, user: bob })
  await assertLoggedIn(t, proxy.url, upstream, aliceLogin.jar, alice.id, 'alice after login')
  await assertLoggedIn(t, proxy.url, upstream, bobLogin.jar, bob.id, 'bob after login')
  const aliceSession = (await proxy.runtime.sessions.load(aliceLogin.jar.get('_portcullis') ?? ''))?.session
  const bobSession = (await proxy.runtime.sessions.load(bobLogin.jar.get('_portcullis') ?? ''))?.session
  t.ok(aliceSession?.sid, "alice's session carries the provider's sid")
  t.ok(bobSession?.sid, "bob's too")
  t.not(aliceSession?.sid, bobSession?.sid, 'two provider sessions')

  // Alice signs out at the provider itself (another app's sign-out link, say): Portcullis is not asked.
  const endSession = `${provider.issuer}${PROVIDER_ROUTES.end_session}`
  const page = await request(endSession, { headers: NAVIGATION_HEADERS, jar: aliceLogin.jar })
  t.equal(page.status, 200, "the provider's logout confirmation")
  t.ok(parseForm(page.body, endSession), 'with a form')
  const confirmed = await submitForm({ url: endSession, body: page.body }, aliceLogin.jar)
  t.ok(confirmed.status === 302 || confirmed.status === 303, `the provider confirms (${confirmed.status})`)
  t.notOk(
    proxy.logs.some((l) => l.msg === 'request' && l.route === 'auth:sign_out'),
    'Portcullis sign-out was never called',
  )

  await waitUntil(() => proxy.logs.some((l) => l.msg === 'request' && l.route === 'auth:backchannel'), 'the provider to post a logout token', 10_000)
  const access = proxy.logs.filter((l) => l.msg === 'request' && l.route === 'auth:backchannel')
  t.equal(access.length, 1, 'one back-channel request (only alice had a session at the provider)')
  t.equal(access[0]?.status, 200, 'accepted')
  t.equal(access[0]?.method, 'POST')
  const revoked = proxy.logs.find((l) => l.msg === REVOKED_MSG)
  t.ok(revoked, 'Portcullis logged the revocation')
  t.equal(revoked?.sid, true, 'by sid')
  t.equal(revoked?.sub, alice.id, "alice's")
  t.notOk(proxy.logText.some((l) => /eyJ[\w-]+\.eyJ/.test(l)), 'no token in the logs')

  await assertLoggedOut(t, proxy.url, upstream, aliceLogin.jar, 'alice')
  await assertLoggedIn(t, proxy.url, upstream, bobLogin.jar, bob.id, 'bob')
})

// ---------------------------------------------------------------------------------------------------
// Hand-built logout tokens, against the bad provider

const CLIENT_ID = 'portcullis-backchannel'
const CLIENT_SECRET = 'bad-provider-client-secret-0123456789'
const SUB = 'bad-provider-user'

/** The system clock plus `offsetMs`, so a test can move it forward. */
interface OffsetClock extends Clock {
  offsetMs: number
}

function offsetClock(): OffsetClock {
  return {
    offsetMs: 0,
    now(): number {
      return Date.now() + this.offsetMs
    },
  }
}

interface BadSetup<C extends Clock = OffsetClock> {
  bad: BadProvider
  upstream: EchoUpstream
  proxy: RunningPortcullis
  publicUrl: string
  /** Portcullis' clock: an offset clock unless the test gives one (a fake clock, to set every time). */
  clock: C
}

function setup(t: Test): Promise<BadSetup>
function setup<C extends Clock>(t: Test, clock: C): Promise<BadSetup<C>>
async function setup(t: Test, clock: Clock = offsetClock()): Promise<BadSetup<Clock>> {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const bad = await startBadProvider(t, {
    defect: 'none',
    redirectUri: `${publicUrl}/oauth2/callback`,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    sid: true,
  })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: bad.issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, { port, clock })
  await proxy.runtime.provider.whenReady()
  return { bad, upstream, proxy, publicUrl, clock }
}

interface BadLogin {
  jar: CookieJar
  sid: string
  createdAt: number
}

/** start → the bad provider's authorize (an immediate 302) → callback: a session with its own sid. */
async function loginAtBadProvider(t: Test, s: BadSetup<Clock>): Promise<BadLogin> {
  const jar = new CookieJar()
  const start = await request(`${s.publicUrl}/oauth2/start?rd=/x`, { jar, headers: NAVIGATION_HEADERS })
  const authorize = await request(String(start.headers.location), { jar, headers: NAVIGATION_HEADERS })
  const callback = await request(String(authorize.headers.location), { jar, headers: NAVIGATION_HEADERS })
  t.equal(callback.status, 302, 'logged in at the bad provider')
  const session = (await s.proxy.runtime.sessions.load(jar.get('_portcullis') ?? ''))?.session
  t.ok(session?.sid, 'the session has the sid of the ID token')
  t.equal(session?.sub, SUB)
  return { jar, sid: session?.sid ?? '', createdAt: session?.createdAt ?? 0 }
}

/**
 * Valid logout-token claims for `s`, by Portcullis' clock; an override of `undefined` removes the claim.
 */
function claims(s: BadSetup<Clock>, over: Record<string, unknown> = {}): JWTPayload {
  const out: Record<string, unknown> = {
    iss: s.bad.issuer,
    aud: CLIENT_ID,
    iat: Math.floor(s.clock.now() / 1000),
    jti: randomUUID(),
    events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    sub: SUB,
  }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete out[k]
    else out[k] = v
  }
  return out as JWTPayload
}

interface Negative {
  name: string
  /** The form body to post (built per run, so every token has its own jti). */
  body: (s: BadSetup, sid: string) => Promise<string>
  contentType?: string | null
  /** Matched against `error_description / the verifier's error message` (from the log). */
  reason: RegExp
}

const signed = (over: (s: BadSetup, sid: string) => Record<string, unknown>, opts?: SignLogoutTokenOptions) =>
  async (s: BadSetup, sid: string) => form(await s.bad.signLogoutToken(claims(s, { sid, ...over(s, sid) }), opts))

const NEGATIVES: Negative[] = [
  { name: 'with a nonce', body: signed(() => ({ nonce: 'n-0S6_WzA2Mj' })), reason: /nonce/ },
  { name: 'without events', body: signed(() => ({ events: undefined })), reason: /missing required "events"/ },
  { name: 'events lacking the back-channel member', body: signed(() => ({ events: { 'http://schemas.openid.net/event/other': {} } })), reason: /lack the back-channel logout event/ },
  { name: 'events member true (not an object)', body: signed(() => ({ events: { [BACKCHANNEL_LOGOUT_EVENT]: true } })), reason: /lack the back-channel logout event/ },
  { name: 'events member a string', body: signed(() => ({ events: { [BACKCHANNEL_LOGOUT_EVENT]: 'logout' } })), reason: /lack the back-channel logout event/ },
  { name: 'events member an array', body: signed(() => ({ events: { [BACKCHANNEL_LOGOUT_EVENT]: [] } })), reason: /lack the back-channel logout event/ },
  { name: 'events member null', body: signed(() => ({ events: { [BACKCHANNEL_LOGOUT_EVENT]: null } })), reason: /lack the back-channel logout event/ },
  { name: 'events an array of the event URI', body: signed(() => ({ events: [BACKCHANNEL_LOGOUT_EVENT] })), reason: /no events object/ },
  { name: 'events a string', body: signed(() => ({ events: BACKCHANNEL_LOGOUT_EVENT })), reason: /no events object/ },
  { name: 'unsigned (alg none)', body: signed(() => ({}), { key: 'none' }), reason: /"alg" .*not allowed/ },
  { name: 'signed by an unknown key', body: signed(() => ({}), { key: 'unknown' }), reason: /no applicable key/ },
  {
    name: 'a signature that does not verify',
    reason: /signature verification failed/,
    body: async (s, sid) => {
      const [h, p, sig] = (await s.bad.signLogoutToken(claims(s, { sid }))).split('.') as [string, string, string]
      const bytes = Buffer.from(sig, 'base64url')
      bytes[0] = (bytes[0] as number) ^ 0x01
      return form(`${h}.${p}.${bytes.toString('base64url')}`)
    },
  },
  { name: 'wrong iss', body: signed((s) => ({ iss: `${s.bad.issuer}/another-tenant` })), reason: /unexpected "iss"/ },
  { name: 'no iss', body: signed(() => ({ iss: undefined })), reason: /missing required "iss"/ },
  { name: 'wrong aud', body: signed(() => ({ aud: 'another-client' })), reason: /unexpected "aud"/ },
  { name: 'no aud', body: signed(() => ({ aud: undefined })), reason: /missing required "aud"/ },
  { name: 'iat an hour in the future', body: signed((s) => ({ iat: Math.floor(s.clock.now() / 1000) + 3600 })), reason: /"iat" .*should be in the past/ },
  { name: 'iat a minute in the future (beyond the 30 s skew)', body: signed((s) => ({ iat: Math.floor(s.clock.now() / 1000) + 60 })), reason: /"iat" .*should be in the past/ },
  {
    name: 'iat older than the accepted window',
    reason: /"iat" .*too far in the past/,
    body: signed((s) => ({ iat: Math.floor(s.clock.now() / 1000) - LOGOUT_TOKEN_MAX_AGE_SEC - 31 - 5 })),
  },
  { name: 'iat a day old', body: signed((s) => ({ iat: Math.floor(s.clock.now() / 1000) - 86_400 })), reason: /"iat" .*too far in the past/ },
  { name: 'no iat', body: signed(() => ({ iat: undefined })), reason: /missing required "iat"/ },
  { name: 'iat not a number', body: signed(() => ({ iat: 'yesterday' })), reason: /"iat" claim must be a number/ },
  { name: 'exp in the past', body: signed((s) => ({ exp: Math.floor(s.clock.now() / 1000) - 120 })), reason: /"exp" claim timestamp check failed/ },
  { name: 'typ JWT', body: signed(() => ({}), { typ: 'JWT' }), reason: /wrong typ/ },
  { name: 'typ at+jwt', body: signed(() => ({}), { typ: 'at+jwt' }), reason: /wrong typ/ },
  { name: 'typ logout+jwt+x', body: signed(() => ({}), { typ: 'logout+jwt+x' }), reason: /wrong typ/ },
  { name: 'neither sid nor sub', body: signed(() => ({ sid: undefined, sub: undefined })), reason: /neither sid nor sub/ },
  { name: 'sid and sub empty', body: signed(() => ({ sid: '', sub: '' })), reason: /neither sid nor sub/ },
  { name: 'no jti', body: signed(() => ({ jti: undefined })), reason: /missing required "jti"/ },
  { name: 'jti empty', body: signed(() => ({ jti: '' })), reason: /no jti/ },
  { name: 'jti not a string', body: signed(() => ({ jti: 42 })), reason: /no jti/ },
  { name: 'not a JWT', body: async () => form('not-a-jwt'), reason: /not a JWT/ },
  { name: 'missing logout_token field', body: async () => 'token=abc', reason: /exactly one logout_token/ },
  { name: 'empty body', body: async () => '', reason: /exactly one logout_token/ },
  { name: 'empty logout_token', body: async () => 'logout_token=', reason: /exactly one logout_token/ },
  {
    name: 'duplicated logout_token field',
    reason: /exactly one logout_token/,
    body: async (s, sid) => {
      const token = await s.bad.signLogoutToken(claims(s, { sid }))
      return `${form(token)}&${form(token)}`
    },
  },
  {
    name: 'duplicated logout_token field, one empty',
    reason: /exactly one logout_token/,
    body: async (s, sid) => `${form(await s.bad.signLogoutToken(claims(s, { sid })))}&logout_token=`,
  },
  {
    name: 'a valid token as JSON',
    reason: /exactly one logout_token/,
    body: async (s, sid) => JSON.stringify({ logout_token: await s.bad.signLogoutToken(claims(s, { sid })) }),
    contentType: 'application/json',
  },
  {
    name: 'a valid token form-encoded but sent as text/plain',
    reason: /exactly one logout_token/,
    body: signed(() => ({})),
    contentType: 'text/plain',
  },
  {
    name: 'a valid token form-encoded but sent as multipart/form-data',
    reason: /exactly one logout_token/,
    body: signed(() => ({})),
    contentType: 'multipart/form-data; boundary=x',
  },
  {
    name: 'a valid token form-encoded without a content type',
    reason: /exactly one logout_token/,
    body: signed(() => ({})),
    contentType: null,
  },
]

t.test('refused logout tokens: 400 invalid_request, and the session they name stays alive', async (t) => {
  const s = await setup(t)
  const victim = await loginAtBadProvider(t, s)
  await assertLoggedIn(t, s.publicUrl, s.upstream, victim.jar, SUB, 'before')

  let refusalsSeen = 0
  for (const neg of NEGATIVES) {
    await t.test(neg.name, async (t) => {
      const res = await postLogout(s.publicUrl, await neg.body(s, victim.sid), neg.contentType === undefined ? FORM : neg.contentType)
      assertRefused(t, res, neg.name)
      // Refused for the stated reason: the public description, or the verifier's error in the log.
      const refusals = s.proxy.logs.filter((l) => l.msg === 'back-channel logout refused') as Array<{ err?: { cause?: { message?: string } } }>
      const cause = refusals.length > refusalsSeen ? (refusals.at(-1)?.err?.cause?.message ?? '') : ''
      refusalsSeen = refusals.length
      t.match(`${res.json<{ error_description: string }>().error_description} / ${cause}`, neg.reason, `${neg.name}: refused because of it`)
      await assertLoggedIn(t, s.publicUrl, s.upstream, victim.jar, SUB, `the session named by the token (${neg.name})`)
    })
  }
  t.notOk(s.proxy.logs.some((l) => l.msg === REVOKED_MSG), 'nothing was revoked')
  t.ok(s.proxy.logs.filter((l) => l.msg === 'back-channel logout refused').length > 0, 'refusals are logged')
  t.notOk(s.proxy.logText.some((l) => /eyJ[\w-]+\.eyJ/.test(l)), 'no token in the logs')

  // The same session is ended by a valid token naming it: the refusals above were the token's fault.
  const res = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: victim.sid }))))
  assertAccepted(t, res, 'a valid token for the same sid')
  await assertLoggedOut(t, s.publicUrl, s.upstream, victim.jar, 'then the session')
})

t.test('a replayed logout token (same jti) is refused the second time', async (t) => {
  const s = await setup(t)
  const other = await loginAtBadProvider(t, s)
  const token = await s.bad.signLogoutToken(claims(s, { sid: 'sid-of-a-session-that-is-not-here', sub: undefined }))
  assertAccepted(t, await postLogout(s.publicUrl, form(token)), 'first delivery')
  assertRefused(t, await postLogout(s.publicUrl, form(token)), 'the same token again')
  // Another token with the same jti (e.g. replayed with another sid) is a replay too.
  const jti = randomUUID()
  assertAccepted(t, await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { jti, sid: 'sid-nobody-1', sub: undefined })))), 'a new jti')
  const replay = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { jti, sid: other.sid }))))
  assertRefused(t, replay, 'the same jti naming a live session')
  await assertLoggedIn(t, s.publicUrl, s.upstream, other.jar, SUB, 'the session the replay named')
  // A refused token does not burn its jti: the same jti in a valid token is accepted afterwards.
  const jti2 = randomUUID()
  assertRefused(t, await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { jti: jti2, sid: other.sid, nonce: 'n' })))), 'a refused token')
  assertAccepted(t, await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { jti: jti2, sid: other.sid })))), 'its jti in a valid token')
  await assertLoggedOut(t, s.publicUrl, s.upstream, other.jar, 'the session it named')
})

t.test('accepted token shapes: typ absent or application/logout+jwt, exp in the future, iat just inside the window', async (t) => {
  const s = await setup(t)
  const now = () => Math.floor(s.clock.now() / 1000)
  const cases: Array<[string, Record<string, unknown>, SignLogoutTokenOptions | undefined]> = [
    ['no typ header', {}, { typ: null }],
    ['typ application/logout+jwt', {}, { typ: 'application/logout+jwt' }],
    ['typ Logout+JWT (case-insensitive media type)', {}, { typ: 'Logout+JWT' }],
    ['exp in the future', { exp: now() + 120 }, undefined],
    ['iat nine minutes old', { iat: now() - 9 * 60 }, undefined],
    ['iat ten seconds ahead (within the skew)', { iat: now() + 10 }, undefined],
    ['aud an array holding the client id', { aud: ['another-client', CLIENT_ID] }, undefined],
    ['sid only, no sub', { sub: undefined }, undefined],
  ]
  for (const [name, over, opts] of cases) {
    const victim = await loginAtBadProvider(t, s)
    const res = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: victim.sid, ...over }), opts)))
    assertAccepted(t, res, name)
    await assertLoggedOut(t, s.publicUrl, s.upstream, victim.jar, name)
  }
})

t.test('a valid token by sid ends that session only, not the same user’s session with another sid', async (t) => {
  // Portcullis runs on a fake clock here, so every time that matters is set by the test. The token
  // names the user's `sub` as well as the `sid` (as providers send it), and both sessions are created
  // seconds before the token's `iat`: were a token with a `sid` also read as "every session of `sub`
  // created before `iat`", the second session would end too, in every run. (On the wall clock both
  // logins and the token usually fall in one second, `iat` is floored to it, and such a cut-off would
  // end neither session: the test then passed unless a second boundary fell in between.)
  const clock = fakeClock()
  const s = await setup(t, clock)
  const first = await loginAtBadProvider(t, s)
  clock.advance(5_000)
  const second = await loginAtBadProvider(t, s)
  clock.advance(5_000)
  t.not(first.sid, second.sid, 'two provider sessions of the same user')
  t.equal(second.createdAt - first.createdAt, 5_000, 'the sessions were created 5 s apart on the fake clock')
  const iat = Math.floor(clock.now() / 1000)
  t.ok(first.createdAt < iat * 1000 && second.createdAt < iat * 1000 - 1_000, "both were created seconds before the token's iat: a cut-off by sub would end both")
  const res = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: first.sid, sub: SUB, iat }))))
  assertAccepted(t, res, 'by sid, with the sub of both sessions')
  const line = s.proxy.logs.find((l) => l.msg === REVOKED_MSG)
  t.equal(line?.sid, true, 'logged as a revocation by sid')
  t.equal(
    s.proxy.logs.find((l) => l.msg === 'request' && l.route === 'auth:backchannel')?.status,
    200,
    'access log: auth:backchannel 200',
  )
  const copy = new CookieJar()
  copy.set('_portcullis', first.jar.get('_portcullis') ?? '', { url: s.publicUrl })
  await assertLoggedOut(t, s.publicUrl, s.upstream, first.jar, 'the session with that sid')
  await assertLoggedIn(t, s.publicUrl, s.upstream, second.jar, SUB, 'the other sid')
  // The revocation is kept, not only the cookie cleared: a copy of the ended session's cookie stays ended.
  await assertLoggedOut(t, s.publicUrl, s.upstream, copy, 'a copy of the ended session cookie')
  // A new login after the token gets the same sid only if the provider session lives on; here it is a new one.
  const again = await loginAtBadProvider(t, s)
  await assertLoggedIn(t, s.publicUrl, s.upstream, again.jar, SUB, 'a new login afterwards')
})

t.test('a valid token by sub without sid ends the sessions created before its iat, not those created after', async (t) => {
  const s = await setup(t)
  const before = await loginAtBadProvider(t, s)
  const beforeToo = await loginAtBadProvider(t, s)
  // Another user's session created at the same time (the bad provider has one user: made by hand).
  const loaded = await s.proxy.runtime.sessions.load(before.jar.get('_portcullis') ?? '')
  const otherUser = new CookieJar()
  otherUser.set(
    '_portcullis',
    await s.proxy.runtime.sessions.save({ ...loaded!.session, id: s.proxy.runtime.newSessionId(), sub: 'someone-else', sid: 'sid-someone-else' }),
    { url: s.publicUrl },
  )
  await assertLoggedIn(t, s.publicUrl, s.upstream, otherUser, 'someone-else', 'another user')

  // The token is issued at `iat`, after the first two logins; Portcullis' clock then moves on and a
  // third login happens after `iat`: that session must survive the (late-delivered) token.
  const iat = Math.floor(Math.max(before.createdAt, beforeToo.createdAt) / 1000) + 1
  s.clock.offsetMs += 10_000
  const after = await loginAtBadProvider(t, s)
  t.ok(after.createdAt >= iat * 1000, 'the third session is created after the token')
  t.ok(before.createdAt < iat * 1000 && beforeToo.createdAt < iat * 1000, 'the first two before it')

  const res = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: undefined, iat }))))
  assertAccepted(t, res, 'by sub')
  t.equal(s.proxy.logs.find((l) => l.msg === REVOKED_MSG)?.sid, false, 'logged as a revocation by sub')
  await assertLoggedOut(t, s.publicUrl, s.upstream, before.jar, 'a session created before iat')
  await assertLoggedOut(t, s.publicUrl, s.upstream, beforeToo.jar, 'another session created before iat')
  await assertLoggedIn(t, s.publicUrl, s.upstream, after.jar, SUB, 'the session created after iat')
  await assertLoggedIn(t, s.publicUrl, s.upstream, otherUser, 'someone-else', "another user's session")

  // A later token by sub moves the cut-off forward: now the third session ends too.
  const afterCopy = new CookieJar()
  afterCopy.set('_portcullis', after.jar.get('_portcullis') ?? '', { url: s.publicUrl })
  s.clock.offsetMs += 5_000
  const later = await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: undefined }))))
  assertAccepted(t, later, 'a later token by sub')
  await assertLoggedOut(t, s.publicUrl, s.upstream, after.jar, 'the third session')
  // An older token by sub (still in the window) does not move the cut-off back.
  const fresh = await (async () => {
    s.clock.offsetMs += 2_000
    return loginAtBadProvider(t, s)
  })()
  assertAccepted(t, await postLogout(s.publicUrl, form(await s.bad.signLogoutToken(claims(s, { sid: undefined, iat })))), 'an older token by sub')
  await assertLoggedIn(t, s.publicUrl, s.upstream, fresh.jar, SUB, 'a session created after every token')
  await assertLoggedOut(t, s.publicUrl, s.upstream, afterCopy, 'the third session (a copy of its cookie), still')
})
