/**
 * The identity a request carries upstream, from a session's claims (or, later, a bearer token's), and
 * the identity headers built from it with the configured header → claim map (DESIGN.md §6).
 */
export interface Identity {
  readonly sub: string
  readonly claims: Readonly<Record<string, unknown>>
}

/** A claim value as one header value: arrays comma-joined, scalars as text, objects dropped. */
export function claimText(value: unknown): string {
  if (value === undefined || value === null) return ''
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (Array.isArray(value)) return value.filter((v) => typeof v === 'string' || typeof v === 'number').join(',')
  return ''
}

const UNSAFE_HEADER_CHARS = /[^\x20-\x7e]/g

/**
 * Make a value safe for an HTTP header: control characters are removed (no header injection) and
 * non-ASCII text is percent-encoded as UTF-8 (`José` → `Jos%C3%A9`), since Node refuses such bytes.
 */
export function headerSafe(value: string): string {
  return value.replace(UNSAFE_HEADER_CHARS, (ch) => {
    const code = ch.codePointAt(0) as number
    return code < 0x20 || code === 0x7f ? '' : encodeURIComponent(ch)
  })
}

/** Pre-compiled header builder: one closure per runtime, not per request. */
export type IdentityHeaderBuilder = (identity: Identity | null) => Record<string, string>

export function compileIdentityHeaders(map: Readonly<Record<string, string>>): IdentityHeaderBuilder {
  const pairs = Object.entries(map).map(([header, claim]) => [header.toLowerCase(), claim] as const)
  return (identity) => {
    const out: Record<string, string> = {}
    for (const [header, claim] of pairs) {
      const raw = identity === null ? '' : claim === 'sub' ? identity.sub : claimText(identity.claims[claim])
      out[header] = headerSafe(raw)
    }
    return out
  }
}

/** Claim names the header map needs, so the session keeps them. */
export function claimsUsed(map: Readonly<Record<string, string>>): string[] {
  return [...new Set(Object.values(map))]
}
