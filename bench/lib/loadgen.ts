/**
 * Load generators behind one interface: wrk (primary), autocannon (only when already installed), and
 * the built-in Node generator (bench/node-loadgen.ts; `--smoke` without wrk, or `--loadgen=node`).
 * Each runs as its own process, pinned to the load core.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pinned, which } from './procs.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = resolve(HERE, '../..')
const LUA = join(HERE, 'wrk-report.lua')
const NODE_LOADGEN = resolve(HERE, '../node-loadgen.ts')

export type LoadgenKind = 'wrk' | 'autocannon' | 'node'

export interface Loadgen {
  readonly kind: LoadgenKind
  readonly version: string
  /** Why this one was chosen (printed). */
  readonly note: string
  run(spec: LoadSpec): Promise<LoadResult>
}

export interface LoadSpec {
  url: string
  headers: Record<string, string>
  connections: number
  threads: number
  durationSec: number
  core: number | null
}

export interface LoadResult {
  requests: number
  durationSec: number
  rps: number
  bytes: number
  errors: { connect: number; read: number; write: number; status: number; timeout: number }
  /** Latencies in ms. */
  latency: { mean: number; max: number; p50: number; p90: number; p99: number; p999: number }
}

interface RawReport {
  requests: number
  duration_us: number
  bytes: number
  errors: LoadResult['errors']
  latency_us: { min: number; mean: number; stdev: number; max: number; p50: number; p90: number; p99: number; p999: number }
}

function fromRaw(raw: RawReport): LoadResult {
  const ms = (us: number) => us / 1000
  const durationSec = raw.duration_us / 1e6
  return {
    requests: raw.requests,
    durationSec,
    rps: durationSec > 0 ? raw.requests / durationSec : 0,
    bytes: raw.bytes,
    errors: raw.errors,
    latency: {
      mean: ms(raw.latency_us.mean),
      max: ms(raw.latency_us.max),
      p50: ms(raw.latency_us.p50),
      p90: ms(raw.latency_us.p90),
      p99: ms(raw.latency_us.p99),
      p999: ms(raw.latency_us.p999),
    },
  }
}

function exec(command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr })
    })
  })
}

function parseBenchJson(stdout: string, what: string, stderr: string): RawReport {
  const line = stdout.split('\n').find((l) => l.startsWith('BENCHJSON '))
  if (line === undefined) throw new Error(`${what}: no report in its output\nstdout: ${stdout.slice(-2000)}\nstderr: ${stderr.slice(-2000)}`)
  return JSON.parse(line.slice('BENCHJSON '.length)) as RawReport
}

function wrk(path: string): Loadgen {
  const version = (spawnSync(path, ['-v'], { encoding: 'utf8' }).stdout || '').split('\n')[0]?.replace(/\s+Copyright.*$/, '').trim() || 'wrk'
  return {
    kind: 'wrk',
    version,
    note: `wrk found at ${path}`,
    async run(spec) {
      // wrk takes whole seconds.
      const seconds = Math.max(1, Math.round(spec.durationSec))
      const args = ['-t', String(Math.min(spec.threads, spec.connections)), '-c', String(spec.connections), '-d', `${seconds}s`, '--timeout', '5s', '-s', LUA]
      for (const [name, value] of Object.entries(spec.headers)) args.push('-H', `${name}: ${value}`)
      args.push(spec.url)
      const [cmd, argv] = pinned(spec.core, path, args)
      const res = await exec(cmd, argv, (seconds + 30) * 1000)
      if (res.code !== 0) throw new Error(`wrk exited ${res.code}: ${res.stderr.slice(-2000)}`)
      return fromRaw(parseBenchJson(res.stdout, 'wrk', res.stderr))
    },
  }
}

/**
 * autocannon's CLI with `--json` (fields as in autocannon's test/fixtures/example-result.json:
 * `requests.total`, `duration` in s, `latency.p50/p90/p99/p99_9` in ms, `errors`, `timeouts`,
 * `non2xx`). Only used when it is already installed; this project does not depend on it.
 */
