/**
 * Keeps `npm run bench` working (issue #4 point 2): the 1-second smoke run starts every server, logs
 * in, measures (a) (b) (c) (f) (g) and (c) and (e) with an aged and a fresh session, prints the table and writes the JSON. Once with the default load
 * generator (wrk when installed, else the built-in one) and once forced onto the built-in Node
 * generator, the path CI takes without wrk. No timing assertions: only that each rate is above 0.
 */
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'

const ROOT = resolve(import.meta.dirname, '../..')
const RUN = resolve(ROOT, 'bench/run.ts')
const KEYS = ['a', 'b', 'c', 'cf', 'e', 'ef', 'v', 'f', 'g'] as const
/** How each row starts in the table: (c) and (e) are the aged-session figures, beside the fresh ones. */
const PREFIX: Record<(typeof KEYS)[number], string> = { a: '(a) ', b: '(b) ', c: '(c) ', cf: '(c fresh) ', e: '(e) ', ef: '(e fresh) ', v: "(e') ", f: '(f) ', g: '(g) ' }

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RUN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    // The bench stops its servers on SIGTERM.
    const timer = setTimeout(() => child.kill('SIGTERM'), 100_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

interface BenchJson {
  smoke: boolean
  machine: { node: string; cpuModel: string; cores: number }
  settings: { duration: number; connections: number; repeat: number }
  loadgen: { kind: string | null }
  rows: Record<string, { status: string; unit: string; rps: { median: number; min: number; max: number } | null }>
}

for (const variant of [
  { name: 'default load generator', args: ['--smoke'] },
  { name: 'built-in Node load generator', args: ['--smoke', '--loadgen=node'] },
]) {
  t.test(`npm run bench -- ${variant.args.join(' ')} (${variant.name})`, async (t) => {
    const res = await runBench(variant.args)
    const out = `stdout:\n${res.stdout}\nstderr:\n${res.stderr}`
    t.equal(res.code, 0, `exits 0\n${out}`)

    for (const key of KEYS) {
      const line = res.stdout.split('\n').find((l) => l.startsWith(PREFIX[key]))
      t.ok(line, `the table has a row for (${key})`)
      // Labels hold no digits: the first number on the row is its rate (req/s, or logins/s for (g)).
      const rate = Number(/\d[\d,]*(?:\.\d+)?/.exec(line ?? '')?.[0]?.replace(/,/g, '') ?? Number.NaN)
      t.ok(rate > 0, `(${key}) printed a positive rate: ${line}`)
    }
    t.match(res.stdout, /\(c\) Portcullis, session, aged/, 'the table says which figure is the aged one')
    if (variant.args.includes('--loadgen=node')) t.match(res.stdout, /loadgen\s+built-in/, 'says it used the built-in generator')

    const file = /^results: (.+\.json)$/m.exec(res.stdout)?.[1]
    t.ok(file, 'prints where the JSON went')
    if (file === undefined) return
    const path = resolve(ROOT, file)
    t.teardown(() => rmSync(path, { force: true }))
    t.ok(existsSync(path), 'the JSON file exists')
    const json = JSON.parse(readFileSync(path, 'utf8')) as BenchJson
    t.equal(json.smoke, true)
    t.match(json.machine, { node: process.version, cpuModel: String, cores: Number })
    t.match(json.settings, { duration: 1, repeat: 1, connections: 64 })
    t.ok(json.loadgen.kind, 'records the load generator')
    for (const key of KEYS) {
      const row = json.rows[key]
      t.equal(row?.status, 'ok', `(${key}) measured`)
      t.ok((row?.rps?.median ?? 0) > 0, `(${key}) has a positive ${row?.unit ?? 'rate'} in the JSON`)
    }
  })
}
