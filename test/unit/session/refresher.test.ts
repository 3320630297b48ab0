/**
 * The single-flight refresher (issue #3 point 3): concurrent callers on one session share
 * one RefreshFn call, a result is handed to callers still carrying the OLD refresh token, an IdP
 * outage is remembered for a short while (not asked again by every request), and a definitive end
 * (SESSION_ENDED) reaches every waiter. Time is the injected fake clock: nothing sleeps.
 */
import t from 'tap'
import {
  openOutcome,
  outcomeError,
  outcomeOf,
  outcomeTtlMs,
  REFRESH_FAILURE_TTL_MS,
  REFRESH_RESULT_TTL_MS,
  Refresher,
  sealOutcome,
  type RefreshCoordinator,
  type RefreshFn,
  type RefreshOutcome,
} from '../../../src/session/refresher.ts'
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

// ---------------------------------------------------------------------------------------------------
// Across replicas: the injected coordinator, and the sealed outcome it shares (src/redis/refresh-lock.ts)

t.test('a coordinator is asked once per flight, only for a session with a refresh token', async (t) => {
  const clock = fakeClock()
  const { fn, calls, pending } = controlledRefresh()
  const asked: Session[] = []
  const coordinator: RefreshCoordinator = {
    coordinate: (session, refresh) => {
      asked.push(session)
      return refresh()
    },
  }
  const refresher = new Refresher(fn, { clock, coordinator })
  const session = fullSession(clock.now())
  const waiters = Array.from({ length: 10 }, () => refresher.refresh(session))
  t.equal(asked.length, 1, 'one coordinated flight for ten callers')
  t.equal(asked[0]?.refreshToken, session.refreshToken, 'named by the old refresh token')
  pending[0]!.resolve(rotated(session, 1, clock))
  await Promise.all(waiters)
  t.equal(calls.length, 1)
  const none = { ...fullSession(clock.now()), id: 'no-refresh-token', refreshToken: undefined }
  const plain = refresher.refresh(none)
  t.equal(asked.length, 1, 'no refresh token: not coordinated')
  pending[1]!.reject(ended())
  await t.rejects(plain, { code: 'SESSION_ENDED' })
})

t.test('the coordinator answering for another replica: its result is used, the local RefreshFn is not called', async (t) => {
  const clock = fakeClock()
  const { fn, calls } = controlledRefresh()
  const session = fullSession(clock.now())
  const elsewhere = rotated(session, 7, clock)
  const refresher = new Refresher(fn, { clock, coordinator: { coordinate: async () => elsewhere } })
  t.equal(await refresher.refresh(session), elsewhere)
  t.equal(calls.length, 0, 'no grant here')
  t.equal(await refresher.refresh({ ...session }), elsewhere, 'and cached as a local result')
})

t.test('STORE_UNAVAILABLE from the coordinator is not remembered: the next call coordinates again', async (t) => {
  const clock = fakeClock()
  const { fn } = controlledRefresh()
  const session = fullSession(clock.now())
  let down = true
  let asked = 0
  const refresher = new Refresher(fn, {
    clock,
    coordinator: {
      coordinate: async () => {
        asked++
        if (down) throw new PortcullisError('STORE_UNAVAILABLE', 'Redis is down.')
        return rotated(session, 2, clock)
      },
    },
  })
  await t.rejects(refresher.refresh(session), { code: 'STORE_UNAVAILABLE' })
  down = false
  t.equal((await refresher.refresh(session)).refreshToken, 'refresh-2', 'Redis back: coordinated again at once')
  t.equal(asked, 2)
})

t.test('sealed outcome: opens only with the old refresh token, and only for the same session', async (t) => {
  const clock = fakeClock()
  const session = fullSession(clock.now()) as Session & { refreshToken: string }
  const next = rotated(session, 3, clock)
  const sealed = await sealOutcome({ kind: 'session', session: next }, session.refreshToken)
  t.notMatch(sealed, new RegExp(next.accessToken), 'the new tokens are not readable in it')
  t.notMatch(Buffer.from(sealed.split('.')[3] ?? '', 'base64url').toString('latin1'), /access-3|refresh-3/, 'not even in its ciphertext')
  t.strictSame(await openOutcome(sealed, session), { kind: 'session', session: next }, 'opens with the old refresh token')
  t.equal(await openOutcome(sealed, { ...session, refreshToken: `${session.refreshToken}x` }), null, 'not with another token')
  t.equal(await openOutcome(sealed, { ...session, id: 'another-session' }), null, 'not for another session id')
  t.equal(await openOutcome(sealed, { ...session, sub: 'someone-else' }), null, 'not for another subject')
  t.equal(await openOutcome(`${sealed.slice(0, -2)}AA`, session), null, 'tampered: nothing')
  t.equal(await openOutcome('garbage', session), null)

  const endedSealed = await sealOutcome({ kind: 'error', code: 'SESSION_ENDED', message: 'Your session has ended.' }, session.refreshToken)
  const opened = await openOutcome(endedSealed, session)
  t.strictSame(opened, { kind: 'error', code: 'SESSION_ENDED', message: 'Your session has ended.' })
  const err = outcomeError(opened as Extract<RefreshOutcome, { kind: 'error' }>)
  t.equal(err.code, 'SESSION_ENDED', 'as the same PortcullisError')
  t.equal(err.publicMessage, 'Your session has ended.')
})

t.test('which outcomes are shared, and for how long', async (t) => {
  const clock = fakeClock()
  const session = fullSession(clock.now())
  t.strictSame(outcomeOf({ ok: true, session }), { kind: 'session', session })
  t.strictSame(outcomeOf({ ok: false, err: ended() }), { kind: 'error', code: 'SESSION_ENDED', message: 'Your session has ended.' })
  t.strictSame(outcomeOf({ ok: false, err: outage() }), { kind: 'error', code: 'IDP_UNAVAILABLE', message: 'The identity provider is not available.' })
  t.equal(outcomeOf({ ok: false, err: new PortcullisError('NOT_READY', 'not yet') }), null, 'a local state: not shared')
  t.equal(outcomeOf({ ok: false, err: new PortcullisError('STORE_UNAVAILABLE', 'down') }), null)
  t.equal(outcomeOf({ ok: false, err: new Error('bug') }), null, 'not a PortcullisError: not shared')
  t.equal(outcomeTtlMs({ kind: 'session', session }), REFRESH_RESULT_TTL_MS)
  t.equal(outcomeTtlMs({ kind: 'error', code: 'SESSION_ENDED', message: '' }), REFRESH_RESULT_TTL_MS)
  t.equal(outcomeTtlMs({ kind: 'error', code: 'IDP_UNAVAILABLE', message: '' }), REFRESH_FAILURE_TTL_MS)
  // An error code outside the shared set never comes out of a sealed outcome.
  const sealed = await sealOutcome({ kind: 'error', code: 'ACCESS_DENIED', message: 'x' }, session.refreshToken as string)
  t.equal(await openOutcome(sealed, session as Session & { refreshToken: string }), null)
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
