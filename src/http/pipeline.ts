import { fastifyCookie } from '@fastify/cookie'
import { PortcullisError } from '../errors.ts'
import { hasDoubleEncoding } from '../policy/path.ts'
import { loginUrlFor, type Route } from '../policy/routes.ts'
import { join as joinChunks } from '../session/chunks.ts'
import { expiresAt, needsRefresh, type Session } from '../session/model.ts'
import type { LoadedSession } from '../session/store.ts'
import type { Runtime } from '../runtime.ts'
import { clearSessionCookieLines, setSessionLines, staleChunkLines } from './cookies.ts'
import { answer, bearerAnswer, challengeHeader, errorAnswer, forbidden, redirectTo, unauthenticated, type ChallengeParams, type Decision, type Extras, type Note, type ResponseHeaders } from './decision.ts'
import type { Verdict } from '../policy/access.ts'
import type { Identity } from '../policy/identity.ts'
import { bearerTokenOf } from '../oidc/bearer.ts'
import type { RequestFacts } from './facts.ts'
import { allowPairs, CHECK_LABEL, originalRequest, VERIFY_LABEL } from './forward-auth.ts'
import { isBrowserNavigation, wantsHtml } from './negotiate.ts'
import { repeatableTarget } from './errors.ts'
import { upstreamHeaders } from './upstream-headers.ts'

/**
 * The request pipeline: one function from plain request data to a decision. It is the only place
 * where the order of the steps lives; the fast lane (`http/fast-lane.ts`), the Fastify path
 * (`http/fastify-lane.ts`) and the WebSocket upgrade handler (`http/tunnel.ts`) only carry out what
 * it returns (`http/execute.ts`). A new step written here reaches every lane.
 *
 *   1. strip what a client must not send (every route, public ones included)
 *   2. the request being judged: its normalized path (else 400) and route (else 404); for the
 *      forward-auth checks, the original request (`originalRequest` in `http/forward-auth.ts`:
 *      `X-Original-URL` or `X-Forwarded-Uri` from a trusted proxy, or Envoy's prefixed path)
 *   3. a public route is forwarded as it is; so is a CORS preflight on a route with `allowPreflight`
 *      (without any identity)
 *   4. authenticate: on a bearer route, `Authorization: Bearer <JWT>` (verified, never a redirect);
 *      else the session cookie → store → not revoked; freshen: the JWT access token verified,
 *      refreshed when it expires within `session.refreshAhead` (single-flight), the idle clock moved
 *      at most once a minute, a cookie sealed with an older secret re-sealed; every new state is
 *      written once per cookie value and window, and its cookie set on the answer
 *      then authorize (`policy/access.ts`): the route's allow rule (else `access.defaultAllow`) and
 *      step-up requirements: allowed, denied (403 naming the rule), or step-up (login again with
 *      `acr_values` / `max_age` / `prompt=login`; the session keeps serving other routes)
 *   5. no session: browser navigation → 302 to {prefix}/start (or the sign-in page); anything else →
 *      401 JSON (an RFC 6750 challenge on bearer routes); while the provider is unreachable, 503
 *   6. forward, with the identity headers (and the signed assertion) injected
 *
 * `mode` is `proxy` for a proxied request; `check` for the nginx family's forward-auth check
 * (`{prefix}/auth`), where the same verdicts are answered as nginx's `auth_request` takes them:
 * 200 / 401 / 403, nothing else; `verify` for the relay family's (`{prefix}/verify`: Traefik,
 * Caddy, Envoy), whose refusals reach the browser as they are: the proxy's answers (a 302 to login
 * for a browser navigation, 401, 403, 503 while the provider is down), and 200 instead of the
 * forward. In both checks `facts` become the original request's (method, absolute URL) after step 2.
 */
export type Mode = 'proxy' | 'check' | 'verify'

export type Decide = (rt: Runtime, facts: RequestFacts, mode: Mode) => Promise<Decision>

