import type { FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError } from '../errors.ts'
import { stripHeaders } from '../policy/headers.ts'
import { readSessionCookie } from './credentials.ts'
import { clearSessionCookies, setSessionCookies } from './cookies.ts'
import { isBrowserNavigation } from './negotiate.ts'
import { sendUnauthenticated } from './errors.ts'
import type { RequestContext, RuntimeHolder } from './context.ts'
import { expiresAt, needsRefresh, type Session } from '../session/model.ts'
import type { Runtime } from '../runtime.ts'
import type { Route } from '../policy/routes.ts'
import { join as joinChunks } from '../session/chunks.ts'
import { fastifyCookie } from '@fastify/cookie'

/**
 * The request pipeline (DESIGN.md §3), as one ordered list of steps in one file (STYLE.md rule 2).
 * Runs as the root `onRequest` hook, before any body is read:
 *   1. strip client-sent identity headers (every route, public and ops ones included)
 *   2. reject paths that could not be normalized (normalization itself runs in Fastify's rewriteUrl,
 *      so routing already saw the normalized path)
 *   3. match the route (host, longest prefix); public routes stop here
 *   4. authenticate: session cookie → store (open-cache → codec) → session, unless revoked; then
 *      freshen: the JWT access token verified (once per token), refreshed when it expires within
 *      `session.refreshAhead` (single-flight), the new session written back
 *   5. no session: browser navigation → 302 to {prefix}/start; anything else → 401 JSON
 *   6. attach the identity for the proxy step (`http/proxy.ts`)
 * Per-route allow rules (step 4 of DESIGN.md §3) come with a later issue.
 *
 * The fast lane (`http/fast-lane.ts`) answers requests this pipeline would only forward, before
 * Fastify, through `admit` below: a new step that can refuse a request or write to the response must
 * make `admit` decline such requests too, or the fast lane would skip it.
 */
export const PATH_REJECTED = Symbol('portcullis.pathRejected')

export function createPipeline(holder: RuntimeHolder) {
  return async function pipeline(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const rt = holder.current
    const ctx: RequestContext = { runtime: rt, route: null, identity: null, session: null, label: request.routeOptions.config.label ?? 'unknown' }
    request.portcullis = ctx
    void reply.header('x-request-id', request.id)

    // 1. strip
    // The raw headers object: what the HTTP and WebSocket proxy steps copy from.
    stripHeaders(request.raw.headers, rt.stripSet)

    // 2. path
    if ((request.raw as { [PATH_REJECTED]?: boolean })[PATH_REJECTED] === true) {
      ctx.label = 'rejected'
      throw new PortcullisError('PATH_REJECTED', 'The request path is not valid.')
    }
    if (request.routeOptions.config.kind !== 'proxy') return

    // 3. route
    const q = request.url.indexOf('?')
    const path = q === -1 ? request.url : request.url.slice(0, q)
    const route = rt.routes.match(request.headers.host, path)
    if (route === null) {
      ctx.label = 'no-route'
      throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
    }
    ctx.route = route
    ctx.label = route.id
    if (route.public) return

    // 4. authenticate (cookie → store → not revoked), then make sure the tokens are fresh
    const found = await authenticate(rt, request, reply)
    const session = found === null ? null : await freshen(rt, request, reply, found.session, found.value)
    if (session !== null) {
      ctx.session = session
      ctx.identity = { sub: session.sub, claims: session.claims }
      return
    }

    // 5. no session
    // Login needs the provider: while it is unreachable, say so (503) instead of starting a login.
    if (!rt.provider.ready) rt.provider.get() // throws NOT_READY
    if (isBrowserNavigation(request)) {
      const start = new URL(`${rt.prefix}/start`, rt.publicUrl)
      start.searchParams.set('rd', request.url)
      await reply.code(302).header('location', start.href).header('cache-control', 'no-store').send()
      return
    }
    await sendUnauthenticated(request, reply, rt.publicUrl.host)
  }
}

/**
 * The session a request's cookie holds, and that cookie value; or null (a bad, expired or revoked
 * cookie is no session, and its cookies are cleared). Re-seals a cookie that was opened with an older
 * secret (key rotation), and moves the idle clock at most once a minute.
 */
export async function authenticate(rt: Runtime, request: FastifyRequest, reply: FastifyReply): Promise<{ session: Session; value: string } | null> {
  const name = rt.config.session.cookieName
  const value = readSessionCookie(request, name)
  if (value === null) {
    // Chunks that cannot be joined (missing first piece, too many, empty, oversized) are no session,
    // and are cleared so the browser stops sending them.
    if (hasSessionChunks(request, name)) clearSessionCookies(rt, request, reply)
    return null
  }
  const loaded = await rt.sessions.load(value)
  if (loaded === null || (await rt.revocations.isRevoked(loaded.session))) {
    clearSessionCookies(rt, request, reply)
    return null
  }
  const now = rt.clock.now()
  if (loaded.renew || now - loaded.session.lastSeenAt >= IDLE_RENEW_MS) {
    // Re-seal when the cookie was opened with an older secret (rotation), or to move the idle clock;
    // the latter at most once a minute so the cookie is not rewritten on every request.
    const session = { ...loaded.session, lastSeenAt: now }
    return { session, value: await store(rt, request, reply, session, value) }
  }
  return { session: loaded.session, value }
}

