#!/usr/bin/env node
import { readFileSync, realpathSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { pino, type Logger } from 'pino'
import { buildApp, listenMetrics, loggerOptions, safeError, type App } from './app.ts'
import { createRuntime, ExplainInputError, explainWithConfig, formatExplanation, openRouteWarnings, probeProvider, type Runtime, type RuntimeDeps } from './runtime.ts'
import { formatIssues, loadConfig } from './config/index.ts'
import { certificateSummary } from './config/tls.ts'
import { runPrimary, workerChannel, workerCount, type PrimaryService, type ReloadOutcome } from './cluster.ts'
import { validateConfig } from './config/validate.ts'
import type { Config } from './config/types.ts'
import { describeError, diagnosisParts, formatDiagnosis, PortcullisError } from './errors.ts'
import type { Metrics } from './metrics.ts'

/**
 * The CLI:
 *   portcullis [run] [--config FILE]   run the proxy (PORTCULLIS_CONFIG names the file too);
 *                                      without any config, run the demo
 *   portcullis check --config FILE     validate, probe the provider, test the client credentials,
 *                                      print what was found; warn of routes open to every signed-in user
 *   portcullis explain --config FILE --url URL [--method M] [--claims JSON] [--bearer] [--json]
 *                                      how a request would be decided, and why (never asks the provider)
 *   portcullis demo [--port N]         embedded provider + demo upstream + Portcullis on localhost
 * Exit codes: 0 ok, 1 runtime failure (check: provider unreachable or disagreeing), 2 invalid config
 * or usage.
 */
const USAGE = `usage: portcullis [run] [--config FILE]
       portcullis check --config FILE
       portcullis explain --config FILE --url URL [--method GET] [--claims JSON] [--bearer] [--json]
       portcullis healthcheck --config FILE
       portcullis demo [--port 4180]`

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        // explain
        url: { type: 'string' },
        method: { type: 'string' },
        claims: { type: 'string' },
        bearer: { type: 'boolean' },
        json: { type: 'boolean' },
      },
    })
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (parsed.values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  if (parsed.values.version === true) {
    process.stdout.write(`${version()}\n`)
    return 0
  }
  const command = parsed.positionals[0] ?? 'run'
  const file = parsed.values.config ?? env.PORTCULLIS_CONFIG
  switch (command) {
    case 'run':
      if (file === undefined) return runDemo(Number(parsed.values.port ?? 4180))
      return run(file, env)
    case 'check':
      if (file === undefined) {
        process.stderr.write(`portcullis check needs --config FILE\n${USAGE}\n`)
        return 2
      }
      return check(file, env)
    case 'explain': {
      if (file === undefined) {
        process.stderr.write(`portcullis explain needs --config FILE\n${USAGE}\n`)
        return 2
      }
      const v = parsed.values
      if (v.url === undefined || v.url === '') {
        process.stderr.write(`portcullis explain needs --url URL (a path such as /admin, or an absolute URL)\n${USAGE}\n`)
        return 2
      }
      const claims = parseClaims(v.claims)
      if (typeof claims === 'string') {
        process.stderr.write(`--claims: ${claims}\n`)
        return 2
      }
      if (v.bearer === true && claims === null) {
        process.stderr.write('--bearer needs --claims (the payload of the token)\n')
        return 2
      }
      return explain(file, env, { url: v.url, method: v.method, claims, bearer: v.bearer === true, json: v.json === true })
    }
    case 'healthcheck':
      if (file === undefined) {
        process.stderr.write(`portcullis healthcheck needs --config FILE\n${USAGE}\n`)
        return 2
      }
      return healthcheck(file, env)
    case 'demo':
      return runDemo(Number(parsed.values.port ?? 4180))
    default:
      process.stderr.write(`unknown command "${command}"\n${USAGE}\n`)
      return 2
  }
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }
    return pkg.version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

/** Load and validate the config file; print its problems to stderr and answer null when it has any. */
function load(file: string, env: Record<string, string | undefined>): { config: Config; warnings: string[] } | null {
  const result = loadConfig({ file, env })
  if (!result.ok) {
    process.stderr.write(`${formatIssues(result.issues)}\n${result.issues.length} problem(s) in ${file}; nothing was started.\n`)
    return null
  }
  return result
}

