/**
 * The in-memory revocation list (issue #3 point 8; src/session/revocations.ts): what `revokeSession`,
 * `revokeSid` and `revokeSubBefore` revoke and what they leave alone, that entries vanish after
 * `ttlMs` (as long as a session can live), and that the list is bounded (LRU).
 *
 * Time: lru-cache measures TTLs with `performance.now()` (its default `perf`), which
 * `createMemoryRevocations` does not let us inject. The TTL boundary tests therefore replace
 * `performance.now` for their duration (restored in teardown); lru-cache also caches its "now" for
 * `ttlResolution` (1 ms, cleared by a timer), so after moving time they poll, with a bound, instead of
 * asserting on the very next tick. One test uses real time with a tiny TTL and a bounded poll.
 */
import t from 'tap'
import type { Test } from 'tap'
import { createMemoryRevocations, parseRevocation, RevocationMirror, revocationMember, type RevocationList } from '../../../src/session/revocations.ts'
import { fakeClock } from '../../helpers/clock.ts'

type Subject = Parameters<RevocationList['isRevoked']>[0]

const T = 1_700_000_000_000

function session(over: Partial<Subject> = {}): Subject {
  return { id: 'id-1', sid: 'sid-1', sub: 'alice', createdAt: T, ...over }
}

/** Replace `performance.now` (what lru-cache reads) with a clock the test moves; restored at teardown. */
function fakePerformance(t: Test, start = 1_000): { advance(ms: number): void } {
  let now = start
  const own = Object.getOwnPropertyDescriptor(performance, 'now')
  Object.defineProperty(performance, 'now', { value: () => now, configurable: true, writable: true })
  t.teardown(() => {
    if (own === undefined) delete (performance as { now?: unknown }).now
    else Object.defineProperty(performance, 'now', own)
  })
  return {
    advance(ms: number) {
      now += ms
    },
  }
}

/** Poll until `list.isRevoked(s)` is `want`; false when it never is within `ms`. */
async function becomes(list: RevocationList, s: Subject, want: boolean, ms = 2_000): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if ((await list.isRevoked(s)) === want) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

t.test('an empty list revokes nothing', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  t.equal(await list.isRevoked(session()), false)
  t.equal(await list.isRevoked(session({ sid: undefined })), false)
})

t.test('revokeSession: that session id only', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  await list.revokeSession('id-1')
  t.equal(await list.isRevoked(session()), true, 'the session with that id')
  t.equal(await list.isRevoked(session({ sid: undefined, sub: 'bob', createdAt: T + 10_000 })), true, 'whatever its sid, sub or age')
  t.equal(await list.isRevoked(session({ id: 'id-2' })), false, 'another session of the same user and sid')
  t.equal(await list.isRevoked(session({ id: 'id-2', sid: 'id-1' })), false, 'a session whose sid equals the revoked id')
  t.equal(await list.isRevoked(session({ id: 'id-2', sub: 'id-1' })), false, 'a session whose sub equals the revoked id')
})

t.test('revokeSid: every session with that sid, nothing else', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  await list.revokeSid('sid-1')
  t.equal(await list.isRevoked(session()), true, 'the session with that sid')
  t.equal(await list.isRevoked(session({ id: 'id-2', createdAt: T + 3_600_000 })), true, 'another login in the same provider session, even a later one')
  t.equal(await list.isRevoked(session({ id: 'id-3', sub: 'bob' })), true, 'matched by sid alone')
  t.equal(await list.isRevoked(session({ id: 'id-4', sid: 'sid-2' })), false, 'the same user with another sid')
  t.equal(await list.isRevoked(session({ id: 'id-5', sid: undefined })), false, 'a session without sid')
  t.equal(await list.isRevoked(session({ id: 'sid-1', sid: 'sid-9' })), false, 'a session whose id equals the revoked sid')
  t.equal(await list.isRevoked(session({ id: 'id-6', sid: 'sid-9', sub: 'sid-1' })), false, 'a session whose sub equals the revoked sid')
})

