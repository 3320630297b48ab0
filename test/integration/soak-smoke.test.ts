/**
 * Keeps `npm run soak` working (issue #12 point 10): a 12-second soak with the memory store, small
 * and with short-lived tokens and sessions so that every kind of operation happens in it (logins,
 * proxied requests, refreshes, RP-initiated sign-outs, back-channel logouts from the provider, and
 * refused requests with the cookies of ended sessions). Asserts that it exits 0, printed the RSS
 * lines and a progress line, and counted each kind at least once with no error. No timing or
 * RSS-ratio assertion: those belong to the soak itself (its full run fails on them).
 */
import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import t from 'tap'

const ROOT = resolve(import.meta.dirname, '../..')
const SOAK = resolve(ROOT, 'bench/soak.ts')
const KINDS = ['login', 'request', 'refresh', 'signout', 'backchannel', 'refused'] as const

function runSoak(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', SOAK, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    // The soak stops its processes on SIGTERM.
    const timer = setTimeout(() => child.kill('SIGTERM'), 150_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

interface SoakJson {
  store: string
  ops: Record<(typeof KINDS)[number], number>
  deliveries: number
  errors: number
  rssStartBytes: number
  rssEndBytes: number
}

t.test('npm run soak -- --duration=12s --store=memory: every kind of operation, no errors, RSS printed', { timeout: 180_000 }, async (t) => {
  const res = await runSoak([
    '--duration=12s',
    '--store=memory',
    '--no-build',
    '--users=10',
    '--interval=100ms',
    '--session=3s-5s',
    '--token-ttl=4s',
    '--refresh-ahead=2s',
    '--progress=4s',
  ])
  const out = `stdout:\n${res.stdout}\nstderr:\n${res.stderr}`
  t.equal(res.code, 0, `exits 0\n${out}`)
  t.match(res.stdout, /^RSS start\s+\d+\.\d MiB \(after the 1 s warm-up/m, 'prints RSS after the warm-up')
  t.match(res.stdout, /^RSS end\s+\d+\.\d MiB\s+ratio \d+\.\d{3} \(limit 1\.20\)/m, 'prints RSS at the end with the ratio')
  t.match(res.stdout, /^\s+\d+ s\s+login \d+, request [\d,]+, refresh \d+, signout \d+, backchannel \d+, refused [\d,]+; errors 0; RSS \d/m, 'prints progress lines')
  t.match(res.stdout, /^result\s+PASS$/m, 'says PASS')

  const line = res.stdout.split('\n').find((l) => l.startsWith('SOAKJSON '))
  t.ok(line, 'prints the machine-readable summary')
  const json = JSON.parse((line ?? 'SOAKJSON {}').slice('SOAKJSON '.length)) as SoakJson
  t.equal(json.store, 'memory')
  t.equal(json.errors, 0, 'no errors')
  for (const kind of KINDS) t.ok((json.ops?.[kind] ?? 0) > 0, `counted ${kind}: ${json.ops?.[kind]}`)
  t.ok(json.deliveries >= json.ops.backchannel, 'the provider delivered a logout token for every provider logout')
  t.ok(json.rssStartBytes > 0 && json.rssEndBytes > 0, 'RSS read from /proc')
  const counts = res.stdout.split('\n').find((l) => l.startsWith('counts '))
  t.match(counts, /login \d+, request [\d,]+, refresh \d+, signout \d+, backchannel \d+, refused [\d,]+/, 'the summary counts each kind')
})

t.test('npm run soak with a bad option: exit 2 and the usage, nothing started', async (t) => {
  const res = await runSoak(['--store=etcd'])
  t.equal(res.code, 2)
  t.match(res.stderr, /--store must be cookie, memory or redis/)
  t.match(res.stderr, /usage: npm run soak/)
  t.equal(res.stdout, '', 'no run began')
})
