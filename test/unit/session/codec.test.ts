import t from 'tap'
import { deflateRawSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { CompactEncrypt, decodeProtectedHeader } from 'jose'
import { MAX_SEALED_LENGTH, open, seal } from '../../../src/session/codec.ts'
import { createKeyRing, type KeyRing } from '../../../src/session/keyring.ts'

const A = 'codec-test-secret-A-0123456789abcdefgh'
const B = 'codec-test-secret-B-0123456789abcdefgh'
const C = 'codec-test-secret-C-0123456789abcdefgh'

/** Seal raw plaintext bytes the way `seal()` does, minus the JSON and the deflate: for hostile payloads. */
function sealRaw(plaintext: Uint8Array, ring: KeyRing, header: Record<string, unknown> = {}): Promise<string> {
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: ring.current.kid, ...header })
    .encrypt(ring.current.raw)
}

t.test('seal then open round-trips JSON', async (t) => {
  const ring = createKeyRing([A], 'session')
  const payloads: unknown[] = [
    { sub: 'alice', groups: ['a', 'b'], n: 1.5, ok: true, nothing: null, nested: { x: [1, { y: 'z' }] } },
    'a string',
    42,
    null,
    [],
    { text: 'zoë Ångström 山田 🙂' },
  ]
  for (const payload of payloads) {
    const sealed = await seal(payload, ring)
    t.strictSame(await open(sealed, ring), { payload, renew: false }, JSON.stringify(payload))
  }
})

t.test('sealing twice gives two values (fresh IV)', async (t) => {
  const ring = createKeyRing([A], 'session')
  const a = await seal({ x: 1 }, ring)
  const b = await seal({ x: 1 }, ring)
  t.not(a, b)
  t.strictSame((await open(a, ring))?.payload, (await open(b, ring))?.payload)
})

t.test('compact JWE with header {alg: dir, enc: A256GCM, kid}', async (t) => {
  const ring = createKeyRing([A, B], 'session')
  const sealed = await seal({ sub: 'alice' }, ring)
  const parts = sealed.split('.')
  t.equal(parts.length, 5, 'five segments')
  t.equal(parts[1], '', 'dir: no encrypted key')
  t.equal(Buffer.from(parts[2] as string, 'base64url').length, 12, '96-bit IV')
  t.equal(Buffer.from(parts[4] as string, 'base64url').length, 16, '128-bit tag')
  t.strictSame(decodeProtectedHeader(sealed), { alg: 'dir', enc: 'A256GCM', kid: ring.current.kid })
  t.notMatch(sealed, /alice/, 'the payload is not readable')
  t.notMatch(Buffer.from(parts[3] as string, 'base64url').toString('latin1'), /alice/, 'not even in the ciphertext bytes')
})

t.test('the payload is compressed before sealing', async (t) => {
  const ring = createKeyRing([A], 'session')
  const payload = { claims: { groups: Array.from({ length: 500 }, (_, i) => `group-${i % 10}-engineering`) } }
  const json = JSON.stringify(payload)
  t.ok(json.length >= 10_000, `payload is ${json.length} bytes`)
  const repetitive = { data: 'portcullis-session '.repeat(1100) }
  t.ok(JSON.stringify(repetitive).length >= 20_000)
  const sealed = await seal(repetitive, ring)
  t.ok(sealed.length < 1000, `20 KB of repetitive JSON seals to ${sealed.length} characters`)
  t.strictSame((await open(sealed, ring))?.payload, repetitive)
  const sealedGroups = await seal(payload, ring)
  t.ok(sealedGroups.length < json.length / 4, `${json.length} bytes of groups seal to ${sealedGroups.length}`)
})

t.test('a zip bomb opens to null without throwing', async (t) => {
  const ring = createKeyRing([A], 'session')
  const bomb = deflateRawSync(Buffer.alloc(10 * 1024 * 1024))
  const sealed = await sealRaw(bomb, ring)
  t.ok(sealed.length < MAX_SEALED_LENGTH, `the bomb (${sealed.length} characters) passes the length check, so inflate is what stops it`)
  t.equal(await open(sealed, ring), null)

  // Just past the 64 KB inflate limit: refused; just under: opens.
  const over = await sealRaw(deflateRawSync(Buffer.from(JSON.stringify({ d: 'a'.repeat(64 * 1024) }))), ring)
  t.equal(await open(over, ring), null, 'a payload inflating past 64 KB')
  const under = { d: 'a'.repeat(60 * 1024) }
  t.strictSame((await open(await seal(under, ring), ring))?.payload, under, 'a payload inflating to 60 KB')
})

t.test('hostile plaintexts sealed with the right key are null', async (t) => {
  const ring = createKeyRing([A], 'session')
  const cases: Array<[string, Uint8Array]> = [
    ['not deflated', Buffer.from(JSON.stringify({ sub: 'x' }))],
    ['deflated non-JSON', deflateRawSync(Buffer.from('not json {'))],
    ['deflated empty', deflateRawSync(Buffer.alloc(0))],
    ['random bytes', randomBytes(64)],
    ['truncated deflate stream', deflateRawSync(Buffer.from(JSON.stringify({ sub: 'x'.repeat(500) }))).subarray(0, 10)],
  ]
  for (const [label, plaintext] of cases) t.equal(await open(await sealRaw(plaintext, ring), ring), null, label)
})

