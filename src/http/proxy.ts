import { BlockList, isIP } from 'node:net'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import httpProxy from '@fastify/http-proxy'
import type { IncomingHttpHeaders } from 'node:http'
import type { ClientOptions } from 'ws'
import { PortcullisError } from '../errors.ts'
import { removeCookies } from '../policy/headers.ts'
import type { RequestContext } from './context.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The proxy step (DESIGN.md §3 step 6): one catch-all @fastify/http-proxy whose upstream is the route
 * the pipeline matched. The same header rewrite serves HTTP and WebSocket upgrades: our own cookies
 * removed from `Cookie`, identity headers injected (the client's copies were stripped in the
 * pipeline), `X-Forwarded-*` set from `server.publicUrl`, optional access token.
 */
export function upstreamHeaders(rt: Runtime, ctx: RequestContext, request: FastifyRequest, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  for (const name in headers) if (NOT_FORWARDED.has(name)) delete headers[name]
  const cookie = removeCookies(headers.cookie, rt.isOwnCookie)
  if (cookie === undefined) delete headers.cookie
  else headers.cookie = cookie
  if (ctx.route !== null && !ctx.route.public) {
    Object.assign(headers, rt.identityHeaders(ctx.identity))
    const session = ctx.session
    if (session !== null) {
      if (rt.config.identity.passAccessToken) headers['x-auth-request-access-token'] = session.accessToken
      if (rt.config.identity.passAuthorizationHeader) headers.authorization = `Bearer ${session.accessToken}`
    }
  }
  const peer = request.socket.remoteAddress ?? ''
  const prior = headers['x-forwarded-for']
  headers['x-forwarded-for'] = prior !== undefined && isTrusted(rt, peer) ? `${String(prior)}, ${peer}` : peer
  headers['x-forwarded-proto'] = rt.publicUrl.protocol.slice(0, -1)
  headers['x-forwarded-host'] = rt.publicUrl.host
  headers['x-request-id'] = request.id
  return headers
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

const trustCache = new WeakMap<Runtime, BlockList | null>()
function isTrusted(rt: Runtime, peer: string): boolean {
  let list = trustCache.get(rt)
  if (list === undefined) {
    list = null
    if (rt.config.server.trustedProxies.length > 0) {
      list = new BlockList()
      for (const entry of rt.config.server.trustedProxies) {
        const [addr, bits] = entry.split('/') as [string, string | undefined]
        const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4'
        if (bits === undefined) list.addAddress(addr, type)
        else list.addSubnet(addr, Number(bits), type)
      }
    }
    trustCache.set(rt, list)
  }
  if (list === null || peer === '') return false
  const addr = peer.startsWith('::ffff:') ? peer.slice(7) : peer
  return list.check(addr, isIP(addr) === 6 ? 'ipv6' : 'ipv4')
}

const onError: NonNullable<FastifyReplyFromHooks['onError']> = (reply, { error }) => {
  const err = error as Error & { code?: string }
  const request = reply.request as FastifyRequest
  // reply-from wraps the socket error (FST_REPLY_FROM_INTERNAL_SERVER_ERROR for a refused
  // connection); the cause's code (ECONNREFUSED, ...) is what tells an operator what went wrong.
  // Both go into the request's access log line.
  const cause = (err.cause as { code?: unknown } | undefined)?.code
  request.portcullis.logFields = { upstreamError: err.code ?? err.name, upstreamCause: typeof cause === 'string' ? cause : undefined }
  const code = err.code !== undefined && TIMEOUT_CODES.has(err.code) ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE'
  void reply.send(
    new PortcullisError(code, code === 'UPSTREAM_TIMEOUT' ? 'The application did not answer in time.' : 'The application is not reachable right now.', {
      cause: err,
    }),
  )
}

/**
 * Hop-by-hop response headers (RFC 9110 §7.6.1) describe the upstream connection, not the client's:
 * copied through, the upstream's `Connection: keep-alive` overrode a client's `Connection: close`
 * (the socket stayed open) and its pool's `Keep-Alive: timeout=5` reached the client.
 * reply-from strips them only for HTTP/2 clients.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])
const rewriteHeaders: NonNullable<FastifyReplyFromHooks['rewriteHeaders']> = (headers, req) => {
  const connection = headers.connection
  const listed = typeof connection === 'string' ? connection.toLowerCase().split(',').map((s) => s.trim()) : []
  const out: IncomingHttpHeaders = {}
  for (const [name, value] of Object.entries(headers)) {
    if (!HOP_BY_HOP.has(name) && !listed.includes(name)) out[name] = value as string | string[] | undefined
  }
  // A response that carries a (re-sealed) session cookie of this user must never be stored by a
  // shared cache, whatever the app said about its body.
  if ((req as FastifyRequest | undefined)?.portcullis?.cookieWritten === true) out['cache-control'] = 'private, no-store'
  return out
}

/** The query string exactly as the client sent it (reply-from would re-encode a parsed copy). */
const rawQuery = (_search: string | undefined, reqUrl: string): string => {
  const q = reqUrl.indexOf('?')
  return q === -1 ? '' : reqUrl.slice(q + 1)
}

const getUpstream: NonNullable<FastifyReplyFromHooks['getUpstream']> = (req) =>
  ((req as FastifyRequest).portcullis.route as NonNullable<RequestContext['route']>).upstreamOrigin

const rewriteRequestHeaders: NonNullable<FastifyReplyFromHooks['rewriteRequestHeaders']> = (req, headers) => {
  const request = req as FastifyRequest
  return upstreamHeaders(request.portcullis.runtime, request.portcullis, request, headers as IncomingHttpHeaders)
}

// @fastify/http-proxy calls `wsClientOptions.rewriteRequestHeaders(headers, request)` for the upstream
// WebSocket handshake (index.js, defaultWsHeadersRewrite) but its types omit the option; hence the cast.
const wsClientOptions = {
  rewriteRequestHeaders: (headers: IncomingHttpHeaders, request: FastifyRequest) => {
    const out: IncomingHttpHeaders = { ...headers }
    const src = request.headers
    if (src.cookie !== undefined) out.cookie = src.cookie
    if (src.origin !== undefined) out.origin = src.origin
    if (src['user-agent'] !== undefined) out['user-agent'] = src['user-agent']
    return upstreamHeaders(request.portcullis.runtime, request.portcullis, request, out)
  },
} as ClientOptions

const TIMEOUT_CODES = new Set(['FST_REPLY_FROM_GATEWAY_TIMEOUT', 'FST_REPLY_FROM_TIMEOUT', 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

export function registerProxy(app: FastifyInstance, opts: { upstreamTimeoutMs: number }): void {
  void app.register(httpProxy, {
    upstream: '',
    prefix: '/',
    websocket: true,
    config: { kind: 'proxy', label: 'proxy' },
    // The body is streamed to the upstream as it arrives; Portcullis never parses it.
    undici: {
      connections: 256,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      headersTimeout: opts.upstreamTimeoutMs,
      bodyTimeout: opts.upstreamTimeoutMs,
    },
    // WebSocket upgrades are proxied inside http-proxy's own handler, which builds the upstream URL
    // from the request path and `getUpstream`'s origin only, so the route's base path was lost
    // (`upstream: http://app/base` got `/x` for HTTP `/base/x`). Prepend it here, as `handler` does
    // for HTTP. `raw.upgrade` is true only for requests Node emitted as 'upgrade'.
    preHandler: async (request) => {
      const route = request.portcullis.route
      // `upgrade` is set by Node's HTTP parser but missing from @types/node.
      if ((request.raw as { upgrade?: boolean }).upgrade === true && route !== null && route.upstreamBasePath !== '') request.raw.url = route.upstreamBasePath + request.url
    },
    // http-proxy re-encodes the query string; send the normalized request target as it is instead.
    // Only the path goes in the source: reply-from percent-decodes the whole source and refuses any
    // `/..` in it, so a query such as `?next=/../x` was refused (400) and one holding `%zz` failed
    // (500). The query is passed through `queryString`, byte for byte.
    handler: (request, reply, _dest, options) => {
      const route = request.portcullis.route as NonNullable<RequestContext['route']>
      const q = request.url.indexOf('?')
      return reply.from(route.upstreamBasePath + (q === -1 ? request.url : request.url.slice(0, q)), options)
    },
    // reply-from's own "fetching from remote server" / "response received" lines: the access log
    // already has one line per request.
    disableRequestLogging: true,
    replyOptions: {
      getUpstream,
      rewriteRequestHeaders,
      rewriteHeaders,
      onError,
      queryString: rawQuery,
      // By default reply-from re-sends a GET answered 503 up to 10 times (reading the app's
      // Retry-After as milliseconds): 11 hits on an app that said it is overloaded. A 503 is the
      // application's answer; pass it through once.
      retryDelay: () => null,
    },
    wsClientOptions,
  })
}
