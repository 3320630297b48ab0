/**
 * Portcullis as its own process (`node --import tsx src/main.ts --config FILE`), for what only a
 * process shows: its memory (VmRSS), its signals, its exit code, a config file read as it ships. The
 * config is written to a test directory (`startPortcullisProcess`) or an existing file is used with an
 * environment of the test's (`spawnPortcullis`); the listener is on a port held until the process
 * starts; logs are collected from stdout.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Agent as HttpsAgent } from 'node:https'
import type { Test } from 'tap'
import { holdPort } from './ports.ts'
import { request } from './http.ts'
import { eventually } from './wait.ts'
import { TEST_SECRET } from './config.ts'

const MAIN = resolve(import.meta.dirname, '../../src/main.ts')

export interface PortcullisProcess {
  readonly child: ChildProcess
  readonly pid: number
  /** `http://127.0.0.1:<port>` (`https://` with `tls`) */
  readonly url: string
  readonly port: number
  /** Parsed JSON log lines so far. */
  readonly logs: Array<Record<string, unknown>>
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>
  /** The process's resident set size now, in bytes (from /proc). */
  rss(): number
}

/**
 * The YAML of a Portcullis whose every path is a public route to `upstream`, with a provider that is
 * never reached (public routes need none): for what is about connections, not logins. `server` adds
 * keys to the server section (`shutdownTimeout: 1s`); `logLevel` defaults to info.
 */
export function publicOnlyConfig(port: number, upstream: string, opts: { server?: Record<string, string>; logLevel?: string } = {}): string {
  const server = Object.entries(opts.server ?? {}).map(([k, v]) => `  ${k}: ${v}\n`).join('')
  return `server:
  listen: 127.0.0.1:${port}
  publicUrl: http://127.0.0.1:${port}
${server}provider:
  issuer: http://127.0.0.1:1
  clientId: process-test
  clientSecret: process-test-client-secret-long-enough
  allowInsecureHttp: true
session:
  secrets: ["${TEST_SECRET}"]
routes:
  - match: { pathPrefix: / }
    upstream: ${upstream}
    public: true
logging:
  level: ${opts.logLevel ?? 'info'}
`
}

/** Start Portcullis with `config(port)` as its YAML; resolves once `/healthz` answers. */
export async function startPortcullisProcess(t: Test, config: (port: number) => string): Promise<PortcullisProcess> {
  const { port, release } = await holdPort()
  const file = join(t.testdir(), 'portcullis.yaml')
  writeFileSync(file, config(port))
  await release()
  return spawnPortcullis(t, { file, port })
}

export interface SpawnOptions {
  /** The config file, used as it is. */
  file: string
  /** The port its `server.listen` names on 127.0.0.1 (free: release a held port right before). */
  port: number
  /** Environment besides PATH and NODE_ENV=production: `${VAR}` values and PORTCULLIS_* overrides. */
  env?: Record<string, string>
  /** The listener is HTTPS (`server.tls`) with a certificate these CAs (a self-signed one) vouch for. */
  tls?: { ca: string | string[] }
}

/** Start Portcullis on an existing config file with the given environment; resolves once `/healthz` answers. */
export async function spawnPortcullis(t: Test, opts: SpawnOptions): Promise<PortcullisProcess> {
  const { file, port } = opts
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', file], {
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const logs: Array<Record<string, unknown>> = []
  let buffered = ''
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString('utf8')
    let nl: number
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        logs.push({ unparsed: line })
      }
    }
  })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')))
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  const url = `${opts.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`
  const agent = opts.tls === undefined ? undefined : new HttpsAgent({ ca: opts.tls.ca })
  const up = await eventually(async () => (await request(`${url}/healthz`, { agent }).catch(() => null))?.status === 200, { timeoutMs: 20_000, everyMs: 100 })
  agent?.destroy()
  if (!up) throw new Error(`Portcullis did not start: ${stderr}`)
  const pid = child.pid as number
  return {
    child,
    pid,
    url,
    port,
    logs,
    exited,
    rss() {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1]
      return Number(kb) * 1024
    },
  }
}
