/**
 * `verifyLogoutToken` (src/oidc/logout.ts) against every rule of OpenID Connect Back-Channel Logout 1.0
 * §2.6 its docblock lists: signature via the JWKS with the algorithm allow-list, `iss`, `aud`, `iat`
 * within bounds, `exp` when present, `typ` `logout+jwt` when present, `jti` present and not seen
 * before, `events` holding the back-channel member as an object, `sid` or `sub`, and no `nonce`.
 * Plus `createJtiReplayCache` (the replay memory the runtime passes in).
 *
 * No sockets: the OidcClient is a plain object with a jose local JWKS (see `fakeClient`).
 */
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import {
  createLocalJWKSet,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  SignJWT,
  UnsecuredJWT,
  type CryptoKey,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
} from 'jose'
import { BACKCHANNEL_LOGOUT_EVENT, createJtiReplayCache, LOGOUT_TOKEN_MAX_AGE_SEC, verifyLogoutToken } from '../../../src/oidc/logout.ts'
import type { OidcClient } from '../../../src/oidc/client.ts'
import type { Jwks } from '../../../src/oidc/jwks.ts'
import { PortcullisError } from '../../../src/errors.ts'
import { fakeClock } from '../../helpers/clock.ts'

const ISSUER = 'https://op.example.com'
const CLIENT_ID = 'portcullis'
const TOLERANCE = 30
const NOW_MS = 1_700_000_000_000 + 123 // not on a second boundary
const NOW = Math.floor(NOW_MS / 1000)

interface Keys {
  rsa: { privateKey: CryptoKey; publicKey: CryptoKey; kid: string }
  ec: { privateKey: CryptoKey; kid: string }
  stranger: { privateKey: CryptoKey }
  publicPem: string
  jwks: { keys: JWK[] }
}

async function makeKeys(): Promise<Keys> {
  const rsa = await generateKeyPair('RS256', { extractable: true })
  const ec = await generateKeyPair('ES256', { extractable: true })
  const stranger = await generateKeyPair('RS256')
  const keys: JWK[] = [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
  ]
  return {
    rsa: { ...rsa, kid: 'rsa-1' },
    ec: { privateKey: ec.privateKey, kid: 'ec-1' },
    stranger,
    publicPem: await exportSPKI(rsa.publicKey),
    jwks: { keys },
  }
}

const keys = await makeKeys()

/**
 * The parts of an OidcClient that `verifyLogoutToken` reads (jwks, issuer, clientId,
 * idTokenAlgorithms, clockToleranceSec), with a jose local JWKS instead of the provider's endpoint.
 * Cast: the other members (openid-client Configuration, access-token verifier, summary) are not used.
 */
function fakeClient(over: { algorithms?: readonly string[]; tolerance?: number } = {}): OidcClient {
  const jwks: Jwks = {
    getKey: createLocalJWKSet(keys.jwks),
    reload: async () => {},
    keys: () => keys.jwks.keys.map((k) => ({ kid: k.kid, alg: k.alg, kty: k.kty ?? 'unknown' })),
  }
  return {
    jwks,
    issuer: ISSUER,
    clientId: CLIENT_ID,
    idTokenAlgorithms: over.algorithms ?? ['RS256'],
    clockToleranceSec: over.tolerance ?? TOLERANCE,
  } as unknown as OidcClient
}

const client = fakeClient()

/** Valid claims; an override of `undefined` removes the claim. */
function claims(over: Record<string, unknown> = {}): JWTPayload {
  const out: Record<string, unknown> = {
    iss: ISSUER,
    aud: CLIENT_ID,
    iat: NOW,
    jti: randomUUID(),
    events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
    sid: 'sid-1',
    sub: 'alice',
  }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete out[k]
    else out[k] = v
  }
  return out as JWTPayload
}

type Signer = 'rsa' | 'ec' | 'stranger' | 'none' | 'hs256-public-pem' | 'hs256-secret' | 'rsa-no-kid'

