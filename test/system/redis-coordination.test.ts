/**
 * Two Portcullis replicas sharing one real redis-server and nothing else (issue #12 point 2): each
 * has its own runtime, app and listener, the same config and secrets, and the real provider in front.
 *
 * - refresh single-flight across replicas: 50 parallel requests split across A and B on a session
 *   whose access token is due → ONE refresh_token grant at the provider, every request 200 with the
 *   new access token; with the cookie store, and with the memory store (which shares no sessions
 *   between replicas, so the test gives both the same session: the same refresh token);
 * - a back-channel logout posted to A ends the session on B (the next request there goes to login,
 *   an open WebSocket on B is closed at once), and the same logout token at B is a replay;
 * - Redis stopped: a signed-in request is a 503 on both (never a 200 from a stale mirror), a
 *   back-channel logout is a 503 (the provider should retry), a sign-out still signs out; Redis back
 *   EMPTY: both replicas resync and write back what they knew (merged, never replaced), so the
 *   revocations made before and during the outage hold on both.
 *
 * The provider posts its logout tokens through a small relay (real HTTP) that records each token and
 * the answer Portcullis gave, so a test can post the very same token to the other replica.
 *
 * @see src/redis/revocations.ts, src/redis/logout-replay.ts, src/redis/refresh-lock.ts
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { reserveHeldPort, startPortcullis, type RunningPortcullis } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { configFor } from '../helpers/config.ts'
import { DEMO_USERS, PROVIDER_ROUTES, startTestProvider, type RunningProvider } from '../helpers/provider.ts'
import { startTestUpstream, type EchoUpstream } from '../helpers/upstream.ts'
import { startRedis, type RedisServer } from '../helpers/redis.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { waitUntil } from '../helpers/wait.ts'
import { join, split } from '../../src/session/chunks.ts'
import type { Session } from '../../src/session/model.ts'

const NAME = '_portcullis'
const API = { accept: 'application/json' }
const alice = DEMO_USERS[0]!
const bob = DEMO_USERS[1]!
const CLIENT_ID = 'portcullis-replicas'
const CLIENT_SECRET = 'replicas-client-secret-that-is-long-enough'
/** Inside the default refreshAhead (30 s) of a 300 s access token, well before it expires. */
const INTO_REFRESH_WINDOW = 280_000

// ---------------------------------------------------------------------------------------------------
// The relay between the provider and replica A's back-channel endpoint

interface Relayed {
  readonly token: string
  /** What Portcullis answered (the provider saw the same). */
  readonly status: number
}

interface Relay {
  readonly url: string
  readonly posts: Relayed[]
}

