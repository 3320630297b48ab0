/**
 * The identity a request carries upstream, from a session's claims (or, later, a bearer token's), and
 * the identity headers built from it with the configured header → claim map (`identity.headers`).
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

// `u`: match a surrogate pair (emoji) as one code point; without it each half is matched alone and
// encodeURIComponent throws "URI malformed" on it.
const UNSAFE_HEADER_CHARS = /[^\x20-\x7e]/gu

/**
 * Make a value safe for an HTTP header: control characters are removed (no header injection) and
 * non-ASCII text is percent-encoded as UTF-8 (`José` → `Jos%C3%A9`), since Node refuses such bytes.
 * A lone surrogate (possible in a JSON claim) becomes U+FFFD instead of throwing.
 */
export function headerSafe(value: string): string {
  return value.replace(UNSAFE_HEADER_CHARS, (ch) => {
    const code = ch.codePointAt(0) as number
    if (code < 0x20 || code === 0x7f) return ''
    return code >= 0xd800 && code <= 0xdfff ? '%EF%BF%BD' : encodeURIComponent(ch)
  })
}

/** Pre-compiled header builder: one closure per runtime, not per request. */
export type IdentityHeaderBuilder = (identity: Identity | null) => Readonly<Record<string, string>>

export function compileIdentityHeaders(map: Readonly<Record<string, string>>): IdentityHeaderBuilder {
  const pairs = Object.entries(map).map(([header, claim]) => [header.toLowerCase(), claim] as const)
  const build = (identity: Identity | null): Record<string, string> => {
    const out: Record<string, string> = {}
    for (const [header, claim] of pairs) {
      const raw = identity === null ? '' : claim === 'sub' ? identity.sub : claimText(identity.claims[claim])
      out[header] = headerSafe(raw)
    }
    return out
  }
  // Hot path: a session's claims object is shared by every request that opened the same cookie (the
  // open-cache), and belongs to one session (one `sub`), so its headers are built once per claims
  // object, not once per request. Callers copy from the result and never change it.
  const memo = new WeakMap<object, Readonly<Record<string, string>>>()
  const empty = build(null)
  return (identity) => {
    if (identity === null) return empty
    let headers = memo.get(identity.claims)
    if (headers === undefined) {
      headers = build(identity)
      memo.set(identity.claims, headers)
    }
    return headers
  }
}

/** Claim names the header map needs, so the session keeps them. */
export function claimsUsed(map: Readonly<Record<string, string>>): string[] {
  return [...new Set(Object.values(map))]
}
