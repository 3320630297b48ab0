import { decodeJwt, errors as joseErrors } from 'jose'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { createJwks, IatInFutureError, JwksFetchError, verifyJwt, type Jwks } from './jwks.ts'

/**
 * Bearer tokens of API clients on routes with `bearer: true` (step 4 of the request pipeline):
 * `Authorization: Bearer <JWT>` verified against the JWKS of the issuer it names, when that is the
 * provider's or one of `provider.extraIssuers`: signature with the asymmetric allow-list, `iss`,
 * `aud` holding one of the route's audiences, `exp`/`nbf`/`iat` with bounded skew. A verified token
 * is remembered (per audience set) until it expires, so each is verified once, not per request.
 * Only JWTs: an opaque token cannot be checked here (there is no introspection).
 *
 * The keys of an extra issuer (`extraIssuer`) are fetched when its first token arrives: from its
 * `jwksUri`, or from the `jwks_uri` of its discovery document, which must name the same issuer.
 * While they cannot be had (the issuer unreachable, a discovery document naming another issuer) its
 * tokens are `unavailable` (503), never a crash; the next attempt waits a backoff (1 s doubling to
 * 60 s), and the keys once loaded are kept and refreshed as the provider's are (`oidc/jwks.ts`).
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
  /** The issuer's keys could not be fetched: 503, not the token's fault. `cause`: why, for the log. */
  | { readonly status: 'unavailable'; readonly cause?: unknown }

export interface BearerVerifier {
  verify(token: string, audiences: readonly string[]): Promise<BearerResult>
}

