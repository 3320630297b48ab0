import type { RouteConfig } from '../config/types.ts'
import { compilePolicy, type AccessConfig, type RoutePolicy } from './access.ts'

/**
 * The route table: host first, then the longest path prefix, on the normalized path (step 2 of the
 * pipeline). A prefix matches on a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`);
 * a prefix written with a trailing slash also matches the path without it (`/admin/` matches
 * `/admin`: Express, Koa and most apps serve the two alike, so `/admin` must not fall to a broader,
 * public route). Routes naming a host are tried before host-less ones.
 */
export interface Route {
  /** Stable id for logs: `routes[2]`. */
  readonly id: string
  readonly host: string
  readonly pathPrefix: string
  /** Upstream origin, e.g. `http://127.0.0.1:8080`. */
  readonly upstreamOrigin: string
  /** Its `host[:port]`, the Host header sent upstream (parsed once, not per request). */
  readonly upstreamHost: string
  /** Path the upstream URL carries (prepended to the request path), '' for none. */
  readonly upstreamBasePath: string
  readonly public: boolean
  /** Forward the client's own `Authorization` header (non-public routes drop it otherwise). */
  readonly passClientAuthorization: boolean
  /** The prefix is matched on the folded path (`foldPath`): no case, no trailing dots or spaces. */
  readonly caseInsensitive: boolean
  /** Who may use it and how strong their login must be (`policy/access.ts`). */
  readonly policy: RoutePolicy
  /** Accepts `Authorization: Bearer <JWT>` (API clients). */
  readonly bearer: boolean
  /** Audiences a bearer token may carry (one must be in its `aud`). */
  readonly audiences: readonly string[]
  /** RFC 9728 resource identifier, or '' when the route has none. */
  readonly resource: string
  /** Its protected-resource metadata URL (RFC 9728 §3.1: the well-known path before the resource's path), or ''. */
  readonly resourceMetadata: string
  /** CORS preflights are forwarded without a session (and without identity). */
  readonly allowPreflight: boolean
  /** Extra authorize parameters of logins for this route (`routes[].loginParams`). */
  readonly loginParams: Readonly<Record<string, string>>
}

export interface RouteTable {
  /** The route for this Host header and normalized path; null when none matches. */
  match(host: string | undefined, path: string): Route | null
  /**
   * `match` step by step, for explanations (`policy/explain.ts`): the route the longest-prefix rule
   * found, the one the case-folding guard made of it, and where it was found. Not for the request
   * path: `match` allocates nothing.
   */
  trace(host: string | undefined, path: string): MatchTrace
  readonly routes: readonly Route[]
  /** The protected resources the bearer routes name (RFC 9728), one per distinct `resource`. */
  readonly resources: readonly ProtectedResource[]
}

/** A resource of `routes[].resource`, as its protected-resource metadata describes it. */
export interface ProtectedResource {
  /** The resource identifier, as configured. */
  readonly resource: string
  /** Its host (`host[:port]`, lower-case), and the path its metadata is served at (RFC 9728 §3.1). */
  readonly host: string
  readonly metadataPath: string
  /** The scopes its routes require (every one of them, in order, once). */
  readonly scopes: readonly string[]
}

/** The well-known path of protected-resource metadata (RFC 9728 §3). */
export const RESOURCE_METADATA_PATH = '/.well-known/oauth-protected-resource'

/**
 * The resource whose metadata a request for `path` (normalized, no query) on `host` asks for, or null
 * (a 404): the resource whose metadata path it is (`/.well-known/oauth-protected-resource/mcp` for
 * `https://host/mcp`); for the bare well-known path, a resource at its origin's root, or else the only
 * resource there is. Where several resources share the path, the one on the request's host.
 */
export function resourceFor(resources: readonly ProtectedResource[], host: string | undefined, path: string): ProtectedResource | null {
  const wanted = path.length > RESOURCE_METADATA_PATH.length && path.endsWith('/') ? path.slice(0, -1) : path
  let candidates = resources.filter((r) => r.metadataPath === wanted)
  if (candidates.length === 0 && wanted === RESOURCE_METADATA_PATH && resources.length === 1) candidates = [...resources]
  if (candidates.length > 1) {
    const h = host === undefined ? null : normalizeHost(host)
    candidates = candidates.filter((r) => r.host === h)
  }
  return candidates.length === 1 ? (candidates[0] as ProtectedResource) : null
}