export const decide: Decide = async (rt, given, mode) => {
  let facts = given
  const notes: Note[] = []
  let label = mode === 'check' ? CHECK_LABEL : mode === 'verify' ? VERIFY_LABEL : 'unknown'
  let route: Route | null = null
  let session: Session | null = null
  let setCookie: readonly string[] = []
  try {
    // 1. screen: strip, and refuse what no reading of the request can make safe
    const refused = screenRequest(rt, facts)
    if (refused !== null) {
      label = 'rejected'
      throw refused
    }

    // 2. the request being judged
    if (mode === 'proxy') {
      if (facts.path === null) {
        label = 'rejected'
        throw new PortcullisError('PATH_REJECTED', 'The request path is not valid.')
      }
      if (!rt.config.server.allowDoubleEncoding && hasDoubleEncoding(facts.path)) {
        label = 'rejected'
        throw new PortcullisError('PATH_REJECTED', 'The request path is encoded twice.')
      }
      route = rt.routes.match(facts.host, facts.path)
      if (route === null) {
        label = 'no-route'
        throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
      }
      label = route.id
      // Only WebSocket handshakes are relayed: any other protocol switch (h2c, ...) would be a raw
      // tunnel past every later check of the pipeline.
      if (facts.upgrade && !isWebSocketHandshake(facts)) throw new PortcullisError('REQUEST_REJECTED', 'Only WebSocket upgrades are accepted.')
    } else {
      const original = originalRequest(rt, facts.headers, facts.peer, facts.method, facts.target, mode === 'verify')
      if (original.ignored) notes.push(UNTRUSTED_FORWARDING)
      if (original.route === 'invalid') return forbidden('The original URL is not valid.', facts.requestId, { label, route, session, notes })
      // No original URL to go by: a session is required (`access.defaultAllow`).
      route = original.route
      // From here on the request judged is the original: its method (a browser navigation or not),
      // its absolute URL (where login returns to). Unknown: the check's own method, and no `rd`.
      facts = { ...facts, method: original.method, target: original.url ?? '' }
    }

    // 3. public; a CORS preflight where the route lets it through (no session, no identity)
    if (route?.public === true) return await allow(rt, facts, mode, route, NOBODY, setCookie, label, notes)
    if (route !== null && route.allowPreflight && isPreflight(facts)) return await allow(rt, facts, mode, route, PREFLIGHT, setCookie, label, notes)

    // 4. authenticate: a bearer token where the route takes one (never a redirect), else the session
    const token = route?.bearer === true ? bearerTokenOf(facts.headers.authorization) : null
    if (token !== null) return await bearerRequest(rt, facts, mode, route as Route, token, label, notes)
    const found = await authenticate(rt, facts, notes)
    setCookie = found.setCookie
    session = found.loaded?.session ?? null
    if (session !== null) {
      // 4b. authorize: the route's allow rule and step-up requirements (a check without an original
      // URL: access.defaultAllow)
      const verdict = (route?.policy ?? rt.defaultPolicy).judge({ sub: session.sub, claims: session.claims, authTime: session.authTime }, facts.now)
      const who: Admitted = { session, identity: { sub: session.sub, claims: session.claims }, sessionValue: found.loaded?.value ?? null, anonymous: false }
      if (verdict.kind === 'allow') return await allow(rt, facts, mode, route, who, setCookie, label, notes)
      return refuse(rt, facts, mode, route, verdict, false, setCookie, { label, route, session, notes })
    }

    // 5. no session. On a bearer route the 401 is the route's RFC 6750 challenge (its scopes and, for
    // a resource, where its metadata is: RFC 9728 §5.1), also for the check, whose WWW-Authenticate
    // nginx passes on; no error code, as no credentials were presented (§3.1).
    if (mode === 'check') {
      if (route?.bearer === true) return bearerAnswer(401, challenge(rt, route, {}), 'UNAUTHENTICATED', 'Authentication required.', undefined, facts.requestId, setCookie, { label, route, session, notes })
      return unauthenticated(rt.publicUrl.host, facts.requestId, setCookie, { label, route, session, notes })
    }
    // Login needs the provider: while it is unreachable, say so (503) instead of starting a login.
    if (!rt.provider.ready) rt.provider.get() // throws NOT_READY
    // And a session needs the store: while Redis is unreachable no login could complete (nor a
    // session be checked), so the same 503, not a login or a 401 that a retry cannot cure.
    requireStore(rt)
    // A token in the query (`?access_token=`, RFC 6750 §2.3) is never taken, and its request is an API
    // client's: never a redirect to login, whatever it accepts.
    if (isBrowserNavigation(facts) && !(route?.bearer === true && hasQueryToken(facts.target))) {
      return redirectTo(loginUrl(rt, route, facts.target, false), facts.requestId, setCookie, { label, route, session, notes })
    }
    if (route?.bearer === true) return bearerAnswer(401, challenge(rt, route, {}), 'UNAUTHENTICATED', 'Authentication required.', undefined, facts.requestId, setCookie, { label, route, session, notes })
    return unauthenticated(rt.publicUrl.host, facts.requestId, setCookie, { label, route, session, notes })
  } catch (err) {
    const extras = { label, route, session, notes }
    // The store unreachable (Redis down): a 503 in every mode, the checks' too. Neither a refusal
    // (a 401 or a redirect would send the browser to a login that cannot complete, again and again)
    // nor an allow: the session could not be verified. The browser keeps its cookie.
    if (isStoreOutage(err)) {
      const again = mode === 'proxy' ? repeatableTarget(facts.method, facts.target) : undefined
      return errorAnswer(err, mode !== 'check' && wantsHtml(facts.headers), facts.requestId, '', NONE, extras, again)
    }
    // nginx takes only 200, 401 and 403 from the check: a failure (the provider down while the
    // session's token expired) is a refusal there; the sign-in page then explains the outage.
    if (mode === 'check') return { ...unauthenticated(rt.publicUrl.host, facts.requestId, setCookie, extras), error: err }
    const retry = new URL(`${rt.prefix}/start`, rt.publicUrl)
    if (facts.path !== null && facts.target !== '') retry.searchParams.set('rd', facts.target)
    return errorAnswer(err, wantsHtml(facts.headers), facts.requestId, retry.href, setCookie, extras)
  }
}

