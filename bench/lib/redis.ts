/**
 * A redis-server for the bench's worker rows (cookie store, `session.redis` for coordination): on
 * 127.0.0.1, a free port, nothing persisted. Null when redis-server is not installed.
 */
import { createConnection } from 'node:net'
import { sleep, start, which, type Managed } from './procs.ts'

export async function startRedisServer(opts: { port: number; core: number | string | null }): Promise<{ proc: Managed; url: string } | { reason: string }> {
  const bin = which('redis-server')
  if (bin === null) return { reason: 'redis-server is not installed (scripts/install-system-deps.sh installs it)' }
  const proc = start('redis', bin, ['--bind', '127.0.0.1', '--port', String(opts.port), '--save', '', '--appendonly', 'no'], { core: opts.core })
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null) return { reason: `redis-server exited (${proc.child.exitCode}): ${proc.tail()}` }
    if (await ping(opts.port)) return { proc, url: `redis://127.0.0.1:${opts.port}` }
    await sleep(50)
  }
  await proc.stop()
  return { reason: `redis-server did not answer on 127.0.0.1:${opts.port}` }
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
