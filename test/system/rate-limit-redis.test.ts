/**
 * Rate limits counted in Redis (issue #12 point 7), with a real redis-server on a free loopback
 * port: two Portcullis instances on one Redis share each address's counters (3 logins begun on A
 * and 1 on B: B's is the 4th, a 429); with Redis stopped, each instance counts in its own process
 * with the same limits (an error logged once, no 500, never unlimited), and counts in Redis again
 * once it is back. The same on a Redis Cluster (one node holding every slot), whose client routes
 * the counting script by its one key.
 *
 * @see src/http/rate-limit.ts
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createConnection } from 'node:net'
import t, { type Test } from 'tap'
import { Cluster } from 'ioredis'
import { startApp, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { startRedis, type RedisServer } from '../helpers/redis.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { waitUntil } from '../helpers/wait.ts'
import { createRuntime } from '../../src/runtime.ts'

const LIMITS = { start: { max: 3, window: '1m' }, callback: { max: 2, window: '1m' }, backchannelLogout: { max: 2, window: '1m' } }
const JSON_ACCEPT = { accept: 'application/json' }

interface Pair {
  stack: Stack
  a: RunningPortcullis
  b: RunningPortcullis
}

/** Two instances (each with its own runtime and Redis connection) on one config naming `redis`. */
async function pair(t: Test, redis: Record<string, unknown>): Promise<Pair> {
  const stack = await startStack(t, { overrides: { session: { redis: { keyPrefix: 'rl-test:', ...redis } }, rateLimits: LIMITS } })
  const other = createRuntime(stack.config, { retry: { initialMs: 50, maxMs: 400 } })
  t.teardown(() => other.close())
  await other.provider.whenReady()
  const b = await startApp(t, other)
  for (const rt of [stack.proxy.runtime, other]) await rt.redis?.whenReady()
  return { stack, a: stack.proxy, b }
}

const start = (app: RunningPortcullis, headers: Record<string, string> = {}): Promise<TestResponse> => request(`${app.url}/oauth2/start?rd=%2Fpage`, { headers })

function began(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 302, `${what}: 302 to the provider`)
}

/** While Redis is down no login can start (its session could not be kept or checked): a 503 with Retry-After, never a 500. */
function unavailable(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 503, `${what}: 503, no login starts while Redis is down`)
  t.ok(res.headers['retry-after'], `${what}: with Retry-After`)
}

function limited(t: Test, res: TestResponse, what: string): void {
  t.equal(res.status, 429, `${what}: 429`)
  const after = Number(res.headers['retry-after'])
  t.ok(Number.isInteger(after) && after >= 1 && after <= 60, `${what}: Retry-After ${res.headers['retry-after']} in [1, 60]`)
  t.equal(res.json<{ error: string }>().error, 'RATE_LIMITED', `${what}: the error model's JSON`)
}

async function shared(t: Test, { a, b }: Pair, redis: RedisServer, what: string): Promise<void> {
  for (let i = 1; i <= 3; i++) began(t, await start(a), `${what}: start ${i} on A`)
  limited(t, await start(b, JSON_ACCEPT), `${what}: the 4th, on B`)
  limited(t, await start(a, JSON_ACCEPT), `${what}: the 5th, on A`)
  // Each endpoint has its own counter, in Redis under the key prefix.
  t.not((await request(`${b.url}/oauth2/callback?state=x`, { headers: JSON_ACCEPT })).status, 429, `${what}: the callback counts apart`)
  const keys = await redis.command('DBSIZE')
  t.ok(/^:[1-9]/.test(keys), `${what}: the counters are in Redis (${keys})`)
}

