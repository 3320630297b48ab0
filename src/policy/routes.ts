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
  /** Path the upstream URL carries (prepended to the request path), '' for none. */
  readonly upstreamBasePath: string
  readonly public: boolean
}

export interface RouteTable {
  match(host: string | undefined, path: string): Route | null
  readonly routes: readonly Route[]
}

function normalizeHost(host: string): string {
  return host.trim().toLowerCase().replace(/\.$/, '')
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
      host: normalizeHost(c.match.host),
      pathPrefix: c.match.pathPrefix,
      upstreamOrigin: upstream.origin,
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
    match(host, path) {
      if (byHost.size > 0 && host !== undefined) {
        const h = normalizeHost(host)
        const hit = first(byHost.get(h), path) ?? first(byHost.get(h.replace(/:\d+$/, '')), path)
        if (hit !== null) return hit
      }
      return first(anyHost, path)
    },
  }
}
