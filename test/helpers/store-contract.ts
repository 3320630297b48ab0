/**
 * One contract suite for the {@link SessionStore} interface (after oauth2-proxy
 * `pkg/sessions/tests/session_store_tests.go` `RunSessionStoreTests`). The cookie store runs it today;
 * the memory and Redis stores run the same suite when they arrive, so every store keeps the promises
 * of `src/session/store.ts`:
 *
 * - `save()` returns a cookie value that `load()` turns back into the same session, every field;
 * - `load()` returns null, and never throws, for anything that is not a live session of this store:
 *   another store's value (other secret), garbage, empty, truncated or tampered values, and sessions
 *   past their absolute lifetime or idle timeout;
 * - `clear()` never throws, and `load()` after it never throws;
 * - `update()` writes a loaded state's next state once however many callers ask at the same time, a
 *   superseded state gets the newest one without another write, a failed write is not remembered, and
 *   the value a client kept loads the newest state (its idle clock included).
 *
 * Time comes from a fake clock the suite hands to `makeStore`, so nothing sleeps.
 */
import type { Test } from 'tap'
import type { Clock } from '../../src/clock.ts'
import type { Session, SessionLimits } from '../../src/session/model.ts'
import type { LoadedSession, SessionStore } from '../../src/session/store.ts'
import { fakeClock, type FakeClock } from './clock.ts'

/** What the suite asks of a store it builds: its secrets and the lifetimes to enforce. */
export interface StoreContractOptions {
  readonly secrets: readonly string[]
  readonly limits: SessionLimits
}

export type MakeStore = (clock: Clock, opts: StoreContractOptions) => SessionStore | Promise<SessionStore>

export const CONTRACT_SECRET = 'store-contract-secret-0123456789abcdef'
export const CONTRACT_OTHER_SECRET = 'store-contract-OTHER-secret-9876543210zyx'
/** Idle timeout shorter than the absolute lifetime so each can be hit on its own. */
export const CONTRACT_LIMITS: SessionLimits = { maxAge: 12 * 3600_000, idleTimeout: 2 * 3600_000 }

const T0 = Date.UTC(2030, 0, 15, 9, 0, 0)

/** A session with every field set, claims of several JSON types and non-ASCII text. */
export function fullSession(now: number, overrides: Partial<Session> = {}): Session {
  return {
    v: 1,
    id: 'session-id-full-0123456789',
    sub: 'user-1234',
    sid: 'sid-abcdef',
    claims: {
      sub: 'user-1234',
      email: 'zoë@example.com',
      email_verified: true,
      name: 'Zoë Ångström 山田',
      preferred_username: 'zoe',
      groups: ['admins', 'engineering', 'on-call'],
      acr: 'urn:mace:incommon:iap:silver',
      amr: ['pwd', 'otp'],
      auth_time: Math.floor(now / 1000) - 30,
      nested: { a: [1, 2, { b: null }], c: 'd' },
      zero: 0,
      empty: '',
    },
    idToken: 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMzQifQ.c2lnbmF0dXJl',
    accessToken: 'access-token-value-1234567890',
    refreshToken: 'refresh-token-value-0987654321',
    accessExpiresAt: now + 300_000,
    authTime: now - 30_000,
    createdAt: now,
    lastSeenAt: now,
    ...overrides,
  }
}

/** A session with every optional field absent. */
export function minimalSession(now: number): Session {
  return {
    v: 1,
    id: 'session-id-minimal',
    sub: 'minimal',
    sid: undefined,
    claims: {},
    idToken: 'id',
    accessToken: 'at',
    refreshToken: undefined,
    accessExpiresAt: now + 60_000,
    authTime: undefined,
    createdAt: now,
    lastSeenAt: now,
  }
}

/** Values no store may accept. */
export const GARBAGE: readonly string[] = [
  'hello',
  'null',
  '{}',
  '[]',
  'true',
  '0',
  '.',
  '....',
  'a.b.c.d.e',
  'a..b.c.d',
  'eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA',
  'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.',
  '%00%01',
  '\u0000',
  ' ',
  'zoë',
  'x'.repeat(100),
  'A'.repeat(5000),
  `${'A'.repeat(40)}..${'A'.repeat(16)}.${'A'.repeat(3000)}.${'A'.repeat(22)}`,
  'x'.repeat(1024 * 1024),
]

/** Replace the character at `i` with another base64url character. */
function flipAt(value: string, i: number): string {
  const c = value[i] as string
  const replacement = c === 'A' ? 'B' : 'A'
  return value.slice(0, i) + replacement + value.slice(i + 1)
}

/**
 * Positions where changing one character must change the decoded bytes. The last character of a
 * base64url segment may carry unused padding bits (a 16-byte tag is 22 characters, 4 bits unused),
 * so "A" → "B" there can decode to the same bytes: those positions, and the "." separators, are skipped.
 */
