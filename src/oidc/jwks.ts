import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'

/**
 * One remote JWKS per provider, shared by every signature check (ID tokens now; access, bearer and
 * logout tokens later). jose caches the keys, refetches at most once per cooldown when an unknown
 * `kid` shows up, and keeps the cached keys when a refetch fails.
 */
export interface Jwks {
  readonly getKey: JWTVerifyGetKey
  /** Fetch the key set now (startup, readiness, `portcullis check`). */
  reload(): Promise<void>
  /** The keys currently cached (for `portcullis check`). */
  keys(): ReadonlyArray<{ kid?: string; alg?: string; kty: string }>
}

export function createJwks(jwksUri: string, opts: { timeoutMs: number; cooldownMs?: number }): Jwks {
  const set = createRemoteJWKSet(new URL(jwksUri), {
    timeoutDuration: opts.timeoutMs,
    cooldownDuration: opts.cooldownMs ?? 30_000,
    cacheMaxAge: 10 * 60_000,
  })
  return {
    getKey: set,
    reload: () => set.reload(),
    keys: () => (set.jwks()?.keys ?? []).map((k) => ({ kid: k.kid, alg: k.alg, kty: k.kty ?? 'unknown' })),
  }
}

export interface VerifyOptions {
  readonly issuer: string
  readonly audience: string
  readonly algorithms: readonly string[]
  readonly clockToleranceSec: number
  readonly nowSec: number
}

/**
 * Verify a JWT's signature against the JWKS with an algorithm allow-list (never `none`, never HMAC:
 * the list comes from config and holds asymmetric algorithms only), plus `iss`, `aud`, `exp`/`nbf`
 * with tolerance, and an upper bound on `iat` (jose checks only its type).
 */
export async function verifyJwt(token: string, jwks: Jwks, opts: VerifyOptions): Promise<JWTPayload> {
  const { payload } = await jwtVerify(token, jwks.getKey, {
    issuer: opts.issuer,
    audience: opts.audience,
    algorithms: [...opts.algorithms],
    clockTolerance: opts.clockToleranceSec,
    currentDate: new Date(opts.nowSec * 1000),
    requiredClaims: ['iat', 'exp', 'sub'],
  })
  if (typeof payload.iat !== 'number' || payload.iat > opts.nowSec + opts.clockToleranceSec) {
    throw new IatInFutureError()
  }
  return payload
}

/** The `iat` bound failed: the token claims to be issued in the future beyond the allowed skew. */
export class IatInFutureError extends Error {
  readonly code = 'ERR_IAT_IN_FUTURE'
  constructor() {
    super('"iat" claim is in the future')
    this.name = 'IatInFutureError'
  }
}
