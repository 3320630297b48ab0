/**
 * The signed identity assertion (issue #10 point 6, `src/policy/assertion.ts`): ES256 JWTs that jose
 * verifies against the signer's JWKS, with the registered claims and the identity's, the RFC 7638
 * thumbprint as kid; one assertion per identity and audience until close to its expiry; keys from a
 * PKCS#8 PEM or a JWK, and a clear CONFIG_INVALID error for anything else. Time is a fake clock.
 */
import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { ASSERTION_BASE_CLAIMS, createAssertionSigner, loadSigningKey, type AssertionSigner } from '../../../src/policy/assertion.ts'
import { PortcullisError } from '../../../src/errors.ts'
import { createRuntime } from '../../../src/runtime.ts'
import { configFor } from '../../helpers/config.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'

const ISSUER = 'https://auth.example.com'
const APP = 'http://app.internal:8080'

function signer(clock: FakeClock, opts: { ttlMs?: number; claims?: string[]; key?: string } = {}): AssertionSigner {
  return createAssertionSigner({
    key: loadSigningKey(opts.key ?? ''),
    issuer: ISSUER,
    ttlMs: opts.ttlMs ?? 60_000,
    claims: opts.claims ?? ['sub', 'email', ...ASSERTION_BASE_CLAIMS],
    clock,
  })
}

async function verify(s: AssertionSigner, token: string, clock: FakeClock, audience = APP) {
  return jwtVerify(token, createLocalJWKSet(s.jwks as unknown as JSONWebKeySet), {
    issuer: ISSUER,
    audience,
    algorithms: ['ES256'],
    currentDate: new Date(clock.now()),
  })
}

const identity = () => ({
  sub: 'user-1',
  claims: {
    sub: 'user-1',
    email: 'alice@example.com',
    groups: ['admins', 'eng'],
    name: 'Alice',
    preferred_username: 'alice',
    org_id: 'org-7',
    acr: 'urn:x',
    sid: 'provider-session',
    iss: 'https://idp.example.com',
  },
})

t.test('signs an ES256 JWT that verifies against the JWKS, with the identity claims', async (t) => {
  const clock = fakeClock(Date.UTC(2030, 0, 1, 12, 0, 0, 400))
  const s = signer(clock, { claims: ['sub', 'email', 'org_id', ...ASSERTION_BASE_CLAIMS] })
  const token = await s.token(identity(), APP)
  const { payload, protectedHeader } = await verify(s, token, clock)
  const key = s.jwks.keys[0] as Record<string, unknown>
  t.same(protectedHeader, { alg: 'ES256', typ: 'JWT', kid: key.kid })
  t.equal(s.jwks.keys.length, 1)
  t.same(Object.keys(key).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'], 'a public JWK: no "d"')
  t.match(key, { kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' })
  t.equal(key.kid, await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: key.x as string, y: key.y as string }, 'sha256'), 'kid is the RFC 7638 thumbprint')
  const iat = Math.floor(clock.now() / 1000)
  const { jti, ...rest } = payload
  t.same(rest, {
    iss: ISSUER,
    sub: 'user-1',
    aud: APP,
    email: 'alice@example.com',
    groups: ['admins', 'eng'],
    name: 'Alice',
    preferred_username: 'alice',
    org_id: 'org-7',
    iat,
    exp: iat + 60,
  }, 'the registered claims, the header map\'s claims and the base ones; not acr, sid, or the provider\'s iss')
  t.type(jti, 'string')
  t.ok((jti as string).length >= 20, 'a random jti')

  await t.rejects(verify(s, token, clock, 'http://other.internal'), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'bound to its audience')
  const other = signer(clock)
  await t.rejects(verify(other, token, clock), 'another key does not verify it')
  t.not((other.jwks.keys[0] as Record<string, unknown>).kid, key.kid, 'a generated key per signer')
})

t.test('claims the identity lacks are left out; sub comes from the identity', async (t) => {
  const clock = fakeClock()
  const s = signer(clock)
  const token = await s.token({ sub: 'bare', claims: { email: null } }, APP)
  const { payload } = await verify(s, token, clock)
  t.same(Object.keys(payload).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'sub'])
  t.equal(payload.sub, 'bare')
})