/** How `match` arrived at its answer (`RouteTable.trace`). */
export interface MatchTrace {
  /** The first route whose host and prefix fit (longest prefix first), before the case-folding guard. */
  readonly hit: Route | null
  /** What `match` answers: `hit`, or the longer protected route the guard chose instead of a public hit. */
  readonly chosen: Route | null
  /**
   * Where `hit` was found: among the routes naming the request's host with its port (`exact`; the
   * same as without when it has none), naming the host without the port (`portless`), or host-less
   * routes (`any`); null when nothing fits.
   */
  readonly from: 'exact' | 'portless' | 'any' | null
  /** The Host header is not a plain host while some route names a host: no route is chosen. */
  readonly unusableHost: boolean
}

/** How a request's Host fits one route's `match.host` (`routeFit`). */
export type HostFit = 'exact' | 'portless' | 'any' | 'other' | 'unusable'

/** Whether one route fits a request, and why (`routeFit`). */
export interface RouteFit {
  /**
   * `exact`: the route names the request's host (and port, when the request gives one); `portless`:
   * it names the host without the request's port; `any`: it names no host; `other`: another host,
   * or the request has no Host header; `unusable`: the Host header is not a plain host.
   */
  readonly host: HostFit
  /** The path the prefix is compared with: `;params` removed, folded for a case-insensitive route. */
  readonly path: string
  /** The prefix compared (folded for a case-insensitive route). */
  readonly prefix: string
  /** The prefix matches that path on a segment boundary. */
  readonly prefixMatches: boolean
  /**
   * A protected route whose prefix matches the path once both are folded: what the case-folding
   * guard tests when a public route matched with a shorter prefix. False for public routes.
   */
  readonly guardMatches: boolean
}

/**
 * Whether one route, taken alone, fits a Host header and a normalized path, with the pieces the
 * answer rests on (the same tests `match` runs, on the same helpers). Which fitting route wins is the
 * table's business (`RouteTable.match`, `RouteTable.trace`).
 */
export function routeFit(route: Route, host: string | undefined, path: string): RouteFit {
  const p = matchPath(path)
  const compared = route.caseInsensitive ? foldPath(p) : p
  const prefix = route.caseInsensitive ? foldPath(route.pathPrefix) : route.pathPrefix
  return {
    host: hostFit(route.host, host),
    path: compared,
    prefix,
    prefixMatches: prefixMatches(prefix, compared),
    guardMatches: !route.public && prefixMatches(foldPath(route.pathPrefix), foldPath(p)),
  }
}

function hostFit(routeHost: string, host: string | undefined): HostFit {
  if (routeHost === '') return 'any'
  if (host === undefined) return 'other'
  const h = normalizeHost(host)
  if (h === null) return 'unusable'
  if (h === routeHost) return 'exact'
  return h.replace(/:\d+$/, '') === routeHost ? 'portless' : 'other'
}

const HOST_HEADER = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$/

/**
 * A Host header as `hostname[:port]`, lower-cased, without a trailing dot; null when it is not a plain
 * host (`a.example:80:80`, `a.example:`, spaces): such a request must not fall through to a host-less
 * route when a host-specific one exists for what the client meant.
 */
export function normalizeHost(host: string): string | null {
  const m = HOST_HEADER.exec(host.trim().toLowerCase())
  if (m === null) return null
  const name = (m[1] as string).replace(/\.$/, '')
  if (name === '' || name.endsWith('.')) return null
  return m[2] === undefined ? name : `${name}:${m[2]}`
}

const PARAMS = /;|%3b/i
const SEGMENT_PARAMS = /(?:;|%3[bB])[^/]*/g

/**
 * The path routes are matched on: every segment's `;parameters` removed (`/admin;x/y` → `/admin/y`),
 * because servlet containers and others drop them before routing — else `/admin;x` would miss the
 * `/admin` route and fall to a broader (public) one while the app serves `/admin`.
 * The upstream still receives the path as sent.
 */
export function matchPath(path: string): string {
  return PARAMS.test(path) ? path.replace(SEGMENT_PARAMS, '') || '/' : path
}

