/**
 * An API client's access token from the in-process provider (`src/demo/provider.ts`), the way an
 * OAuth client gets one: the authorization-code flow with PKCE (S256) at the provider's authorize
 * endpoint, optionally for a resource (RFC 8707 `resource=`) and with API scopes, the demo user
 * logged in through the provider's form (`authorizeUntilCallback`), then the code exchanged at the
 * token endpoint with the client's secret. The redirect to the client's redirect URI is never
 * requested, so a client registered for Portcullis's callback serves as the API client too.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { DemoUser } from '../../src/demo/provider.ts'
import { request } from './http.ts'
import { authorizeUntilCallback } from './login.ts'

export interface ProviderTokenOptions {
  /** The provider's endpoints (from its discovery document). */
  authorizationEndpoint: string
  tokenEndpoint: string
  clientId: string
  clientSecret: string
  /** Registered at the provider; its origin and path are where the flow stops (not requested). */
  redirectUri: string
  scope: string
  /** The resource indicator, or none (the provider's default resource: aud = the client id). */
  resource?: string
  /** Default alice. */
  user?: DemoUser
}

export interface ProviderTokens {
  access_token: string
  token_type: string
  expires_in: number
  scope?: string
  id_token?: string
  refresh_token?: string
}

export async function providerToken(o: ProviderTokenOptions): Promise<ProviderTokens> {
  const verifier = randomBytes(32).toString('base64url')
  const authorize = new URL(o.authorizationEndpoint)
  authorize.search = new URLSearchParams({
    response_type: 'code',
    client_id: o.clientId,
    redirect_uri: o.redirectUri,
    scope: o.scope,
    state: randomBytes(12).toString('base64url'),
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    ...(o.resource === undefined ? {} : { resource: o.resource }),
  }).toString()
  const redirect = new URL(o.redirectUri)
  const { callbackUrl } = await authorizeUntilCallback({
    proxyUrl: redirect.origin,
    authPrefix: redirect.pathname.replace(/\/callback$/, ''),
    startUrl: authorize.href,
    ...(o.user === undefined ? {} : { user: o.user }),
  })
  const code = new URL(callbackUrl).searchParams.get('code')
  if (code === null) throw new Error(`providerToken: no code in ${callbackUrl}`)
  const res = await request(o.tokenEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(o.clientId)}:${encodeURIComponent(o.clientSecret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: o.redirectUri, code_verifier: verifier }).toString(),
  })
  if (res.status !== 200) throw new Error(`providerToken: the token endpoint answered ${res.status}: ${res.body}`)
  return res.json<ProviderTokens>()
}