/**
 * `portcullis healthcheck`: the container's HEALTHCHECK. GET /healthz on the address `server.listen`
 * names (a wildcard address is asked on loopback), so the probe follows the config instead of a port
 * written into the image. Exit 0 when it answers 200, 1 otherwise (2 for a config it cannot read).
 */
async function healthcheck(file: string, env: Record<string, string | undefined>): Promise<number> {
  const loaded = load(file, env)
  if (loaded === null) return 2
  const { host, port } = listenAddress(loaded.config.server.listen)
  const ask = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host
  const tls = loaded.config.server.tls.cert !== ''
  const url = `${tls ? 'https' : 'http'}://${ask.includes(':') ? `[${ask}]` : ask}:${port}/healthz`
  try {
    const status = await probe(tls, ask, port)
    if (status === 200) return 0
    process.stderr.write(`healthcheck: ${url} answered ${status}\n`)
  } catch (err) {
    process.stderr.write(`healthcheck: ${url}: ${(err as Error).message}\n`)
  }
  return 1
}

/**
 * GET /healthz on Portcullis's own listener. Over HTTPS the certificate is not verified: the probe
 * asks its own process at the address of its own config (a loopback one for a wildcard listener),
 * whose certificate names the public host, not this address, and may be self-signed; it sends no
 * credentials and reads only the status.
 */
function probe(tls: boolean, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const options = { host, port, path: '/healthz', method: 'GET', timeout: 2500, headers: { 'user-agent': 'portcullis-healthcheck' } }
    const req = tls ? httpsRequest({ ...options, rejectUnauthorized: false }) : httpRequest(options)
    req.once('response', (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.once('timeout', () => req.destroy(new Error('no answer within 2.5 s')))
    req.once('error', reject)
    req.end()
  })
}

function listenAddress(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) }
}

/** Start Portcullis for a validated config; resolves when it listens. Shared by `run` and `demo`. */
async function serve(config: Config, log: Logger, warnings: readonly string[], role: 'single' | 'worker' = 'single'): Promise<{ app: App; runtime: Runtime }> {
  for (const w of warnings) log.warn(w)
  // The process's instruments: made once, kept by every runtime a reload swaps in (loaded here, so
  // that check, explain and healthcheck do not load prom-client).
  const { createMetrics, shareWithPrimary } = await import('./metrics.ts')
  const metrics = createMetrics({ version: version(), defaultMetrics: config.metrics.listen !== '' })
  // A worker's counts are served by the primary, summed over every worker.
  if (role === 'worker') shareWithPrimary(metrics)
  const runtime = createRuntime(config, runtimeDeps(log, metrics))
  const app = buildApp(runtime, { logger: log, metrics })
  // Before the logger's own exit flush (registered first): access lines gathered for a batch.
  process.prependListener('exit', () => app.flushLogs())
  const { host, port } = listenAddress(config.server.listen)
  await app.fastify.listen({ host, port })
  const metricsUrl = role === 'worker' ? null : await app.listenMetrics()
  if (metricsUrl !== null) log.info({ url: `${metricsUrl}/metrics` }, 'metrics listening')
  return { app, runtime }
}

/**
 * The process logger: JSON lines on stdout through a buffered destination. Writing each access-log
 * line on its own costs about an eighth of a proxied request's CPU (one `write` per line through the
 * libuv pool, measured with `npm run bench -- --cpu-prof`); lines are batched up to 8 KiB and flushed
 * at least every 250 ms, and synchronously when the process exits. Workers (`server.workers`) share
 * one stdout: each write stays under PIPE_BUF (4 KiB), which a pipe writes whole, so lines of two
 * workers never interleave.
 */
function createLogger(level: string, opts: { shared?: boolean } = {}): Logger {
  const dest = opts.shared === true ? pino.destination({ dest: 1, sync: false, minLength: 2 * 1024, maxWrite: 4 * 1024 }) : pino.destination({ dest: 1, sync: false, minLength: 8 * 1024 })
  setInterval(() => dest.flush(), 250).unref()
  process.on('exit', () => {
    try {
      dest.flushSync()
    } catch {
      // stdout already closed: nothing left to do
    }
  })
  return pino(loggerOptions(level), dest)
}

