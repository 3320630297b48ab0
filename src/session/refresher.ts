import { createHash, hkdfSync } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { PortcullisError, type ErrorCode } from '../errors.ts'
import { open, seal } from './codec.ts'
import type { KeyRing } from './keyring.ts'
import { asSession, type Session } from './model.ts'

/**
 * Race-free refresh:
 * - single-flight per session inside the process: concurrent requests on one session wait for one
 *   refresh_token grant;
 * - a short cache of results keyed by a hash of the OLD refresh token: a request that still carries
 *   the old cookie (the browser has not stored the new one yet) gets the new tokens instead of replaying
 *   a rotated refresh token (which the provider answers with `invalid_grant`, and may punish by
 *   revoking the whole grant);
 * - a short failure memory, so an unreachable provider is not asked again by every request;
 * - with several replicas (`session.redis`), an injected {@link RefreshCoordinator} makes the flight
 *   single across them too (`redis/refresh-lock.ts`: a lock per old refresh token and a shared,
 *   sealed result).
 * The grant itself is injected (`oidc/refresh.ts` via `runtime.ts`): session/ never imports protocol code.
 */
export type RefreshFn = (session: Session) => Promise<Session>

/** How long a refresh result is handed to requests carrying the old refresh token (here and shared). */
export const REFRESH_RESULT_TTL_MS = 60_000
/** How long an IdP outage is remembered before the next attempt (here and shared). */
export const REFRESH_FAILURE_TTL_MS = 5_000

/**
 * How one call of `refresh` went (the `portcullis_refreshes_total` metric): a grant of this process's
 * own that was `ok`, `ended` (SESSION_ENDED) or `failed`; or none: `joined` one in flight here,
 * `shared` a recent result or failure (remembered here, or handed over by another replica).
 */
export type RefreshReport = 'ok' | 'ended' | 'failed' | 'joined' | 'shared'

/**
 * Single flight across replicas. `coordinate` runs `refresh` only while this replica holds the lock
 * of the session's OLD refresh token; otherwise it waits for the outcome the holder shares (the
 * refreshed session, or its SESSION_ENDED / provider error). It rejects with STORE_UNAVAILABLE when
 * the replicas cannot agree (Redis unreachable), and with IDP_UNAVAILABLE when the holder takes
 * longer than its lock allows: never a second refresh with a token another replica may have rotated.
 */
export interface RefreshCoordinator {
  coordinate(session: Session & { readonly refreshToken: string }, refresh: () => Promise<Session>): Promise<Session>
}

export interface RefresherOptions {
  readonly clock: Clock
  /** How long a refresh result is handed to requests carrying the old refresh token. */
  readonly resultTtlMs?: number
  /** How long an IdP outage is remembered before the next attempt. */
  readonly failureTtlMs?: number
  readonly max?: number
  /** Single flight across replicas (with `session.redis`). */
  readonly coordinator?: RefreshCoordinator
  /** Told how each call went (metrics). */
  readonly onOutcome?: (report: RefreshReport) => void
}

export class Refresher {
  readonly #refresh: RefreshFn
  readonly #inflight = new Map<string, Promise<Session>>()
  readonly #results: LRUCache<string, Session>
  readonly #failures: LRUCache<string, PortcullisError>
  readonly #resultTtl: number
  readonly #coordinator: RefreshCoordinator | undefined
  readonly #told: (report: RefreshReport) => void
  /** Writes since the last sweep: results expire after a minute but would stay until the count bound. */
  #writes = 0

  constructor(refresh: RefreshFn, opts: RefresherOptions) {
    this.#refresh = refresh
    this.#told = opts.onOutcome ?? (() => {})
    this.#resultTtl = opts.resultTtlMs ?? REFRESH_RESULT_TTL_MS
    this.#coordinator = opts.coordinator
    // Both TTLs run on the injected clock (lru-cache's `perf`), like every other lifetime; no
    // `ttlResolution` caching of "now", so a moved clock is seen at once.
    const perf = { now: () => opts.clock.now() }
    this.#results = new LRUCache({ max: opts.max ?? 10_000, ttl: this.#resultTtl, perf, ttlResolution: 0 })
    this.#failures = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.failureTtlMs ?? REFRESH_FAILURE_TTL_MS, perf, ttlResolution: 0 })
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
      // Whether the grant was this process's own, or another replica's outcome handed over.
      let own = false
      pending = this.#run(session, () => {
        own = true
        return this.#refresh(session)
      })
        .then(
          (next) => {
            this.#results.set(key, next)
            this.#swept()
            this.#told(own ? 'ok' : 'shared')
            return next
          },
          (err: unknown) => {
            const code = err instanceof PortcullisError ? err.code : undefined
            // Redis unreachable before any grant is this replica's failure, not another's outcome.
            this.#told(own ? (code === 'SESSION_ENDED' ? 'ended' : 'failed') : code === 'STORE_UNAVAILABLE' ? 'failed' : 'shared')
            // Outages are remembered briefly; a definitive end (invalid_grant) is handed to everyone
            // carrying this refresh token for as long as a result would be. Redis being unreachable
            // is not remembered: it is found out at once (no command waits), and it is back when it is.
            if (err instanceof PortcullisError && err.code === 'SESSION_ENDED') this.#failures.set(key, err, { ttl: this.#resultTtl })
            else if (err instanceof PortcullisError && err.code !== 'STORE_UNAVAILABLE') this.#failures.set(key, err)
            throw err
          },
        )
        .finally(() => this.#inflight.delete(key))
      this.#inflight.set(key, pending)
    }
    return pending
  }

  #swept(): void {
    if (++this.#writes % 256 !== 0) return
    this.#results.purgeStale()
    this.#failures.purgeStale()
  }

  #run(session: Session, grant: () => Promise<Session>): Promise<Session> {
    const coordinator = this.#coordinator
    const refreshToken = session.refreshToken
    if (coordinator === undefined || refreshToken === undefined) return grant()
    return coordinator.coordinate({ ...session, refreshToken }, grant)
  }
}