function flippablePositions(value: string): number[] {
  const out: number[] = []
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '.' || value[i + 1] === '.' || i === value.length - 1) continue
    out.push(i)
  }
  return out
}

export function runStoreContract(t: Test, name: string, makeStore: MakeStore): Promise<void> {
  const options: StoreContractOptions = { secrets: [CONTRACT_SECRET], limits: CONTRACT_LIMITS }
  const setup = async (): Promise<{ clock: FakeClock; store: SessionStore }> => {
    const clock = fakeClock(T0)
    return { clock, store: await makeStore(clock, options) }
  }

  return t.test(`SessionStore contract: ${name}`, async (t) => {
    t.test('save then load round-trips every field', async (t) => {
      const { clock, store } = await setup()
      const session = fullSession(clock.now())
      const value = await store.save(session)
      t.type(value, 'string')
      t.ok(value.length > 0, 'a non-empty cookie value')
      const loaded = await store.load(value)
      t.ok(loaded, 'loads')
      t.strictSame(loaded?.session, session, 'every field, same types')
      t.equal(loaded?.renew, false, 'a fresh value needs no re-write')
      t.strictSame(await store.load(value), loaded, 'loading twice gives the same answer')
    })

    t.test('absent optional fields stay absent', async (t) => {
      const { clock, store } = await setup()
      const session = minimalSession(clock.now())
      const loaded = await store.load(await store.save(session))
      t.ok(loaded, 'loads')
      const s = loaded?.session
      t.equal(s?.sid, undefined)
      t.equal(s?.refreshToken, undefined)
      t.equal(s?.authTime, undefined)
      t.strictSame(s?.claims, {})
      for (const key of ['v', 'sub', 'idToken', 'accessToken', 'accessExpiresAt', 'createdAt', 'lastSeenAt'] as const) {
        t.equal(s?.[key], session[key], key)
      }
    })

    t.test('two sessions give two values, each loading its own', async (t) => {
      const { clock, store } = await setup()
      // Two logins are two sessions: each has its own random id (a server-side store keys on it).
      const a = fullSession(clock.now(), { id: 'session-id-a-0123456789', sub: 'a', claims: { sub: 'a' } })
      const b = fullSession(clock.now(), { id: 'session-id-b-0123456789', sub: 'b', claims: { sub: 'b' } })
      const va = await store.save(a)
      const vb = await store.save(b)
      t.not(va, vb)
      t.equal((await store.load(va))?.session.sub, 'a')
      t.equal((await store.load(vb))?.session.sub, 'b')
    })

    t.test('a value from a store with another secret does not load', async (t) => {
      const { clock, store } = await setup()
      const other = await makeStore(clock, { ...options, secrets: [CONTRACT_OTHER_SECRET] })
      const mine = await store.save(fullSession(clock.now()))
      const theirs = await other.save(fullSession(clock.now()))
      t.equal(await store.load(theirs), null, 'theirs → null here')
      t.equal(await other.load(mine), null, 'mine → null there')
      t.ok(await store.load(mine), 'mine still loads here')
    })

    t.test('garbage and empty values are null, never an exception', async (t) => {
      const { store } = await setup()
      t.equal(await store.load(''), null, 'empty')
      for (const value of GARBAGE) {
        t.equal(await store.load(value), null, `garbage ${JSON.stringify(value.slice(0, 40))}${value.length > 40 ? `… (${value.length})` : ''}`)
      }
    })

    t.test('truncated values are null', async (t) => {
      const { clock, store } = await setup()
      const value = await store.save(fullSession(clock.now()))
      const cuts = new Set([1, 2, 10, Math.floor(value.length / 4), Math.floor(value.length / 2), value.length - 23, value.length - 2, value.length - 1])
      for (const cut of cuts) {
        if (cut <= 0 || cut >= value.length) continue
        t.equal(await store.load(value.slice(0, cut)), null, `first ${cut} of ${value.length}`)
        t.equal(await store.load(value.slice(value.length - cut)), null, `last ${cut} of ${value.length}`)
      }
      t.equal(await store.load(`${value}A`), null, 'one character appended')
      t.equal(await store.load(`${value}.`), null, 'a separator appended')
    })

    t.test('any one changed character makes the value null', async (t) => {
      const { clock, store } = await setup()
      const value = await store.save(fullSession(clock.now()))
      const positions = flippablePositions(value)
      t.ok(positions.length > 0)
      const accepted: number[] = []
      for (const i of positions) {
        if ((await store.load(flipAt(value, i))) !== null) accepted.push(i)
      }
      t.strictSame(accepted, [], `all ${positions.length} one-character changes refused`)
      t.ok(await store.load(value), 'the original still loads')
    })

    t.test('a session past its idle timeout is null', async (t) => {
      const { clock, store } = await setup()
      const value = await store.save(fullSession(clock.now()))
      clock.advance(CONTRACT_LIMITS.idleTimeout - 1)
      t.ok(await store.load(value), 'just inside the idle timeout')
      clock.advance(1)
      t.equal(await store.load(value), null, 'at the idle timeout')
      clock.advance(CONTRACT_LIMITS.maxAge)
      t.equal(await store.load(value), null, 'long after')
    })

    t.test('a session past its absolute lifetime is null even when recently seen', async (t) => {
      const { clock, store } = await setup()
      const now = clock.now()
      const session = fullSession(now, { createdAt: now - CONTRACT_LIMITS.maxAge + 60_000, lastSeenAt: now })
      const value = await store.save(session)
      t.ok(await store.load(value), 'one minute of life left')
      clock.advance(59_999)
      t.ok(await store.load(value), 'one millisecond left')
      clock.advance(1)
      t.equal(await store.load(value), null, 'at maxAge (idle timeout still far away)')
    })

    t.test('a session saved already expired never loads', async (t) => {
      const { clock, store } = await setup()
      const now = clock.now()
      const idle = fullSession(now, { createdAt: now - 60_000, lastSeenAt: now - CONTRACT_LIMITS.idleTimeout })
      const old = fullSession(now, { createdAt: now - CONTRACT_LIMITS.maxAge, lastSeenAt: now })
      t.equal(await store.load(await store.save(idle)), null, 'idle')
      t.equal(await store.load(await store.save(old)), null, 'too old')
    })

    t.test('clear never throws, and load after clear never throws', async (t) => {
      const { clock, store } = await setup()
      const value = await store.save(fullSession(clock.now()))
      await t.resolves(store.clear(value), 'clear a live value')
      await t.resolves(store.clear(value), 'clear it twice')
      await t.resolves(store.clear(''), 'clear an empty value')
      await t.resolves(store.clear('hello'), 'clear garbage')
      const after = await store.load(value)
      const kind: string = store.kind
      if (kind === 'cookie') {
        // The cookie store holds nothing server-side: clear() cannot revoke a value a client kept, so
        // the same value re-opens (its cookies are cleared on the reply instead). Ending such a
        // session for good is the revocation list's job (`session/revocations.ts`, by session id, sid
        // or sub), which the pipeline checks after the store opened the value; not the store's.
        t.ok(after, 'cookie store: a cleared value that is sent again re-opens')
        t.equal(after?.session.sub, 'user-1234')
      } else {
        t.equal(after, null, 'server-side store: a cleared session is gone')
      }
    })

    t.test('update: one write per state, shared; the kept value loads the newest state', async (t) => {
      const { clock, store } = await setup()
      const session = fullSession(clock.now())
      const value = await store.save(session)
      const loaded = await store.load(value)
      if (loaded === null) throw new Error('a saved session must load')
      clock.advance(3600_000)
      let calls = 0
      const change = async (s: Session): Promise<Session> => {
        calls++
        return { ...s, lastSeenAt: clock.now(), accessToken: `access-token-${calls}` }
      }
      const results = (await Promise.all(Array.from({ length: 20 }, () => store.update(loaded, change)))).map((r) => r as LoadedSession)
      t.equal(calls, 1, 'twenty concurrent updates of one state: one write')
      t.equal(new Set(results.map((r) => r.value)).size, 1, 'one value for all of them')
      const next = results[0]
      t.equal(next?.session.accessToken, 'access-token-1')
      const again = await store.load(value)
      t.equal(again?.session.accessToken, 'access-token-1', 'the kept value loads the new state')
      t.equal(again?.value, next?.value, 'and names the value that holds it now')
      t.equal((await store.update(loaded, change))?.session.accessToken, 'access-token-1', 'a superseded state: the newest one')
      t.equal(calls, 1, 'without another write')
      clock.advance(CONTRACT_LIMITS.idleTimeout - 1)
      t.ok(await store.load(value), 'the idle clock counts from the update, also for the kept value')
      clock.advance(1)
      t.equal(await store.load(value), null, 'and ends idleTimeout after it')
    })

    t.test('update: a failed write reaches its callers and is not remembered', async (t) => {
      const { clock, store } = await setup()
      const value = await store.save(fullSession(clock.now()))
      const loaded = await store.load(value)
      if (loaded === null) throw new Error('a saved session must load')
      const failing = () => Promise.reject(new Error('provider down'))
      const both = await Promise.allSettled([store.update(loaded, failing), store.update(loaded, failing)])
      t.same(both.map((r) => r.status), ['rejected', 'rejected'], 'both callers see the failure')
      const ok = await store.update(loaded, (s) => ({ ...s, accessToken: 'after-the-outage' }))
      t.equal(ok?.session.accessToken, 'after-the-outage', 'the next write runs')
    })
  }).then(() => undefined)
}
