/**
 * Validation of the `rd` return URL (login start, sign-out, error-page retry links).
 *
 * Two layers, as in mod_auth_openidc (`_oidc_redirect_url_illegal_substrings` + a payload list) and
 * oauth2-proxy (`pkg/app/redirect/validator.go` + `testdata/openredirects.txt`):
 *
 * 1. a table of forbidden shapes checked on the raw string, before any parsing — the WHATWG parser
 *    silently "repairs" many tricks (it drops tabs and newlines, reads `\` as `/`, decodes `%61` in hosts,
 *    turns `0x7f.1` into `127.0.0.1`), so a string that needed repairing is refused rather than repaired;
 * 2. a WHATWG `URL` parse, and the final decision taken on the parsed origin and host.
 *
 * Every payload in `test/fixtures/open-redirects.txt` must be refused.
 */
import { domainToASCII } from 'node:url'

/** Longest `rd` we look at; anything longer is refused unread (browsers and proxies cap URLs near here). */
export const MAX_REDIRECT_LENGTH = 2048

/**
 * Why a redirect target was refused. A string-literal union so that callers and logs branch on a
 * stable value, and so that tests can assert *which* rule caught a payload.
 */
export type RedirectRefusal =
  | 'empty'
  | 'too-long'
  | 'control-or-space'
  | 'encoded-control'
  | 'backslash'
  | 'scheme-relative'
  | 'encoded-slash'
  | 'not-path-or-http-url'
  | 'authority-empty'
  | 'userinfo'
  | 'authority-encoded'
  | 'host-characters'
  | 'host-rewritten'
  | 'host-idn'
  | 'host-trailing-dot'
  | 'host-empty-label'
  | 'path-double-slash'
  | 'unparseable'
  | 'origin-mismatch'
  | 'insecure-scheme'
  | 'host-not-allowed'

/**
 * Outcome of {@link checkRedirect}: the absolute URL to send in `Location`, or the rule that refused
 * the input. An expected outcome, so a value rather than an exception.
 */
export type RedirectCheck =
  | { readonly ok: true; readonly href: string }
  | { readonly ok: false; readonly reason: RedirectRefusal }

/**
 * Shapes refused on the raw string, whatever follows. Order matters only for which reason is reported.
 *
 * - control characters, ASCII space, DEL, C1 controls, any Unicode white space and format characters
 *   (zero-width space, bidi overrides, BOM): the URL parser strips tab/CR/LF anywhere, so `/\t/evil.com`
 *   would become `//evil.com`; the rest are invisible look-alike helpers;
 * - percent-encoded C0 controls and DEL (`%00`–`%1f`, `%7f`): header injection and upstreams that decode;
 * - a backslash, raw or `%5c`: browsers read `\` as `/` in http(s) URLs (`/\evil.com` → `//evil.com`);
 * - `//` at the start: a scheme-relative URL, i.e. another host;
 * - `%2f` at the start of a path (`/%2f%2fevil.com`, `%2f%2fevil.com`): one decoding away from `//`.
 */
