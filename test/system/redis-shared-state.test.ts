/**
 * The Redis-backed parts of issue #12 point 2, each on its own against a real redis-server, with two
 * connections standing for two replicas: the refresh lock and its shared outcome
 * (`redis/refresh-lock.ts`), the revocation list's subscription and heartbeat
 * (`redis/revocations.ts`), and the back-channel jti replay cache (`redis/logout-replay.ts`). The
 * whole flow through two Portcullis instances is `redis-coordination.test.ts`.
 */
import t, { type Test } from 'tap'
import { startRedis, type RedisServer } from '../helpers/redis.ts'
import { configFor } from '../helpers/config.ts'
import { fakeClock } from '../helpers/clock.ts'
import { waitUntil } from '../helpers/wait.ts'
import { fullSession } from '../helpers/store-contract.ts'
import { connectRedis, type RedisLink } from '../../src/redis/connection.ts'
import { createRedisRefreshLock } from '../../src/redis/refresh-lock.ts'
import { createRedisRevocations, type RedisRevocationList, type RevocationSyncEvent } from '../../src/redis/revocations.ts'
import { createRedisLogoutReplay } from '../../src/redis/logout-replay.ts'
import { refreshTokenHash } from '../../src/session/refresher.ts'
import { PortcullisError } from '../../src/errors.ts'
import type { Session } from '../../src/session/model.ts'
import { createRuntime, type Runtime } from '../../src/runtime.ts'

async function link(t: Test, redis: RedisServer): Promise<RedisLink> {
  const config = configFor({
    issuer: 'http://127.0.0.1:1',
    clientId: 'c',
    clientSecret: 'client-secret-long-enough-0123',
    upstream: 'http://127.0.0.1:2',
    publicUrl: 'http://127.0.0.1:3',
    overrides: { session: { redis: { url: redis.url, connectTimeout: '1s', commandTimeout: '500ms' } } },
  })
  const l = connectRedis(config.session.redis)
  t.teardown(() => l.close())
  await l.whenReady()
  return l
}

function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

async function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; err: unknown }> {
  try {
    return { ok: true, value: await p }
  } catch (err) {
    return { ok: false, err }
  }
}

const now = Date.now()
const session = fullSession(now) as Session & { refreshToken: string }
const rotated = (n: number): Session => ({ ...session, accessToken: `access-${n}`, refreshToken: `refresh-${n}`, accessExpiresAt: now + 300_000 })

// ---------------------------------------------------------------------------------------------------
// Refresh lock

t.test('refresh lock: replicas refreshing one token at once make ONE call and get the one result', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = [await link(t, redis), await link(t, redis)]
  const lockA = createRedisRefreshLock({ link: a, lockTtlMs: 5_000 })
  const lockB = createRedisRefreshLock({ link: b, lockTtlMs: 5_000 })
  const calls: string[] = []
  const gate = deferred<Session>()
  const refresh = (who: string) => () => {
    calls.push(who)
    return gate.promise
  }
  const first = lockA.coordinate(session, refresh('a'))
  await waitUntil(() => calls.length === 1, 'A to take the lock and refresh')
  const second = lockB.coordinate(session, refresh('b'))
  const third = lockA.coordinate({ ...session }, refresh('a2'))
  const next = rotated(1)
  gate.resolve(next)
  const results = await Promise.all([first, second, third])
  t.strictSame(calls, ['a'], 'one refresh, by the replica that took the lock')
  t.same(results, [next, next, next], 'every caller on both replicas got its result')
  const hash = refreshTokenHash(session.refreshToken)
  t.equal(await redis.command('EXISTS', a.key(`refresh:{${hash}}:lock`)), ':0', 'the lock was released')
  const stored = await redis.command('GET', a.key(`refresh:{${hash}}:result`))
  t.match(stored, /^\$\d+$/, 'the result is in Redis')
  const raw = await a.client.get(a.key(`refresh:{${hash}}:result`))
  t.notMatch(raw ?? '', /access-1|refresh-1/, 'sealed: the new tokens are not readable there')
  const ttl = Number((await redis.command('PTTL', a.key(`refresh:{${hash}}:result`))).slice(1))
  t.ok(ttl > 0 && ttl <= 60_000, `it expires with the local result cache (${ttl} ms left)`)

  // Later, with the old token: the shared result, no call.
  t.same(await lockB.coordinate(session, refresh('late')), next, 'a late request with the old token gets the result')
  t.strictSame(calls, ['a'])
})

