import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import type { Session } from './model.ts'

/**
 * Race-free refresh:
 * - single-flight per session inside the process: concurrent requests on one session wait for one
 *   refresh_token grant;
 * - a short cache of results keyed by a hash of the OLD refresh token: a request that still carries
 *   the old cookie (the browser has not stored the new one yet) gets the new tokens instead of replaying
 *   a rotated refresh token (which the provider answers with `invalid_grant`, and may punish by
 *   revoking the whole grant);
 * - a short failure memory, so an unreachable provider is not asked again by every request.
 * The grant itself is injected (`oidc/refresh.ts` via `runtime.ts`): session/ never imports protocol code.
 */
export type RefreshFn = (session: Session) => Promise<Session>

/**
 * How one call of `refresh` went: a grant of its own that was `ok`, `ended` (SESSION_ENDED) or
 * `failed`; or none: `joined` one in flight, `shared` a recent result (or a remembered failure).
 */
export type RefreshOutcome = 'ok' | 'ended' | 'failed' | 'joined' | 'shared'

export interface RefresherOptions {
  readonly clock: Clock
  /** How long a refresh result is handed to requests carrying the old refresh token. */
  readonly resultTtlMs?: number
  /** How long an IdP outage is remembered before the next attempt. */
  readonly failureTtlMs?: number
  readonly max?: number
  /** Told how each call went (metrics). */
  readonly onOutcome?: (outcome: RefreshOutcome) => void
}

export class Refresher {
  readonly #refresh: RefreshFn
  readonly #inflight = new Map<string, Promise<Session>>()
  readonly #results: LRUCache<string, Session>
  readonly #failures: LRUCache<string, PortcullisError>
  readonly #resultTtl: number
  readonly #told: (outcome: RefreshOutcome) => void

  constructor(refresh: RefreshFn, opts: RefresherOptions) {
    this.#refresh = refresh
    this.#told = opts.onOutcome ?? (() => {})
    this.#resultTtl = opts.resultTtlMs ?? 60_000
    // Both TTLs run on the injected clock (lru-cache's `perf`), like every other lifetime; no
    // `ttlResolution` caching of "now", so a moved clock is seen at once.
    const perf = { now: () => opts.clock.now() }
    this.#results = new LRUCache({ max: opts.max ?? 10_000, ttl: this.#resultTtl, perf, ttlResolution: 0 })
    this.#failures = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.failureTtlMs ?? 5_000, perf, ttlResolution: 0 })
  }

  /** The refreshed session (shared by concurrent callers), or the refresh's PortcullisError. */
  refresh(session: Session): Promise<Session> {
    const key = keyOf(session)
    const done = this.#results.get(key)
    if (done !== undefined) {
      this.#told('shared')
      return Promise.resolve(done)
    }
    const failed = this.#failures.get(key)
    if (failed !== undefined) {
      this.#told('shared')
      return Promise.reject(failed)
    }
    let pending = this.#inflight.get(key)
    if (pending !== undefined) this.#told('joined')
    else {
      pending = this.#refresh(session)
        .then(
          (next) => {
            this.#results.set(key, next)
            this.#told('ok')
            return next
          },
          (err: unknown) => {
            this.#told(err instanceof PortcullisError && err.code === 'SESSION_ENDED' ? 'ended' : 'failed')
            // Outages are remembered briefly; a definitive end (invalid_grant) is handed to everyone
            // carrying this refresh token for as long as a result would be.
            if (err instanceof PortcullisError && err.code !== 'SESSION_ENDED') this.#failures.set(key, err)
            else if (err instanceof PortcullisError) this.#failures.set(key, err, { ttl: this.#resultTtl })
            throw err
          },
        )
        .finally(() => this.#inflight.delete(key))
      this.#inflight.set(key, pending)
    }
    return pending
  }
}

function keyOf(session: Session): string {
  return session.refreshToken === undefined ? `id:${session.id}` : `rt:${createHash('sha256').update(session.refreshToken).digest('base64url')}`
}
