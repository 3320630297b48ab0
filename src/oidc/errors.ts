import * as client from 'openid-client'
import { errors as joseErrors } from 'jose'
import { type Diagnosis, describeValue, PortcullisError } from '../errors.ts'
import { IatInFutureError } from './jwks.ts'

/**
 * The only place that knows openid-client's and jose's error classes: each is mapped to a
 * PortcullisError code by its fields (`error`, `code`, `status`), never by its message text (error
 * texts change between library versions; fields do not). The original error travels as `cause` for
 * the (redacted) log, and a Diagnosis says what was asked of which URL and what came back.
 */
export type OidcPhase = 'discovery' | 'jwks' | 'callback' | 'refresh' | 'check'

/** What the caller knows that the error does not carry. */
export interface OidcErrorContext {
  /** The URL that was asked (discovery document, token endpoint, JWKS). */
  readonly url?: string
  /** The configured issuer (compared with the discovery document's). */
  readonly issuer?: string
  /** The configured `provider.tokenEndpointAuthMethod`. */
  readonly authMethod?: string
}

const RESPONSE_SHAPE_CODES = new Set(['OAUTH_RESPONSE_IS_NOT_JSON', 'OAUTH_RESPONSE_IS_NOT_CONFORM', 'OAUTH_PARSE_ERROR'])

/** The public text of a client-authentication failure: an operator's problem, not the user's. */
const CLIENT_AUTH_MESSAGE =
  'Portcullis could not prove its own identity to the identity provider. This is a configuration problem for the operator of this site, not something you did; please tell them, with the request id below.'

/** The settings that decide how the client authenticates. */
export function clientAuthCheck(authMethod: string | undefined): string {
  return `provider.clientSecret and provider.tokenEndpointAuthMethod${authMethod === undefined ? '' : ` (now ${authMethod})`}: they must match what the provider has registered for provider.clientId`
}

/** The OAuth answer of a token-endpoint error: status, `error`, `error_description`, URL. */
export interface OAuthAnswer {
  readonly status: number
  readonly error: string | undefined
  readonly description: string | undefined
  readonly url: string | undefined
}

/**
 * The OAuth error answer inside an openid-client error, whatever form it took: a JSON body
 * (ResponseBodyError), a `WWW-Authenticate` challenge (a 401 to HTTP Basic client authentication), or
 * a bare status (a non-JSON 4xx/5xx arrives as RESPONSE_IS_NOT_CONFORM with the Response as cause).
 */
export function oauthAnswerOf(err: unknown): OAuthAnswer | undefined {
  if (err instanceof client.ResponseBodyError) {
    return { status: err.status, error: err.error, description: err.error_description, url: responseUrl(err.response) }
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    const params = err.cause.find((c) => typeof c.parameters.error === 'string')?.parameters
    return { status: err.status, error: params?.error, description: params?.error_description, url: responseUrl(err.response) }
  }
  if (err instanceof client.ClientError && err.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' && err.cause instanceof Response) {
    return { status: err.cause.status, error: undefined, description: undefined, url: responseUrl(err.cause) }
  }
  return undefined
}

function responseUrl(res: unknown): string | undefined {
  return res instanceof Response && res.url !== '' ? res.url : undefined
}

/** invalid_client, or a 401 without an OAuth error: the provider did not accept the client's credentials. */
export function isClientAuthFailure(answer: OAuthAnswer): boolean {
  return answer.error === 'invalid_client' || (answer.error === undefined && answer.status === 401)
}

