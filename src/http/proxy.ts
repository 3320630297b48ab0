import { BlockList, isIP } from 'node:net'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import httpProxy from '@fastify/http-proxy'
import type { IncomingHttpHeaders } from 'node:http'
import type { ClientOptions } from 'ws'
import { PortcullisError } from '../errors.ts'
import { removeCookies } from '../policy/headers.ts'
import type { RequestContext, RuntimeHolder } from './context.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The proxy step (DESIGN.md §3 step 6): one catch-all @fastify/http-proxy whose upstream is the route
 * the pipeline matched. The same header rewrite serves HTTP and WebSocket upgrades: our own cookies
 * removed from `Cookie`, identity headers injected (the client's copies were stripped in the
 * pipeline), `X-Forwarded-*` set from `server.publicUrl`, optional access token.
 */
export function upstreamHeaders(rt: Runtime, ctx: RequestContext, request: FastifyRequest, headers: IncomingHttpHeaders): IncomingHttpHeaders {
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
  request.log.warn({ upstreamError: err.code ?? err.name, route: request.portcullis.label }, 'upstream request failed')
  const code = err.code !== undefined && TIMEOUT_CODES.has(err.code) ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE'
  void reply.send(
    new PortcullisError(code, code === 'UPSTREAM_TIMEOUT' ? 'The application did not answer in time.' : 'The application is not reachable right now.', {
      cause: err,
    }),
  )
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

export function registerProxy(app: FastifyInstance, holder: RuntimeHolder, opts: { upstreamTimeoutMs: number }): void {
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
    // http-proxy re-encodes the query string; send the normalized request target as it is instead.
    handler: (request, reply, _dest, options) => {
      const route = request.portcullis.route as NonNullable<RequestContext['route']>
      return reply.from(route.upstreamBasePath + request.url, options)
    },
    replyOptions: {
      getUpstream,
      rewriteRequestHeaders,
      onError,
    },
    wsClientOptions,
  })
  void holder
}
