import type { IncomingHttpHeaders } from 'node:http'
import type { Route } from '../policy/routes.ts'
import type { Session } from '../session/model.ts'
import type { Identity } from '../policy/identity.ts'
import { errorResponse } from './errors.ts'

/**
 * What the pipeline decided about one request (`decide` in `http/pipeline.ts`): plain data that a
 * lane carries out without deciding anything of its own (`http/execute.ts`). Two actions:
 * - `proxy`: send the request upstream with these headers, and add these to the upstream's answer;
 * - `answer`: write this status, these headers and this body (every refusal, redirect and the
 *   forward-auth check's answers).
 * `kind` says what was decided, for logs and tests.
 */
export type DecisionKind = 'forward' | 'redirect' | 'unauthenticated' | 'forbidden' | 'unavailable' | 'step-up' | 'rejected'

/** A line for the request's logger that the pipeline wants written (a session ended, a refresh failed). */
export interface Note {
  readonly level: 'info' | 'warn'
  readonly msg: string
  readonly fields: Readonly<Record<string, unknown>>
}

interface DecisionBase {
  readonly kind: DecisionKind
  /** The access line's `route`: a route id, `auth:check`, `no-route`, `rejected`. */
  readonly label: string
  readonly route: Route | null
  /** The session the request was decided with (the newest state, after any refresh). */
  readonly session: Session | null
  /** Who a bearer token was decided for (no session): its identity, for the access line. */
  readonly bearer?: Identity | undefined
  /** Why a request was refused or failed, for the access line. */
  readonly error?: unknown
  readonly notes: readonly Note[]
}

/** Response headers by lower-case name; `set-cookie` is a list. */
export type ResponseHeaders = Readonly<Record<string, string | readonly string[]>>

export interface ForwardDecision extends DecisionBase {
  readonly action: 'proxy'
  readonly kind: 'forward'
  readonly route: Route
  /** The request target sent upstream (normalized path + query). */
  readonly target: string
  /** The request headers the upstream gets (identity injected, the rest cleaned). */
  readonly upstream: IncomingHttpHeaders
  /** Headers of ours on the answer (request id, a re-written cookie); they replace the upstream's. */
  readonly respond: ResponseHeaders
  /** The cookie value that holds `session` (an open WebSocket checks it again while it lasts). */
  readonly sessionValue: string | null
}

export interface AnswerDecision extends DecisionBase {
  readonly action: 'answer'
  readonly status: number
  /** Flat `[name, value, ...]` pairs, as `writeHead` takes them, content-length included. */
  readonly headers: readonly string[]
  readonly body: string
}

export type Decision = ForwardDecision | AnswerDecision

export type Extras = Pick<DecisionBase, 'label' | 'route' | 'session' | 'notes' | 'bearer'> & { readonly error?: unknown }

/** Headers as flat pairs, `set-cookie` lines each on their own. */
export function pairsOf(headers: ResponseHeaders): string[] {
  const out: string[] = []
  for (const name in headers) {
    const value = headers[name] as string | readonly string[]
    if (typeof value === 'string') out.push(name, value)
    else for (const v of value) out.push(name, v)
  }
  return out
}

function cookiePairs(lines: readonly string[]): string[] {
  const out: string[] = []
  for (const line of lines) out.push('set-cookie', line)
  return out
}

/** An answer; its `content-length` is added here, from the body. */
export function answer(kind: DecisionKind, status: number, headers: string[], body: string, extras: Extras): AnswerDecision {
  headers.push('content-length', String(Buffer.byteLength(body)))
  return { action: 'answer', kind, status, headers, body, ...extras }
}

/** 302 to `location`, never cached. */
export function redirectTo(location: string, requestId: string, setCookie: readonly string[], extras: Extras): AnswerDecision {
  return answer('redirect', 302, ['location', location, 'cache-control', 'no-store', 'x-request-id', requestId, ...cookiePairs(setCookie)], '', extras)
}