/**
 * A check whose forwarding headers were not believed: the peer is not in `server.trustedProxies`.
 * Behind a front proxy that should be, every check is then judged without its original URL: logins
 * return to the start page, public routes ask for a session.
 */
const UNTRUSTED_FORWARDING: Note = {
  level: 'warn',
  msg: 'forward-auth check: X-Original-URL / X-Forwarded-Uri ignored, the peer is not in server.trustedProxies',
  fields: {},
}

/** Who an allowed request is forwarded as. */
interface Admitted {
  readonly session: Session | null
  readonly identity: Identity | null
  /** The cookie value that holds `session`. */
  readonly sessionValue: string | null
  /** A CORS preflight on a protected route: forwarded without any identity header. */
  readonly anonymous: boolean
}
const NOBODY: Admitted = { session: null, identity: null, sessionValue: null, anonymous: false }
const PREFLIGHT: Admitted = { session: null, identity: null, sessionValue: null, anonymous: true }

/** A CORS preflight (Fetch standard): OPTIONS with `Origin` and `Access-Control-Request-Method`. */
function isPreflight(facts: RequestFacts): boolean {
  const h = facts.headers
  return facts.method === 'OPTIONS' && typeof h.origin === 'string' && typeof h['access-control-request-method'] === 'string'
}

function loginUrl(rt: Runtime, route: Route | null, target: string, stepUp: boolean): string {
  return loginUrlFor(rt.publicUrl, rt.prefix, rt.config.provider.signInPage, route, target, stepUp)
}

