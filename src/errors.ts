/**
 * The one error class of Portcullis: a stable code, a public message a client may see, and a private
 * cause that is logged (redacted) but never rendered. HTTP status is mapped from the code in
 * `http/errors.ts`; the domain never knows about HTTP. Codes are never reused once released.
 *
 * The error model's rule: a client sees the public message, the code and the request id, never the
 * cause, a stack, a token or a cookie. Operators get the cause and, where another server answered
 * something that needs explaining, a {@link Diagnosis}.
 */
export type ErrorCode =
  | 'CONFIG_INVALID' // startup only: print issues, exit 2
  | 'IDP_UNAVAILABLE' // discovery / token / JWKS: network, timeout, 5xx → 502/503 page with retry
  | 'IDP_REJECTED' // OAuth error from the token endpoint other than invalid_grant → 502
  | 'IDP_CLIENT_AUTH' // the token endpoint refused the client's own credentials (invalid_client) → 502, "misconfigured"
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
  | 'STORE_UNAVAILABLE' // Redis (sessions, revocations, refresh lock) not reachable → 503 with Retry-After; never let through
  | 'RATE_LIMITED' // too many login starts / callbacks / back-channel logouts from one client address → 429 with Retry-After
  | 'NOT_FOUND' // no route matches the request → 404
  | 'UPSTREAM_UNAVAILABLE' // upstream refused or reset → 502
  | 'UPSTREAM_TIMEOUT' // upstream did not answer in time → 504
  | 'ACCESS_DENIED' // signed in, but the route's allow rule refuses this user → 403, naming the rule
  | 'STEP_UP_FAILED' // a step-up login came back without what the route requires (acr, amr, auth_time) → 403, retry link

/**
 * What an exchange with another server showed, for the operator (logs, `portcullis check`); never
 * rendered to a client. Holds URLs, statuses and protocol codes, never a secret or a token.
 */
export interface Diagnosis {
  /** What failed, in a few words: "client authentication failed at the token endpoint". */
  readonly problem: string
  /** The URL that was asked. */
  readonly url?: string
  /** The HTTP status it answered with; absent when nothing answered. */
  readonly status?: number
  /** The OAuth error code of the answer (`invalid_client`), or the socket error (`ECONNREFUSED`). */
  readonly error?: string
  /** The answer's `error_description`, cleaned. */
  readonly description?: string
  /** A value that was compared (`issuer`): what the configuration expects and what came back. */
  readonly compared?: { readonly name: string; readonly expected: string; readonly received: string }
  /** The settings to look at, with what to look for. */
  readonly check?: string
}

export class PortcullisError extends Error {
  readonly code: ErrorCode
  readonly publicMessage: string
  /** Extra public fields (e.g. the provider's error code at the callback). Never holds secrets. */
  readonly details: Readonly<Record<string, string>>
  /** For operators only: what another server answered (see {@link Diagnosis}). */
  readonly diagnosis: Diagnosis | undefined

  constructor(
    code: ErrorCode,
    publicMessage: string,
    options?: { cause?: unknown; details?: Record<string, string>; diagnosis?: Diagnosis },
  ) {
    // The cause is made loggable here, once: libraries put Responses, parsed bodies and arrays there,
    // which a log line would otherwise show as "[object Object]".
    const cause = loggableCause(options?.cause)
    super(`${code}: ${publicMessage}`, cause === undefined ? undefined : { cause })
    this.name = 'PortcullisError'
    this.code = code
    this.publicMessage = publicMessage
    this.details = options?.details ?? {}
    this.diagnosis = options?.diagnosis
  }
}

/** A diagnosis as one line: the problem, the URL and what it answered, compared values, what to check. */
export function formatDiagnosis(d: Diagnosis): string {
  return diagnosisParts(d).join('; ')
}

/** A diagnosis as labelled parts: `problem`, then `url`, `answer`, the compared value and `check`. */
export function diagnosisParts(d: Diagnosis): string[] {
  const parts = [d.problem]
  if (d.url !== undefined) parts.push(`url: ${d.url}`)
  const answer = answerOf(d)
  if (answer !== undefined) parts.push(`answer: ${answer}`)
  if (d.compared !== undefined) {
    parts.push(`${d.compared.name}: configured ${d.compared.expected}, the provider says ${d.compared.received}`)
  }
  if (d.check !== undefined) parts.push(`check: ${d.check}`)
  return parts
}

function answerOf(d: Diagnosis): string | undefined {
  const code = d.error === undefined ? '' : ` ${d.error}`
  const description = d.description === undefined || d.description === '' ? '' : ` (${JSON.stringify(d.description)})`
  if (d.status !== undefined) return `HTTP ${d.status}${code}${description}`
  if (d.error !== undefined) return `no HTTP answer (${d.error})${description}`
  return undefined
}

/** An error or a cause as it is logged: name, code, message; never an `[object …]` placeholder. */
export class LoggedCause extends Error {
  readonly code: string | undefined
  constructor(name: string, message: string, code: string | undefined, cause: Error | undefined) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = name
    this.code = code
  }
}

