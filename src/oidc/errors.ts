import * as client from 'openid-client'
import { errors as joseErrors } from 'jose'
import { PortcullisError } from '../errors.ts'
import { IatInFutureError } from './jwks.ts'

/**
 * The only place that knows openid-client's and jose's error classes: each is mapped to a
 * PortcullisError code by its fields (`error`, `code`, `status`), never by its message text
 * (STYLE.md rule 6). The original error travels as `cause` for the (redacted) log.
 */
export type OidcPhase = 'discovery' | 'jwks' | 'callback' | 'refresh'

const RESPONSE_SHAPE_CODES = new Set(['OAUTH_RESPONSE_IS_NOT_JSON', 'OAUTH_RESPONSE_IS_NOT_CONFORM', 'OAUTH_PARSE_ERROR'])

export function mapOidcError(err: unknown, phase: OidcPhase): PortcullisError {
  if (err instanceof PortcullisError) return err
  if (err instanceof client.ResponseBodyError) {
    if (err.status >= 500) {
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider is not available. Try again in a moment.', { cause: err })
    }
    if (err.error === 'invalid_grant') {
      return phase === 'refresh'
        ? new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: err })
        : new PortcullisError('LOGIN_FAILED', 'The login could not be completed (the authorization code was refused). Please sign in again.', { cause: err })
    }
    return new PortcullisError('IDP_REJECTED', 'The identity provider refused the request.', {
      cause: err,
      details: { error: safeCode(err.error) },
    })
  }
  if (err instanceof client.AuthorizationResponseError) {
    return new PortcullisError('LOGIN_DENIED', 'The identity provider did not complete the login.', {
      cause: err,
      details: { error: safeCode(err.error) },
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
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider keys could not be fetched.', { cause: err })
    }
    return new PortcullisError('LOGIN_FAILED', 'The identity token could not be verified. Please sign in again.', { cause: err })
  }
  if (err instanceof client.ClientError) {
    const code = err.code ?? ''
    // oauth4webapi only parses an OAuth error body for 4xx; any 5xx (JSON or not) arrives here as
    // RESPONSE_IS_NOT_CONFORM with the Response as `cause`. A 5xx is an outage, not a bad answer.
    if (code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' && err.cause instanceof Response && err.cause.status >= 500) {
      return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider is not available. Try again in a moment.', { cause: err })
    }
    if (phase === 'discovery') {
      return new PortcullisError('IDP_REJECTED', 'The identity provider metadata does not match the configuration.', { cause: err })
    }
    if (RESPONSE_SHAPE_CODES.has(code)) {
      return new PortcullisError('IDP_REJECTED', 'The identity provider sent a response that could not be understood.', { cause: err })
    }
    if (phase === 'refresh') return new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: err })
    return new PortcullisError('LOGIN_FAILED', 'The login response failed validation. Please sign in again.', { cause: err })
  }
  if (isNetworkError(err)) {
    return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached. Try again in a moment.', { cause: err })
  }
  if (phase === 'callback' || phase === 'refresh') {
    return new PortcullisError('IDP_REJECTED', 'The identity provider sent a response that could not be understood.', { cause: err })
  }
  return new PortcullisError('IDP_UNAVAILABLE', 'The identity provider could not be reached.', { cause: err })
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
