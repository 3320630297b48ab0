/**
 * The provider's JWKS cache (issue #3 point 2, `src/oidc/jwks.ts`), against a local JWKS endpoint the
 * test controls: fetched once; an unknown `kid` refetches at most once per cooldown, then the token is
 * rejected; a failing endpoint leaves the cached keys working; a cache older than maxAge is refreshed
 * in the background without failing a verification. Time is a fake clock; nothing sleeps.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK } from 'jose'
import { createJwks, verifyJwt, type Jwks } from '../../../src/oidc/jwks.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'
import { waitUntil } from '../../helpers/wait.ts'

type CryptoKeyLike = Awaited<ReturnType<typeof generateKeyPair>>['privateKey']

interface SigningKey {
  kid: string
  privateKey: CryptoKeyLike
  jwk: JWK
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } }
}

interface JwksServer {
  url: string
  /** Requests the endpoint saw. */
  hits: number
  /** The published keys. */
  keys: JWK[]
  /** 'ok' serves the keys; 'error' answers 500; 'down' drops the connection. */
  mode: 'ok' | 'error' | 'down'
}

async function startJwksServer(t: Test, keys: JWK[]): Promise<JwksServer> {
  const state: JwksServer = { url: '', hits: 0, keys, mode: 'ok' }
  const server = http.createServer((req, res) => {
    state.hits++
    if (state.mode === 'down') {
      req.socket.destroy()
      return
    }
    if (state.mode === 'error') {
      res.writeHead(500, { 'content-type': 'text/plain' }).end('down for maintenance')
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return state
}

async function tokenBy(key: SigningKey, clock: FakeClock): Promise<string> {
  const now = Math.floor(clock.now() / 1000)
  return new SignJWT({ sub: 'alice' })
    .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key.privateKey)
}

async function verify(jwks: Jwks, token: string, clock: FakeClock): Promise<'ok' | string> {
  try {
    await jwtVerify(token, jwks.getKey, { algorithms: ['RS256'], currentDate: new Date(clock.now()) })
    return 'ok'
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
}


const COOLDOWN = 30_000
const MAX_AGE = 600_000

async function setup(t: Test) {
  const clock = fakeClock()
  const [k1, k2, k3] = await Promise.all([signingKey('k1'), signingKey('k2'), signingKey('k3')])
  const server = await startJwksServer(t, [k1.jwk])
  const jwks = createJwks(server.url, { timeoutMs: 2_000, cooldownMs: COOLDOWN, maxAgeMs: MAX_AGE, clock })
  return { clock, k1, k2, k3, server, jwks }
}

t.test('fetched once: many verifications with a known kid fetch the key set once', async (t) => {
  const { clock, k1, server, jwks } = await setup(t)
  await jwks.reload()
  t.equal(server.hits, 1, 'one fetch at connect')
  t.same(jwks.keys(), [{ kid: 'k1', alg: 'RS256', kty: 'RSA' }])
  for (let i = 0; i < 10; i++) t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok')
  clock.advance(MAX_AGE - 1)
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok')
  t.equal(server.hits, 1, 'no further fetch before maxAge')
})

t.test('lazy: without reload(), the first verification fetches, concurrent first uses share the fetch', async (t) => {
  const { clock, k1, server, jwks } = await setup(t)
  const token = await tokenBy(k1, clock)
  const results = await Promise.all(Array.from({ length: 5 }, () => verify(jwks, token, clock)))
  t.same(results, ['ok', 'ok', 'ok', 'ok', 'ok'])
  t.equal(server.hits, 1, 'one fetch for five concurrent first uses')
})

t.test('unknown kid: refetched at once after connect, then at most one unknown-kid refetch per cooldown', async (t) => {
  const { clock, k1, k2, k3, server, jwks } = await setup(t)
  await jwks.reload()
  server.keys = [k2.jwk, k1.jwk] // the provider rotated right after we connected: k2 signs from now on

  // The connect-time fetch does not count: the rotated key is found by an immediate refetch.
  t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ok', 'the rotated key is found at once')
  t.equal(server.hits, 2, 'by one refetch')
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'the old key still verifies')

  // A key the provider never publishes: no refetch within the cooldown of the last unknown-kid one.
  const stranger = await tokenBy(k3, clock)
  t.equal(await verify(jwks, stranger, clock), 'ERR_JWKS_NO_MATCHING_KEY', 'rejected')
  t.equal(server.hits, 2, 'within the cooldown of the rotation refetch: no refetch')

  // After the cooldown, one refetch however many tokens come at once; they all wait for it.
  clock.advance(COOLDOWN)
  const burst = await Promise.all(Array.from({ length: 10 }, () => verify(jwks, stranger, clock)))
  t.ok(burst.every((r) => r === 'ERR_JWKS_NO_MATCHING_KEY'), 'all rejected')
  t.equal(server.hits, 3, 'ten concurrent unknown-kid tokens caused one refetch')
  for (let i = 0; i < 5; i++) {
    clock.advance(COOLDOWN / 10)
    t.equal(await verify(jwks, stranger, clock), 'ERR_JWKS_NO_MATCHING_KEY')
  }
  t.equal(server.hits, 3, 'no refetch within the cooldown')
  clock.advance(COOLDOWN)
  t.equal(await verify(jwks, stranger, clock), 'ERR_JWKS_NO_MATCHING_KEY', 'still rejected after the next refetch')
  t.equal(server.hits, 4, 'one more refetch once the cooldown passed')
})

t.test('scheduled refreshes do not count for the unknown-kid cooldown', async (t) => {
  const { clock, k1, k2, server, jwks } = await setup(t)
  await jwks.reload()
  clock.advance(MAX_AGE + 1)
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok')
  await waitUntil(() => server.hits === 2, 'the background refresh ran')
  server.keys = [k2.jwk, k1.jwk]
  t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ok', 'a rotation right after a scheduled refresh is followed at once')
  t.equal(server.hits, 3)
})

t.test('concurrent tokens of a just-rotated key all wait for the one refetch', async (t) => {
  const { clock, k1, k2, server, jwks } = await setup(t)
  await jwks.reload()
  server.keys = [k2.jwk, k1.jwk]
  const token = await tokenBy(k2, clock)
  const results = await Promise.all(Array.from({ length: 8 }, () => verify(jwks, token, clock)))
  t.same(results, Array(8).fill('ok'), 'none rejected while the refetch ran')
  t.equal(server.hits, 2, 'one refetch')
})

async function kidless(key: SigningKey, clock: FakeClock, alg = 'RS256'): Promise<string> {
  const now = Math.floor(clock.now() / 1000)
  return new SignJWT({ sub: 'alice', iss: 'https://issuer.test', aud: 'client' })
    .setProtectedHeader({ alg, typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(key.privateKey)
}

const VERIFY = { issuer: 'https://issuer.test', audience: 'client', algorithms: ['RS256'], clockToleranceSec: 30 }

t.test('a token without kid verifies against a single-key JWKS', async (t) => {
  const { clock, k1, k2, jwks } = await setup(t)
  const payload = await verifyJwt(await kidless(k1, clock), jwks, { ...VERIFY, nowSec: Math.floor(clock.now() / 1000) })
  t.equal(payload.sub, 'alice')
  await t.rejects(verifyJwt(await kidless(k2, clock), jwks, { ...VERIFY, nowSec: Math.floor(clock.now() / 1000) }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'signed by another key: refused')
})

t.test('a token without kid and several keys: each key of the right type is tried, or it is refused', async (t) => {
  const { clock, k1, k2, k3, server, jwks } = await setup(t)
  const { publicKey } = await generateKeyPair('ES256')
  server.keys = [{ ...(await exportJWK(publicKey)), kid: 'ec', alg: 'ES256', use: 'sig' }, k1.jwk, k2.jwk]
  const nowSec = Math.floor(clock.now() / 1000)
  t.equal((await verifyJwt(await kidless(k2, clock), jwks, { ...VERIFY, nowSec })).sub, 'alice', 'the second RSA key signed it: found')
  t.equal((await verifyJwt(await kidless(k1, clock), jwks, { ...VERIFY, nowSec })).sub, 'alice', 'the first RSA key signed it: found')
  await t.rejects(verifyJwt(await kidless(k3, clock), jwks, { ...VERIFY, nowSec }), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'no published key signed it: refused')
  const expired = await new SignJWT({ sub: 'alice', iss: 'https://issuer.test', aud: 'client' }).setProtectedHeader({ alg: 'RS256' }).setIssuedAt(nowSec - 1000).setExpirationTime(nowSec - 500).sign(k2.privateKey)
  await t.rejects(verifyJwt(expired, jwks, { ...VERIFY, nowSec }), { code: 'ERR_JWT_EXPIRED' }, 'claims are still checked')
})

t.test('a failing JWKS endpoint keeps the cached keys working', async (t) => {
  const { clock, k1, k2, server, jwks } = await setup(t)
  await jwks.reload()
  for (const mode of ['error', 'down'] as const) {
    await t.test(mode === 'error' ? 'endpoint answers 500' : 'endpoint drops connections', async (t) => {
      server.mode = mode
      const hits = server.hits
      clock.advance(COOLDOWN)
      // An unknown kid forces a fetch attempt, which fails.
      t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ERR_JWKS_NO_MATCHING_KEY', 'the unknown kid is rejected')
      t.equal(server.hits, hits + 1, 'after one fetch attempt')
      t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'the cached key still verifies')
      t.same(
        jwks.keys().map((k) => k.kid),
        ['k1'],
        'the cached key set is kept',
      )
      clock.advance(COOLDOWN / 2)
      t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ERR_JWKS_NO_MATCHING_KEY')
      t.equal(server.hits, hits + 1, 'a failed attempt also counts for the cooldown (the endpoint is not hammered)')
    })
  }
  server.mode = 'ok'
  server.keys = [k2.jwk, k1.jwk]
  clock.advance(COOLDOWN)
  t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ok', 'once the endpoint is back, the next refetch picks up the new key')
})

t.test('stale cache (past maxAge): refreshed in the background, verification does not fail when the endpoint is down', async (t) => {
  const { clock, k1, k2, server, jwks } = await setup(t)
  await jwks.reload()

  server.mode = 'error'
  clock.advance(MAX_AGE + 1)
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'a stale cache still verifies while the endpoint fails')
  await waitUntil(() => server.hits === 2, 'the background refresh attempt')
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'and keeps verifying after the failed refresh')
  t.equal(server.hits, 2, 'the failed attempt is not repeated on every verification')

  server.mode = 'down'
  clock.advance(MAX_AGE + 1)
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'also when the endpoint drops connections')
  await waitUntil(() => server.hits === 3, 'the second background refresh attempt')

  // With the endpoint back, a stale cache picks up new keys in the background.
  server.mode = 'ok'
  server.keys = [k2.jwk, k1.jwk]
  clock.advance(MAX_AGE + 1)
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok')
  await waitUntil(() => server.hits === 4, 'the background refresh')
  await waitUntil(() => jwks.keys().length === 2, 'the refreshed key set to be installed')
  t.equal(await verify(jwks, await tokenBy(k2, clock), clock), 'ok', 'the new key verifies without another fetch (within the cooldown)')
  t.equal(server.hits, 4)
})

t.test('the endpoint down on first use: the verification fails (no keys), reload() throws', async (t) => {
  const { clock, k1, server, jwks } = await setup(t)
  server.mode = 'error'
  const result = await verify(jwks, await tokenBy(k1, clock), clock)
  t.equal(result, 'ERR_JWKS_FETCH', 'no keys, no verification: the fetch failure is reported')
  await t.rejects(jwks.reload(), { code: 'ERR_JWKS_FETCH' }, 'reload reports the failure')
  server.mode = 'down'
  await t.rejects(jwks.reload(), TypeError, 'a dropped connection is a fetch TypeError')
  t.same(jwks.keys(), [])
  server.mode = 'ok'
  await jwks.reload()
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'works once the endpoint answers')
})

t.test('a JWKS response without a keys array is a failed fetch, and does not replace the cached keys', async (t) => {
  const clock = fakeClock()
  const k1 = await signingKey('k1')
  let body = JSON.stringify({ keys: [k1.jwk] })
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const jwks = createJwks(`http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`, { timeoutMs: 2_000, clock })
  await jwks.reload()
  body = JSON.stringify({ notKeys: true })
  await t.rejects(jwks.reload(), { code: 'ERR_JWKS_FETCH' })
  t.equal(await verify(jwks, await tokenBy(k1, clock), clock), 'ok', 'the cached keys still verify')
})
