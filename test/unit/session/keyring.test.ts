import t from 'tap'
import { createKeyRing } from '../../../src/session/keyring.ts'

const A = 'keyring-test-secret-A-0123456789abcdef'
const B = 'keyring-test-secret-B-0123456789abcdef'

t.test('a 256-bit key and a short key id per secret', async (t) => {
  const ring = createKeyRing([A], 'session')
  t.equal(ring.current.raw.length, 32)
  t.match(ring.current.kid, /^[A-Za-z0-9_-]{12}$/)
  t.notOk(ring.current.kid.includes(A.slice(0, 8)), 'the kid reveals nothing of the secret')
})

t.test('derivation is deterministic, so every replica and every restart agrees', async (t) => {
  const a = createKeyRing([A], 'session')
  const b = createKeyRing([A], 'session')
  t.equal(a.current.kid, b.current.kid)
  t.strictSame(Buffer.from(a.current.raw), Buffer.from(b.current.raw))
})

t.test('the key is derived, not the secret itself', async (t) => {
  const ring = createKeyRing([A], 'session')
  t.notSame(Buffer.from(ring.current.raw), Buffer.from(A, 'utf8').subarray(0, 32))
})

t.test('different secrets and different purposes give different keys and kids', async (t) => {
  const rings = [createKeyRing([A], 'session'), createKeyRing([B], 'session'), createKeyRing([A], 'login'), createKeyRing([B], 'login')]
  t.equal(new Set(rings.map((r) => r.current.kid)).size, 4, 'kids')
  t.equal(new Set(rings.map((r) => Buffer.from(r.current.raw).toString('hex'))).size, 4, 'keys')
})

t.test('the first secret seals; every secret opens', async (t) => {
  const ring = createKeyRing([B, A], 'session')
  const a = createKeyRing([A], 'session').current
  const b = createKeyRing([B], 'session').current
  t.equal(ring.current.kid, b.kid, 'current is the first')
  t.strictSame(ring.byId(b.kid), b)
  t.strictSame(ring.byId(a.kid), a, 'the older key is found by its kid')
  t.equal(ring.byId('nope'), undefined)
  t.equal(ring.byId(''), undefined)
  t.equal(ring.byId('__proto__'), undefined, 'no prototype lookups')
  t.equal(ring.byId('constructor'), undefined)
})

t.test('a login ring does not know session kids', async (t) => {
  const session = createKeyRing([A, B], 'session')
  const login = createKeyRing([A, B], 'login')
  t.equal(login.byId(session.current.kid), undefined)
  t.equal(session.byId(login.current.kid), undefined)
})

t.test('a repeated secret is harmless', async (t) => {
  const ring = createKeyRing([A, A, B], 'session')
  t.equal(ring.current.kid, createKeyRing([A], 'session').current.kid)
  t.ok(ring.byId(createKeyRing([B], 'session').current.kid))
})

t.test('no secret is a programming error', async (t) => {
  t.throws(() => createKeyRing([], 'session'))
})
