import t from 'tap'
import { createKeyRing } from '../../../src/session/keyring.ts'
import { seal } from '../../../src/session/codec.ts'
import { isTxCookieName, openTransaction, sealTransaction, transactionsToEvict, txCookieName } from '../../../src/session/transaction.ts'
import type { LoginTransaction } from '../../../src/oidc/login.ts'
import { fakeClock } from '../../helpers/clock.ts'

const SECRET = 'transaction-test-secret-0123456789abcdef'
const BASE = '_portcullis'
const TTL = 10 * 60_000
const login = createKeyRing([SECRET], 'login')

function tx(state: string, createdAt: number): LoginTransaction {
  return { state, nonce: `nonce-${state}`, verifier: `verifier-${state}-0123456789012345678901234567890123`, rd: `https://app.example.com/${state}?x=1`, createdAt }
}

t.test('cookie names: one per state, not revealing it, recognisable as ours', async (t) => {
  const a = txCookieName(BASE, 'state-a')
  t.match(a, /^_portcullis_tx_[0-9a-f]{16}$/)
  t.equal(txCookieName(BASE, 'state-a'), a, 'deterministic, so the callback finds it')
  t.not(txCookieName(BASE, 'state-b'), a, 'another state, another cookie')
  t.notOk(a.includes('state-a'))
  t.ok(isTxCookieName(BASE, a))
  t.notOk(isTxCookieName(BASE, BASE))
  t.notOk(isTxCookieName(BASE, `${BASE}_1`))
  t.notOk(isTxCookieName(BASE, 'other_tx_abc'))
})

t.test('seal then open round-trips the transaction', async (t) => {
  const clock = fakeClock()
  const original = tx('s1', clock.now())
  const sealed = await sealTransaction(original, login)
  t.notOk(sealed.includes('verifier'), 'sealed, not readable')
  t.strictSame(await openTransaction(sealed, login, clock.now(), TTL), original)
})

t.test('expiry: older than the login timeout is null', async (t) => {
  const clock = fakeClock()
  const sealed = await sealTransaction(tx('s1', clock.now()), login)
  clock.advance(TTL)
  t.ok(await openTransaction(sealed, login, clock.now(), TTL), 'at exactly the timeout: still valid')
  clock.advance(1)
  t.equal(await openTransaction(sealed, login, clock.now(), TTL), null, 'one millisecond past')
})

t.test('a transaction from the future (beyond a minute of skew) is null', async (t) => {
  const clock = fakeClock()
  const now = clock.now()
  t.ok(await openTransaction(await sealTransaction(tx('s', now + 60_000), login), login, now, TTL), 'one minute ahead: tolerated')
  t.equal(await openTransaction(await sealTransaction(tx('s', now + 60_001), login), login, now, TTL), null, 'more than a minute ahead')
})

t.test('only transactions sealed with the login ring open', async (t) => {
  const clock = fakeClock()
  const now = clock.now()
  const session = createKeyRing([SECRET], 'session')
  t.equal(await openTransaction(await sealTransaction(tx('s', now), session), login, now, TTL), null, 'sealed with the session ring')
  t.equal(await openTransaction(await sealTransaction(tx('s', now), createKeyRing(['another-secret-0123456789abcdefghijkl'], 'login')), login, now, TTL), null, 'another secret')
  t.equal(await openTransaction('hello', login, now, TTL), null, 'garbage')
  t.equal(await openTransaction('', login, now, TTL), null, 'empty')
})

t.test('payloads of the wrong shape are null', async (t) => {
  const now = fakeClock().now()
  const good = { t: 'tx', ...tx('s', now) } as Record<string, unknown>
  const shapes: Array<[string, unknown]> = [
    ['a session (no t: tx)', { v: 1, sub: 'alice', createdAt: now }],
    ['t is not tx', { ...good, t: 'session' }],
    ['no state', { ...good, state: undefined }],
    ['numeric nonce', { ...good, nonce: 1 }],
    ['no verifier', { ...good, verifier: undefined }],
    ['rd not a string', { ...good, rd: { href: '/' } }],
    ['createdAt a string', { ...good, createdAt: String(now) }],
    ['null', null],
    ['an array', [good]],
  ]
  for (const [label, payload] of shapes) t.equal(await openTransaction(await seal(payload, login), login, now, TTL), null, label)
  t.ok(await openTransaction(await seal(good, login), login, now, TTL), 'control: the good shape opens')
})

t.test('cap: with room left, nothing is evicted', async (t) => {
  const now = fakeClock().now()
  const existing: Array<[string, string]> = []
  for (const [state, age] of [['a', 3000], ['b', 2000]] as const) {
    existing.push([txCookieName(BASE, state), await sealTransaction(tx(state, now - age), login)])
  }
  t.strictSame(await transactionsToEvict(existing, login, now, TTL, 3), [], 'two of three: room for one more')
  t.strictSame(await transactionsToEvict([], login, now, TTL, 1), [])
})

t.test('cap: at the cap, the oldest live one makes room', async (t) => {
  const now = fakeClock().now()
  const ages: Array<[string, number]> = [['mid', 2000], ['oldest', 3000], ['newest', 1000]]
  const existing: Array<[string, string]> = []
  for (const [state, age] of ages) existing.push([txCookieName(BASE, state), await sealTransaction(tx(state, now - age), login)])
  t.strictSame(await transactionsToEvict(existing, login, now, TTL, 3), [txCookieName(BASE, 'oldest')])
  t.strictSame(await transactionsToEvict(existing, login, now, TTL, 2), [txCookieName(BASE, 'oldest'), txCookieName(BASE, 'mid')], 'oldest first')
  t.strictSame((await transactionsToEvict(existing, login, now, TTL, 1)).sort(), existing.map(([n]) => n).sort(), 'max 1: all go')
})

t.test('cap: expired and unreadable ones go first, then the oldest live ones', async (t) => {
  const now = fakeClock().now()
  const name = (s: string) => txCookieName(BASE, s)
  const existing: Array<[string, string]> = [
    [name('live-old'), await sealTransaction(tx('live-old', now - 5 * 60_000), login)],
    [name('expired'), await sealTransaction(tx('expired', now - TTL - 1), login)],
    [name('garbage'), 'not-a-transaction'],
    [name('live-new'), await sealTransaction(tx('live-new', now - 60_000), login)],
    [name('foreign'), await sealTransaction(tx('foreign', now), createKeyRing(['another-secret-0123456789abcdefghijkl'], 'login'))],
    [name('live-mid'), await sealTransaction(tx('live-mid', now - 3 * 60_000), login)],
  ]
  t.strictSame(
    await transactionsToEvict(existing, login, now, TTL, 5),
    [name('expired'), name('garbage'), name('foreign')],
    'the dead ones make enough room: no live one is dropped',
  )
  t.strictSame(
    await transactionsToEvict(existing, login, now, TTL, 3),
    [name('expired'), name('garbage'), name('foreign'), name('live-old')],
    'then the oldest live one',
  )
  t.strictSame(
    await transactionsToEvict(existing, login, now, TTL, 2),
    [name('expired'), name('garbage'), name('foreign'), name('live-old'), name('live-mid')],
    'then the next oldest',
  )
})