/**
 * A signed-in request the route's rules refuse: a denial is a 403 naming the rule (HTML page or
 * JSON); a step-up is a login again for a browser navigation and a 401 otherwise (RFC 9470
 * `insufficient_user_authentication`); the forward-auth check answers 403 / 401. The session is kept:
 * it still serves the routes it meets.
 */
function refuse(rt: Runtime, facts: RequestFacts, mode: Mode, route: Route | null, verdict: Exclude<Verdict, { kind: 'allow' }>, bearer: boolean, setCookie: readonly string[], extras: Extras): Decision {
  if (verdict.kind === 'deny') {
    const err = new PortcullisError('ACCESS_DENIED', verdict.reason, { details: { rule: verdict.rule } })
    if (bearer && route !== null) {
      return bearerAnswer(403, challenge(rt, route, { error: 'insufficient_scope', description: `${verdict.reason} (${verdict.rule})` }), 'ACCESS_DENIED', verdict.reason, verdict.rule, facts.requestId, setCookie, { ...extras, error: err })
    }
    if (mode === 'check') return { ...forbidden(verdict.reason, facts.requestId, extras, verdict.rule), error: err }
    return errorAnswer(err, wantsHtml(facts.headers), facts.requestId, loginUrl(rt, route, facts.target, true), setCookie, extras)
  }
  if (mode === 'check') return { ...unauthenticated(rt.publicUrl.host, facts.requestId, setCookie, extras), kind: 'step-up' }
  if (!bearer && isBrowserNavigation(facts)) return { ...redirectTo(loginUrl(rt, route, facts.target, true), facts.requestId, setCookie, extras), kind: 'step-up' }
  const stepUp: ChallengeParams = { error: 'insufficient_user_authentication', description: verdict.reason }
  if (verdict.params.acr_values !== undefined) stepUp.acrValues = verdict.params.acr_values
  if (verdict.params.max_age !== undefined) stepUp.maxAge = verdict.params.max_age
  const header = route !== null ? challenge(rt, route, stepUp) : challengeHeader(rt.publicUrl.host, stepUp)
  return { ...bearerAnswer(401, header, 'STEP_UP_REQUIRED', verdict.reason, verdict.rule, facts.requestId, setCookie, extras), kind: 'step-up' }
}

/** The route's `WWW-Authenticate` challenge: its scopes and, for a resource, where its metadata is. */
function challenge(rt: Runtime, route: Route, params: ChallengeParams): string {
  const withRoute: ChallengeParams = { ...params }
  if (route.policy.requiredScopes.length > 0) withRoute.scope = route.policy.requiredScopes.join(' ')
  if (route.resourceMetadata !== '') withRoute.resourceMetadata = route.resourceMetadata
  return challengeHeader(rt.publicUrl.host, withRoute)
}

/**
 * Step 4 for a request with `Authorization: Bearer` on a bearer route: the token verified (never a
 * redirect, whatever the client accepts), then the same access rules as a session, plus the route's
 * required scopes. Failures are RFC 6750 challenges: 401 `invalid_token`, 403 `insufficient_scope`.
 */
async function bearerRequest(rt: Runtime, facts: RequestFacts, mode: Mode, route: Route, token: string, label: string, notes: Note[]): Promise<Decision> {
  const extras: Extras = { label, route, session: null, notes }
  const result = await rt.bearer.verify(token, route.audiences)
  if (result.status === 'unavailable') throw new PortcullisError('IDP_UNAVAILABLE', 'The keys to verify the token could not be fetched. Try again shortly.', { cause: result.cause })
  if (result.status === 'invalid') {
    const err = new PortcullisError('TOKEN_INVALID', result.description)
    return bearerAnswer(401, challenge(rt, route, { error: 'invalid_token', description: result.description }), 'TOKEN_INVALID', result.description, undefined, facts.requestId, NONE, { ...extras, error: err })
  }
  const subject = result.subject
  const verdict = route.policy.judge(subject, facts.now)
  if (verdict.kind !== 'allow') return refuse(rt, facts, mode, route, verdict, true, NONE, { ...extras, bearer: subject })
  return { ...(await allow(rt, facts, mode, route, { session: null, identity: subject, sessionValue: null, anonymous: false }, NONE, label, notes)), bearer: subject }
}