export function mapOidcError(err: unknown, phase: OidcPhase, context: OidcErrorContext = {}): PortcullisError {
  if (err instanceof PortcullisError) return err
  const answer = oauthAnswerOf(err)
  if (answer !== undefined && phase !== 'discovery' && phase !== 'jwks') {
    const diagnosis = tokenDiagnosis(answer, context)
    if (answer.status >= 500) {
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider is not available. Try again in a moment.', { cause: err, diagnosis })
    }
    if (isClientAuthFailure(answer)) {
      return new PortcullisError('IDP_CLIENT_AUTH', CLIENT_AUTH_MESSAGE, {
        cause: err,
        diagnosis,
        details: { error: safeCode(answer.error ?? 'invalid_client') },
      })
    }
    if (answer.error === 'invalid_grant') {
      return phase === 'refresh'
        ? new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: err, diagnosis })
        : new PortcullisError('LOGIN_FAILED', 'The login could not be completed (the authorization code was refused). Please sign in again.', {
            cause: err,
            diagnosis,
          })
    }
    if (answer.error !== undefined) {
      const description = answer.description === undefined ? '' : safeDescription(answer.description)
      return new PortcullisError('IDP_REJECTED', 'The identity provider refused the request.', {
        cause: err,
        diagnosis,
        details: { error: safeCode(answer.error), ...(description === '' ? {} : { description }) },
      })
    }
  }
  if (err instanceof client.AuthorizationResponseError) {
    const description = typeof err.error_description === 'string' ? safeDescription(err.error_description) : ''
    return new PortcullisError('LOGIN_DENIED', 'The identity provider did not complete the login.', {
      cause: err,
      details: { error: safeCode(err.error), ...(description === '' ? {} : { description }) },
    })
  }
  if (phase === 'refresh' && (err instanceof IatInFutureError || err instanceof joseErrors.JOSEError) && !(err instanceof joseErrors.JWKSTimeout)) {
    return new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: err })
  }
  if (err instanceof IatInFutureError) {
    return new PortcullisError('LOGIN_FAILED', 'The identity token could not be verified. Please sign in again.', { cause: err })
  }
  if (err instanceof joseErrors.JOSEError) {
    if (err.code === 'ERR_JWKS_TIMEOUT' || (err.code === 'ERR_JOSE_GENERIC' && phase === 'jwks')) {
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider keys could not be fetched.', { cause: err, diagnosis: jwksDiagnosis(err, context) })
    }
    return new PortcullisError('LOGIN_FAILED', 'The identity token could not be verified. Please sign in again.', { cause: err })
  }
  if (phase === 'discovery') {
    const diagnosis = discoveryDiagnosis(err, context)
    if (isNetworkError(err) || (answer !== undefined && answer.status >= 500)) {
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached.', { cause: err, diagnosis })
    }
    if (err instanceof client.ClientError) {
      return new PortcullisError('IDP_REJECTED', 'The identity provider metadata does not match the configuration.', { cause: err, diagnosis })
    }
    return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached.', { cause: err, diagnosis })
  }
  if (err instanceof client.ClientError) {
    const code = err.code ?? ''
    if (RESPONSE_SHAPE_CODES.has(code)) {
      const res = err.cause instanceof Response ? err.cause : undefined
      const url = responseUrl(res) ?? context.url
      return new PortcullisError('IDP_REJECTED', 'The identity provider sent a response that could not be understood.', {
        cause: err,
        diagnosis: {
          problem: `the identity provider sent a response that could not be understood (${code})`,
          ...(url === undefined ? {} : { url }),
          ...(res === undefined ? {} : { status: res.status }),
        },
      })
    }
    if (phase === 'refresh') return new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: err })
    return new PortcullisError('LOGIN_FAILED', 'The login response failed validation. Please sign in again.', { cause: err })
  }
  if (isNetworkError(err)) {
    return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached. Try again in a moment.', {
      cause: err,
      diagnosis: { problem: 'no connection to the identity provider', ...urlOf(context), error: networkReason(err) },
    })
  }
  if (phase === 'jwks') {
    return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider keys could not be fetched.', { cause: err, diagnosis: jwksDiagnosis(err, context) })
  }
  if (phase === 'callback' || phase === 'refresh' || phase === 'check') {
    return new PortcullisError('IDP_REJECTED', 'The identity provider sent a response that could not be understood.', {
      cause: err,
      diagnosis: { problem: 'the identity provider sent a response that could not be understood', ...urlOf(context) },
    })
  }
  return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached.', { cause: err })
}

function urlOf(context: OidcErrorContext): { url?: string } {
  return context.url === undefined ? {} : { url: context.url }
}

function tokenDiagnosis(answer: OAuthAnswer, context: OidcErrorContext): Diagnosis {
  const url = answer.url ?? context.url
  const base = {
    ...(url === undefined ? {} : { url }),
    status: answer.status,
    ...(answer.error === undefined ? {} : { error: safeCode(answer.error) }),
    ...(answer.description === undefined ? {} : { description: safeDescription(answer.description) }),
  }
  if (answer.status >= 500) return { problem: 'the token endpoint failed', ...base }
  if (isClientAuthFailure(answer)) {
    return { problem: 'client authentication failed at the token endpoint', ...base, check: clientAuthCheck(context.authMethod) }
  }
  if (answer.error === 'invalid_grant') return { problem: 'the token endpoint refused the grant (invalid_grant)', ...base }
  if (answer.error === 'unauthorized_client') {
    return { problem: 'the provider does not let this client use this grant', ...base, check: 'the grant types the provider allows for provider.clientId' }
  }
  return { problem: 'the token endpoint refused the request', ...base }
}

function jwksDiagnosis(err: unknown, context: OidcErrorContext): Diagnosis {
  return {
    problem: `the signing keys (JWKS) could not be fetched: ${describeValue(err)}`,
    ...urlOf(context),
    ...(socketCode(err) === undefined ? {} : { error: socketCode(err) as string }),
  }
}

