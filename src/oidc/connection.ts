import { PortcullisError } from '../errors.ts'
import { systemClock, type Clock } from '../clock.ts'
import { connectProvider, type OidcClient, type ProviderConfig, type ProviderEndpoint, type RequestObserver } from './client.ts'
import { mapOidcError } from './errors.ts'

export type { ProviderEndpoint, ProviderRequestResult } from './client.ts'

/**
 * Keeps trying to connect to the provider (discovery + JWKS) with exponential backoff, so Portcullis
 * starts and answers `/readyz` 503 while the provider is down, and recovers by itself once it is up
 * (issue #2 point 19). Requests ask `get()`, which throws NOT_READY until connected.
 *
 * Once connected, the connection stays (`ready` never turns false again: existing sessions are
 * served while the provider is down; logins and refreshes fail on their own). Whether the provider
 * still answers is followed apart: every request to it reports its outcome, and while nothing asked
 * it for `probeMs` its JWKS is fetched. `state` turns `unreachable` and back, each change reported
 * once (`onStateChange`), for `/readyz`'s body, the logs and the metrics.
 */
export interface ProviderConnection {
  /** The connected client, or throws PortcullisError NOT_READY / the last connection error. */
  get(): OidcClient
  /** Connected (at least once): the provider's metadata and keys are loaded. */
  readonly ready: boolean
  /** `connecting` until the first connection; then `ok`, or `unreachable` while it does not answer. */
  readonly state: ProviderState
  /**
   * Connected, and its last request got an answer: false before the connection, and from a request
   * that found the provider unreachable (no answer, a timeout, a 5xx) until one that did not. Unlike
   * `ready` (the connection is made, once), this follows an outage after startup. While connected and
   * idle the provider is asked for its JWKS every `RetryPolicy.probeMs` to keep this current.
   */
  readonly up: boolean
  /** The last connection failure, or why it is unreachable (public message only), for `/readyz` and logs; null while `ok`. */
  readonly lastError: PortcullisError | null
  /** Resolves once connected (or rejects after stop()). For tests and `portcullis check`. */
  whenReady(): Promise<OidcClient>
  stop(): void
}

export type ProviderState = 'connecting' | 'ok' | 'unreachable'

export interface RetryPolicy {
  readonly initialMs: number
  readonly maxMs: number
  /** While connected, ask the provider (its JWKS) when nothing else did for this long (default 30 s; 0 = never). */
  readonly probeMs?: number
}

export interface ConnectionEvents {
  onConnected?(client: OidcClient): void
  onError?(err: PortcullisError, retryInMs: number): void
  /** Every HTTP request to the provider, when it ended (connection attempts included). */
  onRequest?: RequestObserver
  /**
   * After the connection: the provider stopped answering (`up` false), or answers again; `endpoint`
   * is the request that showed it. Called once per change.
   */
  onStateChange?(up: boolean, endpoint: ProviderEndpoint): void
}

export function createProviderConnection(
  cfg: ProviderConfig,
  redirectUri: string,
  retry: RetryPolicy = { initialMs: 1000, maxMs: 30_000 },
  events: ConnectionEvents = {},
  clock: Clock = systemClock,
): ProviderConnection {
  let current: OidcClient | null = null
  let lastError: PortcullisError | null = null
  let stopped = false
  let timer: NodeJS.Timeout | null = null
  let delay = retry.initialMs
  const waiters: Array<{ resolve(c: OidcClient): void; reject(e: unknown): void }> = []
  let up = false
  let lastAnswerAt = performance.now()
  let probe: NodeJS.Timeout | null = null
  const observe: RequestObserver = (endpoint, seconds, result) => {
    lastAnswerAt = performance.now()
    events.onRequest?.(endpoint, seconds, result)
    if (current === null || stopped) return
    const reachable = result !== 'unavailable'
    if (reachable === up) return
    up = reachable
    lastError = up ? null : unreachable(endpoint)
    events.onStateChange?.(up, endpoint)
  }
  const probeMs = retry.probeMs ?? 30_000
  const startProbe = (): void => {
    if (probeMs <= 0) return
    probe = setInterval(() => {
      if (current === null || performance.now() - lastAnswerAt < probeMs) return
      // Its outcome reaches `observe` through the JWKS's own report; the cached keys stay on failure.
      current.jwks.reload().catch(() => {})
    }, probeMs)
    probe.unref()
  }

  const attempt = async (): Promise<void> => {
    timer = null
    if (stopped) return
    try {
      const connected = await connectProvider(cfg, redirectUri, clock, observe)
      if (stopped) return
      current = connected
      up = true
      lastError = null
      startProbe()
      events.onConnected?.(connected)
      for (const w of waiters.splice(0)) w.resolve(connected)
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
    get up() {
      return up
    },
    get state(): ProviderState {
      if (current === null) return 'connecting'
      return up ? 'ok' : 'unreachable'
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
      if (probe !== null) clearInterval(probe)
      for (const w of waiters.splice(0)) w.reject(new Error('stopped'))
    },
  }
}

/** Why a connected provider is taken for unreachable: a request to it got no usable answer. */
function unreachable(endpoint: ProviderEndpoint): PortcullisError {
  return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider does not answer: sign-ins and token refreshes fail until it is back; existing sessions are still served.', {
    diagnosis: { problem: `the provider did not answer a ${endpoint} request (no answer, a timeout or a 5xx)` },
  })
}