function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === '/' || path === prefix) return true
  if (!path.startsWith(prefix)) {
    // `/admin/` also covers `/admin`.
    return prefix.length === path.length + 1 && prefix.endsWith('/') && prefix.startsWith(path)
  }
  return prefix.endsWith('/') || path.charCodeAt(prefix.length) === 47 /* '/' */
}

/**
 * A path as upstreams that fold it read it (IIS, Windows and macOS file systems, some app servers):
 * lower-case, with trailing dots and spaces (raw or `%20`) cut from every segment, so `/Admin.`,
 * `/ADMIN%20/x` and `/admin/x` are one path. Only routes with `match.caseInsensitive` are matched on
 * it; their prefix is folded alike at compile time.
 */
export function foldPath(path: string): string {
  const lower = path.toLowerCase()
  if (!FOLDABLE.test(lower)) return lower
  return lower.replace(TRAILING_DOTS_SPACES, '')
}
const FOLDABLE = /(?:\.|%20| )(?:\/|$)/
const TRAILING_DOTS_SPACES = /(?:\.|%20| )+(?=\/|$)/g

/**
 * The login URL a browser without the login a route needs is sent to: `{prefix}/start`, which picks
 * the route's login parameters and step-up from `rd`, or the sign-in page (`provider.signInPage`)
 * for a first login on a route whose loginParams do not already pick the organization or connection.
 * The pipeline and `portcullis explain` both build it here.
 */
export function loginUrlFor(publicUrl: string | URL, prefix: string, signInPage: boolean, route: Route | null, target: string, stepUp: boolean): string {
  const picked = route !== null && (route.loginParams.organization_id !== undefined || route.loginParams.connection_id !== undefined)
  const page = signInPage && !stepUp && !picked ? 'sign_in' : 'start'
  const url = new URL(`${prefix}/${page}`, publicUrl)
  if (target !== '') url.searchParams.set('rd', target)
  return url.href
}

/**
 * RFC 9728 §3.1: `https://api.example/mcp` → `https://api.example/.well-known/oauth-protected-resource/mcp`
 * (a resource at its origin's root: no suffix).
 */
export function resourceMetadataUrl(resource: string): string {
  const u = new URL(resource)
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '')
  return `${u.origin}${RESOURCE_METADATA_PATH}${path}`
}

/** Access settings of a config without an `access` section: its defaults. */
export const DEFAULT_ACCESS: AccessConfig = { groupsClaim: 'groups', rolesClaim: 'roles', organizationClaim: 'org_id', mfaAmrValues: ['mfa', 'otp', 'hwk'], mfaAcrValues: [] }

/**
 * `clientId`: the audience of bearer tokens on routes that name none (and no resource).
 */