async function startRelay(t: Test, target: () => string): Promise<Relay> {
  const posts: Relayed[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      fetch(target(), { method: 'POST', headers: { 'content-type': String(req.headers['content-type']) }, body }).then(
        async (answer) => {
          const text = await answer.text()
          posts.push({ token: new URLSearchParams(body).get('logout_token') ?? '', status: answer.status })
          res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'text/plain' }).end(text)
        },
        () => res.writeHead(502).end(),
      )
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/backchannel`, posts }
}

// ---------------------------------------------------------------------------------------------------
// Two replicas

interface Replicas {
  readonly a: RunningPortcullis
  readonly b: RunningPortcullis
  readonly provider: RunningProvider
  readonly upstream: EchoUpstream
  readonly redis: RedisServer
  readonly relay: Relay
  readonly clock: FakeClock
  /** The public URL both are configured with (A's address; B is reached directly). */
  readonly publicUrl: string
}

async function replicas(t: Test, store: 'cookie' | 'memory'): Promise<Replicas> {
  const redis = await startRedis(t)
  const portA = await reserveHeldPort()
  const portB = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${portA}`
  let aUrl = publicUrl
  const relay = await startRelay(t, () => `${aUrl}/oauth2/backchannel-logout`)
  const provider = await startTestProvider(t, {
    clients: [
      {
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUris: [`${publicUrl}/oauth2/callback`],
        postLogoutRedirectUris: [`${publicUrl}/`],
        backchannelLogoutUri: relay.url,
        tokenEndpointAuthMethod: 'client_secret_basic',
      },
    ],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  // One config for both, as replicas behind one load balancer have.
  const config = configFor({
    issuer: provider.issuer,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    upstream: upstream.url,
    publicUrl,
    overrides: {
      session: { store, redis: { url: redis.url, connectTimeout: '1s', commandTimeout: '1s' } },
      identity: { passAccessToken: true },
    },
  })
  const clock = fakeClock()
  const a = await startPortcullis(t, config, { port: portA, clock, app: { tunnelCheckMs: 30_000 } })
  aUrl = a.url
  const b = await startPortcullis(t, config, { port: portB, clock, app: { tunnelCheckMs: 30_000 } })
  t.not(a.runtime, b.runtime, 'two runtimes')
  t.not(a.runtime.redis, b.runtime.redis, 'each with its own Redis connection')
  await Promise.all([a.runtime.provider.whenReady(), b.runtime.provider.whenReady()])
  await waitUntil(() => a.runtime.revocations.ready && b.runtime.revocations.ready, 'both replicas to sync their revocations')
  return { a, b, provider, upstream, redis, relay, clock, publicUrl }
}

// ---------------------------------------------------------------------------------------------------
// Helpers

const isSessionChunk = (name: string): boolean => name === NAME || /^_portcullis_\d+$/.test(name)

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

function refreshGrants(provider: RunningProvider): number {
  return provider.requests.filter((r) => r.grantType === 'refresh_token').length
}

function api(url: string, cookie: string): Promise<TestResponse> {
  return request(url, { headers: { ...API, cookie } })
}

/** Served by the upstream as `sub`. */
async function assertServed(t: Test, proxy: RunningPortcullis, upstream: EchoUpstream, cookie: string, sub: string, what: string): Promise<void> {
  const path = `/api/served-${Math.random().toString(36).slice(2)}`
  const res = await api(`${proxy.url}${path}`, cookie)
  t.equal(res.status, 200, `${what}: 200`)
  const seen = upstream.requests.find((r) => r.url === path)
  t.equal(seen?.headers['x-auth-request-user'], sub, `${what}: reached the upstream as ${sub}`)
}

/** The session is over here: a navigation goes to login, an API call is a 401, nothing is proxied. */
async function assertSignedOut(t: Test, proxy: RunningPortcullis, r: Replicas, cookie: string, what: string): Promise<void> {
  const before = r.upstream.requests.length
  const nav = await request(`${proxy.url}/page`, { headers: { ...NAVIGATION_HEADERS, cookie } })
  t.equal(nav.status, 302, `${what}: a navigation goes to login`)
  const loc = new URL(String(nav.headers.location), r.publicUrl)
  t.equal(`${loc.origin}${loc.pathname}`, `${r.publicUrl}/oauth2/start`, `${what}: to /oauth2/start`)
  t.ok(nav.setCookies.some((l) => /^_portcullis=;/.test(l)), `${what}: the session cookie is cleared`)
  const call = await api(`${proxy.url}/api/data`, cookie)
  t.equal(call.status, 401, `${what}: an API call is a 401`)
  t.equal(r.upstream.requests.length, before, `${what}: nothing reached the upstream`)
}

/** A 503 with Retry-After, nothing proxied. */
async function assertUnavailable(t: Test, proxy: RunningPortcullis, r: Replicas, cookie: string, what: string): Promise<void> {
  const before = r.upstream.requests.length
  const res = await api(`${proxy.url}/api/data`, cookie)
  t.equal(res.status, 503, `${what}: 503`)
  t.ok(res.headers['retry-after'], `${what}: with Retry-After`)
  t.equal(res.json<{ error: string }>().error, 'STORE_UNAVAILABLE', `${what}: STORE_UNAVAILABLE`)
  t.notMatch(res.body, /\bat .*\.(?:ts|js):\d+/, `${what}: no stack trace`)
  t.equal(r.upstream.requests.length, before, `${what}: nothing reached the upstream`)
}

/** End the user's session AT THE PROVIDER (its end-session page, confirmed): the provider then posts a logout token. */
async function endAtProvider(t: Test, provider: RunningProvider, jar: CookieJar): Promise<void> {
  const endSession = `${provider.issuer}${PROVIDER_ROUTES.end_session}`
  const page = await request(endSession, { headers: NAVIGATION_HEADERS, jar })
  t.equal(page.status, 200, "the provider's logout confirmation")
  t.ok(parseForm(page.body, endSession), 'with a form')
  const confirmed = await submitForm({ url: endSession, body: page.body }, jar)
  t.ok(confirmed.status === 302 || confirmed.status === 303, `the provider confirms (${confirmed.status})`)
}

function postLogout(proxy: RunningPortcullis, token: string): Promise<TestResponse> {
  return request(`${proxy.url}/oauth2/backchannel-logout`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ logout_token: token }).toString(),
  })
}

