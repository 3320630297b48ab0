/**
 * `npm start` (the demo for a newcomer, no config) is one process tree that a SIGTERM to npm ends
 * whole: npm passes the signal to its script, and the script is Portcullis itself (`exec node`), not a
 * shell that dies and leaves the demo running, orphaned.
 */
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { resolve } from 'node:path'
import t from 'tap'
import { holdPort } from '../helpers/ports.ts'
import { request } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'
import { alive, descendants } from '../helpers/proc-tree.ts'

const ROOT = resolve(import.meta.dirname, '../..')

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

t.test('npm start serves the demo and a SIGTERM to npm ends the whole process tree', async (t) => {
  const { port, release } = await holdPort()
  await release()
  const npm = spawn('npm', ['start', '--silent', '--', '--port', String(port)], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', npm_config_update_notifier: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  npm.stdout.on('data', (d: Buffer) => (out += d.toString()))
  npm.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)))
  let tree: number[] = []
  t.teardown(async () => {
    for (const pid of [...tree, ...descendants(npm.pid as number)]) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL')
    await exited
  })

  const up = await eventually(async () => (await request(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.status === 200, { timeoutMs: 30_000, everyMs: 100 })
  if (!up) t.comment(out)
  t.ok(up, 'the demo serves on the port it was given')
  t.match(out, `Open:      http://localhost:${port}/`, 'it prints where to open it')
  const page = await request(`http://127.0.0.1:${port}/`, { headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' } })
  t.equal(page.status, 302, 'a protected page sends the browser to sign in')
  tree = descendants(npm.pid as number)
  t.ok(tree.length >= 1, `npm has its script running under it (${tree.join(', ')})`)

  npm.kill('SIGTERM')
  // The demo's shutdownTimeout is the default 20 s; its drain finishes at once with nothing open.
  const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 25_000).unref())])
  t.not(code, 'timeout', 'npm exits within the shutdown bound')
  t.ok(await eventually(() => tree.every((pid) => !alive(pid)), { timeoutMs: 25_000, everyMs: 100 }), 'no process of the tree is left')
  t.equal(await listening(port), false, 'nothing listens on the port any more')
  t.match(out, /"signal":"SIGTERM".*shutting down/, 'Portcullis itself got the SIGTERM and drained')
})