t.test('revokeSubBefore: sessions of that sub created strictly before the cut-off', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  await list.revokeSubBefore('alice', T)
  t.equal(await list.isRevoked(session({ createdAt: T - 3_600_000 })), true, 'created an hour before')
  t.equal(await list.isRevoked(session({ createdAt: T - 1 })), true, 'created 1 ms before')
  t.equal(await list.isRevoked(session({ createdAt: T })), false, 'created at the cut-off')
  t.equal(await list.isRevoked(session({ createdAt: T + 1 })), false, 'created after')
  t.equal(await list.isRevoked(session({ sid: undefined, createdAt: T - 1 })), true, 'with or without sid')
  t.equal(await list.isRevoked(session({ sid: 'sid-other', createdAt: T - 1 })), true, 'whatever its sid')
  t.equal(await list.isRevoked(session({ sub: 'bob', createdAt: T - 1 })), false, 'another sub')
  t.equal(await list.isRevoked(session({ sub: 'alice2', createdAt: T - 1 })), false, 'a sub that merely starts the same')
  t.equal(await list.isRevoked(session({ id: 'x', sid: 'alice', sub: 'carol', createdAt: T - 1 })), false, 'a sid equal to the revoked sub')
})

t.test('revokeSubBefore: the cut-off only moves forward', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  await list.revokeSubBefore('alice', T)
  await list.revokeSubBefore('alice', T - 500)
  t.equal(await list.isRevoked(session({ createdAt: T - 1 })), true, 'an older token does not un-revoke sessions')
  await list.revokeSubBefore('alice', T + 500)
  t.equal(await list.isRevoked(session({ createdAt: T + 499 })), true, 'a newer token moves the cut-off forward')
  t.equal(await list.isRevoked(session({ createdAt: T + 500 })), false, 'to its own time')
})

t.test('the kinds combine: any matching entry revokes', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  await list.revokeSession('id-a')
  await list.revokeSid('sid-b')
  await list.revokeSubBefore('carol', T)
  t.equal(await list.isRevoked(session({ id: 'id-a', sid: 'x', sub: 'y' })), true, 'by id')
  t.equal(await list.isRevoked(session({ id: 'z', sid: 'sid-b', sub: 'y' })), true, 'by sid')
  t.equal(await list.isRevoked(session({ id: 'z', sid: 'x', sub: 'carol', createdAt: T - 1 })), true, 'by sub before')
  t.equal(await list.isRevoked(session({ id: 'z', sid: 'x', sub: 'carol', createdAt: T })), false, 'none matches')
})

t.test('entries live ttlMs, then vanish (every kind)', async (t) => {
  const clock = fakePerformance(t)
  const TTL = 12 * 3_600_000 // session.maxAge's default
  const list = createMemoryRevocations({ ttlMs: TTL })
  await list.revokeSession('id-1')
  await list.revokeSid('sid-2')
  await list.revokeSubBefore('carol', T)
  const byId = session({ id: 'id-1', sid: undefined, sub: 'x' })
  const bySid = session({ id: 'id-x', sid: 'sid-2', sub: 'x' })
  const bySub = session({ id: 'id-y', sid: undefined, sub: 'carol', createdAt: T - 1 })
  clock.advance(TTL)
  for (const [name, s] of [['id', byId], ['sid', bySid], ['sub', bySub]] as const) {
    t.ok(await becomes(list, s, true), `by ${name}: still revoked when ttlMs has just passed`)
  }
  clock.advance(1)
  for (const [name, s] of [['id', byId], ['sid', bySid], ['sub', bySub]] as const) {
    t.ok(await becomes(list, s, false), `by ${name}: gone 1 ms later`)
  }
})

