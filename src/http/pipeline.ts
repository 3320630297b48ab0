import type { FastifyReply, FastifyRequest } from 'fastify'
import { PortcullisError } from '../errors.ts'
import { stripHeaders } from '../policy/headers.ts'
import { readSessionCookie } from './credentials.ts'
import { clearSessionCookies, setSessionCookies } from './cookies.ts'
import { isBrowserNavigation } from './negotiate.ts'
import type { RequestContext, RuntimeHolder } from './context.ts'
import { expiresAt, type Session } from '../session/model.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The request pipeline (DESIGN.md §3), as one ordered list of steps in one file (STYLE.md rule 2).
 * Runs as the root `onRequest` hook, before any body is read:
 *   1. strip client-sent identity headers (every route, public and ops ones included)
 *   2. reject paths that could not be normalized (normalization itself runs in Fastify's rewriteUrl,
 *      so routing already saw the normalized path)
 *   3. match the route (host, longest prefix); public routes stop here
 *   4. authenticate: session cookie → store (open-cache → codec) → session
 *   5. no session: browser navigation → 302 to {prefix}/start; anything else → 401 JSON
 *   6. attach the identity for the proxy step (`http/proxy.ts`)
 * Per-route allow rules (step 4 of DESIGN.md §3), refresh and revocation come with later issues.
 */
export const PATH_REJECTED = Symbol('portcullis.pathRejected')

export function createPipeline(holder: RuntimeHolder) {
  return async function pipeline(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const rt = holder.current
    const ctx: RequestContext = { runtime: rt, route: null, identity: null, session: null, label: request.routeOptions.config.label ?? 'unknown' }
    request.portcullis = ctx

    // 1. strip
    // The raw headers object: what reply-from and the WebSocket proxy copy from.
    stripHeaders(request.raw.headers, rt.stripSet)

    // 2. path
    if ((request.raw as { [PATH_REJECTED]?: boolean })[PATH_REJECTED] === true) {
      ctx.label = 'rejected'
      throw new PortcullisError('PATH_REJECTED', 'The request path is not valid.')
    }
    if (request.routeOptions.config.kind !== 'proxy') return

    // 3. route
    const path = request.url.split('?', 1)[0] as string
    const route = rt.routes.match(request.headers.host, path)
    if (route === null) {
      ctx.label = 'no-route'
      throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
    }
    ctx.route = route
    ctx.label = route.id
    if (route.public) return

    // 4. authenticate
    const session = await authenticate(rt, request, reply)
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
    await reply
      .code(401)
      .header('www-authenticate', `Bearer realm="${rt.publicUrl.host}"`)
      .header('cache-control', 'no-store')
      .type('application/json; charset=utf-8')
      .send({ error: 'UNAUTHENTICATED', message: 'Authentication required.', requestId: request.id })
  }
}


/**
 * The session a request's cookie holds, or null (a bad or expired cookie is no session, and its
 * cookies are cleared). Re-seals a cookie that was opened with an older secret (key rotation).
 */
export async function authenticate(rt: Runtime, request: FastifyRequest, reply: FastifyReply): Promise<Session | null> {
  const name = rt.config.session.cookieName
  const value = readSessionCookie(request, name)
  if (value === null) {
    // Chunks that cannot be joined (missing first piece, too many, empty, oversized) are no session,
    // and are cleared so the browser stops sending them.
    if (hasSessionChunks(request, name)) clearSessionCookies(rt, request, reply)
    return null
  }
  const loaded = await rt.sessions.load(value)
  if (loaded === null) {
    clearSessionCookies(rt, request, reply)
    return null
  }
  const now = rt.clock.now()
  if (loaded.renew || now - loaded.session.lastSeenAt >= IDLE_RENEW_MS) {
    // Re-seal when the cookie was opened with an older secret (rotation), or to move the idle clock;
    // the latter at most once a minute so the cookie is not rewritten on every request.
    const session = { ...loaded.session, lastSeenAt: now }
    setSessionCookies(rt, request, reply, await rt.sessions.save(session), expiresAt(session, rt.limits) - now)
    return session
  }
  return loaded.session
}

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