async function sign(c: JWTPayload, opts: { key?: Signer; typ?: string | null; kid?: string } = {}): Promise<string> {
  const key = opts.key ?? 'rsa'
  const typ = opts.typ === undefined ? 'logout+jwt' : opts.typ
  const withTyp = (h: JWTHeaderParameters): JWTHeaderParameters => (typ === null ? h : { ...h, typ })
  switch (key) {
    case 'none':
      return new UnsecuredJWT(c).encode()
    case 'rsa':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'RS256', kid: opts.kid ?? keys.rsa.kid })).sign(keys.rsa.privateKey)
    case 'rsa-no-kid':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'RS256' })).sign(keys.rsa.privateKey)
    case 'ec':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'ES256', kid: keys.ec.kid })).sign(keys.ec.privateKey)
    case 'stranger':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'RS256', kid: opts.kid ?? 'stranger-1' })).sign(keys.stranger.privateKey)
    case 'hs256-public-pem':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'HS256', kid: keys.rsa.kid })).sign(new TextEncoder().encode(keys.publicPem))
    case 'hs256-secret':
      return new SignJWT(c).setProtectedHeader(withTyp({ alg: 'HS256' })).sign(new TextEncoder().encode('a-shared-secret-of-32-bytes-len!'))
  }
}

/** A replay memory that records every call and never reports a replay. */
function recordingSeen(): { seen: (jti: string, until: number) => Promise<boolean>; calls: Array<[string, number]> } {
  const calls: Array<[string, number]> = []
  return { calls, seen: async (jti, until) => (calls.push([jti, until]), false) }
}

async function accepts(t: Test, token: string, what: string, opts: { client?: OidcClient; now?: number } = {}) {
  const { seen, calls } = recordingSeen()
  try {
    const { jti, ...out } = await verifyLogoutToken(opts.client ?? client, token, opts.now ?? NOW_MS, seen)
    t.pass(`${what}: accepted`)
    t.equal(calls.length, 1, `${what}: its jti was recorded`)
    t.equal(jti, calls[0]?.[0], `${what}: and returned`)
    return out
  } catch (err) {
    t.fail(`${what}: refused: ${err instanceof PortcullisError ? err.publicMessage : String(err)}`)
    return undefined
  }
}

async function refuses(t: Test, token: string, what: string, reason: RegExp, opts: { client?: OidcClient; now?: number } = {}): Promise<void> {
  const { seen, calls } = recordingSeen()
  try {
    await verifyLogoutToken(opts.client ?? client, token, opts.now ?? NOW_MS, seen)
    t.fail(`${what}: accepted`)
  } catch (err) {
    t.ok(err instanceof PortcullisError, `${what}: a PortcullisError`)
    const e = err as PortcullisError
    t.equal(e.code, 'TOKEN_INVALID', `${what}: TOKEN_INVALID`)
    const cause = e.cause instanceof Error ? e.cause.message : ''
    t.match(`${e.publicMessage} / ${cause}`, reason, `${what}: refused because of it (${e.publicMessage}${cause ? ` / ${cause}` : ''})`)
    t.notMatch(e.publicMessage, /eyJ/, `${what}: the public message holds no token`)
    t.equal(calls.length, 0, `${what}: a refused token never reaches the replay memory`)
  }
}

// ---------------------------------------------------------------------------------------------------

t.test('a valid token: sid and sub returned, issuedAt in ms, jti recorded until the token expires from the window', async (t) => {
  const c = claims()
  const { seen, calls } = recordingSeen()
  const out = await verifyLogoutToken(client, await sign(c), NOW_MS, seen)
  t.strictSame(out, { sid: 'sid-1', sub: 'alice', issuedAt: NOW * 1000, jti: c.jti })
  t.strictSame(calls, [[c.jti, (NOW + LOGOUT_TOKEN_MAX_AGE_SEC + TOLERANCE) * 1000]], 'seen(jti, iat + max age + skew)')
})