export function compileRoutes(configs: readonly RouteConfig[], access: AccessConfig = DEFAULT_ACCESS, clientId = ''): RouteTable {
  const routes: Route[] = configs.map((c, i) => {
    const upstream = new URL(c.upstream)
    return {
      id: `routes[${i}]`,
      host: normalizeHost(c.match.host) ?? c.match.host.toLowerCase(),
      pathPrefix: c.match.pathPrefix,
      upstreamOrigin: upstream.origin,
      upstreamHost: upstream.host,
      upstreamBasePath: upstream.pathname === '/' ? '' : upstream.pathname.replace(/\/$/, ''),
      public: c.public,
      passClientAuthorization: c.passClientAuthorization,
      caseInsensitive: c.match.caseInsensitive,
      policy: compilePolicy({ id: `routes[${i}]`, allow: c.allow, require: c.require, loginParams: c.loginParams, requiredScopes: c.requiredScopes }, access),
      bearer: c.bearer,
      audiences: c.resource !== undefined ? [c.resource] : c.audience !== '' ? [c.audience] : clientId === '' ? [] : [clientId],
      resource: c.resource ?? '',
      resourceMetadata: c.resource === undefined ? '' : resourceMetadataUrl(c.resource),
      allowPreflight: c.allowPreflight,
      loginParams: c.loginParams,
    }
  })
  const byLongest = (a: Route, b: Route) => b.pathPrefix.length - a.pathPrefix.length
  const byHost = new Map<string, Route[]>()
  const anyHost: Route[] = []
  for (const r of routes) {
    if (r.host === '') anyHost.push(r)
    else byHost.set(r.host, [...(byHost.get(r.host) ?? []), r])
  }
  anyHost.sort(byLongest)
  for (const list of byHost.values()) list.sort(byLongest)

  // A case-insensitive route's prefix, folded once; the request path is folded at most once per match.
  const folded = new Map<Route, string>()
  for (const r of routes) if (r.caseInsensitive) folded.set(r, foldPath(r.pathPrefix))
  const anyFolded = folded.size > 0
  // Every protected route's prefix folded too: a public match yields to a longer protected prefix
  // that the path matches once case and trailing dots are ignored (`/ADMIN` under a public `/` with a
  // protected `/admin/`): Express and IIS serve those alike, and when in doubt a session is required.
  const guard = new Map<Route, string>()
  for (const r of routes) if (!r.public) guard.set(r, foldPath(r.pathPrefix))
  const guarded = (hit: Route, lists: ReadonlyArray<readonly Route[] | undefined>, path: string): Route => {
    let best: Route = hit
    let bestLength = hit.pathPrefix.length
    const f = foldPath(path)
    for (const list of lists) {
      if (list === undefined) continue
      for (const r of list) {
        const prefix = guard.get(r)
        if (prefix !== undefined && r.pathPrefix.length > bestLength && prefixMatches(prefix, f)) {
          best = r
          bestLength = r.pathPrefix.length
        }
      }
    }
    return best
  }
  const first = (list: readonly Route[] | undefined, path: string, foldedPath: string) => {
    if (list === undefined) return null
    for (const r of list) {
      const prefix = folded.get(r)
      if (prefix === undefined ? prefixMatches(r.pathPrefix, path) : prefixMatches(prefix, foldedPath)) return r
    }
    return null
  }
  const byResource = new Map<string, { host: string; metadataPath: string; scopes: Set<string> }>()
  for (const r of routes) {
    if (r.resource === '') continue
    const known = byResource.get(r.resource)
    if (known !== undefined) {
      for (const scope of r.policy.requiredScopes) known.scopes.add(scope)
      continue
    }
    const u = new URL(r.resource)
    byResource.set(r.resource, { host: u.host.toLowerCase(), metadataPath: new URL(r.resourceMetadata).pathname, scopes: new Set(r.policy.requiredScopes) })
  }
  const resources: ProtectedResource[] = [...byResource].map(([resource, v]) => ({ resource, host: v.host, metadataPath: v.metadataPath, scopes: [...v.scopes] }))
  return {
    routes,
    resources,
    match(host, rawPath) {
      const path = matchPath(rawPath)
      const fold = anyFolded ? foldPath(path) : path
      // The guard looks only among the routes the match came from: a host's own routes are never
      // traded for a host-less one.
      if (byHost.size > 0 && host !== undefined) {
        const h = normalizeHost(host)
        if (h === null) return null
        const exact = byHost.get(h)
        const portless = byHost.get(h.replace(/:\d+$/, ''))
        const hit = first(exact, path, fold) ?? first(portless, path, fold)
        if (hit !== null) return hit.public ? guarded(hit, [exact, portless], path) : hit
      }
      const hit = first(anyHost, path, fold)
      return hit !== null && hit.public ? guarded(hit, [anyHost], path) : hit
    },
    // `match`, step for step, keeping what it learns on the way (test/unit/policy/explain.test.ts
    // holds the two to the same answers).
    trace(host, rawPath) {
      const path = matchPath(rawPath)
      const fold = anyFolded ? foldPath(path) : path
      if (byHost.size > 0 && host !== undefined) {
        const h = normalizeHost(host)
        if (h === null) return { hit: null, chosen: null, from: null, unusableHost: true }
        const exact = byHost.get(h)
        const portless = byHost.get(h.replace(/:\d+$/, ''))
        const onHost = first(exact, path, fold)
        const hit = onHost ?? first(portless, path, fold)
        if (hit !== null) return { hit, chosen: hit.public ? guarded(hit, [exact, portless], path) : hit, from: onHost !== null ? 'exact' : 'portless', unusableHost: false }
      }
      const hit = first(anyHost, path, fold)
      return { hit, chosen: hit !== null && hit.public ? guarded(hit, [anyHost], path) : hit, from: hit === null ? null : 'any', unusableHost: false }
    },
  }
}