/** The target's query has an `access_token` parameter (RFC 6750 §2.3), which is never read as a credential. */
function hasQueryToken(target: string): boolean {
  const q = target.indexOf('?')
  return q !== -1 && QUERY_TOKEN.test(target.slice(q + 1))
}
const QUERY_TOKEN = /(?:^|&)access_token(?:=|&|$)/

/** A WebSocket opening handshake (RFC 6455 §4.1): GET, `Upgrade: websocket`, a key and a version. */
function isWebSocketHandshake(facts: RequestFacts): boolean {
  const h = facts.headers
  return (
    facts.method === 'GET' &&
    String(h.upgrade ?? '').toLowerCase() === 'websocket' &&
    typeof h['sec-websocket-key'] === 'string' &&
    h['sec-websocket-key'] !== '' &&
    typeof h['sec-websocket-version'] === 'string'
  )
}

/**
 * Step 1, alone: also what Portcullis's own routes (login, sign-out, ops) get before their handlers
 * run, as every proxied request does first. The client's headers are stripped in place (identity
 * headers of every auth layer, the operator's additions, names with `_` unless allowed), and a request
 * with two `Host` headers is refused: a front proxy and the app may each believe a different one.
 * Returns the refusal, or null.
 */
export function screenRequest(rt: Runtime, facts: Pick<RequestFacts, 'headers' | 'hostCount'>): PortcullisError | null {
  rt.screen.strip(facts.headers)
  if (facts.hostCount > 1) return new PortcullisError('REQUEST_REJECTED', 'The request has more than one Host header.')
  return null
}

/** Step 6: what an allowed request becomes: forwarded upstream, or the check's 200. */
async function allow(rt: Runtime, facts: RequestFacts, mode: Mode, route: Route | null, who: Admitted, setCookie: readonly string[], label: string, notes: Note[]): Promise<Decision> {
  const { session, identity, sessionValue } = who
  const extras = { label, route, session, notes }
  if (mode !== 'proxy') {
    const headers = [...allowPairs(rt, identity, session), 'x-request-id', facts.requestId]
    for (const line of setCookie) headers.push('set-cookie', line)
    return answer('forward', 200, headers, '', extras)
  }
  const to = route as Route
  // The signed assertion, kept per identity and upstream until close to its expiry (not signed per request).
  const assertion = identity !== null && rt.assertions !== null ? await rt.assertions.token(identity, to.upstreamOrigin) : null
  const upstream = upstreamHeaders(rt, { route: to, identity, session, peer: facts.peer, requestId: facts.requestId, anonymous: who.anonymous, assertion }, { ...facts.headers })
  if (facts.upgrade) {
    // A WebSocket handshake: the upgrade itself is what is forwarded (its hop-by-hop headers were
    // dropped with the rest above).
    upstream.connection = 'upgrade'
    upstream.upgrade = String(facts.headers.upgrade)
  }
  // A response that carries this user's session cookie must never be stored by a shared cache,
  // whatever the app said about its body.
  const respond: ResponseHeaders =
    setCookie.length === 0 ? { 'x-request-id': facts.requestId } : { 'x-request-id': facts.requestId, 'set-cookie': setCookie, 'cache-control': 'private, no-store' }
  return { action: 'proxy', kind: 'forward', target: facts.target, upstream, respond, sessionValue, ...extras, route: to }
}

