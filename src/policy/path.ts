/**
 * Normalization of the path of a request target before route matching (step 2 of the pipeline).
 *
 * Routes, public-route skips and policies are matched on the normalized path, so two spellings of the
 * same resource must normalize alike, and any spelling whose meaning an upstream could change after we
 * matched (by decoding `%2F` or `%5C`, by stripping `;params` before resolving `..`, by reading `\` as
 * `/`) is refused outright instead of being guessed at. A refusal is a 400 (`PATH_REJECTED`) upstream of
 * this module; here it is `null` (refuse, never guess).
 *
 * This runs on every request: the common case (a plain path) is settled by one char loop that allocates
 * nothing and returns the input itself.
 *
 * @see RFC 3986 §2.3 (unreserved), §5.2.4 (remove_dot_segments), §6.2.2 (syntax-based normalization)
 */

/** Longest path we normalize; longer targets are refused (nginx's default large header buffer is 8k). */
export const MAX_PATH_LENGTH = 8192

const SLASH = 0x2f
const DOT = 0x2e
const PERCENT = 0x25
const BACKSLASH = 0x5c
const HASH = 0x23
const SPACE = 0x20
const DEL = 0x7f

const HEX_UPPER = '0123456789ABCDEF'

/** Value of one hex digit, or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10
  return -1
}

/** RFC 3986 §2.3 unreserved: `A-Z a-z 0-9 - . _ ~`; the only escapes we decode. */
function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === DOT ||
    c === 0x5f ||
    c === 0x7e
  )
}

/**
 * Characters refused anywhere in a raw path: C0 controls, space, DEL (never valid in a request target,
 * RFC 9112 §3.2), `\` (read as `/` by some upstreams and by browsers) and `#` (a fragment is never sent;
 * an upstream that cuts the path at `#` would see a different path than the one we matched).
 */
function isForbiddenRaw(c: number): boolean {
  return c <= SPACE || c === DEL || c === BACKSLASH || c === HASH
}

/**
 * A dot segment carrying Tomcat-style path parameters (`.;x`, `..;x`, also with `;` escaped as `%3B`):
 * servers that strip `;params` before resolving dot segments would climb where we did not.
 */
function isDotSegmentWithParams(segment: string): boolean {
  const rest = segment.startsWith('..') ? segment.slice(2) : segment.startsWith('.') ? segment.slice(1) : null
  if (rest === null) return false
  return rest.startsWith(';') || rest.startsWith('%3B')
}

/**
 * Whether a normalized path still holds a percent-escape once decoded: `%25` followed by two hex digits
 * (`/public/%2561dmin/` is `/public/%61dmin/` after one decoding, `/public/admin/` after two). Upstreams
 * that decode twice — a rewrite in front of the app, a framework that unescapes again — would serve a
 * path other than the one routes matched, so such a path is refused (a 400) unless
 * `server.allowDoubleEncoding` is set.
 */
export function hasDoubleEncoding(path: string): boolean {
  return path.includes('%25') && DOUBLE_ESCAPE.test(path)
}
const DOUBLE_ESCAPE = /%25[0-9A-Fa-f]{2}/

/**
 * Split a request target (`req.url`) at the first `?` into its path and its query. `query` keeps the
 * `?` and is `''` when there is none, so `path + query` gives the target back. The query is never
 * normalized or used for matching (a public-path rule that saw the query could be fooled by it).
 */
export function splitTarget(url: string): { path: string; query: string } {
  const q = url.indexOf('?')
  return q < 0 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q) }
}

/**
 * Normalize the path part of a request target, or return `null` when it cannot be normalized safely.
 *
 * - must start with `/` (so `*`, `''` and absolute-form targets are refused); at most
 *   {@link MAX_PATH_LENGTH} characters;
 * - percent-escapes of unreserved characters are decoded (`%41` → `A`, `%7e` → `~`, `%2e` → `.`); every
 *   other escape is kept with upper-case hex (`%3a` → `%3A`); malformed escapes (`%zz`, `%4`, a trailing
 *   `%`) are refused;
 * - refused: control characters raw or encoded (`%00`–`%1F`, `%7F`), space, `#`, a backslash raw or
 *   `%5C`, an encoded slash `%2F` (an upstream may decode these after we matched: a route bypass);
 * - duplicate slashes collapse; dot segments are removed (RFC 3986 §5.2.4, including ones spelled
 *   `%2e`); a `..` that would climb above the root is refused, as is a `.`/`..` segment followed by
 *   `;params` (`/..;/admin`);
 * - no case folding; a trailing slash is kept (`/a/b/..` → `/a/`).
 *
 * Returns the input string itself when nothing needs to change.
 */
