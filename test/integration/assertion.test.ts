/**
 * The signed identity assertion end to end (issue #10 point 6): a real login against the in-process
 * provider, then what the echo upstream receives. The upstream's side of it is played by the test:
 * it fetches `/.well-known/portcullis/jwks.json` from Portcullis and verifies `X-Portcullis-Assertion`
 * with jose (issuer = server.publicUrl, audience = the upstream's origin). A client's own
 * `X-Portcullis-Assertion` never reaches the upstream, on a public route (no assertion added) either.
 * Every check runs in both lanes: two apps on one runtime, the usual one and one with the fast lane
 * off (every request through Fastify), as in test/integration/fast-lane.test.ts.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose'
import { startApp, startStack, type RunningPortcullis, type Stack, type StackOptions } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import type { EchoRecord } from '../helpers/upstream.ts'

const alice = DEMO_USERS[0]!
const JWKS_PATH = '/.well-known/portcullis/jwks.json'
const API = { accept: 'application/json' }

interface Lanes {
  stack: Stack
  clock: FakeClock
  lanes: Array<{ name: string; app: RunningPortcullis }>
}

async function lanes(t: Test, opts: StackOptions): Promise<Lanes> {
  const clock = fakeClock()
  const stack = await startStack(t, { ...opts, runtime: { clock } })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  return { stack, clock, lanes: [{ name: 'fast lane', app: stack.proxy }, { name: 'Fastify path', app: slow }] }
}

/** Every value the upstream received under a name that folds to `x-portcullis-assertion`. */
function assertionsIn(record: EchoRecord | undefined): string[] {
  if (record === undefined) return []
  const out: string[] = []
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    if ((record.rawHeaders[i] as string).toLowerCase().replaceAll('_', '-') === 'x-portcullis-assertion') out.push(record.rawHeaders[i + 1] as string)
  }
  return out
}

/** Send one request and return what the upstream saw of it (undefined when nothing reached it). */
async function through(stack: Stack, url: string, headers: Record<string, string> | Array<[string, string]>): Promise<{ status: number; record: EchoRecord | undefined }> {
  const before = stack.upstream.requests.length
  const res = await request(url, { headers })
  return { status: res.status, record: stack.upstream.requests.length > before ? stack.upstream.requests.at(-1) : undefined }
}

/** The upstream's check: the keys from Portcullis, issuer its public URL, audience the upstream's own origin. */
async function verifyAsUpstream(l: Lanes, app: RunningPortcullis, token: string): Promise<JWTPayload> {
  const res = await request(`${app.url}${JWKS_PATH}`, { headers: API })
  const jwks = createLocalJWKSet(JSON.parse(res.body) as JSONWebKeySet)
  const { payload } = await jwtVerify(token, jwks, {
    issuer: new URL(l.stack.config.server.publicUrl).origin,
    audience: new URL(l.stack.upstream.url).origin,
    algorithms: ['ES256'],
    currentDate: new Date(l.clock.now()),
  })
  return payload
}

const FORGED = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.'
/** A client's own assertion, in the spellings an app might fold into the same name. */
const SPOOF: Array<[string, string]> = [
  ['X-Portcullis-Assertion', FORGED],
  ['x-portcullis-assertion', FORGED],
  ['X_Portcullis_Assertion', FORGED],
]

