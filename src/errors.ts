/**
 * The one error class of Portcullis: a stable code, a public message a client may see, and a private
 * cause that is logged (redacted) but never rendered. HTTP status is mapped from the code in
 * `http/errors.ts`; the domain never knows about HTTP. Codes are never reused once released.
 *
 * @see STYLE.md §2.4
 */
export type ErrorCode =
  | 'CONFIG_INVALID' // startup only: print issues, exit 2
  | 'IDP_UNAVAILABLE' // discovery / token / JWKS: network, timeout, 5xx → 502/503 page with retry
  | 'IDP_REJECTED' // OAuth error from the token endpoint other than invalid_grant → 502
  | 'LOGIN_DENIED' // provider sent error=... to the callback → 403 page, retry link
  | 'LOGIN_FAILED' // state/iss/nonce/ID-token checks failed → 400 page, fresh-login link
  | 'SESSION_ENDED' // refresh answered invalid_grant → clear cookies, go to login
  | 'SESSION_TOO_LARGE' // the tokens do not fit in the cookie budget even without the ID token → 500
  | 'REDIRECT_REJECTED' // a redirect target off the allowlist where no fallback is possible
  | 'PATH_REJECTED' // a request path that cannot be normalized safely → 400
  | 'REQUEST_REJECTED' // malformed request (duplicate protocol parameters, unparseable target) → 400
  | 'METHOD_NOT_ALLOWED' // a method Portcullis does not proxy (TRACE, CONNECT, WebDAV) → 405
  | 'TOKEN_INVALID' // a bearer or logout token failed verification → 401/400
  | 'NOT_READY' // provider metadata not loaded yet (outage at start) → 503 with Retry-After
  | 'NOT_FOUND' // no route matches the request → 404
  | 'UPSTREAM_UNAVAILABLE' // upstream refused or reset → 502
  | 'UPSTREAM_TIMEOUT' // upstream did not answer in time → 504

export class PortcullisError extends Error {
  readonly code: ErrorCode
  readonly publicMessage: string
  /** Extra public fields (e.g. the provider's error code at the callback). Never holds secrets. */
  readonly details: Readonly<Record<string, string>>

  constructor(code: ErrorCode, publicMessage: string, options?: { cause?: unknown; details?: Record<string, string> }) {
    super(`${code}: ${publicMessage}`, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PortcullisError'
    this.code = code
    this.publicMessage = publicMessage
    this.details = options?.details ?? {}
  }
}
