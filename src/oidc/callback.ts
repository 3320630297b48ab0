import * as client from 'openid-client'
import { PortcullisError } from '../errors.ts'
import type { OidcClient } from './client.ts'
import { mapOidcError } from './errors.ts'
import { verifyJwt } from './jwks.ts'
import type { LoginTransaction } from './login.ts'
import type { TokenSet } from './tokens.ts'

/**
 * Finish a login: openid-client checks state, the RFC 9207 `iss` parameter (required when the provider
 * advertises it), exchanges the code with the client secret and PKCE verifier, and validates the ID
 * token claims (iss, aud, azp, exp, iat type, nonce, alg). We then verify the ID-token signature with
 * our own JWKS and allow-list, and bound `iat` (STYLE.md §4, "Not validated — ours to add").
 *
 * `callbackUrl` must be built from `server.publicUrl` (never the Host header): openid-client derives
 * the `redirect_uri` it sends to the token endpoint from it.
 */
export async function completeLogin(oidc: OidcClient, tx: LoginTransaction, callbackUrl: URL, nowMs: number): Promise<TokenSet> {
  let response: Awaited<ReturnType<typeof client.authorizationCodeGrant>>
  try {
    response = await client.authorizationCodeGrant(oidc.configuration, callbackUrl, {
      pkceCodeVerifier: tx.verifier,
      expectedState: tx.state,
      expectedNonce: tx.nonce,
      idTokenExpected: true,
    })
  } catch (err) {
    throw mapOidcError(err, 'callback')
  }
  return toTokenSet(oidc, response, nowMs)
}

/** Verify the ID token of a token response and build the plain TokenSet. Shared with refresh. */
export async function toTokenSet(
  oidc: OidcClient,
  response: client.TokenEndpointResponse,
  nowMs: number,
): Promise<TokenSet> {
  const idToken = response.id_token
  if (typeof idToken !== 'string') {
    throw new PortcullisError('LOGIN_FAILED', 'The identity provider returned no ID token.')
  }
  let claims: Record<string, unknown>
  try {
    claims = await verifyJwt(idToken, oidc.jwks, {
      issuer: oidc.issuer,
      audience: oidc.clientId,
      algorithms: oidc.idTokenAlgorithms,
      clockToleranceSec: oidc.clockToleranceSec,
      nowSec: Math.floor(nowMs / 1000),
    })
  } catch (err) {
    throw mapOidcError(err, 'callback')
  }
  const expiresIn = typeof response.expires_in === 'number' && response.expires_in > 0 ? response.expires_in : 300
  return {
    idToken,
    accessToken: response.access_token,
    refreshToken: response.refresh_token,
    accessExpiresAt: nowMs + expiresIn * 1000,
    claims,
  }
}
