/**
 * A real `redis-server` for the system tests (Debian's, installed by scripts/install-system-deps.sh):
 * on 127.0.0.1, on a port the OS picked, with no persistence. `stop()` and `start()` again on the same
 * port let a test take Redis away mid-test and bring it back; `t.teardown` stops it for good.
 * `startRedisCluster` makes a Redis Cluster of three such servers (redis-cli, from the same package).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createConnection } from 'node:net'
import type { Test } from 'tap'
import { holdPort } from './ports.ts'

export const REDIS_SERVER = '/usr/bin/redis-server'

export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  /** Stop the server (SIGKILL: like a crash or a network cut; nothing is saved). */
  stop(): Promise<void>
  /** Start it again on the same port (empty: it kept nothing). */
  start(): Promise<void>
  /** Send one command (RESP inline) and read the reply's first line, e.g. `DBSIZE` → `:3`. */
  command(...args: string[]): Promise<string>
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('error', () => resolve(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (d) => {
      socket.destroy()
      resolve(d.toString().startsWith('+PONG'))
    })
  })
}

export async function startRedis(t: Test, extraArgs: readonly string[] = []): Promise<RedisServer> {
  const held = await holdPort()
  const port = held.port
  let child: ChildProcess | null = null
  let stderr = ''
  const start = async (): Promise<void> => {
    child = spawn(REDIS_SERVER, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', ...extraArgs], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${stderr}`)
      if (await ping(port)) return
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error(`redis-server did not answer on 127.0.0.1:${port}: ${stderr}`)
  }
  const stop = async (): Promise<void> => {
    const c = child
    child = null
    if (c === null || c.exitCode !== null) return
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve())
      c.kill('SIGKILL')
    })
  }
  await held.release()
  await start()
  t.teardown(stop)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    command: (...args) =>
      new Promise((resolve, reject) => {
        const socket = createConnection({ host: '127.0.0.1', port })
        socket.once('error', reject)
        socket.once('connect', () => socket.write(`${args.map((a) => JSON.stringify(a)).join(' ')}\r\n`))
        socket.once('data', (d) => {
          socket.destroy()
          resolve(d.toString().split('\r\n')[0] ?? '')
        })
      }),
  }
}

export const REDIS_CLI = '/usr/bin/redis-cli'

export interface RedisCluster {
  /** The masters, `127.0.0.1:<port>` each: the seed nodes for `session.redis.cluster.nodes`. */
  readonly nodes: readonly string[]
  readonly servers: readonly RedisServer[]
}

/**
 * A real Redis Cluster of three masters (no replicas) on free loopback ports, each a `redis-server`
 * with `cluster-enabled`, joined by `redis-cli --cluster create`; resolves once every node reports
 * `cluster_state:ok` (all 16384 slots served). Stopped with `t`.
 */
export async function startRedisCluster(t: Test): Promise<RedisCluster> {
  const dir = t.testdir()
  const servers: RedisServer[] = []
  for (let i = 0; i < 3; i++) {
    servers.push(await startRedis(t, ['--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes-${i}-${process.pid}.conf`, '--cluster-node-timeout', '5000']))
  }
  const nodes = servers.map((s) => `127.0.0.1:${s.port}`)
  await new Promise<void>((resolve, reject) => {
    const cli = spawn(REDIS_CLI, ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    cli.stdout?.on('data', (d: Buffer) => (out += d.toString()))
    cli.stderr?.on('data', (d: Buffer) => (out += d.toString()))
    cli.once('error', reject)
    cli.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-cli --cluster create exited with ${code}: ${out}`))))
  })
  const deadline = Date.now() + 20_000
  for (const server of servers) {
    for (;;) {
      const info = await infoOf(server.port)
      if (info.includes('cluster_state:ok')) break
      if (Date.now() > deadline) throw new Error(`cluster did not settle: ${info}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  return { nodes, servers }
}

/** `CLUSTER INFO` of one node, as text. */
function infoOf(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let text = ''
    socket.once('error', () => resolve(''))
    socket.once('connect', () => socket.write('CLUSTER INFO\r\n'))
    socket.on('data', (d) => {
      text += d.toString()
      if (text.includes('cluster_state:')) {
        socket.destroy()
        resolve(text)
      }
    })
  })
}
