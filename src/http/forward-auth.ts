import type { IncomingHttpHeaders } from 'node:http'
import { hasDoubleEncoding, normalizePath } from '../policy/path.ts'
import type { Route } from '../policy/routes.ts'
import type { Session } from '../session/model.ts'
import type { Identity } from '../policy/identity.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The forward-auth check's pieces that the pipeline uses (`decide` in mode `check`): which request is
 * being checked (`originalRoute`), and the headers of an allowing 200 (`allowPairs`).
 */
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

/**
 * The route of the request being checked, from `X-Original-URL` (absolute, as ingress-nginx sends
 * it) when a trusted proxy sent it; null when there is none to go by (then a session is required);
 * 'invalid' when it is not a plain absolute http(s) URL or its path cannot be normalized safely.
 * The authority and path are taken from the header as written, not through `new URL()`: a URL parser
 * turns `\` into `/`, resolves dot segments and decodes the host, so `/private/x\..\..\public/`
 * would match a public route while nginx sends it to the app as it is. Userinfo (`a@host`),
 * anything `normalizePath` refuses and a double-encoded path (unless allowed) make it invalid; a path that normalization would change is matched
 * to no route (a session is required).
 */
export function originalRoute(rt: Runtime, headers: IncomingHttpHeaders, peer: string): Route | null | 'invalid' {
  const given = headers['x-original-url']
  if (typeof given !== 'string' || !rt.isTrustedProxy(peer)) return null
  const m = ORIGINAL_URL.exec(given)
  if (m === null) return 'invalid'
  const raw = m[2] ?? '/'
  const path = normalizePath(raw)
  if (path === null || (!rt.config.server.allowDoubleEncoding && hasDoubleEncoding(path))) return 'invalid'
  // The app behind the ingress gets the path as written. One that normalizes to something else
  // (`/private/%2e%2e/public`) may be read either way there, so it is no public route's: the
  // check then asks for a session, whatever route the normalized form would match.
  if (path !== raw) return null
  return rt.routes.match(m[1] as string, path)
}
/** scheme://authority[/path][?query][#fragment]; the authority without userinfo, `\` or spaces. */
const ORIGINAL_URL = /^https?:\/\/([^/?#@\\\s]+)(\/[^?#]*)?(?:[?#].*)?$/i