t.test('revoking again restarts the entry’s lifetime', async (t) => {
  const clock = fakePerformance(t)
  const list = createMemoryRevocations({ ttlMs: 1_000 })
  await list.revokeSession('id-1')
  await list.revokeSubBefore('alice', T)
  clock.advance(800)
  await list.revokeSession('id-1')
  await list.revokeSubBefore('alice', T - 10) // an older token: the cut-off stays, the entry is renewed
  clock.advance(800)
  t.ok(await becomes(list, session({ sid: undefined }), true), 'by id: 1.6 s after the first, 0.8 s after the second')
  t.ok(await becomes(list, session({ id: 'id-2', sid: undefined, createdAt: T - 1 }), true), 'by sub: renewed, cut-off kept')
  clock.advance(201)
  t.ok(await becomes(list, session({ sid: undefined }), false), 'gone ttlMs after the last revocation')
  t.ok(await becomes(list, session({ id: 'id-2', sid: undefined, createdAt: T - 1 }), false))
})

t.test('entries vanish after ttlMs in real time too', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 25 })
  await list.revokeSid('sid-1')
  await list.revokeSession('id-2')
  await list.revokeSubBefore('alice', T)
  t.ok(await becomes(list, session({ id: 'id-9' }), false, 5_000), 'the sid entry expires')
  t.ok(await becomes(list, session({ id: 'id-2', sid: undefined }), false, 5_000), 'the id entry expires')
  t.ok(await becomes(list, session({ id: 'id-9', sid: undefined, createdAt: T - 1 }), false, 5_000), 'the sub entry expires')
})

t.test('bounded: past `max` entries the least recently used are forgotten', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000, max: 3 })
  await list.revokeSession('id-1')
  await list.revokeSession('id-2')
  await list.revokeSession('id-3')
  for (const id of ['id-1', 'id-2', 'id-3']) t.equal(await list.isRevoked(session({ id, sid: undefined })), true, `${id} kept while within max`)
  await list.revokeSession('id-4')
  t.equal(await list.isRevoked(session({ id: 'id-1', sid: undefined })), false, 'the oldest entry was evicted')
  for (const id of ['id-2', 'id-3', 'id-4']) t.equal(await list.isRevoked(session({ id, sid: undefined })), true, `${id} kept`)

  // One bound for every kind: sid and sub entries count too.
  await list.revokeSid('sid-a')
  await list.revokeSubBefore('carol', T)
  t.equal(await list.isRevoked(session({ id: 'id-2', sid: undefined })), false, 'id-2 evicted by a sid entry')
  t.equal(await list.isRevoked(session({ id: 'id-3', sid: undefined })), false, 'id-3 evicted by a sub entry')
  t.equal(await list.isRevoked(session({ id: 'id-4', sid: undefined })), true)
  t.equal(await list.isRevoked(session({ id: 'z', sid: 'sid-a' })), true)
  t.equal(await list.isRevoked(session({ id: 'z', sid: undefined, sub: 'carol', createdAt: T - 1 })), true)
})

t.test('bounded at scale: only the last `max` of many revocations are kept', async (t) => {
  const max = 1_000
  const list = createMemoryRevocations({ ttlMs: 60_000, max })
  for (let i = 0; i < 5 * max; i++) await list.revokeSession(`id-${i}`)
  let kept = 0
  for (let i = 0; i < 5 * max; i++) if (await list.isRevoked(session({ id: `id-${i}`, sid: undefined }))) kept++
  t.equal(kept, max, 'exactly max entries')
  t.equal(await list.isRevoked(session({ id: `id-${5 * max - 1}`, sid: undefined })), true, 'the newest is kept')
  t.equal(await list.isRevoked(session({ id: `id-${4 * max}`, sid: undefined })), true, 'the oldest of the last max is kept')
  t.equal(await list.isRevoked(session({ id: `id-${4 * max - 1}`, sid: undefined })), false, 'the one before it is gone')
})

// ---------------------------------------------------------------------------------------------------
// The parts the Redis-backed list shares (src/redis/revocations.ts): members, the mirror's merge,
// what a list hands to the next one on reload.