t.test('assertions on: signed for the session and the bearer token, verified from the upstream\'s side, in both lanes', async (t) => {
  const l = await lanes(t, {
    overrides: ({ upstream }) => ({
      // The access token is passed once so the test can use it as a bearer token on /api.
      identity: { assertion: { enabled: true }, passAccessToken: true },
      server: { allowUnderscoreHeaders: true },
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/api' }, upstream, bearer: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const { jar } = await login({ proxyUrl: l.stack.proxy.url })
  const cookie = jar.header(`${l.stack.proxy.url}/`)
  const seen: string[] = []

  for (const { name, app } of l.lanes) {
    await t.test(name, async (t) => {
      const keys = await request(`${app.url}${JWKS_PATH}`, { headers: API })
      t.equal(keys.status, 200, 'the JWKS is served')
      t.match(keys.headers['content-type'], /^application\/jwk-set\+json/)
      t.equal(keys.headers['cache-control'], 'public, max-age=300')
      const set = JSON.parse(keys.body) as { keys: Array<Record<string, unknown>> }
      t.equal(set.keys.length, 1)
      t.match(set.keys[0], { kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: /^[A-Za-z0-9_-]{43}$/ })
      t.notOk('d' in (set.keys[0] as object), 'no private part')
      t.same(set, l.stack.proxy.runtime.assertions?.jwks, 'the runtime\'s keys')

      const first = await through(l.stack, `${app.url}/app/page`, [...SPOOF, ['accept', 'application/json'], ['cookie', cookie]])
      t.equal(first.status, 200)
      const got = assertionsIn(first.record)
      t.equal(got.length, 1, 'one assertion reaches the upstream, in one spelling')
      t.not(got[0], FORGED, 'not the client\'s')
      t.equal(first.record?.headers['x-portcullis-assertion'], got[0])
      const token = got[0] as string
      const payload = await verifyAsUpstream(l, app, token)
      t.match(payload, { iss: l.stack.config.server.publicUrl, aud: l.stack.upstream.url, sub: alice.id, email: alice.email })
      t.equal((payload.exp as number) - (payload.iat as number), 60, 'the default ttl')
      t.type(payload.jti, 'string')
      for (const claim of ['access_token', 'id_token', 'refresh_token', 'sid', 'nonce', 'at_hash']) t.notOk(claim in payload, `no ${claim}`)

      const again = await through(l.stack, `${app.url}/app/other`, { ...API, cookie })
      t.same(assertionsIn(again.record), [token], 'the same cookie: the same assertion, not signed again')
      seen.push(token)

      const pub = await through(l.stack, `${app.url}/public/page`, [...SPOOF, ['accept', 'application/json'], ['cookie', cookie]])
      t.equal(pub.status, 200)
      t.same(assertionsIn(pub.record), [], 'a public route: the client\'s copies gone, none added')
      const anon = await through(l.stack, `${app.url}/public/page`, SPOOF)
      t.same(assertionsIn(anon.record), [], 'a public route without a session: nothing either')

      const refused = await through(l.stack, `${app.url}/app/page`, [...SPOOF, ['accept', 'application/json']])
      t.equal(refused.status, 401, 'a forged assertion is no credential')
      t.equal(refused.record, undefined)

      const accessToken = first.record?.headers['x-auth-request-access-token'] as string
      t.match(accessToken, /^ey/, 'the session\'s access token (a JWT)')
      const api = await through(l.stack, `${app.url}/api/items`, [...SPOOF, ['accept', 'application/json'], ['authorization', `Bearer ${accessToken}`]])
      t.equal(api.status, 200, 'the bearer route takes the token')
      const apiToken = assertionsIn(api.record)
      t.equal(apiToken.length, 1, 'a bearer request carries one assertion')
      t.not(apiToken[0], FORGED)
      t.match(await verifyAsUpstream(l, app, apiToken[0] as string), { sub: alice.id, aud: l.stack.upstream.url })
      const api2 = await through(l.stack, `${app.url}/api/items`, { ...API, authorization: `Bearer ${accessToken}` })
      t.same(assertionsIn(api2.record), apiToken, 'the same token: the same assertion')

      const ws = await handshake(`${app.url.replace('http:', 'ws:')}/app/socket`, { cookie, 'x-portcullis-assertion': FORGED })
      t.equal(ws, 'open', 'a WebSocket handshake is let through')
      const upgrade = l.stack.upstream.requests.at(-1)
      t.equal(upgrade?.url, '/app/socket')
      t.same(assertionsIn(upgrade), [token], 'the handshake carries the session\'s assertion too')
    })
  }
  t.equal(seen[0], seen[1], 'both lanes forward the one assertion the runtime keeps for the session')

  await t.test('signed again when a quarter of the ttl is left', async (t) => {
    const token = seen[0] as string
    l.clock.advance(44_000)
    const kept = await through(l.stack, `${l.stack.proxy.url}/app/page`, { ...API, cookie })
    t.same(assertionsIn(kept.record), [token], '16 s left: kept')
    l.clock.advance(1_500)
    for (const { name, app } of l.lanes) {
      const next = await through(l.stack, `${app.url}/app/page`, { ...API, cookie })
      const fresh = assertionsIn(next.record)
      t.equal(fresh.length, 1)
      t.not(fresh[0], token, `${name}: a new assertion`)
      const payload = await verifyAsUpstream(l, app, fresh[0] as string)
      t.equal(payload.iat, Math.floor(l.clock.now() / 1000), `${name}: issued at the runtime clock's time`)
    }
  })
})

t.test('assertions off: no JWKS advertised, nothing added, a client\'s copy still stripped', async (t) => {
  const l = await lanes(t, { overrides: { identity: { assertion: { enabled: false } } } })
  const { jar } = await login({ proxyUrl: l.stack.proxy.url })
  const cookie = jar.header(`${l.stack.proxy.url}/`)
  for (const { name, app } of l.lanes) {
    const keys = await request(`${app.url}${JWKS_PATH}`, { headers: API })
    t.equal(keys.status, 404, `${name}: the JWKS is a 404`)
    t.match(JSON.parse(keys.body), { error: 'NOT_FOUND', requestId: /./ }, `${name}: the usual error JSON`)
    t.equal(l.stack.upstream.requests.filter((r) => r.url.startsWith('/.well-known/portcullis')).length, 0, `${name}: not forwarded to the app`)
    const fwd = await through(l.stack, `${app.url}/app/page`, [...SPOOF, ['accept', 'application/json'], ['cookie', cookie]])
    t.equal(fwd.status, 200)
    t.same(assertionsIn(fwd.record), [], `${name}: no assertion reaches the upstream`)
  }
})

/** Open a WebSocket and close it once open; resolves 'open', or the error. */
function handshake(url: string, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 5_000 })
    ws.once('open', () => {
      ws.close()
      resolve('open')
    })
    ws.once('error', (err) => resolve(String(err)))
    ws.once('unexpected-response', (_req, res) => {
      resolve(`status ${res.statusCode}`)
      ws.terminate()
    })
  })
}