const MAX_CAUSE_DEPTH = 4

/**
 * `value` as an Error whose whole cause chain is made of Errors: kept as it is when it already is one;
 * else rebuilt link by link, each non-Error value described in words (a Response by its status and
 * URL, an object by its plain fields, a list by its items).
 */
export function loggableCause(value: unknown, depth = 0): Error | undefined {
  if (value === undefined || value === null) return undefined
  if (value instanceof Error && chainIsErrors(value, depth)) return value
  if (depth >= MAX_CAUSE_DEPTH) return new LoggedCause(nameOf(value), describeValue(value), codeOf(value), undefined)
  if (value instanceof Error) {
    const oauthError = (value as { error?: unknown }).error
    const extra = typeof oauthError === 'string' ? ` (error=${oauthError})` : ''
    return new LoggedCause(value.name, `${value.message}${extra}`, codeOf(value), loggableCause(value.cause, depth + 1))
  }
  return new LoggedCause(nameOf(value), describeValue(value), undefined, undefined)
}

function chainIsErrors(err: Error, depth: number): boolean {
  for (let c: unknown = err.cause, d = depth; c !== undefined; c = (c as Error).cause, d++) {
    if (!(c instanceof Error) || d >= MAX_CAUSE_DEPTH) return false
  }
  return true
}

function codeOf(value: unknown): string | undefined {
  const code = (value as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

function nameOf(value: unknown): string {
  if (isResponse(value)) return 'Response'
  if (Array.isArray(value)) return 'list'
  if (typeof value === 'object' && value !== null) {
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name
    return typeof name === 'string' && name !== '' && name !== 'Object' ? name : 'value'
  }
  return typeof value
}

function isResponse(value: unknown): value is { status: number; url: string; statusText?: string } {
  if (typeof value !== 'object' || value === null) return false
  const v = value as { status?: unknown; url?: unknown; headers?: unknown }
  return typeof v.status === 'number' && typeof v.url === 'string' && typeof v.headers === 'object'
}

const MAX_TEXT = 200

/**
 * Any value in words, for logs and `portcullis check`: an Error as `Name code: message`, a Response as
 * `HTTP 404 from URL`, an object by its string, number and boolean fields (nested objects by their
 * key only), a list by its items. Never `[object …]`.
 */
export function describeValue(value: unknown, depth = 0): string {
  if (value === undefined) return 'undefined'
  if (value === null) return 'null'
  if (typeof value === 'string') return clip(value)
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value)
  if (typeof value !== 'object') return typeof value
  if (value instanceof Error) {
    const code = codeOf(value)
    return `${value.name}${code === undefined ? '' : ` ${code}`}: ${clip(value.message)}`
  }
  if (isResponse(value)) return `HTTP ${value.status} from ${value.url === '' ? '(an unknown URL)' : value.url}`
  if (value instanceof URL) return value.href
  if (Array.isArray(value)) {
    if (depth > 1) return `[${value.length} item(s)]`
    return value.length === 0 ? '[]' : value.slice(0, 5).map((v) => describeValue(v, depth + 1)).join('; ')
  }
  const fields: string[] = []
  for (const [key, v] of Object.entries(value as Record<string, unknown>).slice(0, 12)) {
    // A token response, a form or a body may hang off an error: its secrets are named, never shown.
    if (SECRET_KEY.test(key)) fields.push(`${key}=[redacted]`)
    else if (typeof v === 'string') fields.push(`${key}=${JSON.stringify(clip(v, 100))}`)
    else if (typeof v === 'number' || typeof v === 'boolean') fields.push(`${key}=${String(v)}`)
    else if (typeof v === 'object' && v !== null && depth < 2) fields.push(`${key}: {${describeValue(v, depth + 1)}}`)
    else if (typeof v === 'object' && v !== null) fields.push(`${key}={…}`)
  }
  return fields.length === 0 ? `(${nameOf(value)} without plain fields)` : fields.join(', ')
}

/** Field names whose values are never described: tokens, secrets, codes, passwords, assertions, verifiers. */
const SECRET_KEY = /token|secret|code|password|assertion|verifier|cookie|authorization|jwt/i

function clip(text: string, max = MAX_TEXT): string {
  return text.length > max ? `${text.slice(0, max)}…` : text
}

/**
 * An error in words for an operator, one line per link of its cause chain: a PortcullisError's public
 * message and diagnosis first, then each cause (see {@link describeValue}).
 */
export function describeError(err: unknown): string[] {
  const lines: string[] = []
  let current: unknown = err
  for (let depth = 0; current !== undefined && current !== null && depth <= MAX_CAUSE_DEPTH; depth++) {
    if (current instanceof PortcullisError) {
      lines.push(current.diagnosis === undefined ? current.publicMessage : `${current.publicMessage} (${formatDiagnosis(current.diagnosis)})`)
    } else {
      lines.push(describeValue(current))
    }
    current = current instanceof Error ? current.cause : undefined
  }
  return lines
}