t.test('refresh lock: a definitive end (SESSION_ENDED) is shared; an outage is shared briefly', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = [await link(t, redis), await link(t, redis)]
  const lockA = createRedisRefreshLock({ link: a, lockTtlMs: 5_000 })
  const lockB = createRedisRefreshLock({ link: b, lockTtlMs: 5_000, failureTtlMs: 300 })
  let calls = 0
  const endedSession = { ...session, refreshToken: 'refresh-that-ends' }
  await t.rejects(
    lockA.coordinate(endedSession, async () => {
      calls++
      throw new PortcullisError('SESSION_ENDED', 'Your session has ended.')
    }),
    { code: 'SESSION_ENDED' },
  )
  await t.rejects(lockB.coordinate(endedSession, async () => (calls++, rotated(2))), { code: 'SESSION_ENDED', publicMessage: 'Your session has ended.' }, 'B is told, without a call')
  t.equal(calls, 1)

  const outageSession = { ...session, refreshToken: 'refresh-in-an-outage' }
  await t.rejects(
    lockB.coordinate(outageSession, async () => {
      calls++
      throw new PortcullisError('IDP_UNAVAILABLE', 'The provider is not available.')
    }),
    { code: 'IDP_UNAVAILABLE' },
  )
  await t.rejects(lockA.coordinate(outageSession, async () => (calls++, rotated(3))), { code: 'IDP_UNAVAILABLE' }, 'shared for the failure memory')
  t.equal(calls, 2)
  await waitUntil(async () => (await redis.command('EXISTS', a.key(`refresh:{${refreshTokenHash(outageSession.refreshToken)}}:result`))) === ':0', 'the outage to be forgotten')
  t.same(await lockA.coordinate(outageSession, async () => (calls++, rotated(3))), rotated(3), 'then it is tried again')
  t.equal(calls, 3)
})

t.test('refresh lock: a holder that dies leaves its lock to run out, then a waiter refreshes; a lock held too long is IDP_UNAVAILABLE', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = [await link(t, redis), await link(t, redis)]
  const hash = refreshTokenHash(session.refreshToken)
  const lockKey = a.key(`refresh:{${hash}}:lock`)
  // A holder that died: its lock, and no result ever.
  t.equal(await redis.command('SET', lockKey, 'dead-holder', 'PX', '300'), '+OK')
  let calls = 0
  const lockB = createRedisRefreshLock({ link: b, lockTtlMs: 1_000 })
  t.same(await lockB.coordinate(session, async () => (calls++, rotated(4))), rotated(4), 'B took over once the lock ran out')
  t.equal(calls, 1)
  t.equal(await redis.command('EXISTS', lockKey), ':0', 'and released it')

  // A holder that goes on for longer than the lock may (another token): the waiter gives up, and never refreshes.
  const other = { ...session, refreshToken: 'refresh-held-too-long' }
  await redis.command('SET', a.key(`refresh:{${refreshTokenHash(other.refreshToken)}}:lock`), 'busy-holder', 'PX', '10000')
  const lockA = createRedisRefreshLock({ link: a, lockTtlMs: 200 })
  const outcome = await settle(lockA.coordinate(other, async () => (calls++, rotated(5))))
  t.equal(outcome.ok, false)
  t.match(outcome.ok ? null : outcome.err, { code: 'IDP_UNAVAILABLE' }, 'a clear 503, not a second refresh')
  t.equal(calls, 1, 'no refresh with a token the holder may rotate')
})