/**
 * Issue #3 points 1, 3, 4: verify a JWT access token (once per token, LRU); refresh when it is expired
 * or expires within `session.refreshAhead`, shared by concurrent requests. `invalid_grant`, a changed
 * `sub` or an invalid token end the session (null: login or 401). With the provider down or failing,
 * the session keeps being served while its access token is valid, then a 503 with Retry-After.
 */
export async function freshen(rt: Runtime, request: FastifyRequest, reply: FastifyReply, session: Session, value: string): Promise<Session | null> {
  const state = await freshness(rt, session)
  if (state.status === 'fresh') return session
  if (state.status === 'invalid') {
    request.log.warn({ reason: state.reason }, 'session access token failed verification; session ended')
    await endSession(rt, request, reply, value)
    return null
  }
  const expired = state.status === 'expired'
  try {
    const next = await rt.refresher.refresh(session)
    await store(rt, request, reply, next, value)
    return next
  } catch (err) {
    if (err instanceof PortcullisError && err.code === 'SESSION_ENDED') {
      request.log.info({ err }, 'session ended at refresh')
      await endSession(rt, request, reply, value)
      return null
    }
    if (!expired) {
      request.log.warn({ err }, 'token refresh failed; serving the still-valid session')
      return session
    }
    throw err
  }
}

/**
 * What a session's tokens need now: nothing (`fresh`), a refresh while the access token still serves
 * (`refresh`) or after it expired (`expired`), or the end (`invalid`: the JWT failed verification).
 * A session without a refresh token lasts as long as its access token.
 */
type Freshness = { readonly status: 'fresh' | 'refresh' | 'expired' } | { readonly status: 'invalid'; readonly reason: string }
const FRESH: Freshness = { status: 'fresh' }
const REFRESH: Freshness = { status: 'refresh' }
const EXPIRED: Freshness = { status: 'expired' }

async function freshness(rt: Runtime, session: Session): Promise<Freshness> {
  const now = rt.clock.now()
  let expired = session.accessExpiresAt <= now
  if (rt.provider.ready) {
    const check = await rt.provider.get().accessTokens.check(session.accessToken)
    if (check.status === 'invalid') return { status: 'invalid', reason: check.reason }
    if (check.status === 'expired') expired = true
  }
  if (expired) return EXPIRED
  return needsRefresh(session, now, rt.config.session.refreshAhead) && session.refreshToken !== undefined ? REFRESH : FRESH
}

/** A request the fast lane may forward as it is: its route, and its session (null on a public route). */
export interface Admitted {
  readonly route: Route
  readonly session: Session | null
}

/**
 * The fast lane's question (`http/fast-lane.ts`), answered by the same steps 3–4 as above: would this
 * pipeline forward the request without writing anything (no cookie to set or clear, no idle-clock
 * move, no refresh, no redirect, no error)? Then the route and session; otherwise null, and the
 * request takes the full pipeline, which does what is needed. `path` is already normalized.
 */
export async function admit(rt: Runtime, host: string | undefined, path: string, cookieHeader: string | undefined): Promise<Admitted | null> {
  const route = rt.routes.match(host, path)
  if (route === null) return null
  if (route.public) return { route, session: null }
  const session = await admitSession(rt, cookieHeader)
  return session === null ? null : { route, session }
}

/** Step 4 of `admit`: the session a Cookie header holds when it needs nothing written; else null. */
export async function admitSession(rt: Runtime, cookieHeader: string | undefined): Promise<Session | null> {
  if (cookieHeader === undefined) return null
  const value = joinChunks(rt.config.session.cookieName, parseCookie(cookieHeader))
  if (value === null) return null
  const loaded = await rt.sessions.load(value)
  if (loaded === null || loaded.renew || rt.clock.now() - loaded.session.lastSeenAt >= IDLE_RENEW_MS) return null
  if (await rt.revocations.isRevoked(loaded.session)) return null
  if ((await freshness(rt, loaded.session)).status !== 'fresh') return null
  return loaded.session
}

/** Save the session; set the cookie when its value changed (a server-side store keeps the ticket). */
async function store(rt: Runtime, request: FastifyRequest, reply: FastifyReply, session: Session, current: string): Promise<string> {
  const value = await rt.sessions.save(session, current)
  if (value !== current) setSessionCookies(rt, request, reply, value, expiresAt(session, rt.limits) - rt.clock.now())
  return value
}

/** End a session here: forget it in the store, and clear its cookies. */
export async function endSession(rt: Runtime, request: FastifyRequest, reply: FastifyReply, value: string): Promise<void> {
  await rt.sessions.clear(value)
  clearSessionCookies(rt, request, reply)
}

/** The Cookie parser @fastify/cookie gives Fastify requests (the first of duplicate names wins). */
const parseCookie = fastifyCookie.parse

/** The idle clock (`lastSeenAt`) moves at most this often. */
export const IDLE_RENEW_MS = 60_000

function hasSessionChunks(request: FastifyRequest, name: string): boolean {
  const prefix = `${name}_`
  for (const key in request.cookies) {
    if (key === name || (key.startsWith(prefix) && CHUNK_SUFFIX.test(key.slice(prefix.length)))) return true
  }
  return false
}
const CHUNK_SUFFIX = /^\d+$/