/** What a runtime of this process reports: state changes logged (once per change), counters to `metrics`. Exported for tests. */
export function runtimeDeps(log: Logger, metrics: Metrics): RuntimeDeps {
  // Redis reports every failed reconnect (every 2 s at most): log the change of state, not each try.
  let redisDown = false
  const deps: RuntimeDeps = {
    redisEvents: {
      onReady: () => {
        log.info({ recovered: redisDown }, 'redis connected')
        redisDown = false
      },
      onError: (err) => {
        if (redisDown) return
        redisDown = true
        log.error({ err }, 'redis not reachable; requests that need it get 503 until it is back; reconnecting')
      },
    },
    onRevocations: (event) => {
      if (event.state === 'synced') log.info({ loaded: event.loaded, restored: event.restored }, 'revocations in sync with redis')
      else log.error({ reason: event.reason }, 'revocations out of sync with redis; signed-in requests get 503 until it is back')
    },
    providerEvents: {
      onConnected: (c) => log.info({ issuer: c.issuer }, 'provider connected'),
      onError: (err, retryInMs) =>
        log.error({ err, retryInMs, ...(err.diagnosis === undefined ? {} : { problem: formatDiagnosis(err.diagnosis) }) }, 'provider not reachable; retrying'),
      // After startup: once per change (portcullis_provider_up shows it too); /readyz stays 200.
      onStateChange: (up, endpoint) => {
        if (up) log.info({ endpoint }, 'provider reachable again')
        else log.error({ endpoint }, 'provider not reachable: existing sessions are still served; logins and token refreshes fail until it answers')
      },
    },
  }
  return metrics.runtimeDeps(deps)
}

/**
 * Settings the listener, the Fastify instance or the process tree were built with: a reload cannot
 * change them (turning `server.tls` on or off is one; a new certificate and key are not).
 */
const RESTART_ONLY: ReadonlyArray<readonly [string, (c: Config) => string]> = [
  ['server.listen', (c) => c.server.listen],
  ['server.authPrefix', (c) => c.server.authPrefix],
  ['server.upstreamTimeout', (c) => String(c.server.upstreamTimeout)],
  ['server.workers', (c) => String(c.server.workers)],
  ['server.tls (on or off)', (c) => String(c.server.tls.cert !== '')],
  ['metrics.listen', (c) => c.metrics.listen],
]
function restartOnlyChanges(a: Config, b: Config): string[] {
  return RESTART_ONLY.filter(([, get]) => get(a) !== get(b)).map(([name]) => name)
}

/** The listener's certificate, for the log lines of startup and reloads; {} without `server.tls`. */
function tlsFields(config: Config): Record<string, unknown> {
  if (config.server.tls.cert === '') return {}
  const cert = certificateSummary(config.server.tls.cert)
  return cert === null ? {} : { tls: { subject: cert.subject, fingerprint256: cert.fingerprint256, validTo: cert.validTo } }
}

/** Wait for `ready` at most `ms`; true when it came. */
function within(ready: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([ready.then(() => true, () => false), new Promise<false>((r) => setTimeout(() => r(false), ms).unref())])
}

/**
 * SIGHUP: build a new runtime from the file and swap it in once its provider is connected, and its
 * Redis when that is a new connection (when the running ones are), so readiness and logins never
 * drop; on any problem keep the running one. Resolves with the new runtime, or the reason for
 * refusing it (already logged).
 */