export function normalizePath(rawPath: string): string | null {
  const len = rawPath.length
  if (len === 0 || len > MAX_PATH_LENGTH || rawPath.charCodeAt(0) !== SLASH) return null

  // Fast path: one scan, no allocation. Only `%`, `//` and `/.` can make the normalized form differ
  // (a `.`/`..` segment, with or without `;params`, always begins with `/.`, so `;` alone needs no work).
  let needsWork = false
  let prev = 0
  for (let i = 0; i < len; i++) {
    const c = rawPath.charCodeAt(i)
    if (isForbiddenRaw(c)) return null
    if (c === PERCENT || (prev === SLASH && (c === SLASH || c === DOT))) needsWork = true
    prev = c
  }
  if (!needsWork) return rawPath

  // Slow path: decode into segments, then resolve them. A sentinel `/` at index `len` closes the last
  // segment; `trailing` records whether the result keeps a trailing slash: the raw path ended in `/`,
  // or its last segment was `.` or `..` (RFC 3986 §5.2.4 keeps the slash before it: `/a/b/..` → `/a/`).
  const segments: string[] = []
  let segment = ''
  let trailing = false
  for (let i = 1; i <= len; i++) {
    const c = i < len ? rawPath.charCodeAt(i) : SLASH
    if (c === SLASH) {
      trailing = segment === '' || segment === '.' || segment === '..'
      if (segment === '' || segment === '.') {
        // duplicate slash, or a `.` segment: both disappear
      } else if (segment === '..') {
        if (segments.length === 0) return null // would climb above the root
        segments.pop()
      } else if (isDotSegmentWithParams(segment)) {
        return null
      } else {
        segments.push(segment)
      }
      segment = ''
      continue
    }
    if (c === PERCENT) {
      const hi = i + 2 < len ? hexValue(rawPath.charCodeAt(i + 1)) : -1
      const lo = i + 2 < len ? hexValue(rawPath.charCodeAt(i + 2)) : -1
      if (hi < 0 || lo < 0) return null // `%zz`, `%4`, trailing `%`
      const byte = hi * 16 + lo
      if (byte < SPACE || byte === DEL || byte === SLASH || byte === BACKSLASH) return null
      segment += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX_UPPER[hi]}${HEX_UPPER[lo]}`
      i += 2
      continue
    }
    segment += rawPath[i]
  }
  let result = `/${segments.join('/')}`
  if (trailing && segments.length > 0) result += '/'
  return result === rawPath ? rawPath : result
}

/**
 * Why `normalizePath` refuses a raw path, in words for the operator (`portcullis explain`,
 * `{prefix}/debug`); null when it does not refuse it. A diagnosis only, run after a refusal: the
 * request path never calls it. It walks the path the way `normalizePath` does and names the first
 * rule it breaks.
 */
export function whyPathRejected(rawPath: string): string | null {
  if (normalizePath(rawPath) !== null) return null
  if (rawPath.length === 0 || rawPath.charCodeAt(0) !== SLASH) return 'it does not start with "/"'
  if (rawPath.length > MAX_PATH_LENGTH) return `it is longer than ${MAX_PATH_LENGTH} characters`
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath.charCodeAt(i)
    if (c === BACKSLASH) return 'it holds a backslash (read as "/" by some servers)'
    if (c === HASH) return 'it holds "#" (a fragment is never sent; a server that cuts the path there sees another one)'
    if (isForbiddenRaw(c)) return `it holds a control character or a space (0x${c.toString(16).padStart(2, '0')})`
  }
  let depth = 0
  for (const segment of rawPath.slice(1).split('/')) {
    let decoded = ''
    for (let i = 0; i < segment.length; i++) {
      if (segment[i] !== '%') {
        decoded += segment[i]
        continue
      }
      const escape = segment.slice(i, i + 3)
      const hi = hexValue(segment.charCodeAt(i + 1))
      const lo = i + 2 < segment.length ? hexValue(segment.charCodeAt(i + 2)) : -1
      if (hi < 0 || lo < 0) return `it holds an invalid percent-escape ("${escape}")`
      const byte = hi * 16 + lo
      if (byte === SLASH) return `it holds an encoded slash ("${escape}"), which a server may decode after routing`
      if (byte === BACKSLASH) return `it holds an encoded backslash ("${escape}")`
      if (byte < SPACE || byte === DEL) return `it holds an encoded control character ("${escape}")`
      decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX_UPPER[hi]}${HEX_UPPER[lo]}`
      i += 2
    }
    if (decoded === '..') {
      if (depth === 0) return 'its ".." segments climb above "/"'
      depth--
    } else if (isDotSegmentWithParams(decoded)) {
      return `it has a dot segment with ;parameters ("${decoded}"), which servers that drop ;parameters first resolve differently`
    } else if (decoded !== '' && decoded !== '.') {
      depth++
    }
  }
  return 'it cannot be normalized safely'
}