t.test('refresh lock: Redis unreachable → STORE_UNAVAILABLE, and no refresh is made uncoordinated', async (t) => {
  const redis = await startRedis(t)
  const a = await link(t, redis)
  const lock = createRedisRefreshLock({ link: a, lockTtlMs: 2_000 })
  await redis.stop()
  await waitUntil(() => !a.ready, 'the connection to notice')
  let calls = 0
  await t.rejects(lock.coordinate(session, async () => (calls++, rotated(6))), { code: 'STORE_UNAVAILABLE' })
  t.equal(calls, 0, 'the provider was not asked')
  await redis.start()
  await a.whenReady()
  t.same(await lock.coordinate(session, async () => (calls++, rotated(6))), rotated(6), 'Redis back: coordinated again')
  t.equal(calls, 1)
})

// ---------------------------------------------------------------------------------------------------
// Revocations

async function list(t: Test, l: RedisLink, opts: { heartbeatMs?: number; heartbeatTimeoutMs?: number; events?: RevocationSyncEvent[] } = {}): Promise<RedisRevocationList> {
  const r = createRedisRevocations({
    link: l,
    ttlMs: 60_000,
    clock: fakeClock(now),
    ...(opts.heartbeatMs === undefined ? {} : { heartbeatMs: opts.heartbeatMs }),
    ...(opts.heartbeatTimeoutMs === undefined ? {} : { heartbeatTimeoutMs: opts.heartbeatTimeoutMs }),
    onSync: (e) => opts.events?.push(e),
  })
  t.teardown(() => r.close())
  await waitUntil(() => r.ready, 'the list to sync')
  return r
}

const subject = { id: 'id-1', sid: 'sid-1', sub: 'alice', createdAt: now }

t.test('revocations: a revocation on A reaches B and its listeners; a sub cut-off with ":" in the sub too', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = [await list(t, await link(t, redis)), await list(t, await link(t, redis))]
  let told = 0
  b.subscribe(() => told++)
  t.equal(await b.isRevoked(subject), false)
  await a.revokeSid('sid-1')
  await waitUntil(() => told === 1, "B's listener to be told")
  t.equal(await b.isRevoked(subject), true, 'B honours it')
  await a.revokeSubBefore('urn:user:42', now + 10)
  await waitUntil(() => told === 2, 'the next one')
  t.equal(await b.isRevoked({ id: 'x', sid: undefined, sub: 'urn:user:42', createdAt: now }), true)
  t.equal(await b.isRevoked({ id: 'x', sid: undefined, sub: 'urn:user:42', createdAt: now + 10 }), false, 'not after the cut-off')
  t.equal(await redis.command('ZCARD', (await link(t, redis)).key('revocations')), ':2', 'one sorted set holds both')
  const c = await list(t, await link(t, redis))
  t.equal(await c.isRevoked(subject), true, 'a replica that starts later loads them')
})

t.test('revocations: a subscription that stops answering (CLIENT PAUSE) is found by the heartbeat: fail closed, then resync', async (t) => {
  const redis = await startRedis(t)
  const events: RevocationSyncEvent[] = []
  const r = await list(t, await link(t, redis), { heartbeatMs: 100, heartbeatTimeoutMs: 300, events })
  t.match(events, [{ state: 'synced', loaded: 0, restored: 0 }])
  t.equal(await redis.command('CLIENT', 'PAUSE', '1500', 'ALL'), '+OK')
  await waitUntil(() => !r.ready, 'the heartbeat to find the stalled subscription')
  await t.rejects(r.isRevoked(subject), { code: 'STORE_UNAVAILABLE' }, 'never "not revoked" meanwhile')
  t.match(events[1], { state: 'lost', reason: /stopped answering/ })
  await waitUntil(() => r.ready, 'the list to resync after the pause', 10_000)
  t.equal(await r.isRevoked(subject), false)
})

t.test('revocations: a revoke while Redis is down rejects STORE_UNAVAILABLE but holds here, and is written back', async (t) => {
  const redis = await startRedis(t)
  const l = await link(t, redis)
  const r = await list(t, l)
  await redis.stop()
  await waitUntil(() => !r.ready, 'the list to see Redis gone')
  await t.rejects(r.revokeSession('id-1'), { code: 'STORE_UNAVAILABLE' })
  await redis.start()
  await waitUntil(() => r.ready, 'resync')
  t.equal(await r.isRevoked(subject), true, 'kept through the outage')
  t.equal(Number(await l.client.zscore(l.key('revocations'), 'id:id-1')), now + 60_000, 'written back, with its expiry as the score')
})

