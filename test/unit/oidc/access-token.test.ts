/**
 * Verification of the JWT access tokens held in sessions (issue #3 point 1, `src/oidc/access-token.ts`)
 * against a local JWKS endpoint the test starts: algorithm allow-list (never `none`, never HMAC),
 * signature, `iss`, `aud`, `exp`/`nbf`/`iat` with tolerance; a verified token is verified once (the
 * LRU, bounded); opaque tokens are left to the session's expiry; keys that cannot be fetched are
 * `unavailable`, not the token's fault. Time is a fake clock.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type JWK, type JWTPayload } from 'jose'
import { AccessTokenVerifier, type AccessTokenOptions } from '../../../src/oidc/access-token.ts'
import { ASYMMETRIC_ALGS, createJwks, type Jwks } from '../../../src/oidc/jwks.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'

const ISSUER = 'https://idp.example.com'
const CLIENT_ID = 'portcullis-unit'
const TOLERANCE_SEC = 30

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey']

interface Fixture {
  clock: FakeClock
  jwks: Jwks
  /** JWKS endpoint hits. */
  hits(): number
  /** getKey calls made by the verifier. */
  getKeyCalls(): number
  privateKey: PrivateKey
  publicPem: string
  kid: string
  verifier(opts?: Partial<AccessTokenOptions>): AccessTokenVerifier
  sign(claims?: JWTPayload, header?: { alg?: string; kid?: string; typ?: string }, key?: PrivateKey | Uint8Array): Promise<string>
}

