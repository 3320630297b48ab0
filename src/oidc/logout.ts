import * as client from 'openid-client'
import type { OidcClient } from './client.ts'

/**
 * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the provider's end-session URL with
 * `client_id`, `id_token_hint` and `post_logout_redirect_uri`, or null when the provider has no
 * end-session endpoint. Back-channel logout tokens arrive here with the session lifecycle issue.
 */
export function endSessionUrl(oidc: OidcClient, opts: { idTokenHint?: string; postLogoutRedirectUri?: string }): string | null {
  if (oidc.summary.endSessionEndpoint === undefined) return null
  const params: Record<string, string> = { client_id: oidc.clientId }
  if (opts.idTokenHint !== undefined) params.id_token_hint = opts.idTokenHint
  if (opts.postLogoutRedirectUri !== undefined) params.post_logout_redirect_uri = opts.postLogoutRedirectUri
  return client.buildEndSessionUrl(oidc.configuration, params).href
}
