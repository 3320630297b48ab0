import type { IncomingHttpHeaders } from 'node:http'
import { hasDoubleEncoding, normalizePath } from '../policy/path.ts'
import { verifySuffix } from './facts.ts'
import type { Route } from '../policy/routes.ts'
import type { Session } from '../session/model.ts'
import type { Identity } from '../policy/identity.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The forward-auth checks' pieces that the pipeline uses (`decide` in modes `check` and `verify`):
 * which request is being checked (`originalRequest`), and the headers of an allowing 200 (`allowPairs`).
 */
/** The nginx family's check (`{prefix}/auth`), for the access line. */
export const CHECK_LABEL = 'auth:check'

/**
 * The headers of a 200: every identity header (empty for a public route), the access token where the
 * operator asked for it, and no caching (a shared cache must not hand one user's identity to another).
 */
export function allowHeaders(rt: Runtime, identity: Identity | null, session: Session | null): Record<string, string> {
  const out: Record<string, string> = { 'cache-control': 'no-store', ...rt.identityHeaders(identity) }
  if (session !== null && rt.config.identity.passAccessToken) out['x-auth-request-access-token'] = session.accessToken
  if (session !== null && rt.config.identity.passAuthorizationHeader) out.authorization = `Bearer ${session.accessToken}`
  return out
}

/**
 * `allowHeaders` as a flat `[name, value, ...]` list for `writeHead`, built once per session object
 * (the open-cache hands the same one to every request with the same cookie), bearer token's claims
 * object, and runtime.
 */
export function allowPairs(rt: Runtime, identity: Identity | null, session: Session | null): readonly string[] {
  const key: object = session ?? identity?.claims ?? rt
  const known = PAIRS.get(key)
  if (known !== undefined && known.rt === rt) return known.pairs
  const pairs = Object.entries(allowHeaders(rt, identity, session)).flat()
  PAIRS.set(key, { rt, pairs })
  return pairs
}
const PAIRS = new WeakMap<object, { readonly rt: Runtime; readonly pairs: readonly string[] }>()

/** The relay family's check (`{prefix}/verify`), for the access line. */
export const VERIFY_LABEL = 'auth:verify'

/**
 * The request a forward-auth check asks about, as the pipeline judges it.
 * - `route`: its route; null when there is none to go by (then a session is required, under
 *   `access.defaultAllow`); 'invalid' when the URL is not a plain absolute http(s) URL or its path
 *   cannot be normalized safely (a 403).
 * - `method`: the original method (the check's own when no source names one).
 * - `url`: the original absolute URL (the login's `rd`), or null when it is not known.
 * - `ignored`: the forwarding headers an untrusted peer sent, which were not believed (for the log:
 *   the usual cause of a redirect loop behind a front proxy that is not in `server.trustedProxies`).
 */
export interface Original {
  readonly route: Route | null | 'invalid'
  readonly method: string
  readonly url: string | null
  readonly ignored: boolean
}

/**
 * The original request of a forward-auth check, from the first source there is:
 * 1. `X-Original-URL` (absolute) and `X-Original-Method`: ingress-nginx, plain nginx;
 * 2. `X-Forwarded-Uri` (path and query) with `X-Forwarded-Host` (else the check's Host),
 *    `X-Forwarded-Proto` (else the public URL's scheme) and `X-Forwarded-Method`: Traefik, Caddy;
 * 3. for the relay check only, the check request itself, Envoy's ext_authz way: its method, its
 *    Host and the path after `{prefix}/verify` (Envoy's `path_prefix`), with `X-Forwarded-Proto`.
 * The headers of 1 and 2 are believed only from a peer in `server.trustedProxies`; 3 needs no
 * trust, as it is the check's own URL. With none of them the check is judged on no route.
 * The check's own query string is never read (Caddy appends the original query to it), except as
 * part of the original path in 3.
 *
 * `rawTarget` is the check's request target as the client sent it (not normalized: a suffix
 * `/../admin` must be judged as the app behind the gateway will read it, not as a path of ours).
 */
