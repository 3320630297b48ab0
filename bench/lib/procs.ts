/**
 * Child processes of the bench: spawning (pinned to a core with `taskset` when available), waiting
 * until they are ready, stopping them by pid, and reading their RSS and CPU time from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'

export interface Managed {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  /** Last lines of stderr (and stdout when it is piped), for error messages. */
  tail(): string
  stop(): Promise<void>
}

/** Path of a program on PATH (or in the sbin directories, where Debian puts nginx and apache2), or null. */
export function which(program: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin']
  for (const dir of dirs) {
    if (dir === '') continue
    try {
      accessSync(`${dir}/${program}`, constants.X_OK)
      return `${dir}/${program}`
    } catch {
      // not here
    }
  }
  return null
}

/** The CPU layout: which cores the servers, the load generator and the provider run on. */
export interface Layout {
  readonly taskset: boolean
  readonly cores: number
  readonly servers: number | null
  readonly load: number | null
  readonly provider: number | null
  /** Every core (`0-N`), for what is measured spread over the machine (`server.workers`); null without pinning. */
  readonly all: string | null
  describe(): string
}

export function planLayout(wantPin: boolean): Layout {
  const cores = os.availableParallelism()
  const taskset = wantPin && which('taskset') !== null && cores >= 2
  if (!taskset) {
    const why = !wantPin ? 'pinning off (--no-pin)' : cores < 2 ? `only ${cores} core` : 'taskset not found'
    return { taskset, cores, servers: null, load: null, provider: null, all: null, describe: () => `no pinning (${why}); every process floats over ${cores} core(s)` }
  }
  // Servers on core 0, the load generator on core 1, the provider on a core of its own when there is
  // one (it only works during logins; during the load runs it is idle), else with the load generator
  // so that login CPU does not land on Portcullis's core.
  const provider = cores >= 3 ? 2 : 1
  return {
    taskset,
    cores,
    servers: 0,
    load: 1,
    provider,
    all: `0-${cores - 1}`,
    describe: () =>
      `servers (upstream, bare proxy, Portcullis, nginx, Apache) on core 0; load generator (wrk / login loop / this process) on core 1; ` +
      `provider on core ${provider}${provider === 1 ? ' (shared with the load generator: only 2 cores; it is idle during the load runs)' : ''}`,
  }
}

/** Prefix a command with `taskset -c <core>` (a core, or a list such as `0-1`) when pinning. */
export function pinned(core: number | string | null, command: string, args: readonly string[]): [string, string[]] {
  return core === null ? [command, [...args]] : ['taskset', ['-c', String(core), command, ...args]]
}

/** Pin this process (all its threads) to a core. */
export function pinSelf(core: number | null): void {
  if (core === null) return
  spawnSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' })
}

export interface SpawnOptions {
  core: number | string | null
  env?: Record<string, string | undefined>
  cwd?: string
  /** Send stdout and stderr to this file instead of a pipe (long-running servers that log per request). */
  logFile?: string
}

const TAIL_LINES = 40

export function start(name: string, command: string, args: readonly string[], opts: SpawnOptions): Managed {
  const [cmd, argv] = pinned(opts.core, command, args)
  let fd: number | undefined
  if (opts.logFile !== undefined) fd = openSync(opts.logFile, 'a')
  const child = spawn(cmd, argv, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'],
  })
  if (fd !== undefined) closeSync(fd)
  const lines: string[] = []
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line === '') continue
      lines.push(line)
      if (lines.length > TAIL_LINES) lines.shift()
    }
  }
  child.stderr?.on('data', keep)
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`)
  const pid = child.pid
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    name,
    child,
    pid,
    tail: () => {
      if (opts.logFile === undefined) return lines.join('\n')
      try {
        return readFileSync(opts.logFile, 'utf8').split('\n').slice(-TAIL_LINES).join('\n')
      } catch {
        return ''
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Wait for the first stdout line that parses as JSON with `ready: true`. */
export function readyLine<T extends object>(proc: Managed, timeoutMs = 60_000): Promise<T & { ready: true }> {
  return new Promise((resolve, reject) => {
    const out = proc.child.stdout
    if (out === null) {
      reject(new Error(`${proc.name}: stdout is not piped`))
      return
    }
    let buffer = ''
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('utf8')
      let nl
      while ((nl = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        try {
          const parsed = JSON.parse(line) as T & { ready?: boolean }
          if (parsed.ready === true) {
            finish()
            resolve(parsed as T & { ready: true })
            // Keep draining stdout so the child never blocks on a full pipe.
            out.resume()
            return
          }
        } catch {
          // not our line
        }
      }
    }
    const onExit = (code: number | null) => {
      finish()
      reject(new Error(`${proc.name} exited (${code}) before it was ready:\n${proc.tail()}`))
    }
    const timer = setTimeout(() => {
      finish()
      reject(new Error(`${proc.name} not ready after ${timeoutMs} ms:\n${proc.tail()}`))
    }, timeoutMs)
    const finish = () => {
      clearTimeout(timer)
      out.off('data', onData)
      proc.child.off('exit', onExit)
    }
    out.on('data', onData)
    proc.child.on('exit', onExit)
  })
}

/** Poll a URL until it answers `status` (default 200). */
export async function waitForHttp(url: string, proc: Managed | null, opts: { status?: number; timeoutMs?: number } = {}): Promise<void> {
  const want = opts.status ?? 200
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (proc !== null && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`${proc.name} exited (${proc.child.exitCode ?? proc.child.signalCode}) before it was ready:\n${proc.tail()}`)
    }
    const status = await new Promise<number | string>((resolve) => {
      const req = http.get(url, { agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', (err) => resolve(err.message))
      req.setTimeout(2000, () => req.destroy(new Error('timeout')))
    })
    if (status === want) return
    last = String(status)
    await sleep(100)
  }
  throw new Error(`${proc?.name ?? url}: ${url} did not answer ${want} in time (last: ${last})${proc === null ? '' : `\n${proc.tail()}`}`)
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export { reservePort as freePort, holdPort } from '../../test/helpers/ports.ts'

/** Resident set size in bytes (VmRSS), or null when /proc has no such process. */
export function rssOf(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

/** User + system CPU time of a process in ms (from /proc/<pid>/stat, clock ticks at 100 Hz), or null. */
export function cpuMsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return ((utime + stime) * 1000) / CLOCK_TICKS
  } catch {
    return null
  }
}

const CLOCK_TICKS = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number(r.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

/** Wait until `count` lines of a log file match `pattern` (a process tree's workers, say). */
export async function waitForLog(file: string, pattern: RegExp, count: number, proc: Managed, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let text = ''
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      // not written yet
    }
    if (text.split('\n').filter((line) => pattern.test(line)).length >= count) return
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`${proc.name} exited before ${count} line(s) matched ${pattern}:\n${proc.tail()}`)
    if (Date.now() > deadline) throw new Error(`${proc.name}: fewer than ${count} line(s) matched ${pattern} after ${timeoutMs} ms:\n${proc.tail()}`)
    await sleep(100)
  }
}