/**
 * The 401 for a request without a valid session that gets no redirect (an API client on a protected
 * route, the forward-auth check): JSON, `WWW-Authenticate: Bearer`, never cached.
 */
export function unauthenticated(realm: string, requestId: string, setCookie: readonly string[], extras: Extras): AnswerDecision {
  const body = JSON.stringify({ error: 'UNAUTHENTICATED', message: 'Authentication required.', requestId })
  return answer(
    'unauthenticated',
    401,
    ['www-authenticate', `Bearer realm="${realm}"`, 'cache-control', 'no-store', 'content-type', 'application/json; charset=utf-8', 'x-request-id', requestId, ...cookiePairs(setCookie)],
    body,
    extras,
  )
}

/** A 403 with a JSON body naming why (and the access rule that refused, when one did). */
export function forbidden(message: string, requestId: string, extras: Extras, rule?: string): AnswerDecision {
  const body = JSON.stringify(rule === undefined ? { error: 'FORBIDDEN', message, requestId } : { error: 'ACCESS_DENIED', message, rule, requestId })
  return answer('forbidden', 403, ['cache-control', 'no-store', 'content-type', 'application/json; charset=utf-8', 'x-request-id', requestId], body, extras)
}

/**
 * An error as an answer: the status from the one code → status table, an HTML page or JSON (public
 * text and request id only), `Retry-After` where waiting helps.
 */
export function errorAnswer(err: unknown, html: boolean, requestId: string, retryUrl: string, setCookie: readonly string[], extras: Extras, againUrl?: string): AnswerDecision {
  const res = errorResponse(err, html, requestId, retryUrl, againUrl)
  return answer(kindOfStatus(res.status), res.status, [...pairsOf(res.headers), 'x-request-id', requestId, ...cookiePairs(setCookie)], res.body, { ...extras, error: err })
}

function kindOfStatus(status: number): DecisionKind {
  if (status === 401) return 'unauthenticated'
  if (status === 403) return 'forbidden'
  return status >= 500 ? 'unavailable' : 'rejected'
}

/** The parameters of a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3, RFC 9470 §3, RFC 9728 §5.1). */
export interface ChallengeParams {
  error?: string
  description?: string
  scope?: string
  acrValues?: string
  maxAge?: string
  resourceMetadata?: string
}

/** A quoted-string value: printable ASCII without `"` and `\` (RFC 6750 §3 allows no more in error_description). */
function quoted(value: string): string {
  return `"${value.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '')}"`
}

export function challengeHeader(realm: string, p: ChallengeParams): string {
  const parts = [`Bearer realm=${quoted(realm)}`]
  if (p.error !== undefined) parts.push(`error=${quoted(p.error)}`)
  if (p.description !== undefined) parts.push(`error_description=${quoted(p.description)}`)
  if (p.scope !== undefined) parts.push(`scope=${quoted(p.scope)}`)
  if (p.acrValues !== undefined) parts.push(`acr_values=${quoted(p.acrValues)}`)
  if (p.maxAge !== undefined) parts.push(`max_age=${p.maxAge}`)
  if (p.resourceMetadata !== undefined) parts.push(`resource_metadata=${quoted(p.resourceMetadata)}`)
  return parts.join(', ')
}

/**
 * A 401 or 403 for an API client: JSON (code, message, the rule when one refused, request id) with
 * the given `WWW-Authenticate` challenge, never cached.
 */
export function bearerAnswer(
  status: 401 | 403,
  wwwAuthenticate: string,
  code: string,
  message: string,
  rule: string | undefined,
  requestId: string,
  setCookie: readonly string[],
  extras: Extras,
): AnswerDecision {
  const body = JSON.stringify(rule === undefined ? { error: code, message, requestId } : { error: code, message, rule, requestId })
  return answer(
    status === 401 ? 'unauthenticated' : 'forbidden',
    status,
    ['www-authenticate', wwwAuthenticate, 'cache-control', 'no-store', 'content-type', 'application/json; charset=utf-8', 'x-request-id', requestId, ...cookiePairs(setCookie)],
    body,
    extras,
  )
}