/** The session a request's cookie holds (its newest state), and the cookies to write on the answer. */
export interface Authenticated {
  readonly loaded: LoadedSession | null
  /** The value the request carried, when it carried one. */
  readonly sent: string | null
  readonly setCookie: readonly string[]
}

/**
 * Step 4, also used by Portcullis's own routes that need the user (`userinfo`, `sign_out`): the
 * session cookie opened, checked against revocations and made fresh. A bad, expired or revoked
 * cookie is no session, and its cookies are cleared. Throws when the session cannot be served (the
 * provider is down and the access token has expired).
 */
export async function authenticate(rt: Runtime, facts: Pick<RequestFacts, 'headers' | 'now'>, notes: Note[]): Promise<Authenticated> {
  const opened = await openSession(rt, facts.headers)
  const { cookies, sent, loaded } = opened
  if (loaded === null || sent === null) return opened
  const now = facts.now
  // The common case, decided without allocating anything: fresh tokens, nothing due.
  const first = await freshness(rt, loaded.session, now)
  if (first === FRESH && !loaded.renew && now - loaded.session.lastSeenAt < IDLE_RENEW_MS) {
    return { loaded, sent, setCookie: cookiesFor(rt, loaded, sent, cookies, now) }
  }
  const next = await writeNext(rt, loaded, first, now, notes)
  if (next === null) return ended(rt, cookies, sent, loaded)
  return { loaded: next, sent, setCookie: cookiesFor(rt, next, sent, cookies, now) }
}

/**
 * Step 4's slow path, apart so the common case allocates no closure: write the session's next state
 * (an idle-clock move, or a refresh, which moves it too), once per request at most. When the state
 * had been superseded by a concurrent request, the newest one is looked at again. Null: the session
 * ended (the token failed verification, or the refresh said so).
 */
async function writeNext(rt: Runtime, from: LoadedSession, first: Freshness, now: number, notes: Note[]): Promise<LoadedSession | null> {
  let loaded: LoadedSession | null = from
  let wrote = false
  const touched = (s: Session): Session => {
    wrote = true
    return { ...s, lastSeenAt: now }
  }
  for (let round = 0; round < MAX_ROUNDS && !wrote; round++) {
    // A server-side store that lost the session while it was being written: it ended.
    if (loaded === null) return null
    const state = round === 0 ? first : await freshness(rt, loaded.session, now)
    const touch = loaded.renew || now - loaded.session.lastSeenAt >= IDLE_RENEW_MS
    if (state.status === 'invalid') {
      notes.push({ level: 'warn', msg: 'session access token failed verification; session ended', fields: { reason: state.reason } })
      return null
    }
    if (state.status === 'fresh') {
      if (!touch) break
      loaded = await rt.sessions.update(loaded, touched)
      continue
    }
    try {
      // Refresh only the state that was judged stale: a store that hands `change` a newer state (the
      // Redis store, when another replica wrote the session meanwhile) may hold tokens another
      // request or replica already refreshed, and refreshing those again would be a second grant.
      const stale = loaded.session.accessToken
      loaded = await rt.sessions.update(loaded, async (s) => touched(s.accessToken === stale ? await rt.refresher.refresh(s) : s))
    } catch (err) {
      // The store could not write (Redis down): the request cannot be served as this session.
      if (isStoreOutage(err)) throw err
      if (err instanceof PortcullisError && err.code === 'SESSION_ENDED') {
        notes.push({ level: 'info', msg: 'session ended at refresh', fields: { err } })
        return null
      }
      if (state.status === 'expired') throw err
      notes.push({ level: 'warn', msg: 'token refresh failed; serving the still-valid session', fields: { err } })
      if (touch) loaded = await rt.sessions.update(loaded as LoadedSession, touched)
      break
    }
  }
  return loaded
}