t.test('members: each kind as a string and back; a sub may hold ":"; anything else is no revocation', async (t) => {
  const cases = [
    { kind: 'id', value: 'abc_DEF-123' },
    { kind: 'sid', value: 'provider:session/7' },
    { kind: 'sub', value: 'alice', before: T },
    { kind: 'sub', value: 'urn:example:user:42', before: 1 },
  ] as const
  for (const r of cases) t.strictSame(parseRevocation(revocationMember(r)), r, revocationMember(r))
  t.equal(revocationMember({ kind: 'sub', value: 'a:b', before: 5 }), 'sub:a:b:5', 'the cut-off last')
  for (const bad of ['', 'id:', 'sid:', 'sub:', 'sub:alice', 'sub:alice:', 'sub::5', 'sub:alice:x5', 'sub:alice:-5', 'sub:alice:1.5', 'other:x', 'ID:x']) {
    t.equal(parseRevocation(bad), null, JSON.stringify(bad))
  }
})

t.test('mirror: add is a merge (news only once; a sub keeps its latest cut-off; the expiry only moves later)', async (t) => {
  const clock = fakeClock(T)
  const mirror = new RevocationMirror({ clock })
  t.equal(mirror.add({ kind: 'id', value: 'id-1' }, T + 1_000), true, 'new: news')
  t.equal(mirror.add({ kind: 'id', value: 'id-1' }, T + 1_000), false, 'again: no news')
  t.equal(mirror.add({ kind: 'id', value: 'id-1' }, T + 500), false, 'an earlier expiry changes nothing')
  t.equal(mirror.add({ kind: 'sub', value: 'alice', before: T }, T + 1_000), true)
  t.equal(mirror.add({ kind: 'sub', value: 'alice', before: T - 10 }, T + 2_000), false, 'an older cut-off is no news')
  t.equal(mirror.has(session({ id: 'x', sid: undefined, createdAt: T - 1 })), true, 'the later cut-off holds')
  t.equal(mirror.add({ kind: 'sub', value: 'alice', before: T + 100 }, T + 2_000), true, 'a later cut-off is news')
  t.equal(mirror.has(session({ id: 'x', sid: undefined, createdAt: T + 50 })), true)
  t.equal(mirror.add({ kind: 'sid', value: 's' }, T), false, 'an entry expired already is ignored')
  t.equal(mirror.has(session({ id: 'x', sid: 's', sub: 'bob' })), false)
  t.strictSame(new Map(mirror.entries()), new Map([['id:id-1', T + 1_000], [`sub:alice:${T + 100}`, T + 2_000]]), 'entries: members and expiries')
  clock.advance(1_001)
  t.strictSame(mirror.entries().map(([m]) => m), [`sub:alice:${T + 100}`], 'the expired one is gone on the injected clock')
  t.equal(mirror.has(session({ sid: undefined, sub: 'bob' })), false, 'and no longer revokes')
})

t.test('a list seeded with another list\'s entries (a reload) revokes what the other did', async (t) => {
  const first = createMemoryRevocations({ ttlMs: 60_000 })
  await first.revokeSession('id-1')
  await first.revokeSid('sid-9')
  await first.revokeSubBefore('carol', T)
  const next = createMemoryRevocations({ ttlMs: 60_000, seed: first.entries() })
  t.equal(next.ready, true)
  t.equal(await next.isRevoked(session()), true, 'by id')
  t.equal(await next.isRevoked(session({ id: 'x', sid: 'sid-9', sub: 'bob' })), true, 'by sid')
  t.equal(await next.isRevoked(session({ id: 'x', sid: undefined, sub: 'carol', createdAt: T - 1 })), true, 'by sub')
  t.equal(await next.isRevoked(session({ id: 'x', sid: undefined, sub: 'carol', createdAt: T })), false, 'not after the cut-off')
  t.equal(next.entries().length, 3)
})

t.test('listeners: told of every revocation; a throwing one does not stop the others; unsubscribe stops it', async (t) => {
  const list = createMemoryRevocations({ ttlMs: 60_000 })
  let calls = 0
  list.subscribe(() => {
    throw new Error('listener failure')
  })
  const stop = list.subscribe(() => calls++)
  await list.revokeSession('a')
  await list.revokeSid('b')
  t.equal(calls, 2)
  stop()
  await list.revokeSubBefore('c', T)
  t.equal(calls, 2, 'not after unsubscribe')
})