// ---------------------------------------------------------------------------------------------------
// 1. Refresh: one grant for 50 requests split across two replicas

/** 50 requests, even ones to A and odd ones to B (each with the cookie `cookieFor` gives it). */
async function fifty(t: Test, r: Replicas, cookieFor: (replica: 'a' | 'b') => string, old: Session): Promise<void> {
  r.clock.advance(INTO_REFRESH_WINDOW)
  const before = r.upstream.requests.length
  const responses = await Promise.all(
    Array.from({ length: 50 }, (_, i) => {
      const replica = i % 2 === 0 ? 'a' : 'b'
      return api(`${(replica === 'a' ? r.a : r.b).url}/parallel?i=${i}`, cookieFor(replica))
    }),
  )
  t.equal(refreshGrants(r.provider), 1, 'the provider saw exactly ONE refresh_token grant')
  t.same(
    responses.map((res) => res.status),
    Array.from({ length: 50 }, () => 200),
    'all 50 answered 200',
  )
  const seen = r.upstream.requests.slice(before)
  t.equal(seen.length, 50, 'all 50 reached the upstream')
  t.same(
    seen.map((s) => s.url).sort(),
    Array.from({ length: 50 }, (_, i) => `/parallel?i=${i}`).sort(),
    'each request once',
  )
  const tokens = new Set(seen.map((s) => s.headers['x-auth-request-access-token']))
  t.equal(tokens.size, 1, 'every request carried the same access token, on both replicas')
  const [token] = [...tokens]
  t.not(token, old.accessToken, 'the NEW one')
  t.ok(
    seen.every((s) => s.headers['x-auth-request-user'] === alice.id && s.headers['x-auth-request-email'] === alice.email),
    "all with alice's identity",
  )
}

t.test('cookie store: 50 parallel requests split across A and B on an expiring session → ONE refresh at the provider', async (t) => {
  const r = await replicas(t, 'cookie')
  const { jar } = await login({ proxyUrl: r.a.url, user: alice })
  const value = jarSession(jar)
  const old = await sessionOf(r.a, value)
  await assertServed(t, r.b, r.upstream, cookieHeader(value), alice.id, 'B serves the session A issued')
  t.equal(refreshGrants(r.provider), 0, 'no refresh yet')

  await fifty(t, r, () => cookieHeader(value), old)

  // The old cookie again, on either replica: the result (shared and cached), not a second grant.
  await assertServed(t, r.a, r.upstream, cookieHeader(value), alice.id, 'the old cookie on A, later')
  await assertServed(t, r.b, r.upstream, cookieHeader(value), alice.id, 'the old cookie on B, later')
  t.equal(refreshGrants(r.provider), 1, 'still one grant')
  t.equal(await r.redis.command('EXISTS', r.a.runtime.redis!.key('revocations')), ':0', 'no revocation was written')
})

t.test('memory store: the same session held by both replicas → ONE refresh at the provider', async (t) => {
  const r = await replicas(t, 'memory')
  const { jar } = await login({ proxyUrl: r.a.url, user: alice })
  const ticketA = jarSession(jar)
  const old = await sessionOf(r.a, ticketA)
  // The memory store keeps sessions per process: B is given the same session (same refresh token).
  const ticketB = await r.b.runtime.sessions.save(old)
  t.not(ticketB, ticketA, 'two tickets')
  t.equal((await r.a.runtime.sessions.load(ticketB)), null, "A does not know B's ticket")
  await assertServed(t, r.b, r.upstream, cookieHeader(ticketB), alice.id, 'B serves its copy')

  await fifty(t, r, (replica) => cookieHeader(replica === 'a' ? ticketA : ticketB), old)

  const [onA, onB] = await Promise.all([sessionOf(r.a, ticketA), sessionOf(r.b, ticketB)])
  t.equal(onA.refreshToken, onB.refreshToken, 'both stores hold the one rotated refresh token')
  t.not(onA.refreshToken, old.refreshToken, 'rotated')
})

