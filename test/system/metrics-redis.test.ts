/**
 * `portcullis_redis_up` with a real redis-server (issue #12 point 5): 1 while the connection is
 * ready, 0 once redis-server is gone, 1 again when it is back; absent without `session.redis`.
 *
 * @see src/metrics.ts
 */
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { request } from '../helpers/http.ts'
import { startRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

async function redisUp(metricsUrl: string | null): Promise<number | null> {
  const body = (await request(`${metricsUrl}/metrics`)).body
  const m = /^portcullis_redis_up\{mode="standalone"\} (\S+)$/m.exec(body)
  if (m === null && /^portcullis_redis_up/m.test(body)) throw new Error('portcullis_redis_up with other labels')
  return m === null ? null : Number(m[1])
}

t.test('portcullis_redis_up follows redis-server going away and coming back', async (t) => {
  const redis = await startRedis(t)
  const { proxy } = await startStack(t, { overrides: { metrics: { listen: '127.0.0.1:0' }, session: { redis: { url: redis.url } } } })
  t.ok(proxy.runtime.redis, 'the runtime holds a Redis connection')
  await proxy.runtime.redis?.whenReady()
  t.equal(await redisUp(proxy.metricsUrl), 1, 'up')
  await redis.stop()
  await waitUntil(async () => (await redisUp(proxy.metricsUrl)) === 0, 'redis_up 0', 10_000)
  t.pass('down once redis-server is gone')
  await redis.start()
  await waitUntil(async () => (await redisUp(proxy.metricsUrl)) === 1, 'redis_up 1 again', 15_000)
  t.pass('up again when it is back')
})

t.test('without session.redis there is no portcullis_redis_up', async (t) => {
  const { proxy } = await startStack(t, { overrides: { metrics: { listen: '127.0.0.1:0' } } })
  t.equal(proxy.runtime.redis, null)
  t.equal(await redisUp(proxy.metricsUrl), null, 'absent')
})