t.test('cached per identity and audience until near expiry, then signed again', async (t) => {
  const clock = fakeClock(Date.UTC(2030, 0, 1))
  const s = signer(clock)
  const who = identity()
  const first = await s.token(who, APP)
  t.equal(await s.token(who, APP), first, 'the same string for the same claims and audience')
  t.equal(await s.token({ sub: who.sub, claims: who.claims }, APP), first, 'keyed by the claims object, not the identity wrapper')
  const forOther = await s.token(who, 'http://other.internal')
  t.not(forOther, first, 'another audience: another assertion')
  const twin = await s.token({ sub: who.sub, claims: { ...who.claims } }, APP)
  t.not(twin, first, 'equal claims in another object (another session): its own assertion')

  clock.advance(44_999)
  t.equal(await s.token(who, APP), first, 'more than a quarter of the 60 s left: still the same')
  clock.advance(1)
  const second = await s.token(who, APP)
  t.not(second, first, 'a quarter left: signed again')
  const { payload } = await verify(s, second, clock)
  t.equal(payload.iat, Math.floor(clock.now() / 1000), 'with the clock\'s time')
  t.equal(await s.token(who, APP), second, 'and that one is kept in turn')
  const otherAgain = await s.token(who, 'http://other.internal')
  t.not(otherAgain, forOther, 'the other audience, as old, is signed again too')
  t.equal(await s.token(who, 'http://other.internal'), otherAgain, 'and kept apart from this one')
})

t.test('a short ttl keeps at least 5 s of life in every assertion', async (t) => {
  const clock = fakeClock(Date.UTC(2030, 0, 1))
  const s = signer(clock, { ttlMs: 10_000 })
  const who = identity()
  const first = await s.token(who, APP)
  const { payload } = await verify(s, first, clock)
  t.equal((payload.exp as number) - (payload.iat as number), 10)
  clock.advance(4_999)
  t.equal(await s.token(who, APP), first)
  clock.advance(1)
  t.not(await s.token(who, APP), first, '5 s left: signed again')
  t.throws(() => signer(clock, { ttlMs: 500 }), { code: 'CONFIG_INVALID', message: /identity\.assertion\.ttl/ })
})

t.test('keys: PKCS#8 PEM and EC JWK load; the kid follows the key', async (t) => {
  const clock = fakeClock()
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
  const jwk = JSON.stringify(pair.privateKey.export({ format: 'jwk' }))
  const fromPem = signer(clock, { key: pem })
  const fromJwk = signer(clock, { key: `\n${jwk}\n` })
  t.same(fromPem.jwks, fromJwk.jwks, 'the same key either way')
  const expected = pair.publicKey.export({ format: 'jwk' })
  t.match(fromPem.jwks.keys[0], { x: expected.x, y: expected.y })
  const token = await fromJwk.token(identity(), APP)
  await verify(fromPem, token, clock)
  t.equal(decodeProtectedHeader(token).kid, (fromPem.jwks.keys[0] as Record<string, unknown>).kid)
  t.ok(fromPem.key.equals(pair.privateKey), 'the key it signs with')
})

