/**
 * The memory store (issue #3 point 9): the store contract, then what only a server-side
 * store promises: the cookie holds a short ticket `<id>.<key>` and nothing of the session; a save with
 * the current ticket updates the entry in place (same value, no cookie to rewrite) and the next load
 * sees it; the entry opens only with its own key; clear, the LRU bound and the entry TTL make a session
 * gone; and another instance (a restart) knows nothing. Time comes from a fake clock; nothing sleeps.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { createMemoryStore } from '../../../src/session/memory-store.ts'
import type { Session } from '../../../src/session/model.ts'
import type { SessionStore } from '../../../src/session/store.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'
import { CONTRACT_LIMITS, fullSession, runStoreContract } from '../../helpers/store-contract.ts'

void runStoreContract(t, 'memory store', (clock, { limits }) => createMemoryStore({ limits, clock, maxSessions: 1000 }))

// Memory-store specifics beyond the contract.

const T0 = Date.UTC(2030, 0, 15, 9, 0, 0)
/** `<id>.<key>`: the session id, and 32 random bytes in base64url (43 characters, no padding). */
const TICKET = /^([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$/

function setup(maxSessions = 1000): { clock: FakeClock; store: SessionStore } {
  const clock = fakeClock(T0)
  return { clock, store: createMemoryStore({ limits: CONTRACT_LIMITS, clock, maxSessions }) }
}

/** Session number `i`: its own id (as every login has), sub and claims. */
function nth(now: number, i: number): Session {
  const n = String(i).padStart(4, '0')
  return fullSession(now, { id: `session-${n}-0123456789abcdef`, sub: `user-${n}`, claims: { sub: `user-${n}`, email: `user-${n}@example.com` } })
}

function parts(value: string): { id: string; key: string } {
  const m = TICKET.exec(value)
  if (m === null) throw new Error(`not a ticket: ${value}`)
  return { id: m[1] as string, key: m[2] as string }
}

/** Every string in a JSON-ish value (claims, tokens), recursively. */
function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(strings)
  if (typeof value === 'object' && value !== null) return Object.values(value).flatMap(strings)
  return []
}

t.test('the cookie value is a short ticket <id>.<key>: no JWE, no claim or token text', async (t) => {
  const { clock, store } = setup()
  const session = fullSession(clock.now())
  const value = await store.save(session)
  t.ok(value.length < 100, `short: ${value.length} characters`)
  t.match(value, TICKET, '<id>.<key>')
  t.equal(value.split('.').length, 2, 'two parts, not the five of a compact JWE')
  t.notOk(value.startsWith('eyJ'), 'no JOSE header')
  const { id, key } = parts(value)
  t.equal(id, session.id, 'the id is the session id')
  t.equal(Buffer.from(key, 'base64url').length, 32, 'a 256-bit key')

  const { id: _id, ...rest } = session
  const secrets = strings(rest).filter((s) => s.length >= 3)
  t.ok(secrets.length >= 10, `${secrets.length} claim and token strings checked`)
  const keyBytes = Buffer.from(key, 'base64url').toString('latin1')
  const leaked = secrets.filter((s) => value.includes(s) || keyBytes.includes(s) || value.includes(Buffer.from(s).toString('base64url')))
  t.strictSame(leaked, [], 'no claim, token or sub in the ticket, plain or base64url')

  const other = await store.save(nth(clock.now(), 1))
  t.not(parts(other).key, key, 'each session has its own random key')
})

t.test('save with the current ticket updates in place: the same value, and the next load sees the update', async (t) => {
  const { clock, store } = setup()
  const session = fullSession(clock.now())
  const value = await store.save(session)
  const first = await store.load(value)
  t.strictSame(first?.session, session, 'loaded (and now in the open cache)')

  clock.advance(280_000)
  const refreshed: Session = {
    ...session,
    accessToken: 'access-token-AFTER-refresh',
    refreshToken: 'refresh-token-AFTER-refresh',
    idToken: 'id-token-AFTER-refresh',
    accessExpiresAt: clock.now() + 300_000,
    lastSeenAt: clock.now(),
  }
  t.equal((await store.update(first!, () => refreshed))?.value, value, 'the same ticket: no cookie to rewrite')
  const loaded = await store.load(value)
  t.strictSame(loaded?.session, refreshed, 'the updated session, not the cached stale one')
  t.equal(loaded?.renew, false)

  clock.advance(60_000)
  const again: Session = { ...refreshed, accessToken: 'access-token-SECOND-refresh', lastSeenAt: clock.now() }
  t.equal((await store.update(loaded!, () => again))?.value, value, 'a second update: still the same ticket')
  t.equal((await store.load(value))?.session.accessToken, 'access-token-SECOND-refresh')
  t.equal((await store.load(value))?.session.lastSeenAt, clock.now(), 'the idle clock moved with it')
})

t.test('update: once per loaded state; a superseded state gets the newest one, and change is not called', async (t) => {
  const { clock, store } = setup()
  const session = nth(clock.now(), 1)
  const value = await store.save(session)
  const loaded = (await store.load(value))!
  let calls = 0
  const change = async (s: Session): Promise<Session> => {
    calls++
    return { ...s, accessToken: `access-token-update-${calls}` }
  }
  const results = await Promise.all(Array.from({ length: 10 }, () => store.update(loaded, change)))
  t.equal(calls, 1, 'ten concurrent updates of one state: one write')
  t.same(new Set(results.map((r) => r?.session.accessToken)), new Set(['access-token-update-1']), 'all of them get it')
  const later = await store.update(loaded, change)
  t.equal(calls, 1, 'the old state again: no second write')
  t.equal(later?.session.accessToken, 'access-token-update-1', 'the newest state instead')
  await t.rejects(store.update({ ...loaded, value: 'not-a-ticket' }, change), 'a value that is no ticket of this store')
  const failing = (await store.load(value))!
  await t.rejects(store.update(failing, async () => Promise.reject(new Error('provider down'))), /provider down/)
  t.equal((await store.update(failing, change))?.session.accessToken, 'access-token-update-2', 'a failed write is not remembered: the next one runs')
})

t.test('a save without the current ticket re-keys the entry: the old ticket never opens the new or the old session', async (t) => {
  const { clock, store } = setup()
  const session = fullSession(clock.now())
  const old = await store.save(session)
  t.ok(await store.load(old), 'loaded (and now in the open cache)')
  const renewed = await store.save({ ...session, accessToken: 'access-token-NEW' })
  t.not(renewed, old, 'a new key')
  t.equal(parts(renewed).id, parts(old).id, 'for the same entry')
  t.equal((await store.load(renewed))?.session.accessToken, 'access-token-NEW')
  t.equal(await store.load(old), null, 'one entry per session: the old key opens nothing, no stale copy either')
})

t.test('concurrent load and in-place update: the load after both sees the updated session', async (t) => {
  const { clock, store } = setup()
  const stale: number[] = []
  for (let i = 0; i < 40; i++) {
    const session = nth(clock.now(), i)
    const value = await store.save(session)
    const updated: Session = { ...session, accessToken: `access-token-updated-${i}` }
    // Both start before either finishes, in both orders: the open cache must not keep what the load
    // opened from the entry the save has just replaced.
    const loaded = (await store.load(value))!
    const [saved] =
      i % 2 === 0 ? await Promise.all([store.update(loaded, () => updated), store.load(value)]) : (await Promise.all([store.load(value), store.update(loaded, () => updated)])).reverse()
    t.equal((saved as { value: string }).value, value)
    if ((await store.load(value))?.session.accessToken !== updated.accessToken) stale.push(i)
  }
  t.strictSame(stale, [], 'never the session from before the save')
})

t.test('a ticket with the right id but another key is null', async (t) => {
  const { clock, store } = setup()
  const a = nth(clock.now(), 1)
  const b = nth(clock.now(), 2)
  const va = parts(await store.save(a))
  const vb = parts(await store.save(b))
  t.equal(await store.load(`${va.id}.${randomBytes(32).toString('base64url')}`), null, 'a random key')
  t.equal(await store.load(`${va.id}.${vb.key}`), null, 'the key of another live session')
  t.equal(await store.load(`${vb.id}.${va.key}`), null, 'and the other way round')
  t.equal(await store.load(`${va.id}.${'A'.repeat(43)}`), null, 'an all-zero key')
  t.equal(await store.load(`${'x'.repeat(va.id.length)}.${va.key}`), null, 'the right key under an unknown id')
  t.equal((await store.load(`${va.id}.${va.key}`))?.session.sub, 'user-0001', 'the real ticket still loads')
  t.equal((await store.load(`${vb.id}.${vb.key}`))?.session.sub, 'user-0002')
})

t.test('a tampered key or id is null', async (t) => {
  const { clock, store } = setup()
  const value = await store.save(fullSession(clock.now()))
  const { id, key } = parts(value)
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
  const accepted: string[] = []
  // The last key character carries 2 unused bits ("A" → "B" there decodes to the same bytes): skipped.
  for (let i = 0; i < key.length - 1; i++) if ((await store.load(`${id}.${flip(key, i)}`)) !== null) accepted.push(`key[${i}]`)
  for (let i = 0; i < id.length; i++) if ((await store.load(`${flip(id, i)}.${key}`)) !== null) accepted.push(`id[${i}]`)
  t.strictSame(accepted, [], `all ${key.length - 1 + id.length} one-character changes refused`)
  for (const bad of [`${id}.${key.slice(0, -1)}`, `${id}.${key}A`, `${id}.${key.slice(0, -1)}=`, `${id}.${key.slice(0, -1)}+`, `${id}..${key}`, `${id}.${key}.x`, key, id]) {
    t.equal(await store.load(bad), null, JSON.stringify(bad.replace(key, 'KEY').replace(id, 'ID')))
  }
  t.ok(await store.load(value), 'the original still loads')
})

t.test('clear: the ticket is null afterwards, and no other session is touched', async (t) => {
  const { clock, store } = setup()
  const a = nth(clock.now(), 1)
  const b = nth(clock.now(), 2)
  const c = nth(clock.now(), 3)
  const va = await store.save(a)
  const vb = await store.save(b)
  const vc = await store.save(c)
  t.ok(await store.load(va), 'loaded (and now in the open cache)')
  await store.clear(va)
  t.equal(await store.load(va), null, 'cleared')
  t.equal(await store.load(va), null, 'and stays cleared')
  t.strictSame((await store.load(vb))?.session, b, 'the other session lives on')
  // Session c was never loaded, so no opened copy could hide a deleted entry.
  const { id } = parts(vc)
  await store.clear(`${id}.${randomBytes(32).toString('base64url')}`)
  t.strictSame((await store.load(vc))?.session, c, 'the id with a wrong key clears nothing: only the whole ticket ends a session')
})

t.test('LRU bound: with maxSessions 100, 150 sessions keep the 100 most recently used', async (t) => {
  const { clock, store } = setup(100)
  const now = clock.now()
  const values: string[] = []
  for (let i = 0; i < 10; i++) {
    values.push(await store.save(nth(now, i)))
    t.ok(await store.load(values[i] as string), `session ${i} in use`)
  }
  for (let i = 10; i < 100; i++) values.push(await store.save(nth(now, i)))
  // Sessions 0–9 are used again (their opened copies are in the open cache): a use all the same.
  for (let i = 0; i < 10; i++) t.ok(await store.load(values[i] as string), `session ${i} used again`)
  for (let i = 100; i < 150; i++) values.push(await store.save(nth(now, i)))

  const loads = async (from: number, to: number) => {
    const out: number[] = []
    for (let i = from; i < to; i++) if ((await store.load(values[i] as string)) !== null) out.push(i)
    return out
  }
  t.strictSame(await loads(10, 60), [], 'sessions 10–59, the least recently used, are gone')
  t.strictSame((await loads(60, 150)).length, 90, 'sessions 60–149 load')
  t.strictSame(await loads(0, 10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'sessions 0–9, saved first but used since, load')
  t.equal((await loads(0, 150)).length, 100, 'exactly maxSessions sessions are kept')
})

t.test('LRU bound: an evicted session does not load, even one opened a moment ago', async (t) => {
  const { clock, store } = setup(100)
  const now = clock.now()
  const first = await store.save(nth(now, 0))
  t.ok(await store.load(first), 'opened (and now in the open cache)')
  for (let i = 1; i <= 100; i++) await store.save(nth(now, i))
  t.equal(await store.load(first), null, 'the 101st session evicted the least recently used one')
})

t.test('entry lifetime: a session past maxAge is null, even when active', async (t) => {
  const { clock, store } = setup()
  const session = fullSession(clock.now())
  const value = await store.save(session)
  // Active every hour (well within the 2 h idle timeout): only the absolute lifetime ends it.
  let current = session
  for (let h = 1; h < CONTRACT_LIMITS.maxAge / 3600_000; h++) {
    clock.advance(3600_000)
    const loaded = await store.load(value)
    t.ok(loaded, `${h} h`)
    current = { ...current, lastSeenAt: clock.now() }
    const next = current
    t.equal((await store.update(loaded!, () => next))?.value, value)
  }
  clock.set(session.createdAt + CONTRACT_LIMITS.maxAge - 1)
  t.ok(await store.load(value), 'one millisecond before maxAge')
  clock.advance(1)
  t.equal(await store.load(value), null, 'at maxAge')
  t.equal(await store.load(value), null, 'and after')
})

t.test('entry TTL = the remaining absolute lifetime, at every save', async (t) => {
  // Record the TTL the store gives each sealed entry (lru-cache's own clock is not the fake one).
  const ttls: Array<{ key: string; ttl: number | undefined }> = []
  class RecordingLRU<K extends {}, V extends {}> extends LRUCache<K, V> {
    override set(key: K, value: V | undefined, options?: LRUCache.SetOptions<K, V, unknown>): this {
      if (typeof value === 'string') ttls.push({ key: String(key), ttl: options?.ttl })
      return super.set(key, value, options)
    }
  }
  const mod = await t.mockImport<typeof import('../../../src/session/memory-store.ts')>('../../../src/session/memory-store.ts', {
    'lru-cache': { LRUCache: RecordingLRU },
  })
  const clock = fakeClock(T0)
  const store = mod.createMemoryStore({ limits: CONTRACT_LIMITS, clock, maxSessions: 1000 })

  const fresh = nth(clock.now(), 1)
  const value = await store.save(fresh)
  t.strictSame(ttls.at(-1), { key: fresh.id, ttl: CONTRACT_LIMITS.maxAge }, 'a new session: the whole maxAge')
  const loaded = (await store.load(value))!
  clock.advance(5 * 3600_000)
  t.equal((await store.update(loaded, (s) => ({ ...s, lastSeenAt: clock.now() })))?.value, value)
  t.strictSame(ttls.at(-1), { key: fresh.id, ttl: CONTRACT_LIMITS.maxAge - 5 * 3600_000 }, 'an update 5 h later: 5 h less, not a new maxAge')

  const old = fullSession(clock.now(), { id: 'session-id-old-0123456789', createdAt: clock.now() - CONTRACT_LIMITS.maxAge + 60_000 })
  await store.save(old)
  t.strictSame(ttls.at(-1), { key: old.id, ttl: 60_000 }, 'one minute of life left: one minute')
  const dead = fullSession(clock.now(), { id: 'session-id-dead-0123456789', createdAt: clock.now() - CONTRACT_LIMITS.maxAge - 1 })
  await store.save(dead)
  const last = ttls.at(-1)
  t.ok(last !== undefined && last.ttl !== undefined && last.ttl > 0 && last.ttl <= 1, 'already past maxAge: the smallest TTL (and it never loads)')
})

t.test('another store instance does not know the ticket (a restart means a new login)', async (t) => {
  const clock = fakeClock(T0)
  const first = createMemoryStore({ limits: CONTRACT_LIMITS, clock, maxSessions: 1000 })
  const second = createMemoryStore({ limits: CONTRACT_LIMITS, clock, maxSessions: 1000 })
  const session = fullSession(clock.now())
  const value = await first.save(session)
  t.equal(await second.load(value), null, 'unknown to the other instance')
  const relogin = await second.save(session)
  t.not(relogin, value, 'a new login there gets a ticket of its own')
  t.equal(await first.load(relogin), null, 'which the first instance does not open')
  t.strictSame((await first.load(value))?.session, session, 'still known to the instance that saved it')
})

t.test('update never brings back a session that was cleared, before or while it ran', async (t) => {
  const { clock, store } = setup()
  const value = await store.save(nth(clock.now(), 1))
  const loaded = (await store.load(value))!
  await store.clear(value)
  t.equal(await store.update(loaded, (s) => ({ ...s, accessToken: 'revived' })), null, 'cleared before: null, nothing written')
  t.equal(await store.load(value), null, 'and still gone')

  const again = await store.save(nth(clock.now(), 2))
  const during = (await store.load(again))!
  const write = store.update(during, async (s) => {
    await store.clear(again) // a sign-out lands while a refresh runs
    return { ...s, accessToken: 'revived' }
  })
  t.equal(await write, null, 'cleared while it ran: null')
  t.equal(await store.load(again), null, 'and not written back')
})
