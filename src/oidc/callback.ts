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
 * our own JWKS and allow-list, and bound `iat`: checks openid-client leaves to its caller.
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
    throw mapOidcError(err, 'callback', {
      url: oidc.summary.tokenEndpoint,
      authMethod: oidc.tokenEndpointAuthMethod,
    })
  }
  const tokens = await toTokenSet(oidc, response, nowMs)
  await acceptAccessToken(oidc, tokens.accessToken)
  return tokens
}

/**
 * The access token must pass the check every later request makes of it, before a session is made of
 * it: a token the pipeline would refuse (signed with a key it cannot find, another audience, already
 * expired) would end the session on the first request and send the browser straight back to the
 * provider, which signs it in again: a login loop. Refused here, it is one error page per attempt.
 * Keys that cannot be fetched are not the token's fault (its expiry governs meanwhile).
 */
async function acceptAccessToken(oidc: OidcClient, accessToken: string): Promise<void> {
  const check = await oidc.accessTokens.check(accessToken)
  if (check.status === 'invalid' || check.status === 'expired') {
    throw new PortcullisError('LOGIN_FAILED', 'The access token from the identity provider could not be verified. Please sign in again.', {
      cause: new Error(`access token check at login: ${check.status === 'invalid' ? check.reason : 'expired'}`),
    })
  }
}

/** Verify the ID token of a token response and build the plain TokenSet. */
export async function toTokenSet(oidc: OidcClient, response: client.TokenEndpointResponse, nowMs: number): Promise<TokenSet> {
  const idToken = response.id_token
  if (typeof idToken !== 'string') {
    throw new PortcullisError('LOGIN_FAILED', 'The identity provider returned no ID token.')
  }
  return {
    idToken,
    accessToken: response.access_token,
    refreshToken: response.refresh_token,
    accessExpiresAt: accessExpiry(response, nowMs),
    claims: await verifyIdToken(oidc, idToken, nowMs, 'callback'),
  }
}

/** ID-token signature and claims through our JWKS and allow-list; errors mapped for `phase`. */
export async function verifyIdToken(oidc: OidcClient, idToken: string, nowMs: number, phase: 'callback' | 'refresh'): Promise<Record<string, unknown>> {
  try {
    return await verifyJwt(idToken, oidc.jwks, {
      issuer: oidc.issuer,
      audience: oidc.clientId,
      algorithms: oidc.idTokenAlgorithms,
      clockToleranceSec: oidc.clockToleranceSec,
      nowSec: Math.floor(nowMs / 1000),
    })
  } catch (err) {
    throw mapOidcError(err, phase)
  }
}

/** Absolute access-token expiry from `expires_in` (5 minutes when the provider does not say). */
export function accessExpiry(response: client.TokenEndpointResponse, nowMs: number): number {
  const expiresIn = typeof response.expires_in === 'number' && response.expires_in > 0 ? response.expires_in : 300
  return nowMs + expiresIn * 1000
}