async function reload(file: string, env: Record<string, string | undefined>, log: Logger, current: { app: App; runtime: Runtime }): Promise<Runtime | string> {
  const next = loadConfig({ file, env })
  if (!next.ok) {
    process.stderr.write(`${formatIssues(next.issues)}\n${next.issues.length} problem(s) in ${file}; not reloaded; the running configuration was kept.\n`)
    const problems = next.issues.map((i) => (i.path === '' ? i.message : `${i.path}: ${i.message}`))
    log.error({ file, problems }, 'reload refused: the config file has problems (listed on stderr); the running configuration was kept')
    return `the config file has problems: ${problems.join('; ')}`
  }
  const changed = restartOnlyChanges(current.runtime.config, next.config)
  if (changed.length > 0) {
    log.error({ changed }, 'reload refused: these settings need a restart; the running configuration was kept')
    return `these settings need a restart: ${changed.join(', ')}`
  }
  let runtime: Runtime
  try {
    runtime = createRuntime(next.config, { ...runtimeDeps(log, current.app.metrics), previous: current.runtime })
  } catch (err) {
    log.error({ err }, 'reload refused; the running configuration was kept')
    return safeError(err).message
  }
  const old = current.runtime
  if (old.provider.ready && !(await within(runtime.provider.whenReady(), 2 * next.config.provider.timeout + 1000))) {
    runtime.close()
    log.error('reload refused: the new provider configuration could not connect; the running configuration was kept')
    return 'the new provider configuration could not connect'
  }
  const link = runtime.redis
  const newRedis = link !== null && link !== old.redis
  if (link !== null && newRedis && (old.redis === null || old.redis.ready) && !(await within(link.whenReady(), next.config.session.redis.connectTimeout + 1000))) {
    runtime.close()
    log.error('reload refused: the new session.redis could not connect; the running configuration was kept')
    return 'the new session.redis could not connect'
  }
  try {
    current.app.swap(runtime)
  } catch (err) {
    runtime.close()
    log.error({ err }, 'reload refused; the running configuration was kept')
    return safeError(err).message
  }
  for (const w of next.warnings) log.warn(w)
  log.level = next.config.logging.level
  const certChanged = next.config.server.tls.cert !== old.config.server.tls.cert || next.config.server.tls.key !== old.config.server.tls.key
  log.info({ ...(certChanged ? tlsFields(next.config) : {}), ...(newRedis ? { redis: 'connected anew' } : {}) }, 'configuration reloaded')
  return runtime
}

/**
 * How long a replaced runtime stays open after a reload: requests that started with it finish with
 * it (a refresh at the provider, then the session written to Redis), so its Redis connection is
 * closed only after them. Each step is bounded by these timeouts.
 */
function retireAfterMs(config: Config): number {
  return 2 * config.provider.timeout + config.session.redis.commandTimeout + 1000
}

/**
 * SIGTERM / SIGINT drain (`App.drain`): the exit comes when the last connection has closed, at the
 * latest `shutdownTimeout` after the signal (plus a moment to close what was cut), with code 0; 1
 * only if closing itself failed. SIGHUP reloads (a worker leaves SIGHUP to its primary, which asks
 * it by message: a SIGHUP to the whole process group must not reload twice, nor kill a worker; the
 * demo, which has no file to reload, stops).
 */
