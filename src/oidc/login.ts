import * as client from 'openid-client'
import { PortcullisError } from '../errors.ts'
import type { OidcClient } from './client.ts'

/**
 * The login transaction: everything the callback needs to finish one login, sealed into a short-lived
 * cookie named for its state so several tabs can log in at once (DESIGN.md §4).
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

/** Parameters the authorize URL is built from; protocol parameters are ours alone. */
export const PROTOCOL_PARAMS: ReadonlySet<string> = new Set([
  'response_type',
  'client_id',
  'redirect_uri',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'response_mode',
  'request',
  'request_uri',
])

export interface BeginLoginInput {
  readonly rd: string
  readonly scopes: readonly string[]
  /** Fixed extra parameters (`provider.authorizeParams`). */
  readonly authorizeParams: Readonly<Record<string, string>>
  /** Hint parameters from the caller, already filtered through `provider.hintParams`. */
  readonly hints: Readonly<Record<string, string>>
  readonly now: number
}

/**
 * Begin a login: fresh state, nonce and PKCE (S256) verifier; the authorization URL with the static
 * and allow-listed hint parameters. A hint can never override a protocol or static parameter.
 */
export async function beginLogin(oidc: OidcClient, input: BeginLoginInput): Promise<{ url: URL; transaction: LoginTransaction }> {
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const params: Record<string, string> = {}
  for (const [k, v] of Object.entries(input.hints)) {
    if (!PROTOCOL_PARAMS.has(k) && !(k in input.authorizeParams)) params[k] = v
  }
  for (const [k, v] of Object.entries(input.authorizeParams)) {
    if (PROTOCOL_PARAMS.has(k)) throw new PortcullisError('REQUEST_REJECTED', `authorize parameter ${k} is reserved`)
    params[k] = v
  }
  Object.assign(params, {
    response_type: 'code',
    redirect_uri: oidc.redirectUri,
    scope: input.scopes.join(' '),
    state,
    nonce,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  })
  const url = client.buildAuthorizationUrl(oidc.configuration, params)
  return { url, transaction: { state, nonce, verifier, rd: input.rd, createdAt: input.now } }
}