export function originalRequest(rt: Runtime, headers: IncomingHttpHeaders, peer: string, method: string, rawTarget: string, relay: boolean): Original {
  const h = headers
  const forwarded = h['x-original-url'] !== undefined || h['x-forwarded-uri'] !== undefined
  const trusted = forwarded && rt.isTrustedProxy(peer)
  if (trusted) {
    const original = single(h['x-original-url'])
    const uri = single(h['x-forwarded-uri'])
    let fromForwarded: string | null = null
    if (uri !== undefined) {
      const host = single(h['x-forwarded-host']) ?? h.host
      if (host === undefined || uri.charCodeAt(0) !== SLASH) return INVALID
      fromForwarded = `${schemeOf(rt, h, true)}://${host}${uri}`
    }
    // Each family's controller sets its own headers and passes the client's copies of the other
    // family's on (ingress-nginx a client's X-Forwarded-Uri, Traefik and Caddy a client's
    // X-Original-URL): two that name different requests are a forgery, never a choice.
    if (original !== undefined && fromForwarded !== null && !sameRequest(original, fromForwarded)) return INVALID
    if (original !== undefined) return judge(rt, original, single(h['x-original-method']) ?? method)
    if (fromForwarded !== null) return judge(rt, fromForwarded, single(h['x-forwarded-method']) ?? method)
  }
  const ignored = forwarded && !trusted
  if (relay) {
    const suffix = verifySuffix(`${rt.prefix}/verify`, rawTarget)
    // `{prefix}/verify?x`: the query is the check's own, not a path's.
    if (suffix !== null && suffix.charCodeAt(0) === SLASH && h.host !== undefined) {
      return { ...judge(rt, `${schemeOf(rt, h, rt.isTrustedProxy(peer))}://${h.host}${suffix}`, method), ignored }
    }
  }
  return ignored ? UNKNOWN_IGNORED : UNKNOWN
}

/**
 * Whether two absolute URLs name the same request: the same authority (case-insensitive) and target;
 * the scheme is not compared (ingress-nginx blanks X-Forwarded-Proto, a TLS front may say either).
 */
function sameRequest(a: string, b: string): boolean {
  const ma = AUTHORITY_TARGET.exec(a)
  const mb = AUTHORITY_TARGET.exec(b)
  if (ma === null || mb === null) return false
  return (ma[1] as string).toLowerCase() === (mb[1] as string).toLowerCase() && (ma[2] ?? '/') === (mb[2] ?? '/')
}
const AUTHORITY_TARGET = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)([/?#].*)?$/i
const SLASH = 0x2f
const INVALID: Original = { route: 'invalid', method: 'GET', url: null, ignored: false }
const UNKNOWN: Original = { route: null, method: 'GET', url: null, ignored: false }
const UNKNOWN_IGNORED: Original = { ...UNKNOWN, ignored: true }

/** The first value of a header that may be sent once; a list (`a, b`) is taken as written. */
function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** The original scheme: a trusted `X-Forwarded-Proto` (`http`/`https`), else the public URL's. */
function schemeOf(rt: Runtime, h: IncomingHttpHeaders, trusted: boolean): string {
  const proto = trusted ? single(h['x-forwarded-proto'])?.toLowerCase() : undefined
  return proto === 'http' || proto === 'https' ? proto : rt.publicUrl.protocol.slice(0, -1)
}

/**
 * An absolute original URL judged: its route, taken from the authority and path as written, not
 * through `new URL()`: a URL parser turns `\` into `/`, resolves dot segments and decodes the host,
 * so `/private/x\..\..\public/` would match a public route while the app behind the front proxy
 * gets it as it is. Userinfo (`a@host`), anything `normalizePath` refuses and a double-encoded path
 * (unless allowed) make it invalid; a path that normalization would change is judged by the
 * rules of both its readings (`eitherReading`).
 */
function judge(rt: Runtime, given: string, method: string): Original {
  const m = ORIGINAL_URL.exec(given)
  if (m === null) return INVALID
  const raw = m[2] ?? '/'
  const path = normalizePath(raw)
  if (path === null || (!rt.config.server.allowDoubleEncoding && hasDoubleEncoding(path))) return INVALID
  const host = m[1] as string
  const route = path === raw ? rt.routes.match(host, path) : eitherReading(rt, host, raw, path)
  return route === INVALID_ROUTE ? INVALID : { route, method: method.toUpperCase(), url: given, ignored: false }
}

/**
 * The route of a path that normalization changes (`/public/../admin`, `/admin/..%2e/x`, `//x`): the app
 * behind the front proxy gets it as written and may read it either way (resolving the dot segments
 * or not), so it must pass the rules of both readings, the normalized path's route and the route its
 * raw text falls under. Public is what neither reading needs: a public reading gives way to the
 * other, two public ones ask for a session (no route), two different protected routes are refused.
 */
function eitherReading(rt: Runtime, host: string, raw: string, normalized: string): Route | null | typeof INVALID_ROUTE {
  const resolved = rt.routes.match(host, normalized)
  const asWritten = rt.routes.match(host, raw)
  const a = resolved?.public === true ? null : resolved
  const b = asWritten?.public === true ? null : asWritten
  if (a === null) return b
  if (b === null || a === b) return a
  return INVALID_ROUTE
}
const INVALID_ROUTE = Symbol('invalid')

/** scheme://authority[/path][?query][#fragment]; the authority without userinfo, `\` or spaces. */
const ORIGINAL_URL = /^https?:\/\/([^/?#@\\\s]+)(\/[^?#]*)?(?:[?#].*)?$/i
