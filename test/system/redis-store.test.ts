/**
 * The Redis session store (issue #12 point 1) against a real redis-server on a free loopback port
 * (test/helpers/redis.ts): the store contract (test/helpers/store-contract.ts), then what only a
 * store shared by replicas promises:
 * - the TTL of every entry is the session's remaining absolute lifetime (PTTL), at every write;
 * - a dump of Redis (every key, every value) shows no token, claim or e-mail address in clear;
 * - a cookie with the right id and another key loads nothing and clears nothing;
 * - two store instances on their own connections (two replicas) see each other's saves, updates and
 *   clears; a session cleared on one while the other's update runs stays gone (compare-and-set), and
 *   a write the other made meanwhile is built on, not overwritten;
 * - size() counts live sessions from the index, without expired or cleared ones;
 * - with redis-server stopped every method rejects with STORE_UNAVAILABLE (never null, never a
 *   session), and the store works again once it is back;
 * - on a Redis Cluster of three masters the same contract holds, sessions spread over the shards
 *   (no hash tag), and the compare-and-set and the index work (no command crosses slots).
 *
 * Needs Debian's redis-server (scripts/install-system-deps.sh). Without it this test FAILS, it never
 * skips.
 */
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import type { Clock } from '../../src/clock.ts'
import { PortcullisError } from '../../src/errors.ts'
import { connectRedis, type RedisLink } from '../../src/redis/connection.ts'
import { createRedisStore } from '../../src/redis/store.ts'
import type { Session, SessionLimits } from '../../src/session/model.ts'
import type { LoadedSession, SessionStore } from '../../src/session/store.ts'
import { fakeClock, type FakeClock } from '../helpers/clock.ts'
import { configFor } from '../helpers/config.ts'
import { startRedis, startRedisCluster, type RedisServer } from '../helpers/redis.ts'
import { CONTRACT_LIMITS, fullSession, runStoreContract } from '../helpers/store-contract.ts'

const T0 = Date.UTC(2030, 0, 15, 9, 0, 0)

/** `session.redis` as the config loader makes it, for this server and key prefix. */
function settings(server: RedisServer, keyPrefix: string, more: Record<string, unknown> = {}) {
  return redisSettings({ url: server.url, keyPrefix, ...more })
}

/** `session.redis` as the config loader makes it from these keys. */
function redisSettings(redis: Record<string, unknown>) {
  return configFor({
    issuer: 'http://127.0.0.1:1',
    clientId: 'c',
    clientSecret: 'client-secret-long-enough-0123',
    upstream: 'http://127.0.0.1:1',
    publicUrl: 'http://127.0.0.1:1',
    overrides: { session: { store: 'redis', redis } },
  }).session.redis
}

/** A connection of its own (a replica's), ready, closed at the end of `t`. */
async function link(t: Test, server: RedisServer, keyPrefix: string): Promise<RedisLink> {
  const l = connectRedis(settings(server, keyPrefix))
  t.teardown(() => l.close())
  await l.whenReady()
  return l
}

/** A raw client for looking at what Redis holds. */
function raw(t: Test, server: RedisServer): Redis {
  const r = new Redis(server.url, { lazyConnect: false, maxRetriesPerRequest: 1 })
  r.on('error', () => {})
  t.teardown(() => r.quit().catch(() => r.disconnect()))
  return r
}

/** Every string in a JSON-ish value (claims, tokens), recursively. */
function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (Array.isArray(value)) return value.flatMap(strings)
  if (typeof value === 'object' && value !== null) return Object.values(value).flatMap(strings)
  return []
}

/** Session number `i`: its own id, sub and claims. */
function nth(now: number, i: number, overrides: Partial<Session> = {}): Session {
  const n = String(i).padStart(4, '0')
  return fullSession(now, { id: `session-${n}-0123456789abcdef`, sub: `user-${n}`, claims: { sub: `user-${n}`, email: `user-${n}@example.com` }, ...overrides })
}

