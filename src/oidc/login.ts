import * as client from 'openid-client'
import type { OidcClient } from './client.ts'

/**
 * The login transaction: everything the callback needs to finish one login, sealed into a short-lived
 * cookie named for its state so several tabs can log in at once.
 */
export interface LoginTransaction {
  readonly state: string
  readonly nonce: string
  readonly verifier: string
  /** Validated absolute return URL. */
  readonly rd: string
  /** ms since the epoch. */
  readonly createdAt: number
}

export interface BeginLoginInput {
  readonly rd: string
  readonly scopes: readonly string[]
  /** Fixed extra parameters (`provider.authorizeParams`). */
  readonly authorizeParams: Readonly<Record<string, string>>
  /** Hint parameters from the caller, already filtered through `provider.hintParams`. */
  readonly hints: Readonly<Record<string, string>>
  /**
   * The parameters of the route the login is for (`routes[].loginParams`, and `acr_values`, `max_age`,
   * `prompt` from its step-up requirements): they win over hints and `provider.authorizeParams`.
   */
  readonly routeParams?: Readonly<Record<string, string>>
  readonly now: number
}

/**
 * Begin a login: fresh state, nonce and PKCE (S256) verifier; the authorization URL with the static,
 * route and allow-listed hint parameters. A hint can never override a protocol, static or route
 * parameter (a caller's `prompt=none` cannot undo a step-up's `prompt=login`).
 */
export async function beginLogin(oidc: OidcClient, input: BeginLoginInput): Promise<{ url: URL; transaction: LoginTransaction }> {
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  // Later spreads win: a hint never overrides a static parameter, and neither can override a protocol
  // parameter (config validation also refuses protocol names in authorizeParams).
  const params: Record<string, string> = {
    ...input.hints,
    ...input.authorizeParams,
    ...input.routeParams,
    response_type: 'code',
    redirect_uri: oidc.redirectUri,
    scope: input.scopes.join(' '),
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  }
  const url = client.buildAuthorizationUrl(oidc.configuration, params)
  return { url, transaction: { state, nonce, verifier, rd: input.rd, createdAt: input.now } }
}