async function startJwks(t: Test, keys: JWK[], status = 200): Promise<{ url: string; hits(): number }> {
  let hits = 0
  const server = http.createServer((_req, res) => {
    hits++
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`, hits: () => hits }
}

async function fixture(t: Test): Promise<Fixture> {
  // On a whole second, so `exp` (seconds) lines up with the clock (ms).
  const clock = fakeClock(Math.floor(Date.now() / 1000) * 1000)
  const kid = 'at-key-1'
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }
  const server = await startJwks(t, [publicJwk])
  const inner = createJwks(server.url, { timeoutMs: 2_000, clock })
  let getKeyCalls = 0
  const jwks: Jwks = {
    ...inner,
    getKey: (header, token) => {
      getKeyCalls++
      return inner.getKey(header, token)
    },
  }
  await jwks.reload()
  const base = {
    issuer: ISSUER,
    audience: CLIENT_ID,
    algorithms: ASYMMETRIC_ALGS,
    clockToleranceSec: TOLERANCE_SEC,
    mode: 'auto' as const,
    clock,
  }
  return {
    clock,
    jwks,
    hits: server.hits,
    getKeyCalls: () => getKeyCalls,
    privateKey,
    publicPem: await exportSPKI(publicKey),
    kid,
    verifier: (opts = {}) => new AccessTokenVerifier(jwks, { ...base, ...opts }),
    async sign(claims = {}, header = {}, key = privateKey) {
      const now = Math.floor(clock.now() / 1000)
      return new SignJWT({ iss: ISSUER, aud: CLIENT_ID, sub: 'alice', iat: now, exp: now + 300, ...claims })
        .setProtectedHeader({ alg: header.alg ?? 'RS256', kid: header.kid ?? kid, typ: header.typ ?? 'at+jwt' })
        .sign(key)
    },
  }
}

t.test('a valid token is verified once: the second check does not touch the JWKS', async (t) => {
  const f = await fixture(t)
  const v = f.verifier()
  const token = await f.sign()
  const exp = Math.floor(f.clock.now() / 1000) + 300
  t.same(await v.check(token), { status: 'valid', expiresAt: exp * 1000 })
  t.equal(f.getKeyCalls(), 1, 'one key lookup for the first check')
  t.equal(f.hits(), 1, 'the key set was fetched once (at reload)')
  f.clock.advance(200_000)
  for (let i = 0; i < 5; i++) t.same(await v.check(token), { status: 'valid', expiresAt: exp * 1000 })
  t.equal(f.getKeyCalls(), 1, 'later checks of the same token use the cache')

  // The cached entry honours the expiry (with the tolerance) on the injected clock, still without the JWKS.
  f.clock.advance(100_000 + TOLERANCE_SEC * 1000 - 1)
  t.equal((await v.check(token)).status, 'valid', 'within the tolerance after exp')
  f.clock.advance(1)
  t.same(await v.check(token), { status: 'expired' }, 'expired once past exp + tolerance')
  t.equal(f.getKeyCalls(), 1, 'decided from the cache')
})

t.test('the cache is bounded (max): an evicted token is verified again', async (t) => {
  const f = await fixture(t)
  const v = f.verifier({ max: 2 })
  const [a, b, c] = await Promise.all([f.sign({ jti: 'a' }), f.sign({ jti: 'b' }), f.sign({ jti: 'c' })])
  for (const token of [a, b, c]) t.equal((await v.check(token)).status, 'valid')
  t.equal(f.getKeyCalls(), 3)
  t.equal((await v.check(c)).status, 'valid')
  t.equal(f.getKeyCalls(), 3, 'c is still cached')
  t.equal((await v.check(a)).status, 'valid')
  t.equal(f.getKeyCalls(), 4, 'a was evicted by c and is verified again')
})

t.test('expired → expired (beyond the tolerance); within the tolerance → valid', async (t) => {
  const f = await fixture(t)
  const v = f.verifier()
  const now = Math.floor(f.clock.now() / 1000)
  t.same(await v.check(await f.sign({ iat: now - 900, exp: now - TOLERANCE_SEC - 1 })), { status: 'expired' })
  t.equal((await v.check(await f.sign({ iat: now - 900, exp: now - TOLERANCE_SEC + 5 }))).status, 'valid', 'inside clockSkew')
})

t.test('wrong iss, wrong aud, nbf/iat in the future, missing exp → invalid', async (t) => {
  const f = await fixture(t)
  const v = f.verifier()
  const now = Math.floor(f.clock.now() / 1000)
  const cases: Array<[string, JWTPayload]> = [
    ['wrong iss', { iss: 'https://evil.example.com' }],
    ['wrong aud', { aud: 'another-client' }],
    ['aud list without the client id', { aud: ['a', 'b'] }],
    ['nbf in the future', { nbf: now + 600 }],
    ['iat in the future', { iat: now + 600, exp: now + 900 }],
  ]
  for (const [label, claims] of cases) {
    const r = await v.check(await f.sign(claims))
    t.equal(r.status, 'invalid', label)
    if (r.status === 'invalid') t.match(r.reason, /^ERR_/, `${label}: a reason code`)
  }
  const noExp = await new SignJWT({ iss: ISSUER, aud: CLIENT_ID, sub: 'alice', iat: now })
    .setProtectedHeader({ alg: 'RS256', kid: f.kid })
    .sign(f.privateKey)
  t.equal((await v.check(noExp)).status, 'invalid', 'missing exp')
  t.equal((await v.check(await f.sign({ aud: ['another-client', CLIENT_ID] }))).status, 'valid', 'an aud list containing the client id is fine')
  t.equal((await f.verifier({ audience: 'urn:api' }).check(await f.sign({ aud: 'urn:api' }))).status, 'valid', 'provider.audience replaces the client id')
  t.equal((await f.verifier({ audience: 'urn:api' }).check(await f.sign())).status, 'invalid', '…and the client id alone is then refused')
})

t.test('alg none, HS256 keyed with the public key, a bad signature, an unknown key → invalid', async (t) => {
  const f = await fixture(t)
  const v = f.verifier()
  const now = Math.floor(f.clock.now() / 1000)
  const claims = { iss: ISSUER, aud: CLIENT_ID, sub: 'alice', iat: now, exp: now + 300 }

  const none = new UnsecuredJWT(claims).encode()
  const rNone = await v.check(none)
  t.equal(rNone.status, 'invalid', 'alg none')
  const noneWithKid = `${Buffer.from(JSON.stringify({ alg: 'none', kid: f.kid })).toString('base64url')}.${none.split('.')[1]}.`
  t.equal((await v.check(noneWithKid)).status, 'invalid', 'alg none with our kid')

  const hs = await f.sign({}, { alg: 'HS256' }, new TextEncoder().encode(f.publicPem))
  const rHs = await v.check(hs)
  t.equal(rHs.status, 'invalid', 'HS256 with the public key as secret (algorithm confusion)')
  if (rHs.status === 'invalid') t.equal(rHs.reason, 'ERR_JOSE_ALG_NOT_ALLOWED')

  const good = await f.sign()
  const [h, p, s] = good.split('.') as [string, string, string]
  const sig = Buffer.from(s, 'base64url')
  sig[10] = (sig[10] ?? 0) ^ 0xff
  const rSig = await v.check(`${h}.${p}.${sig.toString('base64url')}`)
  t.equal(rSig.status, 'invalid', 'a bad signature')
  if (rSig.status === 'invalid') t.equal(rSig.reason, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED')

  const tamperedPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')
  t.equal((await v.check(`${h}.${tamperedPayload}.${s}`)).status, 'invalid', 'a changed payload under the old signature')

  const stranger = await generateKeyPair('RS256')
  const rUnknown = await v.check(await f.sign({}, { kid: 'not-published' }, stranger.privateKey))
  t.equal(rUnknown.status, 'invalid', 'signed by a key the JWKS does not publish')
  t.equal(f.getKeyCalls() > 0, true)
  t.equal((await v.check(good)).status, 'valid', 'the untampered token is fine (the failures were the tampering)')
})

t.test('opaque tokens: opaque in auto mode (nothing fetched), invalid in jwt mode; opaque mode never verifies', async (t) => {
  const f = await fixture(t)
  for (const token of ['opaque-token', 'at_0123456789abcdef', 'a.b', 'not.a.jwt.at.all', '']) {
    t.same(await f.verifier().check(token), { status: 'opaque' }, `auto: ${JSON.stringify(token)}`)
  }
  t.equal(f.getKeyCalls(), 0, 'no key lookup for opaque tokens')
  const jwtMode = await f.verifier({ mode: 'jwt' }).check('opaque-token')
  t.equal(jwtMode.status, 'invalid', 'accessTokenType jwt: an opaque token is refused')
  const anyJwt = await f.sign({ iss: 'https://evil.example.com' })
  t.same(await f.verifier({ mode: 'opaque' }).check(anyJwt), { status: 'opaque' }, 'accessTokenType opaque: not looked at')
})

t.test('JWKS unavailable on first use → unavailable (not the token\'s fault), valid once it answers', async (t) => {
  const clock = fakeClock()
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k', alg: 'RS256' }
  const now = Math.floor(clock.now() / 1000)
  const token = await new SignJWT({ iss: ISSUER, aud: CLIENT_ID, sub: 'alice', iat: now, exp: now + 300 })
    .setProtectedHeader({ alg: 'RS256', kid: 'k' })
    .sign(privateKey)
  const opts = { issuer: ISSUER, audience: CLIENT_ID, algorithms: ASYMMETRIC_ALGS, clockToleranceSec: TOLERANCE_SEC, mode: 'auto' as const, clock }

  // Nothing listens on the port: the fetch fails.
  const closed = http.createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as AddressInfo).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))
  const down = new AccessTokenVerifier(createJwks(`http://127.0.0.1:${port}/keys`, { timeoutMs: 2_000, clock }), opts)
  t.same(await down.check(token), { status: 'unavailable' }, 'connection refused')

  // The endpoint answers 500.
  const failing = await startJwks(t, [jwk], 500)
  const v500 = new AccessTokenVerifier(createJwks(failing.url, { timeoutMs: 2_000, clock }), opts)
  t.same(await v500.check(token), { status: 'unavailable' }, 'JWKS endpoint 500')

  // An unavailable answer is not cached: the same token verifies once keys can be had.
  const working = await startJwks(t, [jwk])
  const jwks = createJwks(working.url, { timeoutMs: 2_000, clock })
  const v = new AccessTokenVerifier(jwks, opts)
  t.equal((await v.check(token)).status, 'valid')
  t.equal(working.hits(), 1)
})
