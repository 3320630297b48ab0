import * as client from 'openid-client'
import { decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose'
import { LRUCache } from 'lru-cache'
import { PortcullisError } from '../errors.ts'
import type { Clock } from '../clock.ts'
import type { OidcClient } from './client.ts'
import { verifyJwt } from './jwks.ts'

/**
 * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the provider's end-session URL with
 * `client_id`, `id_token_hint` and `post_logout_redirect_uri`, or null when the provider has no
 * end-session endpoint.
 */
export function endSessionUrl(oidc: OidcClient, opts: { idTokenHint?: string; postLogoutRedirectUri?: string }): string | null {
  if (oidc.summary.endSessionEndpoint === undefined) return null
  const params: Record<string, string> = { client_id: oidc.clientId }
  if (opts.idTokenHint !== undefined) params.id_token_hint = opts.idTokenHint
  if (opts.postLogoutRedirectUri !== undefined) params.post_logout_redirect_uri = opts.postLogoutRedirectUri
  return client.buildEndSessionUrl(oidc.configuration, params).href
}

/** The back-channel logout event member of `events` (Back-Channel Logout 1.0 §2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout'

/** What a valid logout token asks for: end the session `sid`, or every session of `sub` issued before `iat`. */
export interface LogoutRequest {
  readonly sid: string | undefined
  readonly sub: string | undefined
  /** ms since the epoch. */
  readonly issuedAt: number
  /** The token's `jti`, as recorded in the replay cache. */
  readonly jti: string
}

/** Maximum age of a logout token we accept (it is posted right after it is issued). */
export const LOGOUT_TOKEN_MAX_AGE_SEC = 10 * 60

/**
 * Validate a Back-Channel Logout token (OpenID Connect Back-Channel Logout 1.0 §2.6): signature via the
 * JWKS with the algorithm allow-list, `iss`, `aud`, `iat` within bounds, `exp` when present, `typ`
 * `logout+jwt` when present, `jti` present and not seen before, `events` holding the back-channel
 * member as an object, `sid` or `sub`, and no `nonce`. Throws TOKEN_INVALID with a public reason.
 * `seen(jti, untilMs)` records a jti and answers whether it was already recorded (replay); its own
 * rejection (the shared cache unreachable: STORE_UNAVAILABLE) is passed on as it is, never taken
 * for "not seen".
 */
export async function verifyLogoutToken(
  oidc: OidcClient,
  token: string,
  nowMs: number,
  seen: (jti: string, untilMs: number) => Promise<boolean>,
): Promise<LogoutRequest> {
  const invalid = (reason: string, cause?: unknown) => new PortcullisError('TOKEN_INVALID', reason, cause === undefined ? undefined : { cause })
  let header: ProtectedHeaderParameters
  try {
    header = decodeProtectedHeader(token)
  } catch (err) {
    throw invalid('logout_token is not a JWT', err)
  }
  if (header.typ !== undefined && !/^(application\/)?logout\+jwt$/i.test(header.typ)) throw invalid('logout_token has the wrong typ')
  let claims: JWTPayload
  try {
    claims = await verifyJwt(token, oidc.jwks, {
      issuer: oidc.issuer,
      audience: oidc.clientId,
      algorithms: oidc.idTokenAlgorithms,
      clockToleranceSec: oidc.clockToleranceSec,
      nowSec: Math.floor(nowMs / 1000),
      requiredClaims: ['iat', 'jti', 'events'],
      maxTokenAgeSec: LOGOUT_TOKEN_MAX_AGE_SEC,
    })
  } catch (err) {
    throw invalid('logout_token failed verification', err)
  }
  const events = claims.events
  if (typeof events !== 'object' || events === null || Array.isArray(events)) throw invalid('logout_token has no events object')
  const member = (events as Record<string, unknown>)[BACKCHANNEL_LOGOUT_EVENT]
  if (typeof member !== 'object' || member === null || Array.isArray(member)) throw invalid('logout_token events lack the back-channel logout event')
  if (claims.nonce !== undefined) throw invalid('logout_token must not contain a nonce')
  const sid = typeof claims.sid === 'string' && claims.sid !== '' ? claims.sid : undefined
  const sub = typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : undefined
  if (sid === undefined && sub === undefined) throw invalid('logout_token has neither sid nor sub')
  if (typeof claims.jti !== 'string' || claims.jti === '') throw invalid('logout_token has no jti')
  const issuedAt = (claims.iat as number) * 1000
  if (await seen(claims.jti, issuedAt + (LOGOUT_TOKEN_MAX_AGE_SEC + oidc.clockToleranceSec) * 1000)) throw invalid('logout_token was already used')
  return { sid, sub, issuedAt, jti: claims.jti }
}

/**
 * Replay memory for logout-token `jti`s: `seen(jti, untilMs)` records one and answers whether it was
 * already recorded; `forget(jti)` takes one back (its logout could not be carried out, so the
 * provider's retry must not be refused as a replay). In memory here (one instance); in Redis with
 * `session.redis` (`redis/logout-replay.ts`), shared by every replica.
 */
export interface LogoutReplayCache {
  seen(jti: string, untilMs: number): Promise<boolean>
  forget(jti: string): Promise<void>
}

/** The in-memory replay cache: bounded; an entry lives as long as its token could still be accepted. */
export function createJtiReplayCache(clock: Clock, max = 100_000): LogoutReplayCache {
  const lru = new LRUCache<string, true>({ max })
  return {
    async seen(jti, untilMs) {
      if (lru.has(jti)) return true
      lru.set(jti, true, { ttl: Math.max(1, untilMs - clock.now()) })
      return false
    },
    async forget(jti) {
      lru.delete(jti)
    },
  }
}