t.test('the hot path makes no Redis call: 40 signed-in requests across A and B send Redis nothing but heartbeats', async (t) => {
  const r = await replicas(t, 'cookie')
  const { jar } = await login({ proxyUrl: r.a.url, user: alice })
  const cookie = cookieHeader(jarSession(jar))
  await assertServed(t, r.b, r.upstream, cookie, alice.id, 'warm on B')
  const admin = r.a.runtime.redis!.client
  await admin.config('RESETSTAT')
  const responses = await Promise.all(Array.from({ length: 40 }, (_, i) => api(`${(i % 2 === 0 ? r.a : r.b).url}/hot?i=${i}`, cookie)))
  t.ok(responses.every((res) => res.status === 200), 'all 200')
  const stats = String(await admin.info('commandstats'))
  const commands = [...stats.matchAll(/^cmdstat_([a-z|]+):/gm)].map((m) => m[1])
  t.same(commands.filter((c) => c !== 'ping' && c !== 'info' && c !== 'config|resetstat'), [], `only heartbeats reached Redis (${commands.join(', ')})`)
})

// ---------------------------------------------------------------------------------------------------
// 2. Back-channel logout received by A ends the session on B

/** Open a WebSocket; resolves once open, with a promise of its close code. */
function openSocket(url: string, cookie: string): Promise<{ ws: WebSocket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { cookie }, handshakeTimeout: 5_000 })
    const closed = new Promise<number>((res) => ws.once('close', (code: number) => res(code)))
    ws.once('open', () => resolve({ ws, closed }))
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)))
    ws.once('error', reject)
  })
}

t.test('a back-channel logout posted to A ends the session on B at once; the same token at B is a replay', async (t) => {
  const r = await replicas(t, 'cookie')
  const aliceLogin = await login({ proxyUrl: r.a.url, user: alice })
  const bobLogin = await login({ proxyUrl: r.a.url, user: bob })
  const aliceCookie = cookieHeader(jarSession(aliceLogin.jar))
  const bobCookie = cookieHeader(jarSession(bobLogin.jar))
  await assertServed(t, r.b, r.upstream, aliceCookie, alice.id, 'alice on B')
  await assertServed(t, r.b, r.upstream, bobCookie, bob.id, 'bob on B')
  // A WebSocket of alice's on B: it must end with the logout A receives, not at B's next sweep (30 s).
  const socket = await openSocket(`${r.b.url.replace(/^http/, 'ws')}/socket`, aliceCookie)
  t.teardown(() => socket.ws.terminate())

  await endAtProvider(t, r.provider, aliceLogin.jar)
  await waitUntil(() => r.relay.posts.length === 1, 'the provider to post a logout token', 10_000)
  const [posted] = r.relay.posts
  t.equal(posted?.status, 200, 'A accepted the logout token')
  t.ok(r.a.logs.some((l) => l.msg === 'back-channel logout: sessions revoked'), 'A logged the revocation')
  t.notOk(r.b.logs.some((l) => l.route === 'auth:backchannel'), 'B was never posted to')

  t.equal(await socket.closed, 1008, "alice's WebSocket on B was closed (1008) by A's logout")
  await assertSignedOut(t, r.b, r, aliceCookie, 'alice on B')
  await assertSignedOut(t, r.a, r, aliceCookie, 'alice on A')
  await assertServed(t, r.b, r.upstream, bobCookie, bob.id, 'bob on B, still')

  const replay = await postLogout(r.b, posted?.token ?? '')
  t.equal(replay.status, 400, 'the same logout token at B: refused')
  t.equal(replay.json<{ error: string }>().error, 'invalid_request')
  t.match(replay.json<{ error_description: string }>().error_description, /already used/, 'as a replay')
})

t.test('a sign-out on B ends the session on A', async (t) => {
  const r = await replicas(t, 'cookie')
  const { jar } = await login({ proxyUrl: r.a.url, user: alice })
  const cookie = cookieHeader(jarSession(jar))
  await assertServed(t, r.a, r.upstream, cookie, alice.id, 'alice on A')
  const out = await request(`${r.b.url}/oauth2/sign_out`, { headers: { ...NAVIGATION_HEADERS, cookie } })
  t.equal(out.status, 302, 'signed out on B')
  await assertSignedOut(t, r.a, r, cookie, 'alice on A')
})

// ---------------------------------------------------------------------------------------------------
// 3. Redis stopped, and back empty