t.test('sid or sub: either is enough', async (t) => {
  t.strictSame(await accepts(t, await sign(claims({ sid: undefined })), 'sub only'), { sid: undefined, sub: 'alice', issuedAt: NOW * 1000 })
  t.strictSame(await accepts(t, await sign(claims({ sub: undefined })), 'sid only'), { sid: 'sid-1', sub: undefined, issuedAt: NOW * 1000 })
  t.strictSame(await accepts(t, await sign(claims({ sid: '' })), 'empty sid, a sub'), { sid: undefined, sub: 'alice', issuedAt: NOW * 1000 })
  await refuses(t, await sign(claims({ sid: undefined, sub: undefined })), 'neither', /neither sid nor sub/)
  await refuses(t, await sign(claims({ sid: '', sub: '' })), 'both empty', /neither sid nor sub/)
  await refuses(t, await sign(claims({ sid: 42, sub: undefined })), 'a non-string sid and no sub', /neither sid nor sub/)
  await refuses(t, await sign(claims({ sid: undefined, sub: ['alice'] })), 'a non-string sub and no sid', /neither sid nor sub/)
})

t.test('signature: via the JWKS, with the algorithm allow-list', async (t) => {
  await accepts(t, await sign(claims(), { key: 'rsa-no-kid' }), 'RS256 without kid (the one RSA key)')
  await refuses(t, await sign(claims(), { key: 'none' }), 'alg none (unsigned)', /"alg" .*not allowed/)
  await refuses(t, `${await sign(claims(), { key: 'none' })}c2lnbmF0dXJl`, 'alg none with a signature part', /"alg" .*not allowed|verification/)
  await refuses(t, await sign(claims(), { key: 'hs256-public-pem' }), 'HS256 keyed with the public key (algorithm confusion)', /"alg" .*not allowed/)
  await refuses(t, await sign(claims(), { key: 'hs256-secret' }), 'HS256 with a shared secret', /"alg" .*not allowed/)
  await refuses(t, await sign(claims(), { key: 'stranger' }), 'an unknown key (unknown kid)', /no applicable key/)
  await refuses(t, await sign(claims(), { key: 'stranger', kid: keys.rsa.kid }), 'an unknown key posing as the known kid', /signature verification failed/)
  await refuses(t, await sign(claims(), { key: 'ec' }), 'ES256 from the JWKS, but only RS256 is allowed', /"alg" .*not allowed/)

  const good = await sign(claims())
  const [h, p, s] = good.split('.') as [string, string, string]
  const flipped = Buffer.from(s, 'base64url')
  flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 0x01
  await refuses(t, `${h}.${p}.${flipped.toString('base64url')}`, 'a flipped signature bit', /signature verification failed/)
  const otherPayload = Buffer.from(JSON.stringify({ ...claims(), sub: 'mallory' })).toString('base64url')
  await refuses(t, `${h}.${otherPayload}.${s}`, 'a payload swapped under a valid signature', /signature verification failed/)
  await refuses(t, `${h}.${p}.`, 'no signature', /verification|signature/)

  const es = fakeClient({ algorithms: ['ES256'] })
  await accepts(t, await sign(claims(), { key: 'ec' }), 'ES256 when ES256 is the configured algorithm', { client: es })
  await refuses(t, good, 'RS256 when only ES256 is configured', /"alg" .*not allowed/, { client: es })
})

t.test('not a JWT', async (t) => {
  await refuses(t, 'not-a-jwt', 'a word', /not a JWT/)
  await refuses(t, '', 'empty', /not a JWT/)
  await refuses(t, 'a.b', 'two parts', /not a JWT/)
  await refuses(t, '!!!.@@@.###', 'not base64url', /not a JWT/)
  const h = Buffer.from(JSON.stringify({ alg: 'RSA-OAEP', enc: 'A256GCM' })).toString('base64url')
  await refuses(t, `${h}.a.b.c.d`, 'a JWE (five parts)', /not a JWT|verification/)
})

t.test('iss must be the provider', async (t) => {
  await refuses(t, await sign(claims({ iss: `${ISSUER}/other` })), 'another issuer', /unexpected "iss"/)
  await refuses(t, await sign(claims({ iss: `${ISSUER}/` })), 'a trailing slash', /unexpected "iss"/)
  await refuses(t, await sign(claims({ iss: undefined })), 'no iss', /missing required "iss"/)
})

