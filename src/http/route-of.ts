import { normalizePath } from '../policy/path.ts'
import type { Route } from '../policy/routes.ts'
import type { Runtime } from '../runtime.ts'

/**
 * The route a validated absolute return URL (`rd`) leads to, as the pipeline would match a request
 * for it: its host, and its path normalized. Null when none matches.
 */
export function routeOf(rt: Runtime, url: string): Route | null {
  const u = new URL(url)
  const path = normalizePath(u.pathname)
  return path === null ? null : rt.routes.match(u.host, path)
}