t.test('Redis stopped: 503, never a 200 from a stale mirror; back empty: both resync and keep what they knew', async (t) => {
  const r = await replicas(t, 'cookie')
  const carol = DEMO_USERS[2] ?? bob
  const aliceLogin = await login({ proxyUrl: r.a.url, user: alice })
  const bobLogin = await login({ proxyUrl: r.a.url, user: bob })
  const carolLogin = await login({ proxyUrl: r.a.url, user: carol })
  const [aliceCookie, bobCookie, carolCookie] = [aliceLogin, bobLogin, carolLogin].map((l) => cookieHeader(jarSession(l.jar))) as [string, string, string]
  // Before the outage: bob signs out on A (his revocation is in Redis, then lost with it).
  t.equal((await request(`${r.a.url}/oauth2/sign_out`, { headers: { ...NAVIGATION_HEADERS, cookie: bobCookie } })).status, 302, 'bob signs out on A')
  await assertSignedOut(t, r.b, r, bobCookie, 'bob on B, before the outage')
  await assertServed(t, r.b, r.upstream, aliceCookie, alice.id, 'alice on B, before the outage')

  await r.redis.stop()
  await waitUntil(() => !r.a.runtime.revocations.ready && !r.b.runtime.revocations.ready, 'both replicas to see Redis gone')
  await assertUnavailable(t, r.a, r, aliceCookie, 'alice on A, Redis down')
  await assertUnavailable(t, r.b, r, aliceCookie, 'alice on B, Redis down')
  await assertUnavailable(t, r.b, r, bobCookie, 'bob (revoked) on B, Redis down')
  const page = await request(`${r.b.url}/page`, { headers: { ...NAVIGATION_HEADERS, cookie: aliceCookie } })
  t.equal(page.status, 503, 'a browser navigation too: 503 (an error page, not a login, not a 200)')
  t.match(String(page.headers['content-type']), /^text\/html/, 'as a page')

  // Alice ends her session at the provider: the logout token reaches A while Redis is down.
  await endAtProvider(t, r.provider, aliceLogin.jar)
  await waitUntil(() => r.relay.posts.length === 1, 'the provider to post a logout token', 10_000)
  const [duringOutage] = r.relay.posts
  t.equal(duringOutage?.status, 503, 'A answered the back-channel logout 503 (the provider is to retry)')
  t.ok(r.a.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('back-channel logout: revoked') && l.level === 50), 'and logged why')

  // Carol signs out on B while Redis is down: she is signed out all the same.
  const carolOut = await request(`${r.b.url}/oauth2/sign_out`, { headers: { ...NAVIGATION_HEADERS, cookie: carolCookie } })
  t.equal(carolOut.status, 302, 'a sign-out with Redis down still signs out')
  t.ok(carolOut.setCookies.some((l) => /^_portcullis=;/.test(l)), 'and clears the cookie')
  t.ok(r.b.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('sign-out: the revocation could not be shared')), 'the failure is logged')

  // Redis comes back EMPTY (it kept nothing). Both replicas resubscribe, load, and write back.
  await r.redis.start()
  t.equal(await r.redis.command('DBSIZE'), ':0', 'Redis came back empty')
  await waitUntil(() => r.a.runtime.revocations.ready && r.b.runtime.revocations.ready, 'both replicas to resync', 10_000)
  const key = r.a.runtime.redis!.key('revocations')
  await waitUntil(async () => (await r.redis.command('ZCARD', key)) === ':3', 'the replicas to write back the three revocations they knew', 10_000)

  await assertSignedOut(t, r.b, r, bobCookie, 'bob on B (revoked before the outage; Redis lost it, the mirrors did not)')
  await assertSignedOut(t, r.a, r, bobCookie, 'bob on A')
  await assertSignedOut(t, r.b, r, aliceCookie, "alice on B (A took the logout in during the outage, and wrote it back)")
  await assertSignedOut(t, r.a, r, carolCookie, "carol on A (B's sign-out during the outage, written back)")

  // The provider's retry of the logout that was answered 503: its jti was never recorded → accepted.
  const retry = await postLogout(r.b, duringOutage?.token ?? '')
  t.equal(retry.status, 200, "the provider's retry is accepted (at either replica)")
  t.equal((await postLogout(r.a, duringOutage?.token ?? '')).status, 400, 'and only once')

  // A new login works end to end again.
  const again = await login({ proxyUrl: r.a.url, user: alice })
  await assertServed(t, r.b, r.upstream, cookieHeader(jarSession(again.jar)), alice.id, 'a new session of alice, on B')
})