t.test('aud must name this client', async (t) => {
  await accepts(t, await sign(claims({ aud: [CLIENT_ID] })), 'aud as a one-element array')
  await accepts(t, await sign(claims({ aud: ['another', CLIENT_ID] })), 'aud as an array holding the client id')
  await refuses(t, await sign(claims({ aud: 'another' })), 'another client', /unexpected "aud"/)
  await refuses(t, await sign(claims({ aud: ['another', 'yet-another'] })), 'an array without the client id', /unexpected "aud"/)
  await refuses(t, await sign(claims({ aud: undefined })), 'no aud', /missing required "aud"/)
})

t.test('iat: required, not in the future beyond the skew, not older than the window', async (t) => {
  const maxAge = LOGOUT_TOKEN_MAX_AGE_SEC
  await accepts(t, await sign(claims({ iat: NOW + TOLERANCE })), 'iat ahead by exactly the skew')
  await refuses(t, await sign(claims({ iat: NOW + TOLERANCE + 1 })), 'iat ahead by the skew + 1 s', /"iat" .*(should be in the past|future)/)
  await refuses(t, await sign(claims({ iat: NOW + 86_400 })), 'iat a day ahead', /"iat" .*(should be in the past|future)/)
  await accepts(t, await sign(claims({ iat: NOW - maxAge - TOLERANCE })), 'iat at the edge of the window (max age + skew)')
  await refuses(t, await sign(claims({ iat: NOW - maxAge - TOLERANCE - 1 })), 'iat 1 s beyond the window', /"iat" .*too far in the past/)
  await refuses(t, await sign(claims({ iat: NOW - 86_400 })), 'iat a day old', /"iat" .*too far in the past/)
  await refuses(t, await sign(claims({ iat: undefined })), 'no iat', /missing required "iat"/)
  await refuses(t, await sign(claims({ iat: String(NOW) })), 'iat as a string', /"iat" claim must be a number/)
  const out = await accepts(t, await sign(claims({ iat: NOW - 5 })), 'iat 5 s old')
  t.equal(out?.issuedAt, (NOW - 5) * 1000, 'issuedAt is iat in ms')
  // The skew comes from the client (provider.clockSkew).
  const strict = fakeClient({ tolerance: 0 })
  await refuses(t, await sign(claims({ iat: NOW + 1 })), 'iat 1 s ahead with no skew', /"iat"/, { client: strict })
  await accepts(t, await sign(claims({ iat: NOW - maxAge })), 'iat exactly max age old with no skew', { client: strict })
  await refuses(t, await sign(claims({ iat: NOW - maxAge - 1 })), 'iat max age + 1 s old with no skew', /too far in the past/, { client: strict })
})

t.test('exp and nbf, when present, are honoured', async (t) => {
  await accepts(t, await sign(claims({ exp: NOW + 120 })), 'exp in the future')
  await accepts(t, await sign(claims({ exp: NOW - TOLERANCE + 1 })), 'exp just passed, within the skew')
  await refuses(t, await sign(claims({ exp: NOW - TOLERANCE })), 'exp passed by the skew', /"exp" claim timestamp check failed/)
  await refuses(t, await sign(claims({ exp: NOW - 3_600 })), 'exp an hour ago', /"exp" claim timestamp check failed/)
  await refuses(t, await sign(claims({ exp: 'later' })), 'exp not a number', /"exp" claim must be a number/)
  await refuses(t, await sign(claims({ nbf: NOW + 3_600 })), 'nbf an hour ahead', /"nbf" claim timestamp check failed/)
})

t.test('typ, when present, is logout+jwt', async (t) => {
  await accepts(t, await sign(claims(), { typ: null }), 'no typ')
  await accepts(t, await sign(claims(), { typ: 'logout+jwt' }), 'logout+jwt')
  await accepts(t, await sign(claims(), { typ: 'application/logout+jwt' }), 'application/logout+jwt (RFC 8725 §3.11 long form)')
  await accepts(t, await sign(claims(), { typ: 'Logout+JWT' }), 'media types are case-insensitive')
  for (const typ of ['JWT', 'jwt', 'at+jwt', 'application/jwt', 'logout+jwt+x', 'xlogout+jwt', 'application/logout+jwt; x=1', '', 'secevent+jwt']) {
    await refuses(t, await sign(claims(), { typ }), `typ ${JSON.stringify(typ)}`, /wrong typ/)
  }
})

