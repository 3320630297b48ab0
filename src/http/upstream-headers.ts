import type { IncomingHttpHeaders } from 'node:http'
import { normalizeHeaderName, removeCookies } from '../policy/headers.ts'
import type { Runtime } from '../runtime.ts'
import type { Route } from '../policy/routes.ts'
import type { Identity } from '../policy/identity.ts'
import type { Session } from '../session/model.ts'

/**
 * The request headers an upstream gets (the pipeline's last step, for HTTP and WebSocket upgrades
 * alike): headers named in `Connection` and the ones in `NOT_FORWARDED` dropped, our own cookies
 * removed from `Cookie`, identity headers injected (the client's copies were stripped in step 1),
 * `X-Forwarded-*` set from `server.publicUrl`, optional access token. Changes `headers` in place (the
 * caller passes a copy) and returns it.
 */
export function upstreamHeaders(rt: Runtime, to: ForwardedAs, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  // Headers the client listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1). Done before the
  // identity headers are injected, so a client cannot name one of ours to make it vanish.
  const connection = headers.connection
  if (typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close') {
    for (const listed of connection.toLowerCase().split(',')) delete headers[listed.trim()]
  }
  // Compared normalized (`X_Original_URL` is `X-Original-URL` to CGI, PHP and Symfony apps). Every
  // spelling of the headers set below goes too (`X_Forwarded_Host` would stand in for ours where
  // underscore names are allowed); the client's X-Forwarded-For is read first.
  const prior = headers['x-forwarded-for']
  for (const name in headers) {
    const normalized = normalizeHeaderName(name)
    if (NOT_FORWARDED.has(normalized) || SET_HERE.has(normalized)) delete headers[name]
  }
  const cookie = removeCookies(headers.cookie, rt.isOwnCookie)
  if (cookie === undefined) delete headers.cookie
  else headers.cookie = cookie
  // With passAuthorizationHeader the app takes Authorization as Portcullis's: never the client's.
  if (rt.config.identity.passAuthorizationHeader) delete headers.authorization
  if (to.anonymous) {
    // A CORS preflight let through without a session: no credentials, no identity (not even empty).
    delete headers.authorization
  } else if (!to.route.public) {
    // The client's own credentials are not the app's business on a route Portcullis authenticates:
    // the app would otherwise see a bearer token or Basic password nobody verified next to our
    // identity headers. `routes[].passClientAuthorization` keeps it for apps that check their own.
    if (!to.route.passClientAuthorization) delete headers.authorization
    Object.assign(headers, rt.identityHeaders(to.identity))
    const session = to.session
    if (session !== null) {
      if (rt.config.identity.passAccessToken) headers['x-auth-request-access-token'] = session.accessToken
      if (rt.config.identity.passAuthorizationHeader) headers.authorization = `Bearer ${session.accessToken}`
    }
  }
  const peer = to.peer
  headers['x-forwarded-for'] = prior !== undefined && rt.isTrustedProxy(peer) ? `${String(prior)}, ${peer}` : peer
  headers['x-forwarded-proto'] = rt.publicUrl.protocol.slice(0, -1)
  headers['x-forwarded-host'] = rt.publicUrl.host
  headers['x-request-id'] = to.requestId
  if (to.assertion !== null) headers['x-portcullis-assertion'] = to.assertion
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
  /** Forwarded without authentication on a protected route (a CORS preflight): no identity headers. */
  readonly anonymous: boolean
  /** The signed identity assertion (`identity.assertion`), or null. */
  readonly assertion: string | null
}

/** The headers `upstreamHeaders` sets itself, normalized. */
const SET_HERE: ReadonlySet<string> = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'x-portcullis-assertion'])

/**
 * Request headers never passed to an upstream (names as Node delivers them: lower-case):
 * - hop-by-hop ones (RFC 9110 §7.6.1) and `Expect` (undici refuses `Expect: 100-continue`: a 502 for
 *   every large upload), `Proxy-Authorization` (credentials for a proxy, not the app);
 * - forwarding and URL-rewrite headers a client could use to steer the app: `Forwarded`,
 *   `X-Forwarded-Uri/-Prefix/-Port/-Scheme/-Ssl/-Server`, `X-Original-URL`, `X-Rewrite-URL` (IIS and
 *   Symfony route on them: a public path plus `X-Original-URL: /admin` would be a bypass), `X-Real-IP`,
 *   and method overrides. Portcullis sets `X-Forwarded-For/-Proto/-Host` itself.
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
