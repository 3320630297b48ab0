import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { completeLogin } from '../../oidc/callback.ts'
import { safeCode } from '../../oidc/errors.ts'
import { expiresAt, sessionFromTokens } from '../../session/model.ts'
import { openTransaction, txCookieName } from '../../session/transaction.ts'
import { clearTransactionCookie, putCookies, sessionCookieLines } from '../cookies.ts'
import { readSessionCookie } from '../credentials.ts'
import type { RuntimeHolder } from '../context.ts'
import { readQuery, single } from '../query.ts'

/**
 * GET {prefix}/callback: the provider's answer. An `error` is shown as a page with a retry link (no
 * session, no loop). Otherwise the transaction cookie named for `state` must open and hold the same
 * state (constant time); openid-client and `oidc/callback.ts` do the protocol checks; the session is
 * sealed into the cookie, the transaction cookie cleared, and the browser sent to `rd`.
 */
export function registerCallback(app: FastifyInstance, holder: RuntimeHolder): void {
  app.get(`${holder.current.prefix}/callback`, { config: { kind: 'auth', label: 'auth:callback' } }, async (request, reply) => {
    const rt = request.portcullis.runtime
    const query = readQuery(request.url)
    for (const name of ['code', 'iss', 'error_description', 'session_state']) single(query, name)
    const state = single(query, 'state')
    const error = single(query, 'error')
    const cookieName = state === undefined ? undefined : txCookieName(rt.config.session.cookieName, state)
    if (cookieName !== undefined && request.cookies[cookieName] !== undefined) clearTransactionCookie(rt, reply, cookieName)

    if (error !== undefined) {
      throw new PortcullisError('LOGIN_DENIED', 'The identity provider did not complete the sign-in.', { details: { error: safeCode(error) } })
    }
    if (state === undefined || cookieName === undefined) {
      throw new PortcullisError('LOGIN_FAILED', 'The sign-in response is missing its state. Please sign in again.')
    }
    const sealed = request.cookies[cookieName]
    const now = rt.clock.now()
    const tx = sealed === undefined ? null : await openTransaction(sealed, rt.loginKeys, now, rt.config.session.loginTimeout)
    if (tx === null || !sameString(tx.state, state)) {
      throw new PortcullisError(
        'LOGIN_FAILED',
        'This sign-in cannot be completed: it expired, was already used, or was started in another browser. Please sign in again.',
      )
    }
    request.portcullis.retryRd = tx.rd
    const search = request.url.slice(request.url.indexOf('?'))
    const tokens = await completeLogin(rt.provider.get(), tx, new URL(`${rt.prefix}/callback${search}`, rt.publicUrl), now)
    // A new login never continues an old session (no fixation): forget whatever the browser had.
    const previous = readSessionCookie(request, rt.config.session.cookieName)
    if (previous !== null) await rt.sessions.clear(previous)
    const session = sessionFromTokens(tokens, now, rt.keepClaims, rt.newSessionId())
    putCookies(reply, sessionCookieLines(rt, Object.keys(request.cookies), await rt.sessions.save(session), expiresAt(session, rt.limits) - now))
    request.portcullis.identity = { sub: session.sub, claims: session.claims }
    return reply.code(302).header('location', tx.rd).header('cache-control', 'no-store').send()
  })
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
