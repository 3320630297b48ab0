/**
 * Start Portcullis in-process for one test, the way `main.ts` does (createRuntime → buildApp →
 * listen), on 127.0.0.1 with a port reserved first so the provider can register the redirect URI.
 * `startStack()` brings up provider + echo upstream + Portcullis together. Logs are captured as
 * parsed JSON lines (and their raw text) so tests can assert on them.
 */
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import { pino } from 'pino'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { buildApp, type App, type AppOptions } from '../../src/app.ts'
import { createRuntime, type Runtime, type RuntimeDeps } from '../../src/runtime.ts'
import { loggerOptions } from '../../src/http/logging.ts'
import { createMetrics } from '../../src/metrics.ts'
import type { Config } from '../../src/config/types.ts'
import { startTestProvider, type ProviderOptions, type RunningProvider } from './provider.ts'
import { startTestUpstream, type EchoUpstream } from './upstream.ts'
import { configFor } from './config.ts'
import { releaseHeldPort, reserveHeldPort } from './ports.ts'

export { holdPort, releaseHeldPort, reserveHeldPort, reservePort } from './ports.ts'

export interface RunningPortcullis {
  url: string
  app: App
  runtime: Runtime
  /** Raw log lines, as written. */
  logText: string[]
  /** Parsed log lines. */
  logs: Array<Record<string, unknown>>
  /** The metrics listener's URL (`metrics.listen`, e.g. 127.0.0.1:0), or null when it is off. */
  metricsUrl: string | null
}


/** Log capture for an in-process Portcullis: raw lines and parsed ones. */
function captureLogs(level: string): { logger: Logger; logText: string[]; logs: Array<Record<string, unknown>> } {
  const logText: string[] = []
  const logs: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue
        logText.push(line)
        try {
          logs.push(JSON.parse(line) as Record<string, unknown>)
        } catch {
          logs.push({ unparsed: line })
        }
      }
      cb()
    },
  })
  return { logger: pino(loggerOptions(level), sink), logText, logs }
}

export async function startPortcullis(
  t: Test,
  config: Config,
  deps: RuntimeDeps & { port?: number; upstreamTimeoutMs?: number; app?: Partial<Omit<AppOptions, 'logger' | 'upstreamTimeoutMs'>> } = {},
): Promise<RunningPortcullis> {
  // The app's instruments, which the runtime reports to (as main.ts wires them).
  const metrics = deps.app?.metrics ?? createMetrics({ defaultMetrics: config.metrics.listen !== '' })
  const runtime = createRuntime(config, metrics.runtimeDeps({ retry: { initialMs: 50, maxMs: 400 }, ...deps }))
  t.teardown(() => runtime.close())
  const port = deps.port ?? Number(new URL(config.server.publicUrl).port)
  await releaseHeldPort(port)
  return startApp(t, runtime, { ...deps.app, metrics, upstreamTimeoutMs: deps.upstreamTimeoutMs }, port)
}

/**
 * Another app on a runtime that is already running (`startPortcullis`): the same config, keys, caches
 * and sessions, its own listener and logs. Tests put the fast lane and the Fastify path side by side
 * this way (`{ fastLane: false }`), or give the app a decision function of their own.
 */
export async function startApp(t: Test, runtime: Runtime, opts: Partial<Omit<AppOptions, 'logger'>> = {}, port = 0): Promise<RunningPortcullis> {
  const { logger, logText, logs } = captureLogs(runtime.config.logging.level)
  const app = buildApp(runtime, { logger, ...opts, metrics: opts.metrics ?? createMetrics({ defaultMetrics: runtime.config.metrics.listen !== '' }) })
  await app.fastify.listen({ host: '127.0.0.1', port })
  t.teardown(() => app.fastify.close())
  const address = app.fastify.server.address() as AddressInfo
  const metricsUrl = await app.listenMetrics()
  return { url: `http://127.0.0.1:${address.port}`, app, runtime, logText, logs, metricsUrl }
}

export interface Stack {
  provider: RunningProvider
  upstream: EchoUpstream
  proxy: RunningPortcullis
  config: Config
  clientId: string
  clientSecret: string
}

export interface StackOptions {
  /** Per-section overrides of the test config. */
  overrides?: Record<string, unknown> | ((s: { issuer: string; upstream: string; publicUrl: string }) => Record<string, unknown>)
  provider?: Partial<ProviderOptions>
  runtime?: RuntimeDeps & { upstreamTimeoutMs?: number; app?: Partial<Omit<AppOptions, 'logger' | 'upstreamTimeoutMs'>> }
  /** Wait for the provider connection before resolving (default true). */
  waitReady?: boolean
}

export async function startStack(t: Test, opts: StackOptions = {}): Promise<Stack> {
  // Held until Portcullis listens: the provider and the upstream bind port 0 meanwhile and could be
  // given a port that was merely reserved and released.
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const clientId = 'portcullis-test'
  const clientSecret = 'test-client-secret-that-is-long-enough'
  const provider = await startTestProvider(t, {
    clients: [
      {
        clientId,
        clientSecret,
        redirectUris: [`${publicUrl}/oauth2/callback`],
        postLogoutRedirectUris: [`${publicUrl}/`, `${publicUrl}/signed-out`],
        backchannelLogoutUri: `${publicUrl}/oauth2/backchannel-logout`,
        tokenEndpointAuthMethod: 'client_secret_basic',
      },
    ],
    allowLoopbackFetch: true,
    ...opts.provider,
  })
  const upstream = await startTestUpstream(t)
  const overrides =
    typeof opts.overrides === 'function' ? opts.overrides({ issuer: provider.issuer, upstream: upstream.url, publicUrl }) : (opts.overrides ?? {})
  const config = configFor({ issuer: provider.issuer, clientId, clientSecret, upstream: upstream.url, publicUrl, overrides })
  const proxy = await startPortcullis(t, config, { port, ...opts.runtime })
  if (opts.waitReady !== false) await proxy.runtime.provider.whenReady()
  return { provider, upstream, proxy, config, clientId, clientSecret }
}