function autocannon(path: string): Loadgen {
  const version = (spawnSync(path, ['--version'], { encoding: 'utf8' }).stdout || '').trim().split('\n')[0] ?? 'autocannon'
  return {
    kind: 'autocannon',
    version: `autocannon ${version}`,
    note: `wrk not found; autocannon found at ${path}`,
    async run(spec) {
      const seconds = Math.max(1, Math.round(spec.durationSec))
      const args = ['--json', '-c', String(spec.connections), '-d', String(seconds), '-t', '5']
      for (const [name, value] of Object.entries(spec.headers)) args.push('-H', `${name}=${value}`)
      args.push(spec.url)
      const [cmd, argv] = pinned(spec.core, path, args)
      const res = await exec(cmd, argv, (seconds + 30) * 1000)
      if (res.code !== 0) throw new Error(`autocannon exited ${res.code}: ${res.stderr.slice(-2000)}`)
      const j = JSON.parse(res.stdout) as {
        requests: { total: number }
        duration: number
        throughput: { total: number }
        latency: { mean: number; max: number; p50: number; p90: number; p99: number; p99_9: number }
        errors: number
        timeouts: number
        non2xx: number
        '4xx'?: number
        '5xx'?: number
      }
      const us = (ms: number) => Math.round(ms * 1000)
      return fromRaw({
        requests: j.requests.total,
        duration_us: Math.round(j.duration * 1e6),
        bytes: j.throughput.total,
        // autocannon's non2xx counts 3xx too; the bench's status errors are 4xx/5xx, like wrk's.
        errors: { connect: 0, read: j.errors, write: 0, status: (j['4xx'] ?? 0) + (j['5xx'] ?? 0), timeout: j.timeouts },
        latency_us: { min: 0, mean: us(j.latency.mean), stdev: 0, max: us(j.latency.max), p50: us(j.latency.p50), p90: us(j.latency.p90), p99: us(j.latency.p99), p999: us(j.latency.p99_9) },
      })
    },
  }
}

function nodeLoadgen(note: string): Loadgen {
  return {
    kind: 'node',
    version: `built-in (bench/node-loadgen.ts, undici Pool, Node ${process.version})`,
    note,
    async run(spec) {
      const arg = JSON.stringify({ url: spec.url, connections: spec.connections, durationSec: spec.durationSec, headers: spec.headers })
      const [cmd, argv] = pinned(spec.core, process.execPath, ['--import', 'tsx', NODE_LOADGEN, arg])
      const res = await exec(cmd, argv, (spec.durationSec + 60) * 1000)
      if (res.code !== 0) throw new Error(`node-loadgen exited ${res.code}: ${res.stderr.slice(-2000)}`)
      return fromRaw(parseBenchJson(res.stdout, 'node-loadgen', res.stderr))
    },
  }
}

function findAutocannon(): string | null {
  const local = join(ROOT, 'node_modules/.bin/autocannon')
  if (existsSync(local)) return local
  return which('autocannon')
}

/**
 * Pick the load generator: `--loadgen` when given; else wrk, else autocannon when installed; else the
 * built-in one in smoke mode; else none (the load runs are skipped, with `reason`).
 */
export function chooseLoadgen(wanted: LoadgenKind | undefined, smoke: boolean): { loadgen: Loadgen | null; reason: string } {
  const wrkPath = which('wrk')
  if (wanted === 'wrk') {
    return wrkPath === null ? { loadgen: null, reason: '--loadgen=wrk but wrk is not installed (scripts/install-bench-peers.sh)' } : { loadgen: wrk(wrkPath), reason: '' }
  }
  if (wanted === 'autocannon') {
    const ac = findAutocannon()
    return ac === null ? { loadgen: null, reason: '--loadgen=autocannon but autocannon is not installed' } : { loadgen: autocannon(ac), reason: '' }
  }
  if (wanted === 'node') return { loadgen: nodeLoadgen('--loadgen=node'), reason: '' }
  if (wrkPath !== null) return { loadgen: wrk(wrkPath), reason: '' }
  const ac = findAutocannon()
  if (ac !== null) return { loadgen: autocannon(ac), reason: '' }
  if (smoke) {
    return { loadgen: nodeLoadgen('neither wrk nor autocannon is installed: smoke mode uses the built-in Node load generator (numbers only show that it works)'), reason: '' }
  }
  return {
    loadgen: null,
    reason:
      'neither wrk nor autocannon is installed: load runs skipped. Install wrk with scripts/install-bench-peers.sh, ' +
      'or pass --loadgen=node for the built-in Node generator (too slow to measure a proxy near its ceiling)',
  }
}
