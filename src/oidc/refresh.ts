import * as client from 'openid-client'
import { PortcullisError } from '../errors.ts'
import type { OidcClient } from './client.ts'
import { accessExpiry, verifyIdToken } from './callback.ts'
import { mapOidcError } from './errors.ts'
import type { RefreshedTokens } from './tokens.ts'

/**
 * The refresh_token grant (openid-client). `invalid_grant` → SESSION_ENDED (the provider revoked or
 * rotated the token away); network errors and 5xx → IDP_UNAVAILABLE (keep the session, retry later).
 * A new ID token must name the same `sub` (OIDC Core §12.2; openid-client does not check it), else the
 * session ends.
 */
export async function refreshTokens(oidc: OidcClient, refreshToken: string, expectedSub: string, nowMs: number): Promise<RefreshedTokens> {
  let response: client.TokenEndpointResponse
  try {
    response = await client.refreshTokenGrant(oidc.configuration, refreshToken)
  } catch (err) {
    throw mapOidcError(err, 'refresh')
  }
  let claims: Record<string, unknown> | undefined
  if (typeof response.id_token === 'string') {
    claims = await verifyIdToken(oidc, response.id_token, nowMs, 'refresh')
    if (claims.sub !== expectedSub) {
      throw new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', {
        cause: new Error('the refreshed ID token names another subject'),
      })
    }
  }
  return {
    accessToken: response.access_token,
    accessExpiresAt: accessExpiry(response, nowMs),
    refreshToken: response.refresh_token,
    idToken: response.id_token,
    claims,
  }
}