t.test('headers other than dir + A256GCM + a known kid are refused', async (t) => {
  const ring = createKeyRing([A], 'session')
  const plaintext = deflateRawSync(Buffer.from(JSON.stringify({ sub: 'x' })))
  t.ok(await open(await sealRaw(plaintext, ring), ring), 'control: our own header opens')
  t.equal(await open(await sealRaw(plaintext, ring, { kid: 'unknown-kid' }), ring), null, 'unknown kid')
  t.equal(await open(await sealRaw(plaintext, ring, { kid: 7 }), ring), null, 'numeric kid')
  const noKid = await new CompactEncrypt(plaintext).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).encrypt(ring.current.raw)
  t.equal(await open(noKid, ring), null, 'no kid')
  const a128 = await new CompactEncrypt(plaintext)
    .setProtectedHeader({ alg: 'dir', enc: 'A128GCM', kid: ring.current.kid })
    .encrypt(ring.current.raw.subarray(0, 16))
  t.equal(await open(a128, ring), null, 'A128GCM')
})

t.test('values that are not compact JWE are null', async (t) => {
  const ring = createKeyRing([A], 'session')
  const sealed = await seal({ sub: 'x' }, ring)
  const parts = sealed.split('.')
  const cases: Array<[string, string]> = [
    ['empty', ''],
    ['garbage', 'hello'],
    ['four segments', parts.slice(0, 4).join('.')],
    ['six segments', `${sealed}.AAAA`],
    ['an encrypted key segment', [parts[0], 'AAAA', ...parts.slice(2)].join('.')],
    ['padding', `${sealed}=`],
    ['standard base64 characters', sealed.replace(/-/g, '+').replace(/_/g, '/') + (/[-_]/.test(sealed) ? '' : '+')],
    ['whitespace', ` ${sealed}`],
    ['JSON serialization', JSON.stringify({ protected: parts[0], iv: parts[2], ciphertext: parts[3], tag: parts[4] })],
    ['over the length limit', `${parts[0]}..${parts[2]}.${'A'.repeat(MAX_SEALED_LENGTH)}.${parts[4]}`],
    ['header swapped for another valid one', [Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid: ring.current.kid, x: 1 })).toString('base64url'), ...parts.slice(1)].join('.')],
  ]
  for (const [label, value] of cases) t.equal(await open(value, ring), null, label)
})

t.test('rotation: the first key seals, every key opens, an old key reports renew', async (t) => {
  const oldRing = createKeyRing([A], 'session')
  const rotated = createKeyRing([B, A], 'session')
  const other = createKeyRing([C], 'session')
  const sealedOld = await seal({ sub: 'alice' }, oldRing)
  t.strictSame(await open(sealedOld, rotated), { payload: { sub: 'alice' }, renew: true }, '[old] → [new, old]: renew')
  const sealedNew = await seal({ sub: 'alice' }, rotated)
  t.equal(decodeProtectedHeader(sealedNew).kid, createKeyRing([B], 'session').current.kid, '[new, old] seals with new')
  t.strictSame(await open(sealedNew, rotated), { payload: { sub: 'alice' }, renew: false }, '[new, old] → [new, old]: no renew')
  t.strictSame(await open(sealedNew, createKeyRing([B], 'session')), { payload: { sub: 'alice' }, renew: false }, '[new] opens it alone')
  t.equal(await open(sealedNew, oldRing), null, '[old] cannot open a value sealed with new')
  t.equal(await open(sealedOld, other), null, '[other] → null')
  t.equal(await open(sealedNew, other), null, '[other] → null')
  t.strictSame(await open(sealedOld, createKeyRing([C, B, A], 'session')), { payload: { sub: 'alice' }, renew: true }, 'the last of three keys still opens')
})

t.test('a kid that names a key of the ring but the ciphertext of another key is null', async (t) => {
  const ring = createKeyRing([B, A], 'session')
  const sealedA = await seal({ sub: 'x' }, createKeyRing([A], 'session'))
  const parts = sealedA.split('.')
  const header = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid: ring.current.kid })).toString('base64url')
  t.equal(await open([header, ...parts.slice(1)].join('.'), ring), null, 'header rewritten to the other kid')
})

t.test('keys of purpose session and login differ', async (t) => {
  const session = createKeyRing([A], 'session')
  const login = createKeyRing([A], 'login')
  t.not(session.current.kid, login.current.kid)
  t.notSame(Buffer.from(session.current.raw), Buffer.from(login.current.raw))
  const tx = await seal({ t: 'tx', state: 's', nonce: 'n', verifier: 'v', rd: '/', createdAt: 0 }, login)
  t.equal(await open(tx, session), null, 'a transaction sealed with the login ring does not open with the session ring')
  t.equal(await open(await seal({ sub: 'x' }, session), login), null, 'and the other way round')
})
