/**
 * `server.workers: 2`: a primary and two worker processes on one port, with a real provider and a
 * real redis-server (cookie store, `session.redis` for coordination). Requests are answered by both
 * workers (each access line names its worker's pid); SIGHUP reaches every worker; a killed worker is
 * replaced; SIGTERM drains them all and exits 0 with no process left. A worker that cannot start
 * stops the primary with its exit code.
 */
import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { holdPort } from '../helpers/ports.ts'
import { spawnPortcullis, type PortcullisProcess } from '../helpers/process.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { startRedis } from '../helpers/redis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { TEST_SECRET } from '../helpers/config.ts'
import { eventually } from '../helpers/wait.ts'
import { alive, childrenRunning, descendants } from '../helpers/proc-tree.ts'

function listening(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      r(true)
    })
    s.once('error', () => r(false))
  })
}

/** Pids of the access lines for `path` with `status`. */
function servedBy(proc: PortcullisProcess, path: string, status: number): Set<number> {
  return new Set(proc.logs.filter((l) => l.msg === 'request' && l.path === path && l.status === status).map((l) => l.pid as number))
}

t.test('two workers on one port: both serve, SIGHUP reaches each, a killed one is replaced, SIGTERM drains all and exits 0', async (t) => {
  const redis = await startRedis(t)
  const { port, release } = await holdPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const provider = await startTestProvider(t, {
    clients: [{ clientId: 'workers-test', clientSecret: 'workers-test-client-secret-long-enough', redirectUris: [`${publicUrl}/oauth2/callback`] }],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  const file = join(t.testdir(), 'portcullis.yaml')
  const write = (allow: string) =>
    writeFileSync(
      file,
      `server:
  listen: 127.0.0.1:${port}
  publicUrl: ${publicUrl}
  workers: 2
  shutdownTimeout: 2s
provider:
  issuer: ${provider.issuer}
  clientId: workers-test
  clientSecret: workers-test-client-secret-long-enough
  allowInsecureHttp: true
session:
  secrets: ["${TEST_SECRET}"]
  store: cookie
  redis:
    url: ${redis.url}
routes:
  - match: { pathPrefix: / }
    upstream: ${upstream.url}
    allow: ${allow}
metrics:
  listen: 127.0.0.1:0
`,
    )
  write('{ emails: [alice@example.com] }')
  await release()
  const proc = await spawnPortcullis(t, { file, port })
  t.teardown(() => {
    for (const pid of descendants(proc.pid)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  })
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'portcullis listening')), 'the primary says all workers listen')
  const started = proc.logs.find((l) => l.msg === 'portcullis listening')
  const pids = (started?.pids as number[] | undefined) ?? []
  t.equal(pids.length, 2, 'with two worker pids')
  t.same(new Set(childrenRunning(proc.pid, 'main.ts')), new Set(pids), 'the primary has exactly those two worker children')
  t.ok(pids.every((pid) => proc.logs.some((l) => l.msg === 'worker started' && l.pid === pid && l.role === 'primary')), 'each start is logged with its pid')
  t.ok(await eventually(() => pids.every((pid) => proc.logs.some((l) => l.msg === 'provider connected' && l.pid === pid))), 'each worker connected to the provider')
  t.ok(await eventually(() => pids.every((pid) => proc.logs.some((l) => l.msg === 'redis connected' && l.pid === pid))), 'and to Redis')

  // Log in (start and callback may land on different workers: the state is in cookies).
  const { jar } = await login({ proxyUrl: proc.url })
  const cookie = jar.header(`${proc.url}/`)
  // A new connection each time: the primary hands connections to the workers in turn.
  const burst = async (n: number, path: string): Promise<number[]> => {
    const out: number[] = []
    for (let i = 0; i < n; i++) out.push((await request(`${proc.url}${path}`, { headers: { cookie, accept: 'application/json', connection: 'close' } })).status)
    return out
  }
  t.same(new Set(await burst(20, '/before')), new Set([200]), 'alice is admitted')
  t.ok(await eventually(() => servedBy(proc, '/before', 200).size === 2), 'requests were answered by both workers')
  t.same(servedBy(proc, '/before', 200), new Set(pids), 'namely the two of the primary')

  // Metrics: the primary serves them, summed over both workers; no worker binds metrics.listen.
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'metrics listening' && l.aggregated === true && l.role === 'primary')), 'the primary serves /metrics')
  t.notOk(proc.logs.some((l) => l.msg === 'metrics listening' && l.role !== 'primary'), 'no worker listens for metrics')
  const metricsUrl = String(proc.logs.find((l) => l.msg === 'metrics listening' && l.aggregated === true)?.url)
  const served = (): number => proc.logs.filter((l) => l.msg === 'request' && l.route === 'routes[0]' && l.status === 200).length
  const scraped = async (): Promise<number> => {
    const text = (await request(metricsUrl)).body
    return Number(/^portcullis_requests_total\{route="routes\[0\]",code="200"\} (\d+)$/m.exec(text)?.[1] ?? -1)
  }
  // Access lines reach stdout in batches (every 250 ms at most): wait for all 20.
  t.ok(await eventually(() => served() >= 20), 'the access lines of both workers')
  const summed = await eventually(async () => (await scraped()) === served())
  t.ok(summed, 'portcullis_requests_total is the sum over both workers (as many as their access lines)')

  // SIGHUP to the primary: every worker reloads, and says so.
  write('{ emails: [bob@example.com] }')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'configuration reloaded on every worker')), 'the primary reports every worker reloaded')
  t.ok(await eventually(() => pids.every((pid) => proc.logs.some((l) => l.msg === 'configuration reloaded' && l.pid === pid))), 'each worker logged its reload')
  t.same(new Set(await burst(20, '/after')), new Set([403]), 'the new rule refuses alice')
  t.ok(await eventually(() => servedBy(proc, '/after', 403).size === 2), 'on both workers')

  // A broken file: refused once by the primary, no worker asked.
  writeFileSync(file, 'server: [broken\n')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => l.role === 'primary' && String(l.msg).startsWith('reload refused'))), 'a broken file is refused by the primary')
  write('{ emails: [bob@example.com] }')

  // A worker killed: replaced.
  const [victim, survivor] = pids as [number, number]
  process.kill(victim, 'SIGKILL')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'worker exited unexpectedly; starting another' && l.pid === victim)), 'its exit is logged with its pid')
  const exitLine = proc.logs.find((l) => l.msg === 'worker exited unexpectedly; starting another')
  t.match(exitLine, { signal: 'SIGKILL', restartInMs: Number }, 'with the signal and the pause before the next')
  t.ok(await eventually(() => proc.logs.filter((l) => l.msg === 'worker started').length === 3, { timeoutMs: 15_000 }), 'another worker is started')
  const replacement = proc.logs.filter((l) => l.msg === 'worker started')[2]?.pid as number
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'worker listening' && l.pid === replacement), { timeoutMs: 20_000 }), 'and listens')
  t.same(new Set(childrenRunning(proc.pid, 'main.ts')), new Set([survivor, replacement]), 'the primary has two worker children again')
  t.ok(await eventually(async () => {
    await burst(4, '/replaced')
    return servedBy(proc, '/replaced', 403).has(replacement)
  }), 'the replacement serves, with the reloaded rules')

  // SIGTERM: every worker drains, the primary exits 0, nothing is left.
  const workers = childrenRunning(proc.pid, 'main.ts')
  const tree = descendants(proc.pid)
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0, 'the primary exits 0')
  t.ok(workers.every((pid) => proc.logs.some((l) => l.msg === 'worker exited' && l.pid === pid && l.code === 0)), 'each worker exited 0 after draining')
  t.ok(await eventually(() => tree.every((pid) => !alive(pid))), 'no worker is left')
  t.equal(await listening(port), false, 'nothing listens on the port')
})

t.test('a worker that cannot start stops the primary with its exit code', async (t) => {
  const redis = await startRedis(t)
  // The port is taken: the workers' listen fails.
  const { port, release } = await holdPort()
  t.teardown(release)
  const file = join(t.testdir(), 'portcullis.yaml')
  writeFileSync(
    file,
    `server:
  listen: 127.0.0.1:${port}
  publicUrl: http://127.0.0.1:${port}
  workers: 2
provider:
  issuer: http://127.0.0.1:1
  clientId: c
  clientSecret: s
  allowInsecureHttp: true
session:
  secrets: ["${TEST_SECRET}"]
  store: cookie
  redis:
    url: ${redis.url}
routes:
  - match: { pathPrefix: / }
    upstream: http://127.0.0.1:2
    public: true
`,
  )
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../src/main.ts'), '--config', file], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  t.equal(code, 1, 'the primary exits 1')
  t.match(out, /"msg":"a worker could not start; stopping"/, 'and says why')
  t.match(out, /EADDRINUSE/, 'the worker logged its cause')
  t.equal(descendants(child.pid as number).length, 0, 'no worker is left')
})
