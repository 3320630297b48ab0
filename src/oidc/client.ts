import { randomBytes } from 'node:crypto'
import * as client from 'openid-client'
import type { Config } from '../config/types.ts'
import { type Diagnosis, PortcullisError } from '../errors.ts'
import { ASYMMETRIC_ALGS, createJwks, type Jwks } from './jwks.ts'
import { AccessTokenVerifier } from './access-token.ts'
import { systemClock, type Clock } from '../clock.ts'
import { clientAuthCheck, discoveryUrl, isClientAuthFailure, mapOidcError, oauthAnswerOf, safeCode, safeDescription } from './errors.ts'
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
  /** The configured `provider.tokenEndpointAuthMethod`. */
  readonly tokenEndpointAuthMethod: string
  /** `portcullis check`: do the client's credentials pass at the token endpoint? (See {@link checkClientAuthentication}.) */
  checkClientAuthentication(): Promise<ClientAuthCheck>
}

/**
 * What the token endpoint said to an exchange of a made-up code: `accepted` (it refused only the code,
 * `invalid_grant`: the client authenticated), `refused` (`invalid_client` or a 401), `failed` (a 5xx,
 * `unauthorized_client`, or the made-up code accepted), `unclear` (any other answer).
 */
export interface ClientAuthCheck {
  readonly outcome: 'accepted' | 'refused' | 'failed' | 'unclear'
  readonly diagnosis: Diagnosis
}

export type ProviderConfig = Config['provider']

/** Which of the provider's endpoints a request went to (a bounded label: never the URL). */
export type ProviderEndpoint = 'discovery' | 'jwks' | 'token' | 'userinfo' | 'other'
/** `ok`; `error`: an answer that is not usable (4xx, not a key set); `unavailable`: no answer, a timeout or a 5xx. */
export type ProviderRequestResult = 'ok' | 'error' | 'unavailable'
/** Told of every HTTP request to the provider when it ends: the endpoint, the seconds to its answer, the result. */
export type RequestObserver = (endpoint: ProviderEndpoint, seconds: number, result: ProviderRequestResult) => void

/**
 * openid-client's fetch, timed: each request it makes (discovery, token, userinfo) is reported to
 * `observe` with the endpoint its URL names.
 */
function timedFetch(observe: RequestObserver, endpointOf: (url: string) => ProviderEndpoint): client.CustomFetch {
  return async (url, options) => {
    const started = performance.now()
    const endpoint = endpointOf(url)
    let res: Response
    try {
      res = await fetch(url, options as RequestInit)
    } catch (err) {
      observe(endpoint, (performance.now() - started) / 1000, 'unavailable')
      throw err
    }
    observe(endpoint, (performance.now() - started) / 1000, res.status >= 500 ? 'unavailable' : res.status >= 400 ? 'error' : 'ok')
    return res
  }
}