function onSignals(
  log: Logger,
  shutdownTimeoutMs: () => number,
  stop: (timeoutMs: number) => Promise<void>,
  hangup: (() => void) | { readonly ignored: string } | 'stop',
): void {
  let stopping = false
  const shutdown = (signal: string) => {
    if (stopping) return
    stopping = true
    const timeoutMs = shutdownTimeoutMs()
    log.info({ signal, shutdownTimeoutMs: timeoutMs }, 'shutting down: draining connections')
    // A last resort, should closing itself hang.
    const force = setTimeout(() => {
      log.error('shutdown did not finish in time; exiting')
      process.exit(1)
    }, timeoutMs + 5_000)
    force.unref()
    stop(timeoutMs).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  if (hangup === 'stop') process.on('SIGHUP', () => shutdown('SIGHUP'))
  else process.on('SIGHUP', typeof hangup === 'function' ? hangup : () => log.info(`SIGHUP ignored: ${hangup.ignored}`))
}

/** Drain the app, then release the runtime; log what had to be cut. */
async function drain(log: Logger, app: App, runtime: () => Runtime, timeoutMs: number): Promise<void> {
  const { cut } = await app.drain(timeoutMs)
  if (cut > 0) log.warn({ cut }, 'connections still open at the shutdown timeout were cut')
  runtime().close()
  log.info('stopped')
}

async function run(file: string, env: Record<string, string | undefined>): Promise<number> {
  const loaded = load(file, env)
  if (loaded === null) return 2
  const { config } = loaded
  const workers = workerCount(config.server.workers)
  const worker = workerChannel()
  if (workers > 1 && worker === null) return primary(file, env, loaded)
  const base = createLogger(config.logging.level, { shared: worker !== null })
  // A worker's every line (access lines too) says which process wrote it.
  const log = worker === null ? base : base.child({ worker: worker.id, pid: process.pid })
  let current: { app: App; runtime: Runtime }
  try {
    // The primary logged the warnings once for all its workers.
    current = await serve(config, log, worker === null ? loaded.warnings : [], worker === null ? 'single' : 'worker')
  } catch (err) {
    if (err instanceof PortcullisError && err.code === 'CONFIG_INVALID') {
      process.stderr.write(`config error: ${err.publicMessage}\nnothing was started.\n`)
      return 2
    }
    log.fatal({ err }, 'could not start')
    return 1
  }
  log.info({ listen: config.server.listen, publicUrl: config.server.publicUrl, ...tlsFields(config) }, worker === null ? 'portcullis listening' : 'worker listening')
  const retiring = new Set<Runtime>()
  // One reload at a time, each from the runtime the one before left.
  let reloads: Promise<unknown> = Promise.resolve()
  const reloadNow = (): Promise<ReloadOutcome> => {
    const done = reloads.then(async (): Promise<ReloadOutcome> => {
      const result = await reload(file, env, log, current)
      current.app.metrics.configReload(typeof result === 'string' ? 'refused' : 'ok')
      if (typeof result === 'string') return { ok: false, reason: result }
      const old = current.runtime
      current = { app: current.app, runtime: result }
      retiring.add(old)
      setTimeout(() => {
        retiring.delete(old)
        old.close()
      }, retireAfterMs(old.config)).unref()
      return { ok: true }
    })
    reloads = done
    return done
  }
  worker?.onReload(reloadNow)
  onSignals(
    log,
    () => current.runtime.config.server.shutdownTimeout,
    async (timeoutMs) => {
      await drain(log, current.app, () => current.runtime, timeoutMs)
      for (const old of retiring) old.close()
    },
    worker === null ? () => void reloadNow() : { ignored: 'a worker reloads when its primary asks' },
  )
  return new Promise<number>(() => {})
}

/** The primary's `metrics.listen`: GET /metrics sums every worker's instruments at each scrape. */
function metricsOfWorkers(listen: string, log: Logger): PrimaryService {
  let close: (() => Promise<void>) | null = null
  return {
    name: 'metrics',
    async start() {
      const { workersMetrics } = await import('./metrics.ts')
      const listener = await listenMetrics(workersMetrics(), listen)
      close = listener.close
      log.info({ url: `${listener.url}/metrics`, aggregated: true }, 'metrics listening')
    },
    close: async () => close?.(),
  }
}

/** `server.workers` > 1: this process forks the workers and serves nothing itself (`cluster.ts`). */
function primary(file: string, env: Record<string, string | undefined>, loaded: { config: Config; warnings: string[] }): Promise<number> {
  const { config } = loaded
  // Its lines say `role: primary`; each worker's name the worker and its pid.
  const log = createLogger(config.logging.level, { shared: true }).child({ role: 'primary' })
  for (const w of loaded.warnings) log.warn(w)
  return runPrimary({
    count: workerCount(config.server.workers),
    log,
    services: config.metrics.listen === '' ? [] : [metricsOfWorkers(config.metrics.listen, log)],
    shutdownTimeoutMs: config.server.shutdownTimeout,
    listening: { listen: config.server.listen, publicUrl: config.server.publicUrl, ...tlsFields(config) },
    // Each worker reads the file again and checks it against its own running config; the primary
    // first refuses a file with problems, so that they are printed once, not once per worker.
    reloadCheck: () => {
      const next = loadConfig({ file, env })
      if (!next.ok) {
        process.stderr.write(`${formatIssues(next.issues)}\n${next.issues.length} problem(s) in ${file}; not reloaded; the running configuration was kept.\n`)
        const problems = next.issues.map((i) => (i.path === '' ? i.message : `${i.path}: ${i.message}`))
        log.error({ file, problems }, 'reload refused: the config file has problems (listed on stderr); the running configuration was kept')
        return null
      }
      const changed = restartOnlyChanges(config, next.config)
      if (changed.length > 0) {
        log.error({ changed }, 'reload refused: these settings need a restart; the running configuration was kept')
        return null
      }
      return { shutdownTimeoutMs: next.config.server.shutdownTimeout, logLevel: next.config.logging.level }
    },
    reloadWaitMs: 2 * config.provider.timeout + config.session.redis.connectTimeout + 5_000,
  })
}

async function check(file: string, env: Record<string, string | undefined>): Promise<number> {
  const loaded = load(file, env)
  if (loaded === null) return 2
  const code = await checkProvider(file, loaded)
  // After the report, whatever it found: routes any signed-in user may use (a warning, not a failure).
  const open = openRouteWarnings(loaded.config)
  for (const w of open) process.stdout.write(`warning: ${w}\n`)
  return code
}

/** `portcullis check`'s report: the config, then the provider; its exit code. */
async function checkProvider(file: string, loaded: { config: Config; warnings: string[] }): Promise<number> {
  const { config } = loaded
  const out = (line: string) => process.stdout.write(`${line}\n`)
  out(`config: ${file} is valid`)
  for (const w of loaded.warnings) out(`warning: ${w}`)
  const cert = config.server.tls.cert === '' ? null : certificateSummary(config.server.tls.cert)
  if (cert !== null) out(`tls: serving HTTPS with ${cert.subject} (SHA-256 ${cert.fingerprint256}), valid until ${cert.validTo}`)
  const redirectUri = new URL(`${config.server.authPrefix}/callback`, config.server.publicUrl).href
  try {
    const oidc = await probeProvider(config)
    const s = oidc.summary
    out(`provider: ${s.issuer}`)
    out(`  authorization endpoint: ${s.authorizationEndpoint}`)
    out(`  token endpoint:         ${s.tokenEndpoint}`)
    out(`  jwks:                   ${s.jwksUri} (${oidc.jwks.keys().length} key(s): ${oidc.jwks.keys().map((k) => `${k.kid ?? '?'}/${k.alg ?? k.kty}`).join(', ')})`)
    out(`  end session endpoint:   ${s.endSessionEndpoint ?? '(none: sign-out only clears the local session)'}`)
    out(`  userinfo endpoint:      ${s.userinfoEndpoint ?? '(none)'}`)
    out(`  ID token algorithms:    ${s.idTokenAlgorithms.join(', ') || '(not advertised)'}; using ${config.provider.idTokenSignedResponseAlg}`)
    out(`  RFC 9207 iss parameter: ${s.issParameterSupported ? 'advertised (required at the callback)' : 'not advertised'}`)
    out(`  PKCE methods:           ${s.codeChallengeMethods.join(', ') || '(not advertised)'}`)
    out(`  back-channel logout:    ${s.backchannelLogoutSupported ? 'supported' : 'not advertised'}`)
    out(`redirect URI to register at the provider: ${redirectUri}`)
    if (s.codeChallengeMethods.length > 0 && !s.codeChallengeMethods.includes('S256')) {
      problem(['the provider does not advertise PKCE S256', `url: ${discoveryOf(s.issuer)}`, `answer: code_challenge_methods_supported is ${s.codeChallengeMethods.join(', ')}`])
      return 1
    }
    const auth = await oidc.checkClientAuthentication()
    if (auth.outcome === 'accepted') {
      out(`client authentication: ok (${formatDiagnosis(auth.diagnosis)})`)
    } else if (auth.outcome === 'unclear') {
      out(`warning: client authentication could not be told apart: ${formatDiagnosis(auth.diagnosis)}`)
    } else {
      problem(diagnosisParts(auth.diagnosis))
      return 1
    }
    out('ok')
    return 0
  } catch (err) {
    const e = err instanceof PortcullisError ? err : new PortcullisError('IDP_UNAVAILABLE', 'The provider could not be reached.', { cause: err })
    if (e.diagnosis !== undefined) {
      problem([e.publicMessage, ...diagnosisParts(e.diagnosis)])
      return 1
    }
    // Nothing explained it: the cause chain, each link in words.
    const [first = e.publicMessage, ...causes] = describeError(e)
    problem([first, ...causes.map((c) => `because: ${c}`)])
    return 1
  }
}

/** `--claims`: a JSON object, or what is wrong with it; null when not given. */
function parseClaims(text: string | undefined): Record<string, unknown> | null | string {
  if (text === undefined) return null
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return `not valid JSON (${(err as Error).message}); give the signed-in user's claims as an object, e.g. '{"sub":"alice","groups":["admins"]}'`
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'must be a JSON object of claims, e.g. \'{"sub":"alice","groups":["admins"]}\''
  return value as Record<string, unknown>
}

/**
 * `portcullis explain`: how the config's pipeline decides one request, and why, from the config
 * alone (the provider is never asked). 0 with the report, 2 for an invalid config or request.
 */
function explain(
  file: string,
  env: Record<string, string | undefined>,
  opts: { url: string; method: string | undefined; claims: Record<string, unknown> | null; bearer: boolean; json: boolean },
): number {
  const loaded = load(file, env)
  if (loaded === null) return 2
  let explanation
  try {
    explanation = explainWithConfig(loaded.config, { url: opts.url, method: opts.method, claims: opts.claims, bearer: opts.bearer, now: Date.now() })
  } catch (err) {
    if (err instanceof ExplainInputError) {
      process.stderr.write(`--${err.field}: ${err.message}\n`)
      return 2
    }
    throw err
  }
  process.stdout.write(opts.json ? `${JSON.stringify(explanation, null, 2)}\n` : formatExplanation(explanation))
  return 0
}

/** `problem: <first>` and each further line indented, on stderr. */
function problem(lines: readonly string[]): void {
  const [first, ...rest] = lines
  process.stderr.write(`problem: ${first ?? 'unknown'}${rest.map((l) => `\n  ${l}`).join('')}\n`)
}

function discoveryOf(issuer: string): string {
  return `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`
}

async function runDemo(port: number): Promise<number> {
  const { startDemoStack } = await import('./demo/index.ts')
  const publicUrl = `http://localhost:${port}`
  const stack = await startDemoStack({ publicUrl, listen: `127.0.0.1:${port}` })
  const result = validateConfig(stack.config)
  if (!result.ok) {
    process.stderr.write(`${formatIssues(result.issues)}\n`)
    await stack.close()
    return 2
  }
  const log = createLogger('info')
  let started: { app: App; runtime: Runtime }
  try {
    started = await serve(result.config, log, [])
  } catch (err) {
    log.fatal({ err }, 'could not start the demo')
    await stack.close()
    return 1
  }
  const user = stack.users[0]
  process.stdout.write(
    `\nPortcullis demo is running.\n` +
      `  Open:      ${publicUrl}/\n` +
      `  Sign in:   ${user?.email} / ${user?.password}  (also ${stack.users
        .slice(1)
        .map((u) => `${u.email} / ${u.password}`)
        .join(', ')})\n` +
      `  Access:    alice and bob see the app; ${publicUrl}/admin is for admins who signed in with a second factor\n` +
      `             (alice's one-time code: ${user?.otp ?? '(none)'}); carol (partner.example, e-mail not verified) is refused\n` +
      `  Provider:  ${stack.provider.issuer}  (embedded, reference endpoint paths)\n` +
      `  Upstream:  ${stack.upstream.url}  (echoes the identity headers it receives)\n` +
      `Press Ctrl+C to stop.\n\n`,
  )
  onSignals(
    log,
    () => result.config.server.shutdownTimeout,
    async (timeoutMs) => {
      await drain(log, started.app, () => started.runtime, timeoutMs)
      await stack.close()
    },
    // No file to reload: a hangup (the terminal closed) stops the demo, drained.
    'stop',
  )
  return new Promise<number>(() => {})
}

const isEntry = process.argv[1] !== undefined && realpathOr(process.argv[1]) === realpathOr(fileURLToPath(import.meta.url))
if (isEntry) {
  main(process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`portcullis: ${safeError(err).message}\n`)
      process.exit(1)
    },
  )
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path)
  } catch {
    return path
  }
}