const FORBIDDEN_SHAPES: readonly (readonly [RedirectRefusal, RegExp])[] = [
  ['control-or-space', /[\u0000-\u0020\u007f-\u009f\s\p{Cf}]/u],
  ['encoded-control', /%(?:[01][0-9a-f]|7f)/i],
  ['backslash', /\\|%5c/i],
  ['scheme-relative', /^\/\//],
  ['encoded-slash', /^\/?%2f/i],
]

/** `http://` or `https://` (any case), capturing the raw authority up to the first `/`, `?` or `#`. */
const HTTP_URL = /^https?:\/\/([^/?#]*)/i
/** A path (of an absolute URL) that starts with `//` or `/%2f`: refused as one step away from another host. */
const PATH_DOUBLE_SLASH = /^\/(?:\/|%2f)/i
/** Raw authority split into host and optional port; IPv6 literals in brackets. */
const HOST_PORT = /^(\[[0-9a-f:.]+\]|[^:[\]]*)(?::(\d*))?$/i
/** ASCII host characters we accept before parsing: letters, digits, `.`, `-`, `_`, or an IPv6 literal. */
const ASCII_HOST = /^(?:[a-z0-9._-]+|\[[0-9a-f:.]+\])$/i
/** Any character outside ASCII. */
const NON_ASCII = /[^\u0000-\u007f]/
/** A label in ACE (punycode) form. */
const PUNYCODE_LABEL = /(?:^|\.)xn--/
/** A dotted-quad IPv4 address (the only IPv4 form left after WHATWG parsing). */
const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/
/** Digits only (an allowlist entry's port). */
const DIGITS = /^\d{1,5}$/

function refuse(reason: RedirectRefusal): RedirectCheck {
  return { ok: false, reason }
}

/**
 * Decide whether `rd` may be used as a redirect target, and say why not when it may not.
 *
 * Accepted: (a) a same-origin absolute path (`/reports?x=1#frag`), resolved against `publicUrl`'s
 * origin; (b) an absolute `http:`/`https:` URL with `publicUrl`'s origin; (c) an absolute URL whose
 * host matches `allowedDomains` (see {@link isAllowedRedirectHost}), which must be `https:` when
 * `publicUrl` is. Everything else is refused: relative paths without a leading `/`, other schemes,
 * userinfo, look-alike and numeric hosts, hosts with a trailing dot. The returned `href` is the parsed
 * URL's serialization, always absolute: a relative `Location` is never sent.
 */
export function checkRedirect(
  rd: string | undefined | null,
  publicUrl: URL,
  allowedDomains: readonly string[],
): RedirectCheck {
  if (rd === undefined || rd === null || rd === '') return refuse('empty')
  if (rd.length > MAX_REDIRECT_LENGTH) return refuse('too-long')
  for (const [reason, pattern] of FORBIDDEN_SHAPES) {
    if (pattern.test(rd)) return refuse(reason)
  }

  // (a) a path on our own origin. `//` and `/\` were refused above; the parse can still climb to a
  // `//host`-looking path through dot segments (`/.//evil.com`, `/%2e%2e//evil.com`), refused below.
  if (rd.charCodeAt(0) === 0x2f /* / */) {
    let url: URL
    try {
      url = new URL(rd, publicUrl.origin)
    } catch {
      return refuse('unparseable')
    }
    if (url.origin !== publicUrl.origin) return refuse('origin-mismatch')
    if (url.pathname.startsWith('//')) return refuse('path-double-slash')
    return { ok: true, href: url.href }
  }

  // (b), (c): only `http://` and `https://` with two slashes. This refuses every other scheme
  // (`javascript:`, `data:`, `file:`), `https:evil.com` and `https:/evil.com` (which the parser would
  // "complete"), and bare relative references such as `evil.com`.
  const match = HTTP_URL.exec(rd)
  if (match === null) return refuse('not-path-or-http-url')
  const authority = match[1] ?? ''
  if (authority === '') return refuse('authority-empty') // `https:///evil.com` parses as https://evil.com/
  if (authority.includes('@')) return refuse('userinfo')
  // No percent-escapes in the authority at all: `%2f`, `%20`, `%40`, and `%61pp` (which the parser decodes).
  if (authority.includes('%')) return refuse('authority-encoded')
  if (PATH_DOUBLE_SLASH.test(rd.slice(match[0].length))) return refuse('path-double-slash')

  const hostPort = HOST_PORT.exec(authority)
  if (hostPort === null) return refuse('host-characters')
  const rawHost = hostPort[1] ?? ''
  const idn = NON_ASCII.test(rawHost)
  if (!idn && !ASCII_HOST.test(rawHost)) return refuse('host-characters')

  let url: URL
  try {
    url = new URL(rd)
  } catch {
    return refuse('unparseable')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return refuse('not-path-or-http-url')
  if (url.username !== '' || url.password !== '') return refuse('userinfo')

  const hostname = url.hostname
  if (idn) {
    // A genuine IDN becomes punycode (and is then matched exactly only, see isAllowedRedirectHost).
    // A non-ASCII host that maps to plain ASCII (fullwidth `ａｐｐ`, ideographic `。`) is a disguise.
    if (!PUNYCODE_LABEL.test(hostname)) return refuse('host-idn')
  } else if (hostname !== rawHost.toLowerCase()) {
    // The parser changed an ASCII host: numeric IPv4 forms (`0x7f.1`, `2130706433`, `0177.0.0.1`,
    // `127.1`) or a non-canonical IPv6 literal. Only the canonical spelling is ever accepted.
    return refuse('host-rewritten')
  }
  if (hostname.endsWith('.')) return refuse('host-trailing-dot')
  if (hostname.startsWith('.') || hostname.includes('..')) return refuse('host-empty-label')
  if (url.pathname.startsWith('//')) return refuse('path-double-slash')

  if (url.origin === publicUrl.origin) return { ok: true, href: url.href }
  if (publicUrl.protocol === 'https:' && url.protocol !== 'https:') return refuse('insecure-scheme')
  if (!isAllowedRedirectHost(url.host, allowedDomains)) return refuse('host-not-allowed')
  return { ok: true, href: url.href }
}

/**
 * The absolute URL to put in a `Location` header for `rd`, or `null` when `rd` is missing, empty or
 * must not be used (callers then fall back to `/` on `publicUrl`'s origin). See {@link checkRedirect}
 * for the rules; use that instead when the reason should be logged.
 */
export function validateRedirect(
  rd: string | undefined | null,
  publicUrl: URL,
  allowedDomains: readonly string[],
): string | null {
  const result = checkRedirect(rd, publicUrl, allowedDomains)
  return result.ok ? result.href : null
}

interface AllowEntry {
  /** Lower-case ASCII domain (punycode for IDNs), without the leading dot. */
  readonly domain: string
  /** `.` + domain, for the dot-boundary suffix test without allocating per call. */
  readonly dotted: string
  /** Entry had a leading dot: the domain itself and every subdomain. */
  readonly subdomains: boolean
  /** Explicit port, or '' for the scheme's default port. */
  readonly port: string
}

/** Compiled allowlists, keyed by the (frozen, long-lived) config array. */
const compiledLists = new WeakMap<readonly string[], readonly AllowEntry[]>()

function compileEntry(raw: string): AllowEntry | null {
  let s = raw.trim().toLowerCase()
  const subdomains = s.startsWith('.')
  if (subdomains) s = s.slice(1)
  let domain = s
  let port = ''
  if (s.startsWith('[')) {
    const end = s.indexOf(']')
    if (end < 0) return null
    domain = s.slice(0, end + 1)
    const rest = s.slice(end + 1)
    if (rest !== '') {
      if (!rest.startsWith(':') || !DIGITS.test(rest.slice(1))) return null
      port = String(Number(rest.slice(1)))
    }
  } else {
    const colon = s.lastIndexOf(':')
    if (colon >= 0) {
      if (!DIGITS.test(s.slice(colon + 1))) return null
      port = String(Number(s.slice(colon + 1)))
      domain = s.slice(0, colon)
    }
    if (NON_ASCII.test(domain)) domain = domainToASCII(domain)
  }
  if (domain === '' || domain.endsWith('.') || domain.startsWith('.') || domain.includes('..')) return null
  return { domain, dotted: `.${domain}`, subdomains, port }
}

function compileAllowlist(list: readonly string[]): readonly AllowEntry[] {
  let compiled = compiledLists.get(list)
  if (compiled === undefined) {
    compiled = list.map(compileEntry).filter((e): e is AllowEntry => e !== null)
    compiledLists.set(list, compiled)
  }
  return compiled
}

/**
 * Whether `host` (a WHATWG `URL.host`: lower-case ASCII hostname, then `:port` only when it is not the
 * scheme's default) is covered by `allowedDomains`, with dot-boundary matching:
 *
 * - `example.com` matches exactly that host;
 * - `.example.com` matches `example.com` and any subdomain (`a.example.com`, `a.b.example.com`), never
 *   `badexample.com` or `example.com.evil.com`;
 * - an entry with a port (`example.com:8443`) matches only that explicit port; an entry without one
 *   matches only the default port. (So write `example.com`, not `example.com:443`.)
 *
 * Hosts with a trailing dot or empty labels never match. IP literals and hosts with a punycode (`xn--`)
 * label match only an entry naming exactly that host, never through a leading-dot entry: a look-alike
 * label under an allowed parent (`xn--80a.example.org`) is not trusted. Comparison is case-insensitive.
 *
 * @see oauth2-proxy `--whitelist-domain`
 */
export function isAllowedRedirectHost(host: string, allowedDomains: readonly string[]): boolean {
  const hostPort = HOST_PORT.exec(host.toLowerCase())
  if (hostPort === null) return false
  const hostname = hostPort[1] ?? ''
  const rawPort = hostPort[2] ?? ''
  const port = rawPort === '' ? '' : String(Number(rawPort))
  if (!ASCII_HOST.test(hostname)) return false
  if (hostname.endsWith('.') || hostname.startsWith('.') || hostname.includes('..')) return false
  const exactOnly = hostname.startsWith('[') || IPV4.test(hostname) || PUNYCODE_LABEL.test(hostname)
  for (const entry of compileAllowlist(allowedDomains)) {
    if (entry.port !== port) continue
    if (hostname === entry.domain) return true
    if (entry.subdomains && !exactOnly && hostname.endsWith(entry.dotted)) return true
  }
  return false
}
