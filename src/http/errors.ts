import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { type ErrorCode, PortcullisError } from '../errors.ts'
import { wantsHtml } from './negotiate.ts'
import { renderErrorPage } from './pages.ts'

/**
 * The one place an error becomes a response: code → status (a total table), HTML page or JSON,
 * public message and request id only. Never `err.message`, a stack, a token or a cookie: what a
 * client sees is the public part of the error model, the rest is for the log.
 */
export const STATUS: Record<ErrorCode, number> = {
  CONFIG_INVALID: 500,
  IDP_UNAVAILABLE: 503,
  IDP_REJECTED: 502,
  IDP_CLIENT_AUTH: 502,
  LOGIN_DENIED: 403,
  LOGIN_FAILED: 400,
  SESSION_ENDED: 401,
  SESSION_TOO_LARGE: 500,
  REDIRECT_REJECTED: 400,
  PATH_REJECTED: 400,
  REQUEST_REJECTED: 400,
  METHOD_NOT_ALLOWED: 405,
  TOKEN_INVALID: 401,
  NOT_READY: 503,
  STORE_UNAVAILABLE: 503,
  RATE_LIMITED: 429,
  NOT_FOUND: 404,
  UPSTREAM_UNAVAILABLE: 502,
  UPSTREAM_TIMEOUT: 504,
  ACCESS_DENIED: 403,
  STEP_UP_FAILED: 403,
}

/** Page headings. A heading is never its page's message again: test/unit/http/error-pages.test.ts holds them apart. */
export const TITLES: Record<ErrorCode, string> = {
  CONFIG_INVALID: 'Configuration error',
  IDP_UNAVAILABLE: 'Sign-in is temporarily unavailable',
  IDP_REJECTED: 'Sign-in failed',
  IDP_CLIENT_AUTH: 'Sign-in is misconfigured',
  LOGIN_DENIED: 'Sign-in was not completed',
  LOGIN_FAILED: 'Sign-in failed',
  SESSION_ENDED: 'Sign-in required',
  SESSION_TOO_LARGE: 'Sign-in failed',
  REDIRECT_REJECTED: 'Redirect refused',
  PATH_REJECTED: 'Bad request',
  REQUEST_REJECTED: 'Bad request',
  METHOD_NOT_ALLOWED: 'Method not allowed',
  TOKEN_INVALID: 'Not authenticated',
  NOT_READY: 'Sign-in is temporarily unavailable',
  STORE_UNAVAILABLE: 'The service is temporarily unavailable',
  RATE_LIMITED: 'Too many requests',
  NOT_FOUND: 'Not found',
  UPSTREAM_UNAVAILABLE: 'The application is not available',
  UPSTREAM_TIMEOUT: 'The application is taking too long',
  ACCESS_DENIED: 'Access denied',
  STEP_UP_FAILED: 'Additional verification needed',
}