async function rejectsUnavailable(t: Test, p: Promise<unknown>, what: string): Promise<void> {
  const err = await p.then(
    (v) => new Error(`resolved with ${JSON.stringify(v)}`),
    (e: unknown) => e,
  )
  t.ok(err instanceof PortcullisError && err.code === 'STORE_UNAVAILABLE', `${what}: STORE_UNAVAILABLE (${err instanceof Error ? err.message : String(err)})`)
}

t.test('Redis store', async (t) => {
  const server = await startRedis(t)
  let n = 0
  const prefix = (): string => `t${++n}:`

  await runStoreContract(t, 'redis store', async (clock, { limits }) =>
    // Each store its own prefix: a store "with another secret" is another deployment, whose sessions
    // (with the same ids as the suite's) it must not meet.
    createRedisStore({ link: await link(t, server, prefix()), limits, clock }),
  )

  const setup = async (t: Test, limits: SessionLimits = CONTRACT_LIMITS): Promise<{ clock: FakeClock; store: SessionStore; link: RedisLink; keyPrefix: string }> => {
    const clock = fakeClock(T0)
    const keyPrefix = prefix()
    const l = await link(t, server, keyPrefix)
    return { clock, store: createRedisStore({ link: l, limits, clock }), link: l, keyPrefix }
  }
  /** A second replica on the same server and prefix: its own connection, clock and store. */
  const replica = async (t: Test, keyPrefix: string, clock: Clock, limits: SessionLimits = CONTRACT_LIMITS): Promise<SessionStore> =>
    createRedisStore({ link: await link(t, server, keyPrefix), limits, clock })

  t.test('the cookie holds the ticket; Redis holds the sealed session under {prefix}s:<id>, with a TTL of its remaining lifetime at every write', async (t) => {
    const { clock, store, keyPrefix } = await setup(t)
    const r = raw(t, server)
    const session = fullSession(clock.now())
    const value = await store.save(session)
    t.match(value, /^[A-Za-z0-9_-]{16,64}\.[A-Za-z0-9_-]{43}$/, '<id>.<key>')
    t.ok(value.startsWith(`${session.id}.`), 'the id is the session id')
    const key = `${keyPrefix}s:${session.id}`
    t.match(await r.get(key), /^eyJ[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'a compact JWE (dir, A256GCM) under the session key')
    const first = await r.pttl(key)
    t.ok(first <= CONTRACT_LIMITS.maxAge && first > CONTRACT_LIMITS.maxAge - 60_000, `a new session: PTTL ${first} = the whole maxAge ${CONTRACT_LIMITS.maxAge}`)

    const loaded = (await store.load(value)) as LoadedSession
    clock.advance(5 * 3600_000)
    t.equal((await store.update(loaded, (s) => ({ ...s, lastSeenAt: clock.now() })))?.value, value, 'an update keeps the ticket')
    const later = await r.pttl(key)
    const left = CONTRACT_LIMITS.maxAge - 5 * 3600_000
    t.ok(later <= left && later > left - 60_000, `an update 5 h later: PTTL ${later} = 5 h less (${left}), not a new maxAge`)

    const old = nth(clock.now(), 1, { createdAt: clock.now() - CONTRACT_LIMITS.maxAge + 60_000 })
    await store.save(old)
    const short = await r.pttl(`${keyPrefix}s:${old.id}`)
    t.ok(short <= 60_000 && short > 0, `one minute of life left: PTTL ${short} ≤ one minute`)
    const dead = nth(clock.now(), 2, { createdAt: clock.now() - CONTRACT_LIMITS.maxAge - 1 })
    const deadValue = await store.save(dead)
    t.equal(await store.load(deadValue), null, 'already past maxAge: never loads')
    t.ok((await r.pttl(`${keyPrefix}s:${dead.id}`)) <= 1, 'and its entry has the smallest TTL (or is gone already)')
  })

  t.test('a dump of Redis (every key and value) holds no token, claim or e-mail address in clear', async (t) => {
    const { clock, store, keyPrefix } = await setup(t)
    const r = raw(t, server)
    const sessions = [fullSession(clock.now()), nth(clock.now(), 7, { claims: { sub: 'user-0007', email: 'carol.smith@example.org', name: 'Carol Smith', groups: ['finance-admins'] } })]
    const values: string[] = []
    for (const s of sessions) values.push(await store.save(s))
    const loaded = (await store.load(values[0] as string)) as LoadedSession
    clock.advance(120_000)
    await store.update(loaded, (s) => ({ ...s, lastSeenAt: clock.now(), accessToken: 'refreshed-access-token-value-42', refreshToken: 'rotated-refresh-token-value-43' }))

    const dump: string[] = []
    const keys = await r.keys(`${keyPrefix}*`)
    t.ok(keys.length >= 3, `${keys.length} keys: the sessions and the index`)
    for (const key of keys) {
      dump.push(key)
      const type = await r.type(key)
      if (type === 'string') dump.push((await r.get(key)) as string)
      else if (type === 'zset') dump.push(...(await r.zrange(key, '0', '-1', 'WITHSCORES')))
      else t.fail(`unexpected key type ${type} for ${key}`)
    }
    const text = dump.join('\n')
    const secrets = [
      ...sessions.flatMap((s) => {
        const { id: _id, ...rest } = s
        return strings(rest)
      }),
      'refreshed-access-token-value-42',
      'rotated-refresh-token-value-43',
    ].filter((s) => s.length >= 4)
    t.ok(secrets.length >= 15, `${secrets.length} token, claim and e-mail strings looked for`)
    const leaked = secrets.filter((s) => text.includes(s) || text.includes(Buffer.from(s).toString('base64url')) || text.includes(Buffer.from(s).toString('base64')))
    t.strictSame(leaked, [], 'none of them, plain, base64 or base64url')
    t.notMatch(text, /@example\.(com|org)/, 'no e-mail domain')
    const keyParts = values.map((v) => v.split('.')[1] as string)
    t.strictSame(keyParts.filter((k) => text.includes(k)), [], 'no cookie key is stored')
  })

  t.test('a cookie with the right id and another key loads nothing and clears nothing', async (t) => {
    const { clock, store } = await setup(t)
    const session = fullSession(clock.now())
    const value = await store.save(session)
    const other = await store.save(nth(clock.now(), 3))
    const forged = `${session.id}.${other.split('.')[1] as string}`
    t.equal(await store.load(forged), null, 'another session’s key: null')
    const zeros = `${session.id}.${Buffer.alloc(32).toString('base64url')}`
    t.equal(await store.load(zeros), null, 'an all-zero key: null')
    t.ok(await store.load(value), 'the real ticket (now in the local cache) still loads')
    t.equal(await store.load(forged), null, 'and the forged one still does not (the cache is per whole ticket)')
    await store.clear(forged)
    await store.clear(zeros)
    t.strictSame((await store.load(value))?.session, session, 'clear with a wrong key cleared nothing')
    await store.clear(value)
    t.equal(await store.load(value), null, 'the whole ticket clears it')
  })

  t.test('two replicas on one server see each other’s saves, updates and clears', async (t) => {
    const { clock, store: a, keyPrefix } = await setup(t)
    const b = await replica(t, keyPrefix, clock)
    const session = fullSession(clock.now())
    const value = await a.save(session)
    t.strictSame((await b.load(value))?.session, session, 'saved on A, loaded on B')
    const onA = (await a.load(value)) as LoadedSession
    t.ok(onA, 'loaded on A (in its local cache now)')

    clock.advance(90_000)
    const onB = (await b.load(value)) as LoadedSession
    const written = await b.update(onB, (s) => ({ ...s, lastSeenAt: clock.now(), accessToken: 'written-on-b' }))
    t.equal(written?.value, value, 'B updated it; same ticket')
    t.equal((await a.load(value))?.session.accessToken, 'written-on-b', 'A sees B’s update, not its cached copy')

    let calls = 0
    const superseded = await a.update(onA, (s) => {
      calls++
      return { ...s, accessToken: 'stale-write-from-a' }
    })
    t.equal(calls, 0, 'A’s update of the state B superseded does not write')
    t.equal(superseded?.session.accessToken, 'written-on-b', 'and returns the newest state')
    t.equal((await b.load(value))?.session.accessToken, 'written-on-b', 'B’s write stands')

    await b.clear(value)
    t.equal(await a.load(value), null, 'cleared on B: gone on A too')
  })

  t.test('update: a session cleared on another replica while the update runs stays gone (compare-and-set)', async (t) => {
    const { clock, store: a, keyPrefix, link: aLink } = await setup(t)
    const b = await replica(t, keyPrefix, clock)
    const value = await a.save(fullSession(clock.now()))
    const loaded = (await a.load(value)) as LoadedSession
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let entered!: () => void
    const inChange = new Promise<void>((r) => (entered = r))
    const update = a.update(loaded, async (s) => {
      entered()
      await held
      return { ...s, lastSeenAt: clock.now(), accessToken: 'written-after-the-clear' }
    })
    await inChange
    await b.clear(value)
    t.equal(await b.load(value), null, 'B cleared it')
    release()
    t.equal(await update, null, 'A’s update answers: gone')
    t.equal(await a.load(value), null, 'A does not load it')
    t.equal(await b.load(value), null, 'B does not load it')
    t.equal(await aLink.client.exists(aLink.key(`s:${loaded.session.id}`)), 0, 'nothing was written back to Redis')
  })

  t.test('update: a write another replica made while the update ran is built on, not overwritten', async (t) => {
    const { clock, store: a, keyPrefix } = await setup(t)
    const b = await replica(t, keyPrefix, clock)
    const value = await a.save(fullSession(clock.now()))
    const onA = (await a.load(value)) as LoadedSession
    const onB = (await b.load(value)) as LoadedSession
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let entered!: () => void
    const inChange = new Promise<void>((r) => (entered = r))
    const seen: string[] = []
    // A refreshes (slow: the provider), B moves the idle clock meanwhile.
    const update = a.update(onA, async (s) => {
      seen.push(String(s.claims.touchedBy ?? 'nobody'))
      entered()
      await held
      return { ...s, accessToken: 'refreshed-on-a' }
    })
    await inChange
    clock.advance(70_000)
    await b.update(onB, (s) => ({ ...s, lastSeenAt: clock.now(), claims: { ...s.claims, touchedBy: 'b' } }))
    release()
    const result = await update
    t.strictSame(seen, ['nobody', 'b'], 'A’s change ran again, on the state B wrote')
    t.equal(result?.session.accessToken, 'refreshed-on-a', 'A’s tokens are kept')
    t.equal(result?.session.claims.touchedBy, 'b', 'and B’s write too')
    t.equal(result?.session.lastSeenAt, clock.now(), 'B’s idle clock included')
    const onBNow = await b.load(value)
    t.equal(onBNow?.session.accessToken, 'refreshed-on-a', 'B loads the merged state')
    t.equal(onBNow?.session.claims.touchedBy, 'b')
  })

  t.test('size(): live sessions from the index; clears and expiries are not counted', async (t) => {
    const { clock, store, keyPrefix } = await setup(t)
    const b = await replica(t, keyPrefix, clock)
    t.equal(await store.size(), 0, 'none yet')
    const values: string[] = []
    for (let i = 0; i < 5; i++) values.push(await store.save(nth(clock.now(), i)))
    values.push(await b.save(nth(clock.now(), 9)))
    t.equal(await store.size(), 6, 'six logins on two replicas: six')
    t.equal(await b.size(), 6, 'both replicas count the same')
    await b.clear(values[0] as string)
    await store.clear(`${nth(0, 1).id}.${Buffer.alloc(32).toString('base64url')}`)
    t.equal(await store.size(), 5, 'a clear counts; a clear with a wrong key does not')
    clock.advance(CONTRACT_LIMITS.maxAge / 2)
    values.push(await store.save(nth(clock.now(), 10)))
    t.equal(await store.size(), 6, 'a later login')
    clock.advance(CONTRACT_LIMITS.maxAge / 2)
    t.equal(await store.size(), 1, 'past the first ones’ lifetime: only the later login')
    const r = raw(t, server)
    t.equal(await r.zcard(`${keyPrefix}sessions`), 1, 'expired members were trimmed from the index')
  })

  t.test('Redis down: every method rejects with STORE_UNAVAILABLE, never null; back: it works again', async (t) => {
    const own = await startRedis(t)
    const clock = fakeClock(T0)
    const l = connectRedis(settings(own, 'down:', { commandTimeout: '500ms' }))
    t.teardown(() => l.close())
    await l.whenReady()
    const store = createRedisStore({ link: l, limits: CONTRACT_LIMITS, clock })
    const value = await store.save(fullSession(clock.now()))
    const loaded = (await store.load(value)) as LoadedSession
    t.ok(loaded, 'works while Redis is up (and the session is in the local cache)')
    await own.stop()
    await rejectsUnavailable(t, store.load(value), 'load of a cached session')
    await rejectsUnavailable(t, store.load(`${'x'.repeat(20)}.${Buffer.alloc(32).toString('base64url')}`), 'load of an unknown ticket')
    await rejectsUnavailable(t, store.save(nth(clock.now(), 1)), 'save')
    let changed = 0
    await rejectsUnavailable(
      t,
      store.update(loaded, (s) => {
        changed++
        return s
      }),
      'update',
    )
    t.equal(changed, 0, 'update did not even run its change')
    await rejectsUnavailable(t, store.clear(value), 'clear')
    await rejectsUnavailable(t, store.size(), 'size')
    t.equal(await store.load('not-a-ticket'), null, 'a value that is no ticket is null without asking Redis')

    await own.start()
    await l.whenReady()
    t.equal(await store.load(value), null, 'back (empty: it kept nothing): the old ticket is no session')
    const again = await store.save(nth(clock.now(), 2))
    t.equal((await store.load(again))?.session.sub, 'user-0002', 'a new login works')
  })
})

t.test('Redis store on a Redis Cluster (three masters)', async (t) => {
  const cluster = await startRedisCluster(t)
  let n = 0
  const clusterLink = async (t: Test, keyPrefix: string): Promise<RedisLink> => {
    const l = connectRedis(redisSettings({ cluster: { nodes: cluster.nodes }, keyPrefix }))
    t.teardown(() => l.close())
    await l.whenReady()
    return l
  }
  await runStoreContract(t, 'redis store on a cluster', async (clock, { limits }) => createRedisStore({ link: await clusterLink(t, `c${++n}:`), limits, clock }))

  t.test('sessions spread over the masters; two replicas, compare-and-set and size() work across slots', async (t) => {
    const clock = fakeClock(T0)
    const a = createRedisStore({ link: await clusterLink(t, 'spread:'), limits: CONTRACT_LIMITS, clock })
    const b = createRedisStore({ link: await clusterLink(t, 'spread:'), limits: CONTRACT_LIMITS, clock })
    const values: string[] = []
    for (let i = 0; i < 30; i++) values.push(await a.save(nth(clock.now(), i)))
    const perNode = await Promise.all(cluster.servers.map(async (s) => Number((await s.command('KEYS', 'spread:*')).slice(1))))
    t.equal(perNode.reduce((x, y) => x + y, 0), 31, `30 sessions and the index in all: ${perNode.join(' + ')}`)
    t.ok(perNode.every((count) => count > 0), 'every master holds some: no hash tag pins them to one slot')
    t.equal(await b.size(), 30, 'size() on the other replica: 30')
    for (const value of values.slice(0, 10)) t.ok(await b.load(value), 'loaded on B')

    const value = values[0] as string
    const onA = (await a.load(value)) as LoadedSession
    let entered!: () => void
    const inChange = new Promise<void>((r) => (entered = r))
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const update = a.update(onA, async (s) => {
      entered()
      await held
      return { ...s, accessToken: 'after-the-clear' }
    })
    await inChange
    await b.clear(value)
    release()
    t.equal(await update, null, 'cleared on B while A’s update ran: gone')
    t.equal(await a.load(value), null)
    t.equal(await b.size(), 29, 'and not counted')
    const other = (await a.load(values[1] as string)) as LoadedSession
    clock.advance(61_000)
    t.equal((await a.update(other, (s) => ({ ...s, lastSeenAt: clock.now(), accessToken: 'cas-on-a-cluster' })))?.session.accessToken, 'cas-on-a-cluster', 'an update through the script')
    t.equal((await b.load(values[1] as string))?.session.accessToken, 'cas-on-a-cluster', 'seen on B')
  })
})