function withoutQuery(url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

/**
 * Discover (or assemble from `provider.endpoints`) the provider and fetch its JWKS.
 * Discovery refuses a document whose `issuer` differs from the configured one (openid-client checks
 * it), so a mismatched provider is refused before any user is redirected to it.
 */
export async function connectProvider(cfg: ProviderConfig, redirectUri: string, clock: Clock = systemClock, observe?: RequestObserver): Promise<OidcClient> {
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
  // Config validation allows the switch only with loopback (or provider.allowInsecureHttpHosts) issuer and endpoints (config/validate.ts).
  const insecure = cfg.allowInsecureHttp
  const timeoutSec = Math.max(1, Math.ceil(cfg.timeout / 1000))

  let base: client.ServerMetadata
  if (cfg.discovery) {
    let discovered: client.Configuration
    try {
      discovered = await client.discovery(new URL(cfg.issuer), cfg.clientId, metadata, clientAuth, {
        execute: insecure ? [client.allowInsecureRequests] : [],
        timeout: timeoutSec,
        ...(observe === undefined ? {} : { [client.customFetch]: timedFetch(observe, () => 'discovery') }),
      })
    } catch (err) {
      throw mapOidcError(err, 'discovery', { issuer: cfg.issuer })
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
      throw new PortcullisError('IDP_REJECTED', `The provider metadata has no ${key}; set provider.endpoints.${name}.`, {
        diagnosis: { problem: `the provider metadata has no ${key}`, ...metadataSource(cfg), check: `provider.endpoints.${name}` },
      })
    }
  }
  const configuration = new client.Configuration(server, cfg.clientId, metadata, clientAuth)
  if (insecure) client.allowInsecureRequests(configuration)
  configuration.timeout = timeoutSec
  if (observe !== undefined) {
    const named = new Map<string, ProviderEndpoint>()
    if (typeof server.token_endpoint === 'string') named.set(server.token_endpoint, 'token')
    if (typeof server.userinfo_endpoint === 'string') named.set(server.userinfo_endpoint, 'userinfo')
    configuration[client.customFetch] = timedFetch(observe, (url) => named.get(withoutQuery(url)) ?? 'other')
  }

  const algs = server.id_token_signing_alg_values_supported
  if (Array.isArray(algs) && !algs.includes(cfg.idTokenSignedResponseAlg)) {
    throw new PortcullisError(
      'IDP_REJECTED',
      `The provider does not sign ID tokens with ${cfg.idTokenSignedResponseAlg} (it offers ${algs.join(', ')}); set provider.idTokenSignedResponseAlg.`,
      {
        diagnosis: {
          problem: 'the provider does not sign ID tokens with the configured algorithm',
          ...metadataSource(cfg),
          compared: { name: 'id_token_signing_alg_values_supported', expected: cfg.idTokenSignedResponseAlg, received: algs.join(', ') },
          check: 'provider.idTokenSignedResponseAlg',
        },
      },
    )
  }

  const jwks = createJwks(server.jwks_uri as string, {
    timeoutMs: cfg.timeout,
    clock,
    ...(observe === undefined ? {} : { onFetch: (seconds: number, result: ProviderRequestResult) => observe('jwks', seconds, result) }),
  })
  try {
    await jwks.reload()
  } catch (err) {
    throw mapOidcError(err, 'jwks', { url: server.jwks_uri as string })
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
    tokenEndpointAuthMethod: cfg.tokenEndpointAuthMethod,
    checkClientAuthentication: () => checkClientAuthentication(configuration, redirectUri, cfg.tokenEndpointAuthMethod, summary.tokenEndpoint),
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

/** Where the metadata came from: the discovery document (answered 200), or the configuration alone. */
function metadataSource(cfg: ProviderConfig): { url?: string; status?: number } {
  if (!cfg.discovery) return {}
  const url = discoveryUrl(cfg.issuer)
  return url === undefined ? {} : { url, status: 200 }
}

/**
 * Test the client's credentials without a user: an authorization-code exchange of a made-up code, sent
 * with the configured client authentication. A provider authenticates the client before it looks at
 * the code, so `invalid_grant` means the credentials passed and `invalid_client` (or a bare 401) that
 * they did not. Network failures throw, mapped like any other provider error.
 */
export async function checkClientAuthentication(
  configuration: client.Configuration,
  redirectUri: string,
  authMethod: string,
  tokenEndpoint: string,
): Promise<ClientAuthCheck> {
  try {
    await client.genericGrantRequest(configuration, 'authorization_code', {
      code: `portcullis-check-${randomBytes(18).toString('base64url')}`,
      redirect_uri: redirectUri,
      code_verifier: client.randomPKCECodeVerifier(),
    })
  } catch (err) {
    const answer = oauthAnswerOf(err)
    if (answer === undefined) throw mapOidcError(err, 'check', { url: tokenEndpoint, authMethod })
    const seen = {
      url: answer.url ?? tokenEndpoint,
      status: answer.status,
      ...(answer.error === undefined ? {} : { error: safeCode(answer.error) }),
      ...(answer.description === undefined ? {} : { description: safeDescription(answer.description) }),
    }
    if (answer.error === 'invalid_grant') {
      return { outcome: 'accepted', diagnosis: { problem: `the client authenticated (${authMethod}); the token endpoint refused only the made-up code`, ...seen } }
    }
    if (isClientAuthFailure(answer)) {
      return {
        outcome: 'refused',
        diagnosis: { problem: 'the token endpoint did not accept the client credentials', ...seen, check: clientAuthCheck(authMethod) },
      }
    }
    if (answer.status >= 500) return { outcome: 'failed', diagnosis: { problem: 'the token endpoint failed', ...seen } }
    if (answer.error === 'unauthorized_client') {
      return {
        outcome: 'failed',
        diagnosis: { problem: 'the provider does not let this client use the authorization code grant', ...seen, check: 'the grant types the provider allows for provider.clientId' },
      }
    }
    return { outcome: 'unclear', diagnosis: { problem: 'the token endpoint answered a made-up code with neither invalid_grant nor invalid_client', ...seen } }
  }
  return { outcome: 'failed', diagnosis: { problem: 'the token endpoint accepted a made-up authorization code', url: tokenEndpoint, status: 200 } }
}