/** An issuer whose tokens are accepted: its URL and keys (null while they cannot be had: `unavailable`). */
export interface TrustedIssuer {
  readonly issuer: string
  readonly jwks: Jwks | null
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
  let writes = 0
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
      const jwks = trusted.jwks
      if (jwks === null) return { status: 'unavailable', cause: new JwksFetchError(`the keys of ${trusted.issuer} are not loaded (the provider is not connected)`) }
      let lastAudienceError = false
      for (const audience of audiences) {
        try {
          const payload = await verifyJwt(token, jwks, {
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
          // Expired tokens are never asked for again: drop them now and then, not only at the count bound.
          if (++writes % 512 === 0) verified.purgeStale()
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
    return { status: 'unavailable', cause: err }
  }
  if (err instanceof joseErrors.JWTExpired) return { status: 'invalid', description: 'The token has expired.' }
  if (err instanceof IatInFutureError) return { status: 'invalid', description: "The token's iat claim is not valid." }
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

/** A `provider.extraIssuers` entry. */
export interface ExtraIssuerConfig {
  readonly issuer: string
  /** Its JWKS; unset: the `jwks_uri` of its discovery document. */
  readonly jwksUri?: string | undefined
}

export interface ExtraIssuerOptions {
  /** Timeout of each request to the issuer (`provider.timeout`). */
  readonly timeoutMs: number
  readonly clock: Clock
  /**
   * Whether a URL the discovery document names may be fetched: https, and plain http only where
   * `provider.allowInsecureHttp` allows it (loopback, `provider.allowInsecureHttpHosts`). The configured URLs were checked by config validation.
   */
  readonly urlAllowed: (url: URL) => boolean
  /** The wait after the first failed attempt to load the keys; it doubles up to `maxRetryMs`. Default 1 s. */
  readonly retryMs?: number
  /** Default 60 s. */
  readonly maxRetryMs?: number
}

/**
 * An extra issuer whose keys are loaded when its first token arrives (never at start: an issuer that
 * is down must not hold up Portcullis). Until they are, `getKey` fails with a `JwksFetchError`, which
 * the verifier answers as `unavailable`; after a failure the next attempt waits the backoff, so a
 * dead issuer is not asked once per request.
 */
export function extraIssuer(entry: ExtraIssuerConfig, opts: ExtraIssuerOptions): TrustedIssuer {
  const first = opts.retryMs ?? 1000
  const max = opts.maxRetryMs ?? 60_000
  let loaded: Jwks | null = null
  let loading: Promise<Jwks> | null = null
  let failures = 0
  let retryAt = Number.NEGATIVE_INFINITY
  let lastError: unknown = null

  const load = async (): Promise<Jwks> => {
    const uri = entry.jwksUri ?? (await discoverJwksUri(entry.issuer, opts))
    const jwks = createJwks(uri, { timeoutMs: opts.timeoutMs, clock: opts.clock })
    try {
      await jwks.reload()
    } catch (err) {
      throw new JwksFetchError(`the JWKS of ${entry.issuer} (${uri}) could not be fetched`, { cause: err })
    }
    return jwks
  }
  const ready = (): Promise<Jwks> => {
    if (loaded !== null) return Promise.resolve(loaded)
    if (loading !== null) return loading
    if (opts.clock.now() < retryAt) {
      return Promise.reject(new JwksFetchError(`the keys of ${entry.issuer} could not be loaded; the next attempt is not due yet`, { cause: lastError }))
    }
    loading = load()
      .then(
        (jwks) => {
          loaded = jwks
          failures = 0
          return jwks
        },
        (err: unknown) => {
          failures++
          retryAt = opts.clock.now() + Math.min(first * 2 ** (failures - 1), max)
          lastError = err
          throw err instanceof JwksFetchError ? err : new JwksFetchError(`the keys of ${entry.issuer} could not be loaded`, { cause: err })
        },
      )
      .finally(() => {
        loading = null
      })
    return loading
  }
  const jwks: Jwks = {
    getKey: async (header, token) => (await ready()).getKey(header, token),
    async reload() {
      if (loaded === null) await ready()
      else await loaded.reload()
    },
    keys: () => loaded?.keys() ?? [],
  }
  return { issuer: entry.issuer, jwks }
}

/**
 * The `jwks_uri` of an issuer's discovery document (`{issuer}/.well-known/openid-configuration`,
 * OpenID Connect Discovery 1.0 §4), refused when the document names another issuer (§4.3) or a
 * `jwks_uri` that may not be fetched. No redirects are followed.
 */
export async function discoverJwksUri(issuer: string, opts: Pick<ExtraIssuerOptions, 'timeoutMs' | 'urlAllowed'>): Promise<string> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`
  let res: Response
  try {
    res = await fetch(url, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(opts.timeoutMs) })
  } catch (err) {
    throw new JwksFetchError(`the discovery document of ${issuer} (${url}) could not be fetched`, { cause: err })
  }
  if (res.status !== 200) {
    void res.body?.cancel()
    throw new JwksFetchError(`the discovery document of ${issuer} (${url}) answered ${res.status}`)
  }
  let doc: unknown
  try {
    doc = await res.json()
  } catch (err) {
    throw new JwksFetchError(`the discovery document of ${issuer} (${url}) is not JSON`, { cause: err })
  }
  if (typeof doc !== 'object' || doc === null) throw new JwksFetchError(`the discovery document of ${issuer} (${url}) is not a JSON object`)
  const named = (doc as { issuer?: unknown }).issuer
  if (named !== issuer) throw new JwksFetchError(`the discovery document at ${url} names the issuer ${JSON.stringify(named)}, not ${issuer}`)
  const jwksUri = (doc as { jwks_uri?: unknown }).jwks_uri
  const parsed = typeof jwksUri === 'string' ? URL.parse(jwksUri) : null
  if (parsed === null || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) {
    throw new JwksFetchError(`the discovery document at ${url} has no usable jwks_uri`)
  }
  if (!opts.urlAllowed(parsed)) throw new JwksFetchError(`the discovery document at ${url} names a jwks_uri over plain http (${parsed.href}) that provider.allowInsecureHttp does not allow`)
  return parsed.href
}