t.test('a bad key is a CONFIG_INVALID error naming identity.assertion.signingKey', async (t) => {
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  const ed = generateKeyPairSync('ed25519').privateKey
  const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const publicJwk = p256.publicKey.export({ format: 'jwk' })
  const cases: Array<[string, string, RegExp]> = [
    ['garbage', 'not a key', /neither a PKCS#8 PEM/],
    ['P-384 PEM', p384.export({ format: 'pem', type: 'pkcs8' }) as string, /curve secp384r1/],
    ['RSA PEM', rsa.export({ format: 'pem', type: 'pkcs8' }) as string, /a rsa key/],
    ['Ed25519 PEM', ed.export({ format: 'pem', type: 'pkcs8' }) as string, /a ed25519 key/],
    ['SEC1 PEM', p256.privateKey.export({ format: 'pem', type: 'sec1' }) as string, /SEC1.*openssl pkcs8 -topk8 -nocrypt/],
    ['truncated PEM', '-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n', /PEM that does not parse/],
    ['P-384 JWK', JSON.stringify(p384.export({ format: 'jwk' })), /curve "P-384"/],
    ['RSA JWK', JSON.stringify(rsa.export({ format: 'jwk' })), /kty "RSA"/],
    ['public JWK', JSON.stringify(publicJwk), /public JWK/],
    ['JWK for another alg', JSON.stringify({ ...p256.privateKey.export({ format: 'jwk' }), alg: 'ES384' }), /alg "ES384"/],
    ['JWK off its curve', JSON.stringify({ ...p256.privateKey.export({ format: 'jwk' }), x: publicJwk.y }), /not a valid EC key/],
    ['broken JSON', '{"kty": "EC",', /does not parse/],
    ['JSON array', '[1]', /neither/],
  ]
  for (const [label, text, why] of cases) {
    try {
      loadSigningKey(text)
      t.fail(`${label}: accepted`)
    } catch (err) {
      t.ok(err instanceof PortcullisError, `${label}: a PortcullisError`)
      const e = err as PortcullisError
      t.equal(e.code, 'CONFIG_INVALID', label)
      t.match(e.publicMessage, /^identity\.assertion\.signingKey: must be an EC P-256 private key/, `${label}: names the setting`)
      t.match(e.publicMessage, why, `${label}: says what it got`)
      t.notOk(e.publicMessage.includes('BEGIN') && e.publicMessage.includes('MI'), `${label}: no key material in the message`)
    }
  }
})

t.test('createRuntime: the signer wired in, a bad key refused, a reload keeps a generated key', async (t) => {
  const base = { issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 'client-secret-long-enough', upstream: APP, publicUrl: 'https://portal.example.com' }
  const off = createRuntime(configFor(base))
  t.teardown(() => off.close())
  t.equal(off.assertions, null, 'off by default')

  const clock = fakeClock()
  const on = createRuntime(configFor({ ...base, overrides: { identity: { assertion: { enabled: true, ttl: '30s' } } } }), { clock })
  t.teardown(() => on.close())
  const s = on.assertions as AssertionSigner
  t.ok(s !== null, 'enabled: a signer')
  const token = await s.token({ sub: 'u', claims: { email: 'u@example.com', groups: ['g'] } }, APP)
  const { payload } = await jwtVerify(token, createLocalJWKSet(s.jwks as unknown as JSONWebKeySet), { issuer: 'https://portal.example.com', audience: APP, currentDate: new Date(clock.now()) })
  t.equal((payload.exp as number) - (payload.iat as number), 30, 'identity.assertion.ttl')
  t.match(payload, { email: 'u@example.com', groups: ['g'] })

  const reloaded = createRuntime(on.config, { clock, previous: on })
  t.teardown(() => reloaded.close())
  t.same(reloaded.assertions?.jwks, s.jwks, 'a reload with signingKey unchanged keeps the generated key')
  const restarted = createRuntime(on.config, { clock })
  t.teardown(() => restarted.close())
  t.not((restarted.assertions?.jwks.keys[0] as Record<string, unknown>).kid, (s.jwks.keys[0] as Record<string, unknown>).kid, 'a new start: a new key')

  t.throws(() => createRuntime(configFor({ ...base, overrides: { identity: { assertion: { enabled: true, signingKey: 'nope' } } } })), {
    name: 'PortcullisError',
    code: 'CONFIG_INVALID',
    publicMessage: /^identity\.assertion\.signingKey: /,
  })
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string
  t.throws(() => createRuntime(configFor({ ...base, overrides: { identity: { assertion: { enabled: true, signingKey: p384 } } } })), {
    code: 'CONFIG_INVALID',
    publicMessage: /identity\.assertion\.signingKey: .*curve secp384r1/,
  })
  const disabledBad = createRuntime(configFor({ ...base, overrides: { identity: { assertion: { enabled: false, signingKey: 'nope' } } } }))
  t.teardown(() => disabledBad.close())
  t.equal(disabledBad.assertions, null, 'disabled: the key is not read')
})
