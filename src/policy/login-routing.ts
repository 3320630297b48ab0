import type { Config } from '../config/types.ts'

/**
 * Organization-aware login (`provider.domainRouting`): the e-mail a user gives (the `login_hint` of
 * `{prefix}/start`, which the sign-in page sends) picks the organization or connection to log in
 * with. Plain data in and out: the caller decides what wins over these parameters.
 */
export type DomainRouting = Config['provider']['domainRouting']

/** The authorize parameters domain routing may add. */
export interface RoutedParams {
  organization_id?: string
  connection_id?: string
}

/**
 * The domain of an e-mail login hint, lower-cased: the text after its only `@`, with something on
 * both sides. Anything else (no `@`, two of them, an empty side) is no e-mail and has no domain.
 */
export function hintDomain(hint: string): string | undefined {
  const at = hint.indexOf('@')
  if (at <= 0 || at !== hint.lastIndexOf('@') || at === hint.length - 1) return undefined
  return hint.slice(at + 1).toLowerCase()
}

/**
 * The parameters `routing` adds for a login with this e-mail hint: the entry whose domain is the
 * hint's domain (compared without case, exact: a subdomain is another domain), or none. Only the
 * entry's own keys are returned, in a new object.
 */
export function routeLogin(hint: string, routing: DomainRouting): RoutedParams {
  const domain = hintDomain(hint)
  if (domain === undefined) return {}
  // Scanned rather than indexed: the keys keep the case they were written in, and a hint's domain is
  // never used as a property name (`a@__proto__` and `a@constructor` find nothing).
  for (const [name, entry] of Object.entries(routing)) {
    if (name.toLowerCase() !== domain) continue
    const out: RoutedParams = {}
    if (entry.organization_id !== undefined) out.organization_id = entry.organization_id
    if (entry.connection_id !== undefined) out.connection_id = entry.connection_id
    return out
  }
  return {}
}