/** Codes whose page offers a fresh login. */
const RETRY_LOGIN: ReadonlySet<ErrorCode> = new Set(['STEP_UP_FAILED', 'LOGIN_DENIED', 'LOGIN_FAILED', 'IDP_REJECTED', 'IDP_CLIENT_AUTH', 'SESSION_ENDED', 'IDP_UNAVAILABLE', 'NOT_READY'])
/** Codes whose page offers the same request again (the application failed, not the login). */
const RETRY_SAME: ReadonlySet<ErrorCode> = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'STORE_UNAVAILABLE', 'RATE_LIMITED'])
/** Codes that may clear with time: tell clients when to retry. */
const RETRY_AFTER: ReadonlySet<ErrorCode> = new Set(['IDP_UNAVAILABLE', 'NOT_READY', 'UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'STORE_UNAVAILABLE', 'RATE_LIMITED'])

/**
 * `Retry-After` in seconds: the error's own `details.retryAfter` when it knows (a rate limit: until
 * its window frees), else 5.
 */
function retryAfterOf(err: PortcullisError): string {
  const given = err.details.retryAfter
  return given !== undefined && RETRY_SECONDS.test(given) ? given : '5'
}
const RETRY_SECONDS = /^[1-9]\d{0,8}$/

export const PAGE_HEADERS = {
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
} as const

/** Fastify errors that are the client's fault keep their 4xx status, with a generic public text. */
function fromFastifyError(err: FastifyError): { status: number; code: string; message: string } {
  const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500
  return status === 500
    ? { status, code: 'INTERNAL', message: 'Something went wrong. The request id below helps the operator find out what.' }
    : { status, code: 'BAD_REQUEST', message: 'The request could not be processed.' }
}

/** An error as a response: status, headers (page headers, Retry-After) and an HTML or JSON body. */
export interface ErrorResponse {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

/**
 * Build the response for an error; `sendError` sends it through Fastify, the fast lane
 * (`http/fast-lane.ts`) on the raw response. The retry link is chosen by the code: a fresh login
 * (`retryUrl`, `{prefix}/start?rd=...`) after a sign-in failure, the same request again (`againUrl`)
 * on the page of an application that failed (502, 504), none otherwise.
 */
export function errorResponse(err: unknown, html: boolean, requestId: string, retryUrl: string, againUrl?: string): ErrorResponse {
  let status: number
  let code: string
  let message: string
  let providerError: string | undefined
  let providerDescription: string | undefined
  let rule: string | undefined
  const headers: Record<string, string> = { ...PAGE_HEADERS }
  if (err instanceof PortcullisError) {
    status = STATUS[err.code]
    code = err.code
    message = err.publicMessage
    providerError = err.details.error
    providerDescription = err.details.description
    rule = err.details.rule
    if (RETRY_AFTER.has(err.code)) headers['retry-after'] = retryAfterOf(err)
  } else {
    ;({ status, code, message } = fromFastifyError(err as FastifyError))
  }
  const retry = err instanceof PortcullisError && RETRY_LOGIN.has(err.code) ? retryUrl : undefined
  if (html) {
    const title = err instanceof PortcullisError ? TITLES[err.code] : status === 500 ? 'Internal error' : 'Bad request'
    const link = retry ?? (err instanceof PortcullisError && RETRY_SAME.has(err.code) ? againUrl : undefined)
    headers['content-type'] = 'text/html; charset=utf-8'
    return {
      status,
      headers,
      body: renderErrorPage({ status, title, message, code, requestId, providerError, providerDescription, rule, retryUrl: link }),
    }
  }
  const body: Record<string, string> = { error: code, message, requestId }
  if (providerError !== undefined) body.providerError = providerError
  if (providerDescription !== undefined) body.providerDescription = providerDescription
  if (rule !== undefined) body.rule = rule
  if (retry !== undefined) body.retry = retry
  headers['content-type'] = 'application/json; charset=utf-8'
  // `<`, `>` and `&` as \u escapes: the provider's text never reaches a client as markup, even one
  // that ignores the content type.
  return { status, headers, body: JSON.stringify(body).replace(/[<>&]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`) }
}

export function sendError(err: unknown, request: FastifyRequest, reply: FastifyReply, retryUrl: string): FastifyReply {
  const res = errorResponse(err, wantsHtml(request.headers), request.id, retryUrl)
  return reply.code(res.status).headers(res.headers).send(res.body)
}

/**
 * Send an error on a raw response (the proxy step after it took the response over from Fastify, and
 * the fast lane). `own` are headers already decided for this response (request id, cookies).
 */
export function writeError(
  res: ServerResponse,
  err: unknown,
  requestHeaders: IncomingHttpHeaders,
  requestId: string,
  own: Readonly<Record<string, string | readonly string[]>>,
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const out = errorResponse(err, wantsHtml(requestHeaders), requestId, '/', sameRequestUrl(res))
  res.writeHead(out.status, { ...own, ...out.headers, 'content-length': Buffer.byteLength(out.body) })
  res.end(out.body)
}

/**
 * The link that repeats the request `res` answers: its own path and query, for a GET or HEAD only (a
 * link cannot repeat a form post). Only a path on this origin: a target such as `//host/x` would be
 * a link to another site.
 */
export function sameRequestUrl(res: ServerResponse): string | undefined {
  const req = (res as ServerResponse & { req?: IncomingMessage }).req
  return req === undefined ? undefined : repeatableTarget(req.method ?? '', req.url ?? '')
}

/** `target` as a link that repeats its request: a GET or HEAD's path on this origin, else undefined. */
export function repeatableTarget(method: string, target: string): string | undefined {
  if (method !== 'GET' && method !== 'HEAD') return undefined
  if (!target.startsWith('/') || target.startsWith('//') || target.startsWith('/\\') || target.length > 2048) return undefined
  return target
}