t.test('events holds the back-channel logout member, as a JSON object', async (t) => {
  await accepts(t, await sign(claims({ events: { [BACKCHANNEL_LOGOUT_EVENT]: {} } })), 'the member, empty')
  await accepts(t, await sign(claims({ events: { [BACKCHANNEL_LOGOUT_EVENT]: { reason: 'x' } } })), 'the member with content')
  await accepts(t, await sign(claims({ events: { [BACKCHANNEL_LOGOUT_EVENT]: {}, 'https://example.com/other': {} } })), 'beside other events')
  await refuses(t, await sign(claims({ events: undefined })), 'no events', /missing required "events"/)
  for (const [what, events] of [
    ['a string', BACKCHANNEL_LOGOUT_EVENT],
    ['an array', [BACKCHANNEL_LOGOUT_EVENT]],
    ['null', null],
    ['a number', 1],
  ] as const) {
    await refuses(t, await sign(claims({ events })), `events ${what}`, /no events object|missing required "events"/)
  }
  await refuses(t, await sign(claims({ events: {} })), 'events empty', /lack the back-channel logout event/)
  await refuses(t, await sign(claims({ events: { 'http://schemas.openid.net/event/other': {} } })), 'another event only', /lack the back-channel logout event/)
  await refuses(t, await sign(claims({ events: { [`${BACKCHANNEL_LOGOUT_EVENT}/`]: {} } })), 'a look-alike member name', /lack the back-channel logout event/)
  for (const [what, member] of [
    ['true', true],
    ['a string', 'logout'],
    ['an array', []],
    ['null', null],
    ['a number', 0],
  ] as const) {
    await refuses(t, await sign(claims({ events: { [BACKCHANNEL_LOGOUT_EVENT]: member } })), `the member ${what}`, /lack the back-channel logout event/)
  }
})

t.test('no nonce', async (t) => {
  for (const nonce of ['n-0S6_WzA2Mj', '', null, 0]) {
    await refuses(t, await sign(claims({ nonce })), `nonce ${JSON.stringify(nonce)}`, /nonce/)
  }
})

t.test('jti: required, a non-empty string', async (t) => {
  await refuses(t, await sign(claims({ jti: undefined })), 'no jti', /missing required "jti"/)
  await refuses(t, await sign(claims({ jti: '' })), 'empty jti', /no jti/)
  await refuses(t, await sign(claims({ jti: 42 })), 'a numeric jti', /no jti/)
})

t.test('jti not seen before: a replay is refused; a refused token does not burn its jti', async (t) => {
  const clock = fakeClock(NOW_MS)
  const seen = createJtiReplayCache(clock)
  const c = claims()
  const token = await sign(c)
  t.strictSame(await verifyLogoutToken(client, token, NOW_MS, seen.seen), { sid: 'sid-1', sub: 'alice', issuedAt: NOW * 1000, jti: c.jti })
  await t.rejects(verifyLogoutToken(client, token, NOW_MS + 1_000, seen.seen), { code: 'TOKEN_INVALID', publicMessage: /already used/ }, 'the same token again')
  await t.rejects(
    verifyLogoutToken(client, await sign(claims({ jti: c.jti, sid: 'sid-2' })), NOW_MS, seen.seen),
    { code: 'TOKEN_INVALID', publicMessage: /already used/ },
    'another token with the same jti',
  )
  t.ok(await verifyLogoutToken(client, await sign(claims()), NOW_MS, seen.seen), 'another jti is fine')

  const jti = randomUUID()
  await t.rejects(verifyLogoutToken(client, await sign(claims({ jti, nonce: 'x' })), NOW_MS, seen.seen), { code: 'TOKEN_INVALID', publicMessage: /nonce/ })
  await t.rejects(verifyLogoutToken(client, await sign(claims({ jti }), { key: 'stranger' }), NOW_MS, seen.seen), { code: 'TOKEN_INVALID' })
  t.ok(await verifyLogoutToken(client, await sign(claims({ jti })), NOW_MS, seen.seen), 'a forged or bad token with a jti does not block the real one')
})

