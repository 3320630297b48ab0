import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { beginLogin } from '../../oidc/login.ts'
import { routeLogin } from '../../policy/login-routing.ts'
import { validateRedirect } from '../../policy/redirects.ts'
import { isTxCookieName, sealTransaction, transactionsToEvict, txCookieName } from '../../session/transaction.ts'
import { clearTransactionCookie, setTransactionCookie } from '../cookies.ts'
import type { RuntimeHolder } from '../context.ts'
import { readQuery, single } from '../query.ts'
import { openSession, requireStore } from '../pipeline.ts'
import { routeOf } from '../route-of.ts'
import type { RateLimits } from '../rate-limit.ts'

const HINT_VALUE = /^[\x20-\x7e]{1,256}$/

/**
 * GET {prefix}/start?rd=URL[&hint params]: validate `rd` (off-list → `/`), begin a login, seal its
 * transaction into a cookie named for its state (oldest dropped past the cap), 302 to the provider.
 * A `login_hint` whose e-mail domain is in `provider.domainRouting` adds that domain's
 * organization_id / connection_id, unless the query gives them itself.
 */
export function registerStart(app: FastifyInstance, holder: RuntimeHolder, limits: RateLimits): void {
  const rt0 = holder.current
  app.get(`${rt0.prefix}/start`, { config: { kind: 'auth', label: 'auth:start' }, onRequest: limits.hook('start') }, async (request, reply) => {
    const rt = request.portcullis.runtime
    const query = readQuery(request.url)
    const rd = validateRedirect(single(query, 'rd'), rt.publicUrl, rt.config.redirects.allowedDomains) ?? new URL('/', rt.publicUrl).href
    // provider.domainRouting reads login_hint whether or not it is forwarded; explicit hints win over it.
    const loginHint = single(query, 'login_hint')
    const hints: Record<string, string> =
      loginHint !== undefined && HINT_VALUE.test(loginHint) ? { ...routeLogin(loginHint, rt.config.provider.domainRouting) } : {}
    for (const name of rt.config.provider.hintParams) {
      const value = single(query, name)
      if (value === undefined) continue
      if (!HINT_VALUE.test(value)) throw new PortcullisError('REQUEST_REJECTED', `The parameter "${name}" is not valid.`)
      hints[name] = value
    }
    const oidc = rt.provider.get()
    // The session this login would end in could not be kept while Redis is unreachable: a 503 now,
    // not a trip to the provider and back to a callback that fails.
    requireStore(rt)
    const now = rt.clock.now()
    // The route `rd` leads to picks its login parameters and step-up requirements; a session that
    // falls short of them is asked to sign in again (prompt=login) instead of being reused.
    const route = routeOf(rt, rd)
    let routeParams: Record<string, string> = {}
    if (route !== null && !route.public) {
      const current = (await openSession(rt, request.headers)).loaded?.session ?? null
      routeParams = route.policy.loginParams(current === null ? null : { sub: current.sub, claims: current.claims, authTime: current.authTime }, now)
    }
    const { url, transaction } = await beginLogin(oidc, {
      rd,
      scopes: rt.config.provider.scopes,
      authorizeParams: rt.config.provider.authorizeParams,
      hints,
      routeParams,
      now,
    })
    const base = rt.config.session.cookieName
    const existing = Object.entries(request.cookies).filter(
      (e): e is [string, string] => typeof e[1] === 'string' && isTxCookieName(base, e[0]),
    )
    const evict = await transactionsToEvict(existing, rt.loginKeys, now, rt.config.session.loginTimeout, rt.config.session.maxPendingLogins)
    for (const name of evict) clearTransactionCookie(rt, reply, name)
    setTransactionCookie(rt, reply, txCookieName(base, transaction.state), await sealTransaction(transaction, rt.loginKeys))
    holder.metrics.loginStarted()
    return reply.code(302).header('location', url.href).header('cache-control', 'no-store').send()
  })
}