/** The hash of a refresh token that names its refresh (the local caches, the cross-replica lock). */
export function refreshTokenHash(refreshToken: string): string {
  return createHash('sha256').update(refreshToken).digest('base64url')
}

function keyOf(session: Session): string {
  return session.refreshToken === undefined ? `id:${session.id}` : `rt:${refreshTokenHash(session.refreshToken)}`
}

// ---------------------------------------------------------------------------------------------------
// The outcome one replica hands the others, sealed so that only a holder of the old refresh token
// can read it (the store shared by the replicas holds nothing readable without it).

/** The errors a refresh outcome may carry to other replicas; anything else is not shared. */
const SHARED_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['SESSION_ENDED', 'IDP_UNAVAILABLE', 'IDP_REJECTED', 'IDP_CLIENT_AUTH'])

export type RefreshOutcome = { readonly kind: 'session'; readonly session: Session } | { readonly kind: 'error'; readonly code: ErrorCode; readonly message: string }

/** The outcome of a refresh as the others get it: the session, a shareable PortcullisError, or null (nothing to share). */
export function outcomeOf(result: { ok: true; session: Session } | { ok: false; err: unknown }): RefreshOutcome | null {
  if (result.ok) return { kind: 'session', session: result.session }
  const err = result.err
  if (err instanceof PortcullisError && SHARED_CODES.has(err.code)) return { kind: 'error', code: err.code, message: err.publicMessage }
  return null
}

/** How long an outcome is shared: a result or a definitive end as long as a local result; an outage as long as the failure memory. */
export function outcomeTtlMs(outcome: RefreshOutcome, resultTtlMs = REFRESH_RESULT_TTL_MS, failureTtlMs = REFRESH_FAILURE_TTL_MS): number {
  return outcome.kind === 'session' || outcome.code === 'SESSION_ENDED' ? resultTtlMs : failureTtlMs
}

/**
 * The key an outcome is sealed with: HKDF-SHA256 over the OLD refresh token (its own salt and
 * purpose, unrelated to `refreshTokenHash`, which names the Redis keys).
 */
function outcomeRing(refreshToken: string): KeyRing {
  const raw = new Uint8Array(hkdfSync('sha256', Buffer.from(refreshToken, 'utf8'), Buffer.from('portcullis/v1 refresh-outcome'), 'portcullis refresh outcome A256GCM', 32))
  const key = { kid: 'rt', raw }
  return { current: key, byId: (kid) => (kid === 'rt' ? key : undefined) }
}

export function sealOutcome(outcome: RefreshOutcome, refreshToken: string): Promise<string> {
  return seal(outcome, outcomeRing(refreshToken))
}

/**
 * The outcome sealed for `session`'s refresh token, or null when it does not open (another token,
 * tampered, another shape) or names another session (the same refresh token cannot belong to two).
 */
export async function openOutcome(sealed: string, session: Session & { readonly refreshToken: string }): Promise<RefreshOutcome | null> {
  const opened = await open(sealed, outcomeRing(session.refreshToken))
  if (opened === null || typeof opened.payload !== 'object' || opened.payload === null) return null
  const p = opened.payload as Record<string, unknown>
  if (p.kind === 'session') {
    const next = asSession(p.session)
    return next !== null && next.id === session.id && next.sub === session.sub ? { kind: 'session', session: next } : null
  }
  if (p.kind === 'error' && typeof p.code === 'string' && SHARED_CODES.has(p.code as ErrorCode) && typeof p.message === 'string') {
    return { kind: 'error', code: p.code as ErrorCode, message: p.message }
  }
  return null
}

/** A shared error outcome as the error this replica throws. */
export function outcomeError(outcome: Extract<RefreshOutcome, { kind: 'error' }>): PortcullisError {
  return new PortcullisError(outcome.code, outcome.message, { cause: new Error('refresh outcome shared by another instance') })
}
