import { PortcullisError } from '../errors.ts'
import { systemClock, type Clock } from '../clock.ts'
import { connectProvider, type OidcClient, type ProviderConfig } from './client.ts'
import { discoveryUrl, mapOidcError } from './errors.ts'

/**
 * Keeps trying to connect to the provider (discovery + JWKS) with exponential backoff, so Portcullis
 * starts and answers `/readyz` 503 while the provider is down, and recovers by itself once it is up
 * (issue #2 point 19). Requests ask `get()`, which throws NOT_READY until connected.
 *
 * Once connected, the connection stays (`ready` never turns false again: existing sessions are
 * served while the provider is down; logins and refreshes fail on their own). Whether the provider
 * still answers is watched apart, every `probeMs`: its discovery document (its JWKS without
 * discovery) is fetched, and `state` turns `unreachable` and back, each change reported once
 * (`onUnreachable`, `onReachable`), for `/readyz`'s body, the logs and the metrics.
 */
export interface ProviderConnection {
  /** The connected client, or throws PortcullisError NOT_READY / the last connection error. */
  get(): OidcClient
  /** Connected (at least once): the provider's metadata and keys are loaded. */
  readonly ready: boolean
  /**
   * `connecting` until the first connection; then `ok`, or `unreachable` while the probe fails.
   */
  readonly state: ProviderState
  /** The last connection or probe failure (public message only), for `/readyz` and logs; null while `ok`. */
  readonly lastError: PortcullisError | null
  /** Resolves once connected (or rejects after stop()). For tests and `portcullis check`. */
  whenReady(): Promise<OidcClient>
  stop(): void
}

export type ProviderState = 'connecting' | 'ok' | 'unreachable'

export interface RetryPolicy {
  readonly initialMs: number
  readonly maxMs: number
  /** How often a connected provider is probed. Default 30 s. */
  readonly probeMs?: number
}

export interface ConnectionEvents {
  onConnected?(client: OidcClient): void
  onError?(err: PortcullisError, retryInMs: number): void
  /** A connected provider stopped answering the probe (reported once per outage). */
  onUnreachable?(err: PortcullisError): void
  /** It answers again. */
  onReachable?(): void
}

const DEFAULT_PROBE_MS = 30_000

export function createProviderConnection(
  cfg: ProviderConfig,
  redirectUri: string,
  retry: RetryPolicy = { initialMs: 1000, maxMs: 30_000 },
  events: ConnectionEvents = {},
  clock: Clock = systemClock,
): ProviderConnection {
  let current: OidcClient | null = null
  let lastError: PortcullisError | null = null
  let reachable = true
  let stopped = false
  let timer: NodeJS.Timeout | null = null
  let probeTimer: NodeJS.Timeout | null = null
  const probeMs = retry.probeMs ?? DEFAULT_PROBE_MS
  let delay = retry.initialMs
  const waiters: Array<{ resolve(c: OidcClient): void; reject(e: unknown): void }> = []

  const attempt = async (): Promise<void> => {
    timer = null
    if (stopped) return
    try {
      const connected = await connectProvider(cfg, redirectUri, clock)
      if (stopped) return
      current = connected
      lastError = null
      events.onConnected?.(connected)
      for (const w of waiters.splice(0)) w.resolve(connected)
      scheduleProbe()
    } catch (err) {
      if (stopped) return
      lastError = mapOidcError(err, 'discovery', { issuer: cfg.issuer })
      const wait = delay
      delay = Math.min(delay * 2, retry.maxMs)
      events.onError?.(lastError, wait)
      timer = setTimeout(() => void attempt(), wait)
      timer.unref()
    }
  }
  const scheduleProbe = (): void => {
    if (stopped) return
    probeTimer = setTimeout(() => void probe(), probeMs)
    probeTimer.unref()
  }
  /** One look at whether the connected provider answers; a change of state is reported once. */
  const probe = async (): Promise<void> => {
    probeTimer = null
    const connected = current
    if (stopped || connected === null) return
    const url = cfg.discovery ? (discoveryUrl(cfg.issuer) ?? connected.summary.jwksUri) : connected.summary.jwksUri
    let failure: PortcullisError | null = null
    try {
      const res = await fetch(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(cfg.timeout) })
      await res.body?.cancel()
      if (!res.ok) failure = unreachable(url, { status: res.status })
    } catch (err) {
      failure = unreachable(url, { cause: err })
    }
    if (stopped) return
    if (failure !== null) {
      lastError = failure
      if (reachable) {
        reachable = false
        events.onUnreachable?.(failure)
      }
    } else if (!reachable) {
      reachable = true
      lastError = null
      events.onReachable?.()
    }
    scheduleProbe()
  }
  void attempt()

  return {
    get(): OidcClient {
      if (current !== null) return current
      throw new PortcullisError('NOT_READY', 'The identity provider cannot be reached, so no one can sign in right now. Try again in a moment.', {
        cause: lastError ?? undefined,
      })
    },
    get ready() {
      return current !== null
    },
    get state(): ProviderState {
      if (current === null) return 'connecting'
      return reachable ? 'ok' : 'unreachable'
    },
    get lastError() {
      return lastError
    },
    whenReady() {
      if (current !== null) return Promise.resolve(current)
      if (stopped) return Promise.reject(new Error('stopped'))
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }))
    },
    stop() {
      stopped = true
      if (timer !== null) clearTimeout(timer)
      if (probeTimer !== null) clearTimeout(probeTimer)
      for (const w of waiters.splice(0)) w.reject(new Error('stopped'))
    },
  }
}

/** The probe's failure: the provider did not answer (`cause`) or answered with an error (`status`). */
function unreachable(url: string, got: { status?: number; cause?: unknown }): PortcullisError {
  const code = (got.cause as { cause?: { code?: unknown }; name?: unknown } | undefined)?.cause?.code ?? (got.cause as { name?: unknown } | undefined)?.name
  return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider does not answer: sign-ins and token refreshes fail until it is back; existing sessions are still served.', {
    ...(got.cause === undefined ? {} : { cause: got.cause }),
    diagnosis: {
      problem: 'the provider did not answer the health probe',
      url,
      ...(got.status === undefined ? {} : { status: got.status }),
      ...(typeof code === 'string' ? { error: code } : {}),
    },
  })
}
