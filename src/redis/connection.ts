import type { ConnectionOptions } from 'node:tls'
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { Config } from '../config/types.ts'
import { PortcullisError } from '../errors.ts'

/**
 * The one Redis connection of a runtime, built from `session.redis`: standalone (`url`), Sentinel
 * (`sentinel.nodes` + `masterName`; failovers are followed) or Cluster (`cluster.nodes`), with TLS
 * and credentials. Everything Redis-backed (sessions, revocations, the back-channel replay cache,
 * the refresh lock, rate limits) shares it.
 *
 * Failure is loud and fast, never silent: commands are not queued while the connection is down
 * (`enableOfflineQueue: false`) and each has `commandTimeout`, so a request that needs Redis gets a
 * STORE_UNAVAILABLE (503 with Retry-After) at once instead of hanging; reconnecting goes on in the
 * background (backoff up to 2 s) until Redis is back, and `ready` follows it.
 */
export type RedisSettings = Config['session']['redis']

/** A standalone/Sentinel client or a Cluster: the commands Portcullis uses exist on both. */
export type RedisClient = Redis | Cluster

export interface RedisEvents {
  /** The connection is up (first time, or again after an outage). */
  onReady?(): void
  /** The connection was lost or could not be made; reconnecting goes on. */
  onError?(err: Error): void
}

export interface RedisLink {
  readonly client: RedisClient
  /** Commands can be sent now. */
  readonly ready: boolean
  /** `prefix` + name: every key Portcullis writes. */
  key(name: string): string
  /** A second connection for SUBSCRIBE (a subscribed connection sends nothing else). */
  duplicate(): RedisClient
  /** Resolves once ready (or rejects after `connectTimeout` with STORE_UNAVAILABLE). */
  whenReady(): Promise<void>
  close(): Promise<void>
}

/** Is `session.redis` configured at all (one of url, sentinel.nodes, cluster.nodes)? */
export function redisConfigured(settings: RedisSettings): boolean {
  return settings.url !== '' || settings.sentinel.nodes.length > 0 || settings.cluster.nodes.length > 0
}

function tlsOptions(settings: RedisSettings): ConnectionOptions | undefined {
  const wanted = settings.tls.enabled || settings.url.startsWith('rediss://')
  if (!wanted) return undefined
  const tls: ConnectionOptions = {}
  if (settings.tls.ca !== '') tls.ca = settings.tls.ca
  if (settings.tls.cert !== '') tls.cert = settings.tls.cert
  if (settings.tls.key !== '') tls.key = settings.tls.key
  if (settings.tls.servername !== '') tls.servername = settings.tls.servername
  return tls
}

function hostPort(node: string): { host: string; port: number } {
  const i = node.lastIndexOf(':')
  return { host: node.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(node.slice(i + 1)) }
}

/** Reconnect with a growing pause, never giving up (Redis coming back is the normal end of an outage). */
const retryStrategy = (attempt: number): number => Math.min(100 * 2 ** Math.min(attempt, 5), 2_000)

export function redisOptions(settings: RedisSettings): { mode: 'standalone' | 'sentinel' | 'cluster'; options: RedisOptions; nodes: { host: string; port: number }[] } {
  const tls = tlsOptions(settings)
  const common: RedisOptions = {
    connectTimeout: settings.connectTimeout,
    commandTimeout: settings.commandTimeout,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    enableAutoPipelining: true,
    retryStrategy,
    lazyConnect: true,
    ...(settings.username === '' ? {} : { username: settings.username }),
    ...(settings.password === '' ? {} : { password: settings.password }),
    ...(tls === undefined ? {} : { tls }),
  }
  if (settings.sentinel.nodes.length > 0) {
    return {
      mode: 'sentinel',
      nodes: settings.sentinel.nodes.map(hostPort),
      options: {
        ...common,
        db: settings.db,
        name: settings.sentinel.masterName,
        sentinels: settings.sentinel.nodes.map(hostPort),
        ...(settings.sentinel.password === '' ? {} : { sentinelPassword: settings.sentinel.password }),
        ...(tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: tls }),
        sentinelRetryStrategy: retryStrategy,
      },
    }
  }
  if (settings.cluster.nodes.length > 0) return { mode: 'cluster', nodes: settings.cluster.nodes.map(hostPort), options: common }
  return { mode: 'standalone', nodes: [], options: { ...common, db: settings.db } }
}

export function connectRedis(settings: RedisSettings, events: RedisEvents = {}): RedisLink {
  const { mode, options, nodes } = redisOptions(settings)
  const make = (): RedisClient => {
    if (mode === 'cluster') {
      const { retryStrategy: _r, enableOfflineQueue: _q, ...redisOpts } = options
      const clusterOptions: ClusterOptions = {
        redisOptions: redisOpts,
        enableOfflineQueue: false,
        enableAutoPipelining: true,
        lazyConnect: true,
        clusterRetryStrategy: retryStrategy,
      }
      return new Cluster(nodes, clusterOptions)
    }
    if (mode === 'standalone') return new Redis(settings.url, options)
    return new Redis(options)
  }
  const client = make()
  let ready = false
  let closed = false
  const waiters = new Set<() => void>()
  client.on('ready', () => {
    ready = true
    for (const w of waiters) w()
    waiters.clear()
    events.onReady?.()
  })
  // 'error' must have a listener (ioredis re-emits connection errors); 'end' after close().
  client.on('error', (err: Error) => {
    events.onError?.(err)
  })
  client.on('close', () => {
    ready = false
  })
  client.connect().catch(() => {
    // The first attempt failed: retryStrategy goes on; 'error' reported it.
  })
  return {
    client,
    get ready() {
      return ready && !closed
    },
    key: (name) => `${settings.keyPrefix}${name}`,
    duplicate: () => {
      const dup: RedisClient = client instanceof Cluster ? client.duplicate() : client.duplicate()
      dup.on('error', () => {
        // Reported by the main connection; the subscriber reconnects on its own.
      })
      return dup
    },
    whenReady: () =>
      ready
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              waiters.delete(done)
              reject(new PortcullisError('STORE_UNAVAILABLE', 'The session store is not reachable.'))
            }, settings.connectTimeout)
            timer.unref()
            const done = () => {
              clearTimeout(timer)
              resolve()
            }
            waiters.add(done)
          }),
    async close() {
      closed = true
      ready = false
      try {
        await client.quit()
      } catch {
        client.disconnect()
      }
    },
  }
}
