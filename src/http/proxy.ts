import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import httpProxy from '@fastify/http-proxy'
import type { IncomingHttpHeaders } from 'node:http'
import type { ClientOptions } from 'ws'
import { normalizeHeaderName, removeCookies } from '../policy/headers.ts'
import type { RequestContext } from './context.ts'
import { CLIENT_CLOSED, relay, type RelayOutcome, type UpstreamPools } from './upstream.ts'
import { PortcullisError } from '../errors.ts'
import { logRequest } from './logging.ts'
import type { Runtime } from '../runtime.ts'
import type { Route } from '../policy/routes.ts'
import type { Identity } from '../policy/identity.ts'
import type { Session } from '../session/model.ts'
import { writeError } from './errors.ts'

/**
 * The proxy step (DESIGN.md §3 step 6): one catch-all @fastify/http-proxy whose upstream is the route
 * the pipeline matched. The same header rewrite serves HTTP and WebSocket upgrades: our own cookies
 * removed from `Cookie`, identity headers injected (the client's copies were stripped in the
 * pipeline), `X-Forwarded-*` set from `server.publicUrl`, optional access token.
 */
export function upstreamHeaders(rt: Runtime, to: ForwardedAs, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  // Headers the client listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1). Done before the
  // identity headers are injected, so a client cannot name one of ours to make it vanish.
  const connection = headers.connection
  if (typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close') {
    for (const listed of connection.toLowerCase().split(',')) delete headers[listed.trim()]
  }
  // Compared normalized (`X_Original_URL` is `X-Original-URL` to CGI, PHP and Symfony apps).
  for (const name in headers) if (NOT_FORWARDED.has(normalizeHeaderName(name))) delete headers[name]
  const cookie = removeCookies(headers.cookie, rt.isOwnCookie)
  if (cookie === undefined) delete headers.cookie
  else headers.cookie = cookie
  if (!to.route.public) {
    Object.assign(headers, rt.identityHeaders(to.identity))
    const session = to.session
    if (session !== null) {
      if (rt.config.identity.passAccessToken) headers['x-auth-request-access-token'] = session.accessToken
      if (rt.config.identity.passAuthorizationHeader) headers.authorization = `Bearer ${session.accessToken}`
    }
  }
  const peer = to.peer
  const prior = headers['x-forwarded-for']
  headers['x-forwarded-for'] = prior !== undefined && rt.isTrustedProxy(peer) ? `${String(prior)}, ${peer}` : peer
  headers['x-forwarded-proto'] = rt.publicUrl.protocol.slice(0, -1)
  headers['x-forwarded-host'] = rt.publicUrl.host
  headers['x-request-id'] = to.requestId
  return headers
}

/** Who a request is forwarded as: what the pipeline (or the fast lane) found, and the client's address. */
export interface ForwardedAs {
  readonly route: Route
  readonly identity: Identity | null
  readonly session: Session | null
  /** The TCP peer's address. */
  readonly peer: string
  readonly requestId: string
}

/** `ForwardedAs` for a request the Fastify pipeline has run on. */
function forwardedAs(request: FastifyRequest): ForwardedAs {
  const ctx = request.portcullis
  return {
    route: ctx.route as Route,
    identity: ctx.identity,
    session: ctx.session,
    peer: request.socket.remoteAddress ?? '',
    requestId: request.id,
  }
}

/**
 * Request headers never passed to an upstream (names as Node delivers them: lower-case):
 * - hop-by-hop ones (RFC 9110 §7.6.1) and `Expect` (undici refuses `Expect: 100-continue`: a 502 for
 *   every large upload), `Proxy-Authorization` (credentials for a proxy, not the app);
 * - forwarding and URL-rewrite headers a client could use to steer the app: `Forwarded`,
 *   `X-Forwarded-Uri/-Prefix/-Port/-Scheme/-Ssl/-Server`, `X-Original-URL`, `X-Rewrite-URL` (IIS and
 *   Symfony route on them: a public path plus `X-Original-URL: /admin` would be a bypass), `X-Real-IP`,
 *   and method overrides. Portcullis sets `X-Forwarded-For/-Proto/-Host` itself (LANDSCAPE §3 item 4).
 */
