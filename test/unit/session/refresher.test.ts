/**
 * The single-flight refresher (issue #3 point 3): concurrent callers on one session share
 * one RefreshFn call, a result is handed to callers still carrying the OLD refresh token, an IdP
 * outage is remembered for a short while (not asked again by every request), and a definitive end
 * (SESSION_ENDED) reaches every waiter. Time is the injected fake clock: nothing sleeps.
 */
import t from 'tap'
import { Refresher, type RefreshFn } from '../../../src/session/refresher.ts'
import { PortcullisError } from '../../../src/errors.ts'
import type { Session } from '../../../src/session/model.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'
import { fullSession } from '../../helpers/store-contract.ts'

interface Deferred<T> {
  promise: Promise<T>
  resolve(value: T): void
  reject(err: unknown): void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** A RefreshFn whose calls are recorded and settled by the test. */
function controlledRefresh(): { fn: RefreshFn; calls: Session[]; pending: Array<Deferred<Session>> } {
  const calls: Session[] = []
  const pending: Array<Deferred<Session>> = []
  const fn: RefreshFn = (session) => {
    calls.push(session)
    const d = deferred<Session>()
    pending.push(d)
    return d.promise
  }
  return { fn, calls, pending }
}

function rotated(session: Session, n: number, clock: FakeClock): Session {
  return { ...session, accessToken: `access-${n}`, refreshToken: `refresh-${n}`, accessExpiresAt: clock.now() + 300_000 }
}

const outage = (): PortcullisError => new PortcullisError('IDP_UNAVAILABLE', 'The identity provider is not available.')
const ended = (): PortcullisError => new PortcullisError('SESSION_ENDED', 'Your session has ended.')

/** Settle `promise` into a plain record, so a test can assert on results and rejections alike. */
async function settle<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; err: unknown }> {
  try {
    return { ok: true, value: await promise }
  } catch (err) {
    return { ok: false, err }
  }
}

t.test('single flight: N concurrent calls on one session make ONE RefreshFn call and share its result', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock })
  const session = fullSession(clock.now())
  const waiters = Array.from({ length: 25 }, () => refresher.refresh(session))
  // Copies of the session (as 25 requests would each open their own cookie) join the same flight.
  const copies = Array.from({ length: 25 }, () => refresher.refresh({ ...session, lastSeenAt: session.lastSeenAt + 1 }))
  t.equal(calls.length, 1, 'one call while the refresh is in flight')
  const next = rotated(session, 1, clock)
  pending[0]!.resolve(next)
  const results = await Promise.all([...waiters, ...copies])
  t.equal(results.length, 50)
  t.ok(results.every((r) => r === next), 'every caller got the one result')
  t.equal(calls.length, 1, 'still one call after it settled')
})

t.test('result cache keyed by the OLD refresh token: a late request with the old session gets the new tokens', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock, resultTtlMs: 10_000 })
  const session = fullSession(clock.now())
  const first = refresher.refresh(session)
  const next = rotated(session, 1, clock)
  pending[0]!.resolve(next)
  t.equal(await first, next)

  clock.advance(9_000)
  const late = await refresher.refresh({ ...session }) // another request, still carrying the old cookie
  t.equal(late, next, 'the cached result, not a replay of the rotated-away refresh token')
  t.equal(calls.length, 1, 'no second call')

  // The new session (rotated refresh token) is a different key: its own refresh calls again.
  const second = refresher.refresh(next)
  t.equal(calls.length, 2, 'the rotated token refreshes for itself')
  t.equal(calls[1]?.refreshToken, 'refresh-1', 'with the rotated refresh token')
  const after = rotated(next, 2, clock)
  pending[1]!.resolve(after)
  t.equal(await second, after)

  // Another session (another refresh token) never gets this one's tokens.
  const other = fullSession(clock.now(), { id: 'other-session', refreshToken: 'another-refresh-token' })
  void refresher.refresh(other)
  t.equal(calls.length, 3, 'another refresh token is another key')
  t.equal(calls[2]?.refreshToken, 'another-refresh-token')
  pending[2]!.resolve(rotated(other, 3, clock))
})

t.test('the result cache lives resultTtlMs on the injected clock', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock, resultTtlMs: 10_000 })
  const session = fullSession(clock.now())
  const first = refresher.refresh(session)
  pending[0]!.resolve(rotated(session, 1, clock))
  await first
  clock.advance(10_001)
  const again = settle(refresher.refresh(session))
  t.equal(calls.length, 2, 'past the result TTL the old token is tried again (the provider will judge it)')
  pending[1]?.reject(ended())
  const r = await again
  t.ok(!r.ok && r.err instanceof PortcullisError && r.err.code === 'SESSION_ENDED', 'and its answer is what the caller gets')
})

