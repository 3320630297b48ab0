/**
 * Header hygiene: remove client-sent copies of the headers Portcullis injects, and remove Portcullis's
 * own cookies from the `Cookie` header sent upstream.
 *
 * Names are compared normalized — lower-case, `_` treated as `-` — because many upstream stacks
 * (CGI/WSGI/PHP `HTTP_X_AUTH_REQUEST_USER`, Rails, some nginx setups) read `X_Auth_Request_User` and
 * `X-Auth-Request-User` as the same header. A client must not be able to smuggle an identity header in
 * the underscore spelling past a strip list written with hyphens.
 *
 * @see STYLE.md §3 rule 10; oauth2-proxy `pkg/middleware/headers.go` (`stripNormalizedHeader`);
 *      mod_auth_openidc `oidc_scrub_request_headers`, `oidc_strip_cookies`; LANDSCAPE.md §3 item 5
 */

/**
 * The normalized form of a header name: lower-case, with every `_` replaced by `-`
 * (`X_Auth_Request_User` → `x-auth-request-user`). No regex: this runs for every incoming header.
 */
export function normalizeHeaderName(name: string): string {
  const lower = name.toLowerCase()
  return lower.includes('_') ? lower.replaceAll('_', '-') : lower
}

/**
 * Build the set of normalized header names to strip from every request (identity headers, configured
 * extras, `authorization` variants where bearer is not allowed). Built once per runtime, read-only after.
 */
export function buildStripSet(names: Iterable<string>): ReadonlySet<string> {
  const set = new Set<string>()
  for (const name of names) set.add(normalizeHeaderName(name))
  return set
}

/**
 * Delete, in place, every header whose normalized name is in `strip`, and return the normalized names
 * removed (one entry per deleted key, so a client sending both `x-user` and `x_user` shows up twice —
 * useful when logging spoofing attempts). Node lower-cases incoming names but keeps `_`, so the key
 * itself is normalized too. One pass over the keys, no regex; runs before any identity header is added
 * (strip before inject).
 */
export function stripHeaders(
  headers: Record<string, string | string[] | undefined>,
  strip: ReadonlySet<string>,
): string[] {
  const removed: string[] = []
  if (strip.size === 0) return removed
  for (const key of Object.keys(headers)) {
    const normalized = normalizeHeaderName(key)
    if (strip.has(normalized)) {
      delete headers[key]
      removed.push(normalized)
    }
  }
  return removed
}

/**
 * Remove the cookies for which `isOurs(name)` is true from a `Cookie` header value (our session and
 * transaction cookies, including chunks such as `_portcullis_1`), so that they never reach an upstream.
 *
 * The header is split on `;` and each piece trimmed; the remaining pieces are kept in order and joined
 * with `; `. Empty pieces are dropped; a piece without `=` is kept as it is (browsers treat it as a
 * nameless cookie, never one of ours). Never throws on malformed input. Returns `undefined` when no
 * cookie is left (the caller then drops the header), and the input itself when nothing was removed.
 */
export function removeCookies(
  cookieHeader: string | undefined,
  isOurs: (name: string) => boolean,
): string | undefined {
  if (cookieHeader === undefined) return undefined
  const kept: string[] = []
  let removedAny = false
  for (const piece of cookieHeader.split(';')) {
    const trimmed = piece.trim()
    if (trimmed === '') continue
    const eq = trimmed.indexOf('=')
    if (eq >= 0 && isOurs(trimmed.slice(0, eq).trim())) {
      removedAny = true
      continue
    }
    kept.push(trimmed)
  }
  if (kept.length === 0) return undefined
  return removedAny ? kept.join('; ') : cookieHeader
}