t.test('createJtiReplayCache: records, answers, and forgets a jti once its token is out of the window', async (t) => {
  // lru-cache measures TTLs with performance.now(): replace it for this test (restored at teardown).
  let perfNow = 5_000
  const own = Object.getOwnPropertyDescriptor(performance, 'now')
  Object.defineProperty(performance, 'now', { value: () => perfNow, configurable: true, writable: true })
  t.teardown(() => {
    if (own === undefined) delete (performance as { now?: unknown }).now
    else Object.defineProperty(performance, 'now', own)
  })
  const clock = fakeClock(NOW_MS)
  const seen = createJtiReplayCache(clock)
  t.equal(await seen.seen('a', NOW_MS + 10_000), false, 'first sight')
  t.equal(await seen.seen('a', NOW_MS + 10_000), true, 'second sight')
  t.equal(await seen.seen('b', NOW_MS + 10_000), false, 'another jti')
  perfNow += 10_000
  t.equal(await seen.seen('a', NOW_MS + 10_000), true, 'still remembered until its time')
  perfNow += 1
  // lru-cache caches "now" for 1 ms (a timer clears it): poll with a bound.
  const deadline = Date.now() + 2_000
  let forgotten = false
  while (!forgotten && Date.now() < deadline) {
    forgotten = (await seen.seen('a', clock.now() + 60_000)) === false
    if (!forgotten) await new Promise((resolve) => setTimeout(resolve, 2))
  }
  t.ok(forgotten, 'forgotten once the token could no longer be accepted')
  t.equal(await seen.seen('a', clock.now() + 60_000), true, 'and recorded again')
  t.equal(await seen.seen('c', NOW_MS - 1), false, 'an until in the past still records')
  t.equal(await seen.seen('c', NOW_MS - 1), true, 'for at least a moment')
})

t.test('createJtiReplayCache is bounded', async (t) => {
  const clock = fakeClock(NOW_MS)
  const seen = createJtiReplayCache(clock, 2)
  await seen.seen('a', NOW_MS + 60_000)
  await seen.seen('b', NOW_MS + 60_000)
  await seen.seen('c', NOW_MS + 60_000)
  t.equal(await seen.seen('c', NOW_MS + 60_000), true)
  t.equal(await seen.seen('b', NOW_MS + 60_000), true)
  t.equal(await seen.seen('a', NOW_MS + 60_000), false, 'the oldest was evicted')
})

t.test('createJtiReplayCache.forget takes a jti back: the same token is accepted again', async (t) => {
  const clock = fakeClock(NOW_MS)
  const cache = createJtiReplayCache(clock)
  const c = claims()
  const token = await sign(c)
  t.equal((await verifyLogoutToken(client, token, NOW_MS, cache.seen)).jti, c.jti)
  await t.rejects(verifyLogoutToken(client, token, NOW_MS, cache.seen), { code: 'TOKEN_INVALID', publicMessage: /already used/ })
  await cache.forget(c.jti as string)
  t.equal((await verifyLogoutToken(client, token, NOW_MS, cache.seen)).jti, c.jti, 'accepted after forget')
})

t.test('a replay cache that cannot answer: its error is passed on, never taken for "not seen"', async (t) => {
  const down = new PortcullisError('STORE_UNAVAILABLE', 'The logout could not be checked for replay.')
  await t.rejects(
    verifyLogoutToken(client, await sign(claims()), NOW_MS, async () => {
      throw down
    }),
    down,
  )
})

t.test('every refusal is TOKEN_INVALID with a short public reason and the cause kept private', async (t) => {
  try {
    await verifyLogoutToken(client, await sign(claims({ iss: 'https://evil.example' })), NOW_MS, async () => false)
    t.fail('accepted')
  } catch (err) {
    t.ok(err instanceof PortcullisError)
    const e = err as PortcullisError
    t.equal(e.publicMessage, 'logout_token failed verification')
    t.ok(e.cause instanceof Error, 'the verifier error is the cause (logged, not shown)')
    t.notMatch(e.publicMessage, /evil/, 'no claim value in the public message')
  }
})
