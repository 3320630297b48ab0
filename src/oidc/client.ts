import * as client from 'openid-client'
import type { Config } from '../config/types.ts'
import { PortcullisError } from '../errors.ts'
import { ASYMMETRIC_ALGS, createJwks, type Jwks } from './jwks.ts'
import { AccessTokenVerifier } from './access-token.ts'
import { systemClock, type Clock } from '../clock.ts'
import { mapOidcError } from './errors.ts'
import type { ProviderSummary } from './tokens.ts'

/**
 * A connected provider: openid-client's Configuration (discovery plus endpoint overrides), the shared
 * JWKS, and a plain summary of the metadata. Built once per runtime (and again by the retry loop in
 * `connection.ts` while the provider is unreachable).
 */
export interface OidcClient {
  readonly configuration: client.Configuration
  readonly jwks: Jwks
  readonly summary: ProviderSummary
  readonly issuer: string
  readonly clientId: string
  readonly redirectUri: string
  readonly idTokenAlgorithms: readonly string[]
  readonly clockToleranceSec: number
  /** Verifies (once per token) the JWT access tokens held in sessions. */
  readonly accessTokens: AccessTokenVerifier
}

export type ProviderConfig = Config['provider']

/**
 * Discover (or assemble from `provider.endpoints`) the provider and fetch its JWKS.
 * Discovery refuses a document whose `issuer` differs from the configured one (openid-client checks
 * it), so a mismatched provider is refused before any user is redirected to it.
 */
export async function connectProvider(cfg: ProviderConfig, redirectUri: string, clock: Clock = systemClock): Promise<OidcClient> {
  const clientAuth =
    cfg.tokenEndpointAuthMethod === 'client_secret_post'
      ? client.ClientSecretPost(cfg.clientSecret)
      : client.ClientSecretBasic(cfg.clientSecret)
  const metadata: Partial<client.ClientMetadata> = {
    [client.clockTolerance]: Math.ceil(cfg.clockSkew / 1000),
    redirect_uris: [redirectUri],
    response_types: ['code'],
    id_token_signed_response_alg: cfg.idTokenSignedResponseAlg,
    token_endpoint_auth_method: cfg.tokenEndpointAuthMethod,
  }
  // Config validation allows the switch only with loopback issuer and endpoints (config/validate.ts).
  const insecure = cfg.allowInsecureHttp
  const timeoutSec = Math.max(1, Math.ceil(cfg.timeout / 1000))

  let base: client.ServerMetadata
  if (cfg.discovery) {
    let discovered: client.Configuration
    try {
      discovered = await client.discovery(new URL(cfg.issuer), cfg.clientId, metadata, clientAuth, {
        execute: insecure ? [client.allowInsecureRequests] : [],
        timeout: timeoutSec,
      })
    } catch (err) {
      throw mapOidcError(err, 'discovery')
    }
    base = discovered.serverMetadata()
  } else {
    base = { issuer: cfg.issuer }
  }
  const overrides: { -readonly [K in keyof client.ServerMetadata]?: client.ServerMetadata[K] } = {}
  if (cfg.endpoints.authorization) overrides.authorization_endpoint = cfg.endpoints.authorization
  if (cfg.endpoints.token) overrides.token_endpoint = cfg.endpoints.token
  if (cfg.endpoints.jwks) overrides.jwks_uri = cfg.endpoints.jwks
  if (cfg.endpoints.endSession) overrides.end_session_endpoint = cfg.endpoints.endSession
  if (cfg.endpoints.userinfo) overrides.userinfo_endpoint = cfg.endpoints.userinfo
  const server: client.ServerMetadata = { ...base, ...overrides }

  for (const [key, name] of [
    ['authorization_endpoint', 'authorization'],
    ['token_endpoint', 'token'],
    ['jwks_uri', 'jwks'],
  ] as const) {
    if (typeof server[key] !== 'string') {
      throw new PortcullisError('IDP_REJECTED', `The provider metadata has no ${key}; set provider.endpoints.${name}.`)
    }
  }
  const configuration = new client.Configuration(server, cfg.clientId, metadata, clientAuth)
  if (insecure) client.allowInsecureRequests(configuration)
  configuration.timeout = timeoutSec

  const algs = server.id_token_signing_alg_values_supported
  if (Array.isArray(algs) && !algs.includes(cfg.idTokenSignedResponseAlg)) {
    throw new PortcullisError(
      'IDP_REJECTED',
      `The provider does not sign ID tokens with ${cfg.idTokenSignedResponseAlg} (it offers ${algs.join(', ')}); set provider.idTokenSignedResponseAlg.`,
    )
  }

  const jwks = createJwks(server.jwks_uri as string, { timeoutMs: cfg.timeout, clock })
  try {
    await jwks.reload()
  } catch (err) {
    throw mapOidcError(err, 'jwks')
  }
  const summary: ProviderSummary = {
    issuer: server.issuer,
    authorizationEndpoint: server.authorization_endpoint as string,
    tokenEndpoint: server.token_endpoint as string,
    jwksUri: server.jwks_uri as string,
    endSessionEndpoint: server.end_session_endpoint,
    userinfoEndpoint: server.userinfo_endpoint,
    idTokenAlgorithms: server.id_token_signing_alg_values_supported ?? [],
    issParameterSupported: server.authorization_response_iss_parameter_supported === true,
    backchannelLogoutSupported: server.backchannel_logout_supported === true,
    codeChallengeMethods: server.code_challenge_methods_supported ?? [],
    tokenEndpointAuthMethods: server.token_endpoint_auth_methods_supported ?? [],
  }
  return {
    configuration,
    jwks,
    summary,
    issuer: server.issuer,
    clientId: cfg.clientId,
    redirectUri,
    idTokenAlgorithms: [cfg.idTokenSignedResponseAlg],
    clockToleranceSec: Math.ceil(cfg.clockSkew / 1000),
    accessTokens: new AccessTokenVerifier(jwks, {
      issuer: server.issuer,
      audience: cfg.audience === '' ? cfg.clientId : cfg.audience,
      // Access tokens may be signed with another asymmetric algorithm than ID tokens.
      algorithms: ASYMMETRIC_ALGS,
      clockToleranceSec: Math.ceil(cfg.clockSkew / 1000),
      mode: cfg.accessTokenType,
      clock,
    }),
  }
}