/**
 * The cookies that hand a client whose cookie is older than its session's newest state the value
 * that holds that state: on the answers in the `RESEND_MS` after the state was written (every new
 * state moves the idle clock, so its `lastSeenAt` is when it was written). That covers the request
 * that wrote it and the parallel requests of the same page; a client that still sends the old value
 * later is served the newest state all the same, and is handed a value again with the next state, at
 * most `IDLE_RENEW_MS` later. A client that never stores cookies (a forward-auth controller that
 * drops them, an API script) is not sent 2 KB of `Set-Cookie` it ignores on every answer.
 */
function cookiesFor(rt: Runtime, loaded: LoadedSession, sent: string, cookies: Record<string, string | undefined>, now: number): readonly string[] {
  if (loaded.value === sent || now - loaded.session.lastSeenAt >= RESEND_MS) return NONE
  return cookieLines(rt, loaded, cookies, now)
}

/** How long after a session state was written its cookie is sent to clients that have an older one. */
export const RESEND_MS = 5_000

/**
 * The `Set-Cookie` lines of the value that holds `loaded`, built once per session state and second
 * (their `Max-Age` counts down), not per request.
 */
function cookieLines(rt: Runtime, loaded: LoadedSession, cookies: Record<string, string | undefined>, now: number): readonly string[] {
  const maxAgeSec = Math.max(1, Math.floor((expiresAt(loaded.session, rt.limits) - now) / 1000))
  let memo = LINES.get(loaded)
  if (memo === undefined || memo.maxAgeSec !== maxAgeSec || memo.rt !== rt) {
    memo = { rt, maxAgeSec, lines: setSessionLines(rt, loaded.value, maxAgeSec) }
    LINES.set(loaded, memo)
  }
  // Chunks a longer value left behind (rare): cleared too.
  const name = rt.sessionCookie
  let chunked = false
  for (const key in cookies) if (key !== name && key.startsWith(`${name}_`)) chunked = true
  return chunked ? [...memo.lines, ...staleChunkLines(rt, Object.keys(cookies), memo.lines.length)] : memo.lines
}
const LINES = new WeakMap<LoadedSession, { readonly rt: Runtime; readonly maxAgeSec: number; readonly lines: readonly string[] }>()
const NONE: readonly string[] = []

/**
 * Step 4's first half: the session cookie opened and checked against revocations, nothing written
 * (sign-out needs no more). A bad, expired or revoked cookie is no session, and its cookies are cleared.
 * `checkRevoked: false` (sign-out only, which revokes it anyway): the revocation check is skipped.
 */
export async function openSession(
  rt: Runtime,
  headers: RequestFacts['headers'],
  opts: { readonly checkRevoked: boolean } = CHECK_REVOKED,
): Promise<Authenticated & { readonly cookies: Record<string, string | undefined> }> {
  const name = rt.sessionCookie
  const header = headers.cookie
  const cookies = header === undefined ? NO_COOKIES : parseCookie(header)
  const sent = joinChunks(name, cookies)
  if (sent === null) {
    // Chunks that cannot be joined (missing first piece, too many, empty, oversized) are no session,
    // and are cleared so the browser stops sending them.
    return { loaded: null, sent, cookies, setCookie: hasSessionChunks(cookies, name) ? clearSessionCookieLines(rt, Object.keys(cookies)) : [] }
  }
  const loaded = await rt.sessions.load(sent)
  if (loaded === null) return { loaded: null, sent, cookies, setCookie: clearSessionCookieLines(rt, Object.keys(cookies)) }
  // Revoked (signed out elsewhere, a back-channel logout): forgotten here too, so its opened state
  // (tokens included) does not wait in memory for the cache bound, and a server-side entry is gone.
  if (opts.checkRevoked && (await rt.revocations.isRevoked(loaded.session))) return { ...(await ended(rt, cookies, sent, loaded)), cookies }
  return { loaded, sent, cookies, setCookie: [] }
}
const CHECK_REVOKED = { checkRevoked: true } as const

