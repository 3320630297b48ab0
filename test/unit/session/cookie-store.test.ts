import t from 'tap'
import { createCookieStore } from '../../../src/session/cookie-store.ts'
import { createKeyRing } from '../../../src/session/keyring.ts'
import { seal } from '../../../src/session/codec.ts'
import type { LoadedSession } from '../../../src/session/store.ts'
import { sealTransaction } from '../../../src/session/transaction.ts'
import { fakeClock } from '../../helpers/clock.ts'
import { CONTRACT_LIMITS, CONTRACT_SECRET, fullSession, runStoreContract } from '../../helpers/store-contract.ts'

void runStoreContract(t, 'cookie store', (clock, { secrets, limits }) =>
  createCookieStore({ ring: createKeyRing(secrets, 'session'), limits, clock }),
)

// Cookie-store specifics beyond the contract.

const OLD = 'cookie-store-old-secret-0123456789abcdef'
const NEW = 'cookie-store-new-secret-0123456789abcdef'

t.test('key rotation: a value sealed with an old secret loads with renew, and is re-sealed with the first', async (t) => {
  const clock = fakeClock()
  const before = createCookieStore({ ring: createKeyRing([OLD], 'session'), limits: CONTRACT_LIMITS, clock })
  const after = createCookieStore({ ring: createKeyRing([NEW, OLD], 'session'), limits: CONTRACT_LIMITS, clock })
  const onlyNew = createCookieStore({ ring: createKeyRing([NEW], 'session'), limits: CONTRACT_LIMITS, clock })
  const session = fullSession(clock.now())
  const old = await before.save(session)
  const loaded = await after.load(old)
  t.strictSame(loaded?.session, session)
  t.equal(loaded?.renew, true, 'opened with the old key: re-write it')
  const resealed = await after.save(session)
  t.equal((await after.load(resealed))?.renew, false, 'sealed with the first key: nothing to do')
  t.equal((await onlyNew.load(resealed))?.session.sub, session.sub, 'the re-sealed value needs only the new secret')
  t.equal(await onlyNew.load(old), null, 'the old value does not open once the old secret is gone')
})

t.test('a value of ours that is not a session does not load', async (t) => {
  const clock = fakeClock()
  const ring = createKeyRing([CONTRACT_SECRET], 'session')
  const store = createCookieStore({ ring, limits: CONTRACT_LIMITS, clock })
  const now = clock.now()
  const good = fullSession(now) as unknown as Record<string, unknown>
  const shapes: Array<[string, unknown]> = [
    ['a string', 'hello'],
    ['null', null],
    ['an array', [good]],
    ['version 2', { ...good, v: 2 }],
    ['empty sub', { ...good, sub: '' }],
    ['numeric sub', { ...good, sub: 42 }],
    ['no idToken', { ...good, idToken: undefined }],
    ['claims null', { ...good, claims: null }],
    ['createdAt a string', { ...good, createdAt: String(now) }],
    ['refreshToken a number', { ...good, refreshToken: 1 }],
    ['sid a number', { ...good, sid: 1 }],
  ]
  for (const [label, payload] of shapes) t.equal(await store.load(await seal(payload, ring)), null, label)
  t.ok(await store.load(await seal(good, ring)), 'the well-formed one loads')
})

t.test('a login transaction sealed with the same secrets never passes for a session', async (t) => {
  const clock = fakeClock()
  const store = createCookieStore({ ring: createKeyRing([CONTRACT_SECRET], 'session'), limits: CONTRACT_LIMITS, clock })
  const loginRing = createKeyRing([CONTRACT_SECRET], 'login')
  const tx = await sealTransaction({ state: 's', nonce: 'n', verifier: 'v', rd: 'https://app.example.com/', createdAt: clock.now() }, loginRing)
  t.equal(await store.load(tx), null, 'transaction value')
  // Even a session-shaped payload sealed with the login key is refused: the keys differ by purpose.
  t.equal(await store.load(await seal(fullSession(clock.now()), loginRing)), null, 'session sealed with the login key')
})

t.test('the open cache does not keep an expired session alive', async (t) => {
  const clock = fakeClock()
  const store = createCookieStore({ ring: createKeyRing([CONTRACT_SECRET], 'session'), limits: CONTRACT_LIMITS, clock, cacheTtlMs: 3600_000 })
  const value = await store.save(fullSession(clock.now()))
  t.ok(await store.load(value), 'cached now')
  clock.advance(CONTRACT_LIMITS.idleTimeout)
  t.equal(await store.load(value), null, 'lifetimes are checked on every load, cache hit or not')
})

t.test('update seals once; a client that keeps the old value is given the new one', async (t) => {
  const clock = fakeClock()
  const store = createCookieStore({ ring: createKeyRing([CONTRACT_SECRET], 'session'), limits: CONTRACT_LIMITS, clock })
  const session = fullSession(clock.now())
  const old = await store.save(session)
  let at = (await store.load(old))!
  const values = [old]
  // An hour of a client that never stores a cookie: the idle clock moves once a minute, each time
  // from whatever the old value now loads as.
  for (let minute = 1; minute <= 60; minute++) {
    clock.advance(60_000)
    const seen = (await store.load(old))!
    t.equal(seen.value, at.value, `minute ${minute}: the old value loads the newest state`)
    at = (await store.update(seen, (s) => ({ ...s, lastSeenAt: clock.now() })))!
    values.push(at.value)
  }
  t.equal(new Set(values).size, 61, 'one new value per window')
  t.equal((await store.load(old))?.session.lastSeenAt, clock.now(), 'sixty updates later, still the newest')
  t.equal((await store.load(values[30] as string))?.value, at.value, 'a value from the middle of the chain too')
  clock.advance(CONTRACT_LIMITS.idleTimeout - 1)
  t.ok(await store.load(old), 'active for an hour on the login cookie: the session is not idle')
})

t.test('key rotation through update: the new value is sealed with the first secret', async (t) => {
  const clock = fakeClock()
  const before = createCookieStore({ ring: createKeyRing([OLD], 'session'), limits: CONTRACT_LIMITS, clock })
  const after = createCookieStore({ ring: createKeyRing([NEW, OLD], 'session'), limits: CONTRACT_LIMITS, clock })
  const onlyNew = createCookieStore({ ring: createKeyRing([NEW], 'session'), limits: CONTRACT_LIMITS, clock })
  const sent = await before.save(fullSession(clock.now()))
  const loaded = (await after.load(sent))!
  t.equal(loaded.renew, true)
  const [a, b] = (await Promise.all([after.update(loaded, (s) => s), after.update(loaded, (s) => s)])).map((r) => r!) as [LoadedSession, LoadedSession]
  t.equal(a.value, b.value, 'one re-seal for concurrent requests')
  t.equal(a.renew, false)
  t.equal((await after.load(sent))?.value, a.value, 'the old value now names the re-sealed one')
  t.ok(await onlyNew.load(a.value), 'which opens without the old secret')
})