const NOT_FORWARDED: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
  'proxy-connection',
  'proxy-authorization',
  'expect',
  'forwarded',
  'x-forwarded-uri',
  'x-forwarded-prefix',
  'x-forwarded-port',
  'x-forwarded-scheme',
  'x-forwarded-ssl',
  'x-forwarded-server',
  'x-forwarded-method',
  'x-original-url',
  'x-original-uri',
  'x-original-host',
  'x-original-method',
  'x-rewrite-url',
  'x-host',
  'x-real-ip',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
])


const getUpstream: NonNullable<FastifyReplyFromHooks['getUpstream']> = (req) =>
  ((req as FastifyRequest).portcullis.route as NonNullable<RequestContext['route']>).upstreamOrigin

// @fastify/http-proxy calls `wsClientOptions.rewriteRequestHeaders(headers, request)` for the upstream
// WebSocket handshake (index.js, defaultWsHeadersRewrite) but its types omit the option; hence the cast.
const wsClientOptions = {
  rewriteRequestHeaders: (headers: IncomingHttpHeaders, request: FastifyRequest) => {
    const out: IncomingHttpHeaders = { ...headers }
    const src = request.headers
    if (src.cookie !== undefined) out.cookie = src.cookie
    if (src.origin !== undefined) out.origin = src.origin
    if (src['user-agent'] !== undefined) out['user-agent'] = src['user-agent']
    return upstreamHeaders(request.portcullis.runtime, forwardedAs(request), out)
  },
} as ClientOptions

export function registerProxy(app: FastifyInstance, pools: UpstreamPools): void {
  void app.register(httpProxy, {
    upstream: '',
    prefix: '/',
    websocket: true,
    config: { kind: 'proxy', label: 'proxy' },
    // Plain HTTP is answered right here, straight through an undici pool (`relay` in
    // `http/upstream.ts`, the one the fast lane uses): the normalized request target as it is, the
    // body streamed from the raw request. Answering in this hook skips http-proxy's handler and its
    // per-request URL parsing; only WebSocket upgrades go on to it, which builds the upstream URL from
    // the path and `getUpstream`'s origin only, so the route's base path is prepended here for them.
    preHandler: (request, reply, next) => {
      const ctx = request.portcullis
      const route = ctx.route as NonNullable<RequestContext['route']>
      // `upgrade` is set by Node's HTTP parser but missing from @types/node.
      if ((request.raw as { upgrade?: boolean }).upgrade === true) {
        if (route.upstreamBasePath !== '') request.raw.url = route.upstreamBasePath + request.url
        next()
        return
      }
      // Headers set on the reply so far (request id, a re-sealed session cookie) go out with the
      // upstream's answer; a response that carries this user's session cookie must never be stored
      // by a shared cache, whatever the app said about its body.
      const own = replyHeaders(reply)
      if (ctx.cookieWritten === true) own['cache-control'] = 'private, no-store'
      const headers = upstreamHeaders(ctx.runtime, forwardedAs(request), { ...request.headers })
      // From here the raw response is written by `relay`; Fastify still runs the onResponse hook
      // (the access line) when it finishes.
      void reply.hijack()
      const res = reply.raw
      const done = (outcome: RelayOutcome): void => {
        if (outcome.logFields !== undefined) ctx.logFields = outcome.logFields
        if (outcome.error !== undefined) {
          ctx.error = outcome.error
          writeError(res, outcome.error, request.headers, request.id, own)
        }
        // A response that never finishes (cut off mid-body, or the client left) gets no access line
        // from Fastify's onResponse hook, which waits for 'finish': write it here once it is closed.
        if (res.writableFinished) return
        const unfinished = (): void => {
          if (res.writableFinished) return
          if (!res.headersSent) res.statusCode = CLIENT_CLOSED
          logRequest(request, reply, ctx.error, ctx.logFields)
        }
        if (res.destroyed) unfinished()
        else res.once('close', unfinished)
      }
      try {
        relay(pools, { route, method: request.method, url: request.url, headers }, request.raw, res, own, done)
      } catch (err) {
        // The reply is hijacked: Fastify's error handler can no longer answer, so answer here.
        done({ error: new PortcullisError('UPSTREAM_UNAVAILABLE', 'The application is not reachable right now.', { cause: err }), responded: false })
      }
    },
    replyOptions: { getUpstream },
    wsClientOptions,
  })
}

/** The headers set on a Fastify reply, as strings (Set-Cookie stays a list). */
function replyHeaders(reply: FastifyReply): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const given = reply.getHeaders()
  for (const name in given) {
    const value = given[name]
    if (value === undefined) continue
    out[name] = Array.isArray(value) ? value.map(String) : String(value)
  }
  return out
}