t.test('two instances on one Redis share the counters', async (t) => {
  const redis = await startRedis(t)
  const p = await pair(t, { url: redis.url })
  await shared(t, p, redis, 'standalone')
  t.equal(p.a.app.rateLimits.localFallbacks + p.b.app.rateLimits.localFallbacks, 0, 'nothing counted locally while Redis answers')
  t.equal(p.a.app.rateLimits.limited.start, 1, 'A refused one')
  t.equal(p.b.app.rateLimits.limited.start, 1, 'B refused one')
  t.equal(await redis.command('EXISTS', 'rl-test:ratelimit:start:127.0.0.1'), ':1', 'one key per endpoint and address, under session.redis.keyPrefix')
})

t.test('Redis down: each instance counts in its own process with the same limits (503 while no login can start, never a 500), and in Redis again once it is back', async (t) => {
  const redis = await startRedis(t)
  const { a, b } = await pair(t, { url: redis.url })
  began(t, await start(a), 'before the outage, on A')

  await redis.stop()
  // Counted here now: A's three pass the limit (its local count starts at 0) and get the outage's
  // 503; its 4th is refused by the limit first.
  for (let i = 1; i <= 3; i++) unavailable(t, await start(a), `Redis down: start ${i} on A`)
  limited(t, await start(a, JSON_ACCEPT), 'Redis down: the 4th on A')
  // B counts for itself: the limit holds per instance.
  for (let i = 1; i <= 3; i++) unavailable(t, await start(b), `Redis down: start ${i} on B`)
  limited(t, await start(b, JSON_ACCEPT), 'Redis down: the 4th on B')
  t.ok(a.app.rateLimits.localFallbacks >= 4, `A counted locally (${a.app.rateLimits.localFallbacks})`)
  const errors = a.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('rate limits: Redis did not answer'))
  t.equal(errors.length, 1, 'one error line for the outage, not one per request')
  t.equal(errors[0]?.level, 50, 'at error level')
  t.notOk(a.logs.some((l) => l.msg === 'request' && Number(l.status) >= 500 && Number(l.status) !== 503), 'no request answered 5xx but the outage\'s 503')

  await redis.start()
  await waitUntil(
    () => a.runtime.redis?.ready === true && b.runtime.redis?.ready === true && a.runtime.revocations.ready && b.runtime.revocations.ready,
    'both instances reconnected',
    15_000,
  )
  // Redis came back empty: shared counting again from 0.
  for (let i = 1; i <= 3; i++) began(t, await start(a), `Redis back: start ${i} on A`)
  limited(t, await start(b, JSON_ACCEPT), 'Redis back: the 4th, on B')
  t.ok(a.logs.some((l) => l.msg === 'rate limits: counting in Redis again'), 'the recovery is logged')
})

t.test('a Redis Cluster: the counters are shared the same way', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-rl-cluster-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const redis = await startRedis(t, ['--cluster-enabled', 'yes', '--cluster-announce-ip', '127.0.0.1', '--cluster-config-file', join(dir, 'nodes.conf'), '--dir', dir])
  t.equal(await redis.command('CLUSTER', 'ADDSLOTSRANGE', '0', '16383'), '+OK', 'one node holds every slot')
  // Announced as 127.0.0.1: a lone node otherwise names itself with an empty host in CLUSTER SLOTS.
  await waitUntil(() => clusterOk(redis), 'the cluster is ok', 15_000)
  const p = await pair(t, { cluster: { nodes: [`127.0.0.1:${redis.port}`] } })
  t.ok(p.a.runtime.redis?.client instanceof Cluster, 'the instances use a Cluster client')
  await shared(t, p, redis, 'cluster')
})

/** `cluster_state:ok` in CLUSTER INFO (a bulk reply: read it whole). */
function clusterOk(redis: RedisServer): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port: redis.port })
    let text = ''
    socket.once('error', () => resolve(false))
    socket.once('connect', () => socket.write('CLUSTER INFO\r\n'))
    socket.on('data', (d) => {
      text += d.toString()
      if (text.includes('cluster_state:')) {
        socket.destroy()
        resolve(text.includes('cluster_state:ok'))
      }
    })
  })
}
