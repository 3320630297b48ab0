import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, onErrorAsyncHookHandler } from 'fastify'
import { formatDiagnosis, PortcullisError } from '../../errors.ts'
import { completeLogin } from '../../oidc/callback.ts'
import { safeCode, safeDescription } from '../../oidc/errors.ts'
import type { LoginTransaction } from '../../oidc/login.ts'
import type { TokenSet } from '../../oidc/tokens.ts'
import { expiresAt, sessionFromTokens } from '../../session/model.ts'
import { openTransaction, txCookieName } from '../../session/transaction.ts'
import { clearTransactionCookie, putCookies, sessionCookieLines } from '../cookies.ts'
import { readSessionCookie } from '../credentials.ts'
import type { RuntimeHolder } from '../context.ts'
import { readQuery, single } from '../query.ts'
import { requireStore } from '../pipeline.ts'
import { routeOf } from '../route-of.ts'
import type { RateLimits } from '../rate-limit.ts'

/**
 * GET {prefix}/callback: the provider's answer. An `error` is shown as a page with the provider's
 * code and (cleaned, shortened) `error_description`, and a retry link that keeps the login's `rd` (no
 * session, no loop). Otherwise the transaction cookie named for `state` must open and hold the same
 * state (constant time); openid-client and `oidc/callback.ts` do the protocol checks; the session is
 * sealed into the cookie, the transaction cookie cleared, and the browser sent to `rd`. A failure
 * that another server explained (a Diagnosis: client authentication refused at the token endpoint,
 * ...) adds a `problem` line to the request's log entry, for the operator.
 */
export function registerCallback(app: FastifyInstance, holder: RuntimeHolder, limits: RateLimits): void {
  const counted = { config: { kind: 'auth', label: 'auth:callback' }, onRequest: limits.hook('callback'), onError: countFailure(holder) } as const
  app.get(`${holder.current.prefix}/callback`, counted, async (request, reply) => {
    const rt = request.portcullis.runtime
    const query = readQuery(request.url)
    for (const name of ['code', 'iss', 'session_state']) single(query, name)
    const description = single(query, 'error_description')
    const state = single(query, 'state')
    const error = single(query, 'error')
    const cookieName = state === undefined ? undefined : txCookieName(rt.config.session.cookieName, state)
    if (cookieName !== undefined && request.cookies[cookieName] !== undefined) clearTransactionCookie(rt, reply, cookieName)
    const sealed = cookieName === undefined ? undefined : request.cookies[cookieName]
    const now = rt.clock.now()
    const opened = sealed === undefined ? null : await openTransaction(sealed, rt.loginKeys, now, rt.config.session.loginTimeout)
    const tx: LoginTransaction | null = opened !== null && state !== undefined && sameString(opened.state, state) ? opened : null

    if (error !== undefined) {
      // "Try again" returns to the page the user wanted, when this browser started the login.
      if (tx !== null) request.portcullis.retryRd = tx.rd
      // The provider's words only for a login this browser started: anyone can craft a link to the
      // callback, and its text would read as the provider's on our origin.
      const shown = description === undefined || tx === null ? '' : safeDescription(description)
      throw new PortcullisError('LOGIN_DENIED', 'The identity provider did not complete the sign-in.', {
        details: { error: safeCode(error), ...(shown === '' ? {} : { description: shown }) },
      })
    }
    if (state === undefined || cookieName === undefined) {
      throw new PortcullisError('LOGIN_FAILED', 'The sign-in response is missing its state. Please sign in again.')
    }
    if (tx === null) {
      throw new PortcullisError(
        'LOGIN_FAILED',
        'This sign-in cannot be completed: it expired, was already used, or was started in another browser. Please sign in again.',
      )
    }
    request.portcullis.retryRd = tx.rd
    // Redis unreachable: a 503 before the code is redeemed (the session could not be kept).
    requireStore(rt)
    const search = request.url.slice(request.url.indexOf('?'))
    let tokens: TokenSet
    try {
      tokens = await completeLogin(rt.provider.get(), tx, new URL(`${rt.prefix}/callback${search}`, rt.publicUrl), now)
    } catch (err) {
      if (err instanceof PortcullisError && err.diagnosis !== undefined) {
        request.portcullis.logFields = { ...request.portcullis.logFields, problem: formatDiagnosis(err.diagnosis) }
      }
      throw err
    }
    // A login for a route with step-up requirements must have met them: the provider's acr, amr and
    // auth_time are checked, not trusted to follow acr_values or max_age (a user can strip those from
    // the authorize URL). Refused here, not at rd: going there would start the same login again (a
    // loop). The browser's earlier session, if any, is left as it was: it still serves other routes.
    const route = routeOf(rt, tx.rd)
    if (route !== null && !route.public) {
      const authTime = typeof tokens.claims.auth_time === 'number' ? tokens.claims.auth_time * 1000 : undefined
      const verdict = route.policy.judge({ sub: String(tokens.claims.sub), claims: tokens.claims, authTime }, now)
      if (verdict.kind === 'step-up') {
        throw new PortcullisError('STEP_UP_FAILED', `${verdict.reason} The sign-in did not provide it.`, { details: { rule: verdict.rule } })
      }
    }
    // A new login never continues an old session (no fixation): forget whatever the browser had.
    const previous = readSessionCookie(request, rt.sessionCookie)
    if (previous !== null) await rt.sessions.clear(previous)
    const session = sessionFromTokens(tokens, now, rt.keepClaims, rt.newSessionId())
    putCookies(reply, sessionCookieLines(rt, Object.keys(request.cookies), await rt.sessions.save(session), expiresAt(session, rt.limits) - now))
    request.portcullis.identity = { sub: session.sub, claims: session.claims }
    holder.metrics.loginCompleted()
    return reply.code(302).header('location', tx.rd).header('cache-control', 'no-store').send()
  })
}

/** A callback that made no session: `portcullis_login_failures_total{reason}`, the error's code. */
function countFailure(holder: RuntimeHolder): onErrorAsyncHookHandler {
  return async (_request, _reply, err) => {
    holder.metrics.loginFailed(err instanceof PortcullisError ? err.code : (err as { statusCode?: unknown }).statusCode === 429 ? 'RATE_LIMITED' : 'INTERNAL')
  }
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
