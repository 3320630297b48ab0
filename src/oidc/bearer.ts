import { decodeJwt, errors as joseErrors } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { JwksFetchError, verifyJwt, type Jwks } from './jwks.ts'

/**
 * Bearer tokens of API clients on routes with `bearer: true` (step 4 of the request pipeline):
 * `Authorization: Bearer <JWT>` verified against the JWKS of the issuer it names, when that is the
 * provider's or one of `provider.extraIssuers`: signature with the asymmetric allow-list, `iss`,
 * `aud` holding one of the route's audiences, `exp`/`nbf`/`iat` with bounded skew. A verified token
 * is remembered (per audience set) until it expires, so each is verified once, not per request.
 * Only JWTs: an opaque token cannot be checked here (there is no introspection).
 */
export interface BearerSubject {
  readonly sub: string
  readonly claims: Readonly<Record<string, unknown>>
  /** When the user authenticated (ms), from `auth_time`. */
  readonly authTime: number | undefined
  readonly scopes: ReadonlySet<string>
  readonly issuer: string
}

export type BearerResult =
  | { readonly status: 'valid'; readonly subject: BearerSubject; readonly expiresAt: number }
  /** `description`: for the client's `error_description` (no token content). */
  | { readonly status: 'invalid'; readonly description: string }
  /** The issuer's keys could not be fetched: 503, not the token's fault. */
  | { readonly status: 'unavailable' }

export interface BearerVerifier {
  verify(token: string, audiences: readonly string[]): Promise<BearerResult>
}

/** An issuer whose tokens are accepted: its URL and keys (null while they cannot be had). */
export interface TrustedIssuer {
  readonly issuer: string
  readonly jwks: Jwks
}

export interface BearerOptions {
  /** The issuers accepted now (the provider's first); asked per token, so a late connection counts. */
  readonly issuers: () => readonly TrustedIssuer[]
  readonly algorithms: readonly string[]
  readonly clockToleranceSec: number
  readonly clock: Clock
  readonly max?: number
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export function createBearerVerifier(opts: BearerOptions): BearerVerifier {
  const verified = new LRUCache<string, { subject: BearerSubject; expiresAt: number }>({ max: opts.max ?? 50_000 })
  return {
    async verify(token, audiences) {
      if (token.length > 16_384 || !JWT_SHAPE.test(token)) return { status: 'invalid', description: 'The token is not a JWT.' }
      const now = opts.clock.now()
      const key = `${audiences.join(' ')}\n${token}`
      const known = verified.get(key)
      if (known !== undefined) {
        if (now < known.expiresAt + opts.clockToleranceSec * 1000) return { status: 'valid', ...known }
        verified.delete(key)
        return { status: 'invalid', description: 'The token has expired.' }
      }
      let claimed: string | undefined
      try {
        claimed = decodeJwt(token).iss
      } catch {
        return { status: 'invalid', description: 'The token is not a JWT.' }
      }
      const trusted = opts.issuers().find((i) => i.issuer === claimed)
      if (trusted === undefined) return { status: 'invalid', description: 'The token is not from an accepted issuer.' }
      if (audiences.length === 0) return { status: 'invalid', description: 'This route accepts no audience.' }
      let lastAudienceError = false
      for (const audience of audiences) {
        try {
          const payload = await verifyJwt(token, trusted.jwks, {
            issuer: trusted.issuer,
            audience,
            algorithms: opts.algorithms,
            clockToleranceSec: opts.clockToleranceSec,
            nowSec: Math.floor(now / 1000),
            requiredClaims: ['exp', 'iat', 'sub'],
          })
          const expiresAt = (payload.exp as number) * 1000
          const claims = payload as Record<string, unknown>
          const subject: BearerSubject = { sub: String(payload.sub), claims, authTime: typeof claims.auth_time === 'number' ? claims.auth_time * 1000 : undefined, scopes: scopesOf(claims), issuer: trusted.issuer }
          verified.set(key, { subject, expiresAt }, { ttl: Math.max(1, expiresAt + opts.clockToleranceSec * 1000 - now) })
          return { status: 'valid', subject, expiresAt }
        } catch (err) {
          if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') {
            lastAudienceError = true
            continue
          }
          return failure(err)
        }
      }
      return lastAudienceError ? { status: 'invalid', description: 'The token is not for this resource (aud).' } : { status: 'invalid', description: 'The token could not be verified.' }
    },
  }
}

function failure(err: unknown): BearerResult {
  if (err instanceof joseErrors.JWKSTimeout || err instanceof JwksFetchError || err instanceof TypeError || (err instanceof Error && err.name === 'TimeoutError')) {
    return { status: 'unavailable' }
  }
  if (err instanceof joseErrors.JWTExpired) return { status: 'invalid', description: 'The token has expired.' }
  if (err instanceof joseErrors.JWTClaimValidationFailed) return { status: 'invalid', description: `The token's ${err.claim} claim is not valid.` }
  return { status: 'invalid', description: 'The token signature could not be verified.' }
}

/** The scopes a token holds: `scope` (space-separated, RFC 9068) or `scp` (a list or a string: Entra ID, Okta). */
export function scopesOf(claims: Readonly<Record<string, unknown>>): ReadonlySet<string> {
  const out = new Set<string>()
  for (const value of [claims.scope, claims.scp]) {
    if (typeof value === 'string') for (const s of value.split(' ')) if (s !== '') out.add(s)
    if (Array.isArray(value)) for (const s of value) if (typeof s === 'string' && s !== '') out.add(s)
  }
  return out
}

/**
 * The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750 §2.1),
 * or null when the header is absent or another scheme. Never read from the query or a form body.
 */
export function bearerTokenOf(header: string | undefined): string | null {
  if (header === undefined || header.length < 7) return null
  if (header.slice(0, 7).toLowerCase() !== 'bearer ') return null
  return header.slice(7).trim()
}
