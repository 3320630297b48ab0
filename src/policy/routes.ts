import type { RouteConfig } from '../config/types.ts'

/**
 * The route table: host first, then the longest path prefix, on the normalized path (DESIGN.md §3
 * step 2). A prefix matches on a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`).
 * Routes naming a host are tried before host-less ones.
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
}

export interface RouteTable {
  /** The route for this Host header and normalized path; null when none matches. */
  match(host: string | undefined, path: string): Route | null
  readonly routes: readonly Route[]
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
 * `/admin` route and fall to a broader (public) one while the app serves `/admin` (LANDSCAPE §3 item 3).
 * The upstream still receives the path as sent.
 */
export function matchPath(path: string): string {
  return PARAMS.test(path) ? path.replace(SEGMENT_PARAMS, '') || '/' : path
}

function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === '/' || path === prefix) return true
  if (!path.startsWith(prefix)) return false
  return prefix.endsWith('/') || path.charCodeAt(prefix.length) === 47 /* '/' */
}

export function compileRoutes(configs: readonly RouteConfig[]): RouteTable {
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

  const first = (list: readonly Route[] | undefined, path: string) => {
    if (list === undefined) return null
    for (const r of list) if (prefixMatches(r.pathPrefix, path)) return r
    return null
  }
  return {
    routes,
    match(host, rawPath) {
      const path = matchPath(rawPath)
      if (byHost.size > 0 && host !== undefined) {
        const h = normalizeHost(host)
        if (h === null) return null
        const hit = first(byHost.get(h), path) ?? first(byHost.get(h.replace(/:\d+$/, '')), path)
        if (hit !== null) return hit
      }
      return first(anyHost, path)
    },
  }
}
