/**
 * SIGHUP and `session.redis`, with real redis-servers and a real provider: a reload that leaves
 * `session.redis` as it was keeps the connection (the same client on the server); one that names
 * another server connects to it before the swap and closes the old connection once the requests
 * that started with it are done (a request in flight across the reload is answered); one whose new
 * Redis cannot be reached is refused and the running connection kept.
 */
import { writeFileSync } from 'node:fs'
import { Agent, request as httpRequest } from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { holdPort, reservePort } from '../helpers/ports.ts'
import { spawnPortcullis } from '../helpers/process.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { startRedis, type RedisServer } from '../helpers/redis.ts'
import { login } from '../helpers/login.ts'
import { TEST_SECRET } from '../helpers/config.ts'
import { eventually } from '../helpers/wait.ts'

function get(agent: Agent, url: string, cookie: string): Promise<number> {
  return new Promise((done, fail) => {
    const req = httpRequest(url, { agent, headers: { accept: 'application/json', cookie } }, (res) => {
      res.resume()
      res.on('end', () => done(res.statusCode ?? 0))
    })
    req.on('error', fail)
    req.end()
  })
}

/** The ids of the clients connected to `server`, other than the probe's own. */
async function clientsOf(t: Test, server: RedisServer): Promise<string[]> {
  const probe = new Redis(server.url, { connectionName: 'test-probe', lazyConnect: true, maxRetriesPerRequest: 0 })
  try {
    await probe.connect()
    const list = (await probe.client('LIST')) as string
    return list
      .split('\n')
      .filter((line) => line !== '' && !line.includes('name=test-probe'))
      .map((line) => /(?:^| )id=(\d+)/.exec(line)?.[1] ?? '?')
  } catch (err) {
    t.comment(`probe of ${server.url}: ${(err as Error).message}`)
    return []
  } finally {
    probe.disconnect()
  }
}

t.test('a reload keeps an unchanged Redis connection, moves to a new one without cutting requests, and refuses an unreachable one', async (t) => {
  const a = await startRedis(t)
  const b = await startRedis(t)
  const nowhere = await reservePort()
  const { port, release } = await holdPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const provider = await startTestProvider(t, {
    clients: [{ clientId: 'reload-redis', clientSecret: 'reload-redis-client-secret-long-enough', redirectUris: [`${publicUrl}/oauth2/callback`] }],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  const file = join(t.testdir(), 'portcullis.yaml')
  const write = (redisUrl: string, allow: string) =>
    writeFileSync(
      file,
      `server:
  listen: 127.0.0.1:${port}
  publicUrl: ${publicUrl}
  shutdownTimeout: 2s
provider:
  issuer: ${provider.issuer}
  clientId: reload-redis
  clientSecret: reload-redis-client-secret-long-enough
  allowInsecureHttp: true
  timeout: 1s
session:
  secrets: ["${TEST_SECRET}"]
  store: cookie
  redis:
    url: ${redisUrl}
    connectTimeout: 1s
    commandTimeout: 500ms
routes:
  - match: { pathPrefix: / }
    upstream: ${upstream.url}
    allow: ${allow}
`,
    )
  write(a.url, '{ domains: [example.com] }')
  await release()
  const proc = await spawnPortcullis(t, { file, port })
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'redis connected')), 'connected to the first Redis')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'provider connected')), 'and to the provider')
  const { jar } = await login({ proxyUrl: proc.url })
  const cookie = jar.header(`${proc.url}/`)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.equal(await get(agent, `${proc.url}/x`, cookie), 200, 'signed in')
  const onA = await clientsOf(t, a)
  t.ok(onA.length >= 1, `Portcullis is a client of the first Redis (${onA.join(', ')})`)

  // Same session.redis, other rules: the connection is kept.
  write(a.url, '{ emails: [alice@example.com] }')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.filter((l) => l.msg === 'configuration reloaded').length === 1), 'reloaded')
  t.notOk(proc.logs.find((l) => l.msg === 'configuration reloaded')?.redis, 'without a new Redis connection')
  t.same(await clientsOf(t, a), onA, 'the same clients on the first Redis: the connection was kept')
  t.equal(await get(agent, `${proc.url}/x`, cookie), 200)

  // Another server: connected before the swap; the old connection closed after the requests it had.
  const slowAgent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => slowAgent.destroy())
  const inFlight = get(slowAgent, `${proc.url}/slow?ms=2000`, cookie)
  t.ok(await eventually(() => upstream.requests.some((r) => r.url.startsWith('/slow'))), 'a request is in flight')
  write(b.url, '{ emails: [alice@example.com] }')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.filter((l) => l.msg === 'configuration reloaded').length === 2), 'reloaded onto the second Redis')
  t.equal(proc.logs.filter((l) => l.msg === 'configuration reloaded')[1]?.redis, 'connected anew', 'the log line says so')
  t.ok((await clientsOf(t, b)).length >= 1, 'Portcullis is a client of the second Redis')
  t.equal(await get(agent, `${proc.url}/x`, cookie), 200, 'the open connection is served with the new runtime')
  t.equal(await inFlight, 200, 'the request in flight across the reload is answered')
  // The replaced runtime is closed after 2 × provider.timeout + commandTimeout + 1 s (3.5 s here).
  t.ok(await eventually(async () => (await clientsOf(t, a)).length === 0, { timeoutMs: 15_000, everyMs: 250 }), 'the old connection is closed after the swap')
  t.equal(await get(agent, `${proc.url}/x`, cookie), 200)

  // A Redis that cannot be reached: refused; the second one stays in use.
  const onB = await clientsOf(t, b)
  write(`redis://127.0.0.1:${nowhere}`, '{ emails: [alice@example.com] }')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => String(l.msg).startsWith('reload refused: the new session.redis could not connect')), { timeoutMs: 10_000 }), 'refused')
  t.same(await clientsOf(t, b), onB, 'the running Redis connection is kept')
  t.equal(await get(agent, `${proc.url}/x`, cookie), 200, 'and requests are served')

  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0, 'SIGTERM exits 0')
  t.ok(await eventually(async () => (await clientsOf(t, b)).length === 0), 'and the Redis connection is closed')
})
