import cluster, { type Worker } from 'node:cluster'
import { availableParallelism } from 'node:os'
import type { Logger } from 'pino'

/**
 * `server.workers: N | auto`: N processes serving one listener (node:cluster; the primary holds the
 * socket and hands connections round-robin to the workers). Each worker is a whole Portcullis
 * (`main.ts` runs it as it runs a single process: same config file, same runtime, its own provider
 * and Redis connections); the primary serves no request. It:
 *
 * - forks the workers and says when all of them listen; a worker that fails at the first start stops
 *   them all (its exit code, 2 for a bad config, is the primary's);
 * - forwards SIGHUP to every worker as a message (each reloads the file as a single process does) and
 *   logs the outcome: reloaded everywhere, or which workers refused and why;
 * - on SIGTERM/SIGINT tells every worker to drain (SIGTERM) and exits 0 once all have exited 0,
 *   within `server.shutdownTimeout` (plus a moment; a worker still there is then killed, exit 1);
 * - replaces a worker that dies while it is not shutting down, after a pause that grows while
 *   replacements keep dying young (0.25 s doubling to 30 s; back to 0.25 s after one lived a minute);
 * - logs each worker's start and exit with its pid.
 *
 * With 1 worker none of this runs: `main.ts` serves in its own process, as without the setting.
 */

/** The number of worker processes for `server.workers`. */
export function workerCount(setting: number | 'auto'): number {
  return setting === 'auto' ? availableParallelism() : setting
}

/** Messages between the primary and its workers (others on the channel, e.g. a metrics library's, are left alone). */
type ToWorker = { readonly portcullis: 'reload'; readonly seq: number }
type ToPrimary = { readonly portcullis: 'reloaded'; readonly seq: number; readonly ok: boolean; readonly reason?: string }

function isOurs(message: unknown, kind: string): boolean {
  return typeof message === 'object' && message !== null && (message as { portcullis?: unknown }).portcullis === kind
}

/** A reload's outcome in one process: done, or refused with the reason (the running config kept). */
export type ReloadOutcome = { readonly ok: true } | { readonly ok: false; readonly reason: string }

/** The worker's side, or null in a process that is not a cluster worker. */
export interface WorkerChannel {
  readonly id: number
  /** Run `reload` for each reload the primary asks for, and report its outcome. */
  onReload(reload: () => Promise<ReloadOutcome>): void
}

export function workerChannel(): WorkerChannel | null {
  const me = cluster.worker
  if (!cluster.isWorker || me === undefined) return null
  return {
    id: me.id,
    onReload(reload) {
      process.on('message', (message: unknown) => {
        if (!isOurs(message, 'reload')) return
        const { seq } = message as ToWorker
        void reload()
          .catch((err: unknown): ReloadOutcome => ({ ok: false, reason: (err as Error).message }))
          .then((outcome) => {
            const reply: ToPrimary = outcome.ok ? { portcullis: 'reloaded', seq, ok: true } : { portcullis: 'reloaded', seq, ok: false, reason: outcome.reason }
            if (process.connected) process.send?.(reply)
          })
      })
    },
  }
}

/**
 * Something the primary runs beside its workers, started once they all listen and closed at
 * shutdown: the seam for what belongs to the whole process tree (metrics aggregated across the
 * workers on `metrics.listen`, which a worker must not bind on its own).
 */
export interface PrimaryService {
  readonly name: string
  start(workers: () => readonly Worker[]): Promise<void>
  close(): Promise<void>
}

export interface PrimaryOptions {
  readonly count: number
  readonly log: Logger
  readonly shutdownTimeoutMs: number
  /** Logged once all workers listen. */
  readonly listening: Readonly<Record<string, unknown>>
  /**
   * At SIGHUP, before asking the workers: read the file again. A refusal (the file has problems; its
   * reason logged by the caller) asks no worker; else the settings the primary itself follows.
   */
  readonly reloadCheck: () => { readonly shutdownTimeoutMs: number; readonly logLevel: string } | null
  /** How long a worker may take to answer a reload (it waits for a new provider or Redis connection). */
  readonly reloadWaitMs: number
  readonly services?: readonly PrimaryService[]
}

const RESTART_FIRST_MS = 250
const RESTART_MAX_MS = 30_000
/** A worker that lived this long died of something new: its replacement starts at once. */
const LIVED_MS = 60_000

