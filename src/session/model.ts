import type { RefreshedTokens, TokenSet } from '../oidc/tokens.ts'

/**
 * The session: who the user is (a subset of the ID-token claims), the tokens, and its clocks
 * Plain data, sealed as a whole by the store. Times in ms since the epoch.
 */
export interface Session {
  readonly v: 1
  /** Random id of this login session: the memory store's ticket id, the key of local revocation. */
  readonly id: string
  readonly sub: string
  readonly sid: string | undefined
  readonly claims: Readonly<Record<string, unknown>>
  readonly idToken: string
  readonly accessToken: string
  readonly refreshToken: string | undefined
  readonly accessExpiresAt: number
  readonly authTime: number | undefined
  readonly createdAt: number
  readonly lastSeenAt: number
}

/** The lifetimes a session is checked against. */
export interface SessionLimits {
  readonly maxAge: number
  readonly idleTimeout: number
}

/** Claims kept in every session besides the ones identity headers ask for. */
export const BASE_CLAIMS: readonly string[] = ['sub', 'email', 'email_verified', 'name', 'preferred_username', 'groups', 'acr', 'amr', 'auth_time', 'sid']

function pickClaims(all: Readonly<Record<string, unknown>>, keep: ReadonlySet<string>): Record<string, unknown> {
  const claims: Record<string, unknown> = {}
  for (const name of keep) {
    if (all[name] !== undefined) claims[name] = all[name]
  }
  return claims
}

export function sessionFromTokens(tokens: TokenSet, now: number, keepClaims: ReadonlySet<string>, id: string): Session {
  const claims = pickClaims(tokens.claims, keepClaims)
  const authTime = tokens.claims.auth_time
  const sid = tokens.claims.sid
  return {
    v: 1,
    id,
    sub: String(tokens.claims.sub),
    sid: typeof sid === 'string' ? sid : undefined,
    claims,
    idToken: tokens.idToken,
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    accessExpiresAt: tokens.accessExpiresAt,
    authTime: typeof authTime === 'number' ? authTime * 1000 : undefined,
    createdAt: now,
    lastSeenAt: now,
  }
}

/**
 * The session after a refresh: new access token, the rotated refresh token (or the old one when the
 * provider did not rotate), and the new ID token and its claims when one came (its `sub` was checked).
 */
export function refreshedSession(session: Session, tokens: RefreshedTokens, keepClaims: ReadonlySet<string>): Session {
  return {
    ...session,
    accessToken: tokens.accessToken,
    accessExpiresAt: tokens.accessExpiresAt,
    refreshToken: tokens.refreshToken ?? session.refreshToken,
    idToken: tokens.idToken ?? session.idToken,
    claims: tokens.claims === undefined ? session.claims : pickClaims(tokens.claims, keepClaims),
  }
}

/** The access token expires within `ahead` ms: refresh before proxying. */
export function needsRefresh(session: Session, now: number, ahead: number): boolean {
  return session.accessExpiresAt - now <= ahead
}

/** Absolute lifetime or idle timeout passed. */
export function isExpired(session: Session, now: number, limits: SessionLimits): boolean {
  return now >= session.createdAt + limits.maxAge || now >= session.lastSeenAt + limits.idleTimeout
}

/** When the cookie holding this session should expire in the browser (absolute lifetime). */
export function expiresAt(session: Session, limits: SessionLimits): number {
  return session.createdAt + limits.maxAge
}

/**
 * Shape check of an opened payload: a value sealed with our key is ours, but an older release may have
 * sealed another shape; anything unexpected is no session.
 */
export function asSession(payload: unknown): Session | null {
  if (typeof payload !== 'object' || payload === null) return null
  const s = payload as Record<string, unknown>
  if (
    s.v !== 1 ||
    typeof s.id !== 'string' ||
    s.id === '' ||
    typeof s.sub !== 'string' ||
    s.sub === '' ||
    typeof s.idToken !== 'string' ||
    typeof s.accessToken !== 'string' ||
    typeof s.accessExpiresAt !== 'number' ||
    typeof s.createdAt !== 'number' ||
    typeof s.lastSeenAt !== 'number' ||
    typeof s.claims !== 'object' ||
    s.claims === null ||
    (s.refreshToken !== undefined && typeof s.refreshToken !== 'string') ||
    (s.sid !== undefined && typeof s.sid !== 'string')
  ) {
    return null
  }
  return s as unknown as Session
}
