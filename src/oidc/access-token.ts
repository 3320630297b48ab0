import { decodeProtectedHeader, errors as joseErrors } from 'jose'
import { LRUCache } from 'lru-cache'

/** Every this many new entries, expired ones are dropped (a pass over the cache, off the hot path). */
const SWEEP_EVERY = 512
import type { Clock } from '../clock.ts'
import type { Jwks } from './jwks.ts'
import { JwksFetchError, verifyJwt } from './jwks.ts'

/**
 * Verification of JWT access tokens held in sessions (issue #3 point 1): signature via the provider's
 * JWKS with the algorithm allow-list, `iss`, `aud` containing the client id (or `provider.audience`),
 * `exp`/`nbf`/`iat` with the configured tolerance. A verified token is remembered in a bounded LRU
 * until it expires, so each token is verified once, not on every request that carries it. Opaque tokens are not looked at:
 * the session's expiry from `expires_in` governs them.
 */
export type AccessTokenCheck =
  | { readonly status: 'valid'; readonly expiresAt: number }
  | { readonly status: 'expired' }
  | { readonly status: 'invalid'; readonly reason: string }
  | { readonly status: 'opaque' }
  /** The keys could not be fetched: not the token's fault; rely on its expiry meanwhile. */
  | { readonly status: 'unavailable' }

export interface AccessTokenOptions {
  readonly issuer: string
  readonly audience: string
  readonly algorithms: readonly string[]
  readonly clockToleranceSec: number
  readonly mode: 'auto' | 'jwt' | 'opaque'
  readonly clock: Clock
  readonly max?: number
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

export class AccessTokenVerifier {
  readonly #jwks: Jwks
  readonly #opts: AccessTokenOptions
  /** token → expiry (ms). Keyed by the token string itself: it is already in memory in the session. */
  readonly #verified: LRUCache<string, number>
  /** Writes since the last sweep of expired entries (lru-cache drops them only when looked up or evicted). */
  #writes = 0

  constructor(jwks: Jwks, opts: AccessTokenOptions) {
    this.#jwks = jwks
    this.#opts = opts
    this.#verified = new LRUCache({ max: opts.max ?? 50_000 })
  }

  async check(token: string): Promise<AccessTokenCheck> {
    const now = this.#opts.clock.now()
    const known = this.#verified.get(token)
    if (known !== undefined) {
      if (now < known + this.#opts.clockToleranceSec * 1000) return { status: 'valid', expiresAt: known }
      this.#verified.delete(token)
      return { status: 'expired' }
    }
    if (this.#opts.mode === 'opaque' || (this.#opts.mode === 'auto' && !looksLikeJws(token))) return { status: 'opaque' }
    try {
      const payload = await verifyJwt(token, this.#jwks, {
        issuer: this.#opts.issuer,
        audience: this.#opts.audience,
        algorithms: this.#opts.algorithms,
        clockToleranceSec: this.#opts.clockToleranceSec,
        nowSec: Math.floor(now / 1000),
        requiredClaims: ['exp', 'iat'],
      })
      const expiresAt = (payload.exp as number) * 1000
      this.#verified.set(token, expiresAt, { ttl: Math.max(1, expiresAt + this.#opts.clockToleranceSec * 1000 - now) })
      // Refreshed sessions never ask for their old token again: sweep expired ones now and then, or
      // they stay (about 1 KB each) until the count bound evicts them.
      if (++this.#writes % SWEEP_EVERY === 0) this.#verified.purgeStale()
      return { status: 'valid', expiresAt }
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) return { status: 'expired' }
      if (err instanceof joseErrors.JWKSTimeout || err instanceof JwksFetchError || err instanceof TypeError || (err instanceof Error && err.name === 'TimeoutError')) {
        return { status: 'unavailable' }
      }
      const code = (err as { code?: unknown }).code
      return { status: 'invalid', reason: typeof code === 'string' ? code : 'ERR_ACCESS_TOKEN' }
    }
  }
}

function looksLikeJws(token: string): boolean {
  if (!JWT_SHAPE.test(token)) return false
  try {
    const header = decodeProtectedHeader(token)
    return typeof header.alg === 'string'
  } catch {
    return false
  }
}