/** Run the primary; the promise never resolves: the process exits from its signal handlers. */
export function runPrimary(opts: PrimaryOptions): Promise<number> {
  const { log } = opts
  let shutdownTimeoutMs = opts.shutdownTimeoutMs
  let stopping = false
  let started = false
  let seq = 0
  /** Consecutive early deaths, for the pause before the next replacement. */
  let failures = 0
  const pending = new Set<NodeJS.Timeout>()
  const live = new Map<number, { worker: Worker; pid: number; since: number; listening: boolean }>()
  const services = opts.services ?? []

  const fork = (): void => {
    const worker = cluster.fork()
    const pid = worker.process.pid ?? 0
    live.set(worker.id, { worker, pid, since: Date.now(), listening: false })
    log.info({ worker: worker.id, pid }, 'worker started')
    worker.once('listening', () => {
      const entry = live.get(worker.id)
      if (entry !== undefined) entry.listening = true
      if (!started && [...live.values()].filter((w) => w.listening).length === opts.count) {
        started = true
        log.info({ ...opts.listening, workers: opts.count, pids: [...live.values()].map((w) => w.pid) }, 'portcullis listening')
        for (const s of services) s.start(() => [...live.values()].map((w) => w.worker)).catch((err: unknown) => log.error({ err, service: s.name }, 'could not start'))
      }
    })
    worker.once('exit', (code, signal) => {
      const entry = live.get(worker.id)
      live.delete(worker.id)
      const lived = entry === undefined ? 0 : Date.now() - entry.since
      const fields = { worker: worker.id, pid, code, signal, livedMs: lived }
      if (stopping) {
        log.info(fields, 'worker exited')
        if (code !== 0 && exitCode === 0) exitCode = 1
        if (live.size === 0) finish()
        return
      }
      if (!started) {
        // The first start failed (a config the worker refused, a port it could not bind): stop all.
        log.fatal(fields, 'a worker could not start; stopping')
        exitCode = code === 2 ? 2 : 1
        stop('worker failed to start')
        return
      }
      failures = lived >= LIVED_MS ? 1 : failures + 1
      const pause = Math.min(RESTART_FIRST_MS * 2 ** (failures - 1), RESTART_MAX_MS)
      log.error({ ...fields, restartInMs: pause }, 'worker exited unexpectedly; starting another')
      const timer = setTimeout(() => {
        pending.delete(timer)
        if (!stopping) fork()
      }, pause)
      pending.add(timer)
    })
  }

  let exitCode = 0
  const finish = (): void => {
    void Promise.allSettled(services.map((s) => s.close())).then(() => {
      log.info({ code: exitCode }, 'stopped')
      process.exit(exitCode)
    })
  }

  const stop = (reason: string): void => {
    if (stopping) return
    stopping = true
    for (const t of pending) clearTimeout(t)
    pending.clear()
    log.info({ reason, shutdownTimeoutMs, workers: live.size }, 'shutting down: every worker drains its connections')
    const force = setTimeout(() => {
      const left = [...live.values()]
      log.error({ pids: left.map((w) => w.pid) }, 'workers did not finish in time; killing them')
      for (const w of left) w.worker.process.kill('SIGKILL')
      exitCode = 1
      setTimeout(() => process.exit(1), 1_000).unref()
    }, shutdownTimeoutMs + 5_000)
    force.unref()
    if (live.size === 0) {
      finish()
      return
    }
    for (const { worker } of live.values()) worker.process.kill('SIGTERM')
  }

  const reload = (): void => {
    const check = opts.reloadCheck()
    if (check === null) return
    const id = ++seq
    const asked = [...live.values()]
    const answers = new Map<number, ToPrimary>()
    log.info({ workers: asked.map((w) => ({ worker: w.worker.id, pid: w.pid })) }, 'reloading: asking every worker')
    const listeners = new Map<Worker, (message: unknown) => void>()
    let reported = false
    const report = (): void => {
      if (reported) return
      reported = true
      clearTimeout(timer)
      for (const [worker, listener] of listeners) worker.off('message', listener)
      const refused = asked
        .filter((w) => answers.get(w.worker.id)?.ok !== true)
        .map((w) => ({
          worker: w.worker.id,
          pid: w.pid,
          reason: answers.get(w.worker.id)?.reason ?? (live.has(w.worker.id) ? `no answer within ${opts.reloadWaitMs} ms` : 'exited before answering'),
        }))
      if (refused.length === 0) {
        shutdownTimeoutMs = check.shutdownTimeoutMs
        log.level = check.logLevel
        log.info({ workers: asked.length }, 'configuration reloaded on every worker')
      } else {
        log.error({ refused, reloaded: asked.length - refused.length }, 'reload refused by some workers; they keep the running configuration')
      }
    }
    const timer = setTimeout(report, opts.reloadWaitMs)
    timer.unref()
    for (const w of asked) {
      const listener = (message: unknown): void => {
        if (!isOurs(message, 'reloaded') || (message as ToPrimary).seq !== id) return
        answers.set(w.worker.id, message as ToPrimary)
        if (asked.every((a) => answers.has(a.worker.id) || !live.has(a.worker.id))) report()
      }
      listeners.set(w.worker, listener)
      w.worker.on('message', listener)
      const message: ToWorker = { portcullis: 'reload', seq: id }
      w.worker.send(message)
    }
    if (asked.length === 0) report()
  }

  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGHUP', reload)
  log.info({ workers: opts.count, pid: process.pid }, 'starting workers')
  for (let i = 0; i < opts.count; i++) fork()
  return new Promise<number>(() => {})
}
