import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions, type CryptoKey } from 'jose'
import type { Clock } from '../clock.ts'
import { systemClock } from '../clock.ts'

/**
 * One JWKS cache per provider, shared by every signature check (ID, access, logout tokens).
 * - fetched once at connect; refreshed in the background when older than `maxAgeMs`;
 * - an unknown `kid` refetches at once, unless another unknown-`kid` refetch began within
 *   `cooldownMs` (the fetch at connect and the scheduled ones do not count: a provider that rotates
 *   its key right after Portcullis connected is followed at once); requests that arrive while that
 *   refetch runs wait for it; then the token is rejected;
 * - a failed fetch keeps the cached keys working (jose's RemoteJWKSet would instead fail every
 *   verification once its cache is stale and the endpoint is down).
 */
export interface Jwks {
  readonly getKey: JWTVerifyGetKey
  /** Fetch the key set now; throws when the first fetch fails (startup, `portcullis check`). */
  reload(): Promise<void>
  /** The keys currently cached (for `portcullis check`). */
  keys(): ReadonlyArray<{ kid?: string; alg?: string; kty: string }>
}

export interface JwksOptions {
  readonly timeoutMs: number
  readonly cooldownMs?: number
  readonly maxAgeMs?: number
  readonly clock?: Clock
  /**
   * Told of each fetch when it ends: seconds to the answer, and `ok`, `error` (an answer that is not a
   * key set) or `unavailable` (no answer, a timeout, a 5xx).
   */
  readonly onFetch?: (seconds: number, result: 'ok' | 'error' | 'unavailable') => void
}

export function createJwks(jwksUri: string, opts: JwksOptions): Jwks {
  const clock = opts.clock ?? systemClock
  const cooldown = opts.cooldownMs ?? 30_000
  const maxAge = opts.maxAgeMs ?? 10 * 60_000
  let set: JSONWebKeySet | null = null
  let local: ReturnType<typeof createLocalJWKSet> | null = null
  let fetchedAt = Number.NEGATIVE_INFINITY
  /** When the last unknown-`kid` refetch began: only those count for the cooldown. */
  let unknownKidAt = Number.NEGATIVE_INFINITY
  let unknownKidFetch: Promise<void> | null = null
  let inflight: Promise<void> | null = null

  const fetchNow = (): Promise<void> => {
    if (inflight !== null) return inflight
    fetchedAt = clock.now() // counts attempts too, so a failing endpoint is not hammered
    const started = performance.now()
    let answered = 0
    inflight = (async () => {
      const res = await fetch(jwksUri, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(opts.timeoutMs) })
      answered = res.status
      if (!res.ok) throw new JwksFetchError(`JWKS endpoint answered ${res.status}`)
      const body = (await res.json()) as unknown
      if (typeof body !== 'object' || body === null || !Array.isArray((body as { keys?: unknown }).keys)) {
        throw new JwksFetchError('JWKS response has no "keys" array')
      }
      set = body as JSONWebKeySet
      local = createLocalJWKSet(set)
    })()
      .then(
        () => opts.onFetch?.((performance.now() - started) / 1000, 'ok'),
        (err: unknown) => {
          opts.onFetch?.((performance.now() - started) / 1000, answered === 0 || answered >= 500 ? 'unavailable' : 'error')
          throw err
        },
      )
      .finally(() => {
        inflight = null
      })
    return inflight
  }
  const fetchQuietly = async (): Promise<void> => {
    try {
      await fetchNow()
    } catch {
      // keep the cached keys; the next attempt waits for the cooldown
    }
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (local === null) await fetchNow()
    if (clock.now() - fetchedAt > maxAge) void fetchQuietly()
    try {
      return await (local as NonNullable<typeof local>)(header, token)
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err
      // An unknown kid: the provider may have rotated its keys.
      if (unknownKidFetch === null) {
        if (clock.now() - unknownKidAt < cooldown) throw err
        unknownKidAt = clock.now() // counts attempts too, so a failing endpoint is not hammered
        unknownKidFetch = fetchQuietly().finally(() => {
          unknownKidFetch = null
        })
      }
      await unknownKidFetch
      return (local as NonNullable<typeof local>)(header, token)
    }
  }
  return {
    getKey,
    reload: fetchNow,
    keys: () => (set?.keys ?? []).map((k) => ({ kid: k.kid, alg: k.alg, kty: k.kty ?? 'unknown' })),
  }
}

/** The JWKS endpoint answered, but not with a key set. */
export class JwksFetchError extends Error {
  readonly code = 'ERR_JWKS_FETCH'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'JwksFetchError'
  }
}

/**
 * Asymmetric JWS algorithms accepted for provider-signed tokens: never `none`, never HMAC (a public key
 * must never serve as an HMAC secret). Same list as `SIGNING_ALGS` in config/schema.ts (config/ may not
 * import oidc/; a unit test keeps the two equal).
 */
export const ASYMMETRIC_ALGS: readonly string[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']

export interface VerifyOptions {
  readonly issuer: string
  readonly audience: string
  readonly algorithms: readonly string[]
  readonly clockToleranceSec: number
  readonly nowSec: number
  readonly typ?: string
  readonly requiredClaims?: readonly string[]
  readonly maxTokenAgeSec?: number
}

/**
 * Verify a JWT's signature against the JWKS with an algorithm allow-list (never `none`, never HMAC:
 * the list comes from config and holds asymmetric algorithms only), plus `iss`, `aud`, `exp`/`nbf`
 * with tolerance, and an upper bound on `iat` (jose checks only its type).
 */
export async function verifyJwt(token: string, jwks: Jwks, opts: VerifyOptions): Promise<JWTPayload> {
  const options = {
    issuer: opts.issuer,
    audience: opts.audience,
    algorithms: [...opts.algorithms],
    clockTolerance: opts.clockToleranceSec,
    currentDate: new Date(opts.nowSec * 1000),
    requiredClaims: [...(opts.requiredClaims ?? ['iat', 'exp', 'sub'])],
    ...(opts.typ === undefined ? {} : { typ: opts.typ }),
    ...(opts.maxTokenAgeSec === undefined ? {} : { maxTokenAge: opts.maxTokenAgeSec }),
  }
  let payload: JWTPayload
  try {
    ;({ payload } = await jwtVerify(token, jwks.getKey, options))
  } catch (err) {
    if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err
    // No `kid` (or one several keys share), and more than one key of the token's type and algorithm:
    // each is tried; a token none of them signed is refused. With a single such key, jose picks it.
    payload = await verifyWithEach(token, err, options)
  }
  if (typeof payload.iat !== 'number' || payload.iat > opts.nowSec + opts.clockToleranceSec) {
    throw new IatInFutureError()
  }
  return payload
}

async function verifyWithEach(token: string, candidates: AsyncIterable<CryptoKey>, options: JWTVerifyOptions): Promise<JWTPayload> {
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, options)).payload
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) continue
      throw err // the claims are wrong whichever key signed
    }
  }
  throw new joseErrors.JWSSignatureVerificationFailed()
}

/** The `iat` bound failed: the token claims to be issued in the future beyond the allowed skew. */
export class IatInFutureError extends Error {
  readonly code = 'ERR_IAT_IN_FUTURE'
  constructor() {
    super('"iat" claim is in the future')
    this.name = 'IatInFutureError'
  }
}