/**
 * Whether a session that was allowed earlier still would be, for what outlives one request (an open
 * WebSocket): the cookie value still loads that session (absolute lifetime, idle timeout, a store
 * that lost it), it is not revoked, and the route's rules still allow it (a `require.maxAuthAge`
 * passes while the socket is open). `route`: the one the handshake was decided for, with its rules.
 */
export async function stillLive(rt: Runtime, sessionValue: string, sessionId: string, route: Route | null): Promise<boolean> {
  const loaded = await rt.sessions.load(sessionValue)
  if (loaded === null || loaded.session.id !== sessionId || (await rt.revocations.isRevoked(loaded.session))) return false
  const s = loaded.session
  return route === null || route.policy.judge({ sub: s.sub, claims: s.claims, authTime: s.authTime }, rt.clock.now()).kind === 'allow'
}

/** The session store (or Redis behind it) could not answer: PortcullisError STORE_UNAVAILABLE. */
export function isStoreOutage(err: unknown): boolean {
  return err instanceof PortcullisError && err.code === 'STORE_UNAVAILABLE'
}

/**
 * Throws STORE_UNAVAILABLE while Redis is configured and not connected: what starts a login (the
 * redirect to it, `{prefix}/start`, the callback before it redeems the code) asks first, as a
 * session made now could not be kept or checked.
 */
export function requireStore(rt: Runtime): void {
  if (rt.redis !== null && !rt.redis.ready) throw new PortcullisError('STORE_UNAVAILABLE', STORE_DOWN)
}
const STORE_DOWN = 'Sign-in is not possible right now: the session store cannot be reached. Try again in a moment.'

/** A session that ended here: forgotten in the store, its cookies cleared. */
async function ended(rt: Runtime, cookies: Record<string, string | undefined>, sent: string, loaded: LoadedSession): Promise<Authenticated> {
  await rt.sessions.clear(sent)
  if (loaded.value !== sent) await rt.sessions.clear(loaded.value)
  return { loaded: null, sent, setCookie: clearSessionCookieLines(rt, Object.keys(cookies)) }
}

/** How often one request looks again at a state that a concurrent request had superseded. */
const MAX_ROUNDS = 3

/**
 * What a session's tokens need now: nothing (`fresh`), a refresh while the access token still serves
 * (`refresh`) or after it expired (`expired`), or the end (`invalid`: the JWT failed verification).
 * A session without a refresh token lasts as long as its access token.
 */
type Freshness = { readonly status: 'fresh' | 'refresh' | 'expired' } | { readonly status: 'invalid'; readonly reason: string }
const FRESH: Freshness = { status: 'fresh' }
const REFRESH: Freshness = { status: 'refresh' }
const EXPIRED: Freshness = { status: 'expired' }

async function freshness(rt: Runtime, session: Session, now: number): Promise<Freshness> {
  let expired = session.accessExpiresAt <= now
  if (rt.provider.ready) {
    const check = await rt.provider.get().accessTokens.check(session.accessToken)
    if (check.status === 'invalid') return { status: 'invalid', reason: check.reason }
    if (check.status === 'expired') expired = true
  }
  if (expired) return EXPIRED
  return needsRefresh(session, now, rt.config.session.refreshAhead) && session.refreshToken !== undefined ? REFRESH : FRESH
}

/** The Cookie parser @fastify/cookie gives Fastify requests (the first of duplicate names wins). */
const parseCookie = fastifyCookie.parse
const NO_COOKIES: Record<string, string | undefined> = Object.freeze({})

/** The idle clock (`lastSeenAt`) moves at most this often. */
export const IDLE_RENEW_MS = 60_000

function hasSessionChunks(cookies: Record<string, string | undefined>, name: string): boolean {
  const prefix = `${name}_`
  for (const key in cookies) {
    if (key === name || (key.startsWith(prefix) && CHUNK_SUFFIX.test(key.slice(prefix.length)))) return true
  }
  return false
}
const CHUNK_SUFFIX = /^\d+$/