// ---------------------------------------------------------------------------------------------------
// Back-channel jti replay cache

t.test('jti replay cache: seen on one replica is a replay on the other; forget; Redis down → STORE_UNAVAILABLE', async (t) => {
  const redis = await startRedis(t)
  const clock = fakeClock(now)
  const a = createRedisLogoutReplay(await link(t, redis), clock)
  const lb = await link(t, redis)
  const b = createRedisLogoutReplay(lb, clock)
  t.equal(await a.seen('jti-1', now + 5_000), false, 'first sight on A')
  t.equal(await b.seen('jti-1', now + 5_000), true, 'a replay on B')
  t.equal(await b.seen('jti-2', now + 5_000), false, 'another jti')
  const keys = await lb.client.keys(lb.key('logout-jti:*'))
  t.equal(keys.length, 2)
  t.notOk(keys.some((k) => k.includes('jti-1')), 'keyed by a hash of the jti')
  const pttl = await lb.client.pttl(keys[0] as string)
  t.ok(pttl > 0 && pttl <= 5_000, `expires when the token could no longer be accepted (${pttl} ms)`)
  await a.forget('jti-1')
  t.equal(await b.seen('jti-1', now + 5_000), false, 'forgotten: accepted again')
  await redis.stop()
  await waitUntil(() => !lb.ready, 'the connection to notice')
  await t.rejects(b.seen('jti-3', now + 5_000), { code: 'STORE_UNAVAILABLE' }, 'never taken for "not seen"')
})

// ---------------------------------------------------------------------------------------------------
// Reload: revocations carry over

t.test('reload: the same session.redis keeps the list; adding or dropping Redis hands the entries on', async (t) => {
  const redis = await startRedis(t)
  const base = { issuer: 'http://127.0.0.1:1', clientId: 'c', clientSecret: 'client-secret-long-enough-0123', upstream: 'http://127.0.0.1:2', publicUrl: 'http://127.0.0.1:3' }
  const withRedis = configFor({ ...base, overrides: { session: { redis: { url: redis.url } } } })
  const withoutRedis = configFor(base)
  const retry = { initialMs: 1_000, maxMs: 1_000 }
  const runtimes: Runtime[] = []
  const make = (config: typeof withRedis, previous?: Runtime): Runtime => {
    const rt = createRuntime(config, { retry, ...(previous === undefined ? {} : { previous }) })
    runtimes.push(rt)
    return rt
  }
  t.teardown(() => {
    for (const rt of runtimes) rt.close()
  })

  const memory = make(withoutRedis)
  await memory.revocations.revokeSession('before-redis')
  const first = make(withRedis, memory)
  memory.close()
  t.equal(first.revocations.kind, 'redis', 'Redis configured: the shared list')
  await waitUntil(() => first.revocations.ready, 'sync')
  t.equal(await first.revocations.isRevoked({ ...subject, id: 'before-redis' }), true, "the memory list's entry carried over")
  await waitUntil(async () => (await redis.command('ZCARD', first.redis!.key('revocations'))) === ':1', 'and written to Redis')

  await first.revocations.revokeSid('sid-1')
  const second = make(withRedis, first)
  t.equal(second.revocations, first.revocations, 'the same session.redis: the same list')
  first.close()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(second.revocations.ready, true, 'still live after the old runtime closed')
  t.equal(await second.revocations.isRevoked(subject), true)

  const back = make(withoutRedis, second)
  second.close()
  t.equal(back.revocations.kind, 'memory', 'Redis dropped: a memory list')
  t.equal(await back.revocations.isRevoked(subject), true, 'with what the shared list knew')
  t.equal(await back.revocations.isRevoked({ ...subject, id: 'before-redis', sid: undefined }), true)
  // The jti replay cache follows the same way: in Redis while configured.
  t.equal(await back.seenLogoutJti('j', Date.now() + 1_000), false)
  t.equal(await back.seenLogoutJti('j', Date.now() + 1_000), true)
})
