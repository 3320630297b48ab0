/**
 * What a successful code exchange or refresh yields, as plain data. `session/` imports this type only
 * (refresh is injected into it as a function), so protocol code and session code stay apart.
 */
export interface TokenSet {
  readonly idToken: string
  readonly accessToken: string
  readonly refreshToken: string | undefined
  /** Absolute expiry of the access token, ms since the epoch (from `expires_in`, or the JWT `exp`). */
  readonly accessExpiresAt: number
  /** Verified ID-token claims. */
  readonly claims: Readonly<Record<string, unknown>>
}

/**
 * What a refresh yields. A provider may omit the ID token (keep the old one and its claims) and may not
 * rotate the refresh token (keep the old one).
 */
export interface RefreshedTokens {
  readonly accessToken: string
  readonly accessExpiresAt: number
  readonly refreshToken: string | undefined
  /** Present when the provider sent a new ID token; its `sub` was checked against the session's. */
  readonly idToken: string | undefined
  readonly claims: Readonly<Record<string, unknown>> | undefined
}

/** A summary of the provider metadata, for `portcullis check`, `/readyz` and the sign-out route. */
export interface ProviderSummary {
  readonly issuer: string
  readonly authorizationEndpoint: string
  readonly tokenEndpoint: string
  readonly jwksUri: string
  readonly endSessionEndpoint: string | undefined
  readonly userinfoEndpoint: string | undefined
  readonly idTokenAlgorithms: readonly string[]
  readonly issParameterSupported: boolean
  readonly backchannelLogoutSupported: boolean
  readonly codeChallengeMethods: readonly string[]
  readonly tokenEndpointAuthMethods: readonly string[]
}