t.test('a session without a refresh token is keyed by its id', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock })
  const a = fullSession(clock.now(), { id: 'session-a', refreshToken: undefined })
  const b = fullSession(clock.now(), { id: 'session-b', refreshToken: undefined })
  const pa = refresher.refresh(a)
  const pa2 = refresher.refresh({ ...a })
  const pb = refresher.refresh(b)
  t.equal(calls.length, 2, 'one call per session id')
  pending[0]!.reject(ended())
  pending[1]?.reject(ended())
  for (const p of [pa, pa2, pb]) {
    const r = await settle(p)
    t.equal(r.ok, false)
  }
})

t.test('failure memory: an IDP_UNAVAILABLE is re-thrown without a call within failureTtlMs, and retried after', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock, failureTtlMs: 2_000, resultTtlMs: 10_000 })
  const session = fullSession(clock.now())

  const concurrent = [refresher.refresh(session), refresher.refresh(session), refresher.refresh(session)]
  t.equal(calls.length, 1)
  const err = outage()
  pending[0]!.reject(err)
  for (const p of concurrent) {
    const r = await settle(p)
    t.ok(!r.ok && r.err === err, 'every waiter gets the outage')
  }

  clock.advance(1_999)
  const remembered = await settle(refresher.refresh(session))
  t.ok(!remembered.ok && remembered.err === err, 'within the failure TTL: the remembered error')
  t.equal(calls.length, 1, 'and the provider is not asked again')

  clock.advance(2)
  const retried = refresher.refresh(session)
  t.equal(calls.length, 2, 'after the failure TTL the refresh is attempted again')
  const next = rotated(session, 1, clock)
  pending[1]!.resolve(next)
  t.equal(await retried, next, 'and its result is used')
  t.equal(await refresher.refresh(session), next, 'the success replaced the failure for the old token')
  t.equal(calls.length, 2)
})

t.test('SESSION_ENDED reaches every waiter, and is remembered for later callers with the same token', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock, failureTtlMs: 1_000 })
  const session = fullSession(clock.now())
  const waiters = Array.from({ length: 10 }, () => refresher.refresh(session))
  t.equal(calls.length, 1)
  pending[0]!.reject(ended())
  const results = await Promise.all(waiters.map(settle))
  t.ok(
    results.every((r) => !r.ok && r.err instanceof PortcullisError && r.err.code === 'SESSION_ENDED'),
    'all ten waiters see SESSION_ENDED',
  )
  clock.advance(5_000) // past the outage memory: an end is not an outage, it is not retried
  const later = await settle(refresher.refresh({ ...session }))
  t.ok(!later.ok && later.err instanceof PortcullisError && later.err.code === 'SESSION_ENDED', 'a later request with the same cookie ends too')
  t.equal(calls.length, 1, 'without replaying the dead refresh token')
})

t.test('an unexpected (non-Portcullis) error is not remembered: the next call tries again', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const refresher = new Refresher(fn, { clock })
  const session = fullSession(clock.now())
  const p = refresher.refresh(session)
  pending[0]!.reject(new Error('boom'))
  const r = await settle(p)
  t.ok(!r.ok && r.err instanceof Error && r.err.message === 'boom', 'the error is passed on')
  void refresher.refresh(session)
  t.equal(calls.length, 2, 'the in-flight entry was cleared')
  pending[1]!.resolve(rotated(session, 1, clock))
})

t.test('onOutcome: one ok / ended / failed per grant, joined for callers of one in flight, shared for a remembered result or failure', async (t) => {
  const clock = fakeClock()
  const { fn, pending } = controlledRefresh()
  const told: string[] = []
  const refresher = new Refresher(fn, { clock, failureTtlMs: 1_000, resultTtlMs: 1_000, onOutcome: (o) => told.push(o) })
  const count = () => Object.fromEntries(['ok', 'ended', 'failed', 'joined', 'shared'].map((o) => [o, told.filter((x) => x === o).length]))

  const a = fullSession(clock.now())
  const flight = [refresher.refresh(a), refresher.refresh(a), refresher.refresh(a)]
  pending[0]!.resolve(rotated(a, 1, clock))
  await Promise.all(flight)
  await refresher.refresh(a) // the old token again: the result cache
  t.strictSame(count(), { ok: 1, ended: 0, failed: 0, joined: 2, shared: 1 }, 'one grant, two joined it, one took its result')

  const b = { ...fullSession(clock.now()), refreshToken: 'refresh-b' }
  const failing = settle(refresher.refresh(b))
  pending[1]!.reject(outage())
  await failing
  await settle(refresher.refresh(b)) // remembered
  const c = { ...fullSession(clock.now()), refreshToken: 'refresh-c' }
  const ending = settle(refresher.refresh(c))
  pending[2]!.reject(ended())
  await ending
  t.strictSame(count(), { ok: 1, ended: 1, failed: 1, joined: 2, shared: 2 }, 'a failed grant, its remembered failure, an ended one')
})