/** Where openid-client fetches the discovery document for `issuer` (OpenID Connect Discovery 1.0 §4). */
export function discoveryUrl(issuer: string): string | undefined {
  const url = URL.parse(issuer)
  if (url === null) return undefined
  if (url.href.includes('/.well-known/')) return url.href
  url.pathname = `${url.pathname}/.well-known/openid-configuration`.replace('//', '/')
  return url.href
}

function discoveryDiagnosis(err: unknown, context: OidcErrorContext): Diagnosis {
  const url = (context.issuer === undefined ? undefined : discoveryUrl(context.issuer)) ?? context.url
  const where = url === undefined ? {} : { url }
  const issuerCheck = 'provider.issuer: the issuer URL exactly as the provider names itself (its discovery document is that URL plus /.well-known/openid-configuration)'
  if (err instanceof client.ClientError && err.code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED') {
    const cause = err.cause as { expected?: unknown; attribute?: unknown; body?: Record<string, unknown> } | undefined
    const name = typeof cause?.attribute === 'string' ? cause.attribute : 'issuer'
    const received = cause?.body?.[name]
    return {
      problem: `the discovery document names another ${name} than the configured one`,
      ...where,
      // The comparison runs on a document that was answered with 200 and parsed.
      status: 200,
      compared: {
        name,
        expected: context.issuer ?? String(cause?.expected ?? '(unknown)'),
        received: typeof received === 'string' ? received : describeValue(received),
      },
      check: issuerCheck,
    }
  }
  const answer = oauthAnswerOf(err)
  if (answer !== undefined) {
    return {
      problem:
        answer.status === 404
          ? 'no discovery document at the configured issuer (HTTP 404)'
          : answer.status >= 500
            ? 'the provider failed to serve its discovery document'
            : 'the provider did not serve its discovery document',
      url: answer.url ?? url ?? '(unknown)',
      status: answer.status,
      ...(answer.status < 500 ? { check: issuerCheck } : {}),
    }
  }
  if (err instanceof client.ClientError && err.code === 'OAUTH_RESPONSE_IS_NOT_JSON' && err.cause instanceof Response) {
    return {
      problem: `the discovery document is not JSON (content-type ${err.cause.headers.get('content-type') ?? 'none'})`,
      url: responseUrl(err.cause) ?? url ?? '(unknown)',
      status: err.cause.status,
      check: issuerCheck,
    }
  }
  if (isNetworkError(err)) {
    return { problem: 'no connection to the provider', ...where, error: networkReason(err), check: 'provider.issuer and the network path to it' }
  }
  return { problem: `the discovery document was refused: ${describeValue(err)}`, ...where }
}

/**
 * Why a fetch failed: the system error code under it (`ECONNREFUSED`, `UND_ERR_CONNECT_TIMEOUT`),
 * `timeout`, or else the innermost message (`bad port`).
 */
function networkReason(err: unknown): string {
  const code = socketCode(err)
  if (code !== undefined) return code
  let inner: unknown = err
  for (let depth = 0; inner instanceof Error && inner.cause instanceof Error && depth < 4; depth++) inner = inner.cause
  return inner instanceof Error ? inner.message.slice(0, 100) : 'unknown'
}

/** The system error code under a fetch failure (`ECONNREFUSED`, `UND_ERR_CONNECT_TIMEOUT`), or the timeout's name. */
function socketCode(err: unknown): string | undefined {
  for (let c: unknown = err, depth = 0; c instanceof Error && depth < 4; c = c.cause, depth++) {
    const code = (c as { code?: unknown }).code
    if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return code
    if (c.name === 'TimeoutError' || c.name === 'AbortError') return 'timeout'
  }
  return undefined
}

function isNetworkError(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  // fetch() rejects with TypeError('fetch failed') whose cause has a system code; timeouts are DOMExceptions.
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return true
  if (err instanceof TypeError && err.cause instanceof Error) return true
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)
}

/** Provider error codes are shown to users: keep them to the RFC 6749 character set and a sane length. */
export function safeCode(code: string): string {
  const cleaned = code.replace(/[^\x21\x23-\x5b\x5d-\x7e]/g, '').slice(0, 64)
  return cleaned === '' ? 'unknown_error' : cleaned
}

/** Longest provider `error_description` shown, in characters. */
export const MAX_DESCRIPTION = 200

/**
 * A provider's `error_description` as it may be shown (escaped by the page) and logged: control
 * characters, line and paragraph separators and bidirectional overrides removed, runs of white space
 * made one space, at most {@link MAX_DESCRIPTION} characters (an ellipsis marks a cut). '' when
 * nothing is left.
 */
export function safeDescription(text: string): string {
  const cleaned = text
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
  const chars = [...cleaned]
  return chars.length <= MAX_DESCRIPTION ? cleaned : `${chars.slice(0, MAX_DESCRIPTION - 1).join('').trimEnd()}…`
}
