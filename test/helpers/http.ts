/**
 * A test HTTP client on `node:http` (not fetch): tests must control `Host`, repeated headers and odd
 * header casings, and must see every redirect. `request()` never follows redirects; give it a
 * {@link CookieJar} and it sends and stores cookies the way a browser would.
 */
import http from 'node:http'
import https from 'node:https'
import type { Agent, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

export interface RequestOptions {
  method?: string
  /**
   * An object (entries whose value is `undefined` are left out), or an array of `[name, value]` pairs. Pairs keep their casing, order and duplicates:
   * they go to node as a flat raw-header array. With pairs, `Host` is added (from the URL) only when
   * absent, and `Content-Length` only when a body is given and no length or transfer-encoding is set.
   */
  headers?: Record<string, string | string[] | undefined> | Array<[string, string]>
  body?: string
  /** Send this jar's cookies and store the response's `Set-Cookie`s in it. */
  jar?: CookieJar
  /** Default: node's global agent. */
  agent?: Agent
  signal?: AbortSignal
}

export interface TestResponse {
  status: number
  headers: IncomingHttpHeaders
  /** Every `Set-Cookie` header line, as received. */
  setCookies: string[]
  body: string
  json<T = unknown>(): T
}

function headerValue(headers: RequestOptions['headers'], name: string): string | undefined {
  if (!headers) return undefined
  const wanted = name.toLowerCase()
  const entries: Array<[string, string | string[] | undefined]> = Array.isArray(headers) ? headers : Object.entries(headers)
  for (const [k, v] of entries) if (v !== undefined && k.toLowerCase() === wanted) return Array.isArray(v) ? v[0] : v
  return undefined
}

/**
 * The URL the jar should match cookies against: the request URL, with the host replaced by an
 * explicit `Host` header when the test sends one (that is the host a browser would have used).
 */
function jarUrl(url: URL, headers: RequestOptions['headers']): URL {
  const host = headerValue(headers, 'host')
  if (!host) return url
  const u = new URL(url)
  try {
    u.host = host
  } catch {
    return url
  }
  return u
}

/** Send one request; resolve with the whole response. Never follows redirects. */
export function request(url: string, opts: RequestOptions = {}): Promise<TestResponse> {
  const target = new URL(url)
  const method = opts.method ?? 'GET'
  const cookieUrl = jarUrl(target, opts.headers)
  const jarCookie = opts.jar?.header(cookieUrl.href) ?? ''

  let headers: OutgoingHttpHeaders | string[]
  if (Array.isArray(opts.headers)) {
    const pairs = opts.headers.map(([k, v]): [string, string] => [k, v])
    const has = (name: string): boolean => pairs.some(([k]) => k.toLowerCase() === name)
    if (!has('host')) pairs.unshift(['Host', target.host])
    if (opts.body !== undefined && !has('content-length') && !has('transfer-encoding')) {
      pairs.push(['Content-Length', String(Buffer.byteLength(opts.body))])
    }
    if (jarCookie) pairs.push(['Cookie', jarCookie])
    headers = pairs.flat()
  } else {
    // Undefined values are dropped, so callers can build headers conditionally.
    const obj: OutgoingHttpHeaders = Object.fromEntries(
      Object.entries(opts.headers ?? {}).filter((e): e is [string, string | string[]] => e[1] !== undefined),
    )
    if (opts.body !== undefined && headerValue(opts.headers, 'content-length') === undefined) {
      if (headerValue(opts.headers, 'transfer-encoding') === undefined) {
        obj['content-length'] = String(Buffer.byteLength(opts.body))
      }
    }
    if (jarCookie) {
      const existing = Object.keys(obj).find((k) => k.toLowerCase() === 'cookie')
      if (existing) {
        const prev = obj[existing]
        obj[existing] = `${Array.isArray(prev) ? prev.join('; ') : String(prev)}; ${jarCookie}`
      } else {
        obj.cookie = jarCookie
      }
    }
    headers = obj
  }

  const transport = target.protocol === 'https:' ? https : http
  return new Promise<TestResponse>((resolve, reject) => {
    const req = transport.request(
      {
        protocol: target.protocol,
        hostname: target.hostname.replace(/^\[|\]$/g, ''),
        port: target.port || undefined,
        path: `${target.pathname}${target.search}`,
        method,
        headers,
        ...(opts.agent ? { agent: opts.agent } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('error', reject)
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8')
          const setCookies = res.headers['set-cookie'] ?? []
          opts.jar?.update(cookieUrl.href, setCookies)
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            setCookies,
            body,
            json<T = unknown>(): T {
              return JSON.parse(body) as T
            },
          })
        })
      },
    )
    req.on('error', reject)
    req.end(opts.body)
  })
}

interface StoredCookie {
  name: string
  value: string
  /** Lower-case host (host-only cookie) or domain (domain cookie). */
  domain: string
  hostOnly: boolean
  path: string
  /** Epoch ms; `Infinity` for a session cookie. */
  expires: number
  secure: boolean
  httpOnly: boolean
  sameSite?: string
}

/** RFC 6265 §5.1.4 default-path: the request path up to (not including) its last `/`. */
function defaultPath(pathname: string): string {
  if (!pathname.startsWith('/')) return '/'
  const last = pathname.lastIndexOf('/')
  return last <= 0 ? '/' : pathname.slice(0, last)
}

/** RFC 6265 §5.1.4 path-match. */
function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true
  if (!requestPath.startsWith(cookiePath)) return false
  return cookiePath.endsWith('/') || requestPath.charAt(cookiePath.length) === '/'
}

function isIpAddress(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':')
}

/** RFC 6265 §5.1.3 domain-match. */
function domainMatches(host: string, cookie: StoredCookie): boolean {
  if (cookie.domain === '') return true // set by hand for any host
  if (cookie.hostOnly || isIpAddress(host)) return host === cookie.domain
  return host === cookie.domain || host.endsWith(`.${cookie.domain}`)
}

function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase()
}

/**
 * A browser-like cookie jar. Cookies are keyed by domain, path and name; the domain is the request's
 * hostname with the port ignored, as browsers do (so a provider on 127.0.0.1:A and a proxy on
 * 127.0.0.1:B share cookies, as they would in a browser). Honours `Domain`, `Path` (prefix match),
 * `Max-Age` (wins over `Expires`) and `Expires`; an expired cookie or `Max-Age<=0` deletes. `Secure`
 * is recorded but not enforced (tests run on plain-http loopback); `SameSite` is recorded only.
 */
export class CookieJar {
  #cookies = new Map<string, StoredCookie>()
  #now: () => number

  /** `now` is injectable so tests can expire cookies without sleeping. */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now
  }

  #key(c: { domain: string; path: string; name: string }): string {
    return `${c.domain}\t${c.path}\t${c.name}`
  }

  #live(): StoredCookie[] {
    const now = this.#now()
    const out: StoredCookie[] = []
    for (const [key, c] of this.#cookies) {
      if (c.expires <= now) this.#cookies.delete(key)
      else out.push(c)
    }
    return out
  }

  /** The `Cookie` header a browser would send to `url` ('' when none); longer paths first (RFC 6265 §5.4). */
  header(url: string): string {
    const u = new URL(url)
    const host = hostOf(url)
    return this.#live()
      .filter((c) => domainMatches(host, c) && pathMatches(u.pathname || '/', c.path))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
  }

  /** Store the `Set-Cookie` lines of a response to `url`. */
  update(url: string, setCookies: string[] | string | undefined): void {
    if (!setCookies) return
    const lines = Array.isArray(setCookies) ? setCookies : [setCookies]
    const u = new URL(url)
    const host = hostOf(url)
    for (const line of lines) this.#store(line, host, u.pathname)
  }

  #store(line: string, host: string, requestPath: string): void {
    const [pair = '', ...attrs] = line.split(';')
    const eq = pair.indexOf('=')
    if (eq <= 0) return
    const name = pair.slice(0, eq).trim()
    const value = pair.slice(eq + 1).trim()
    if (!name) return

    let domain = host
    let hostOnly = true
    let path = defaultPath(requestPath)
    let expires = Number.POSITIVE_INFINITY
    let maxAgeSeen = false
    let secure = false
    let httpOnly = false
    let sameSite: string | undefined

    for (const attr of attrs) {
      const i = attr.indexOf('=')
      const key = (i === -1 ? attr : attr.slice(0, i)).trim().toLowerCase()
      const val = i === -1 ? '' : attr.slice(i + 1).trim()
      switch (key) {
        case 'domain': {
          const d = val.replace(/^\./, '').toLowerCase()
          if (!d) break
          // A browser rejects a cookie whose Domain does not cover the setting host.
          if (host !== d && (isIpAddress(host) || !host.endsWith(`.${d}`))) return
          domain = d
          hostOnly = false
          break
        }
        case 'path':
          path = val.startsWith('/') ? val : defaultPath(requestPath)
          break
        case 'max-age': {
          if (!/^-?\d+$/.test(val)) break
          const seconds = Number(val)
          expires = seconds <= 0 ? Number.NEGATIVE_INFINITY : this.#now() + seconds * 1000
          maxAgeSeen = true
          break
        }
        case 'expires': {
          if (maxAgeSeen) break
          const t = Date.parse(val)
          if (!Number.isNaN(t)) expires = t
          break
        }
        case 'secure':
          secure = true
          break
        case 'httponly':
          httpOnly = true
          break
        case 'samesite':
          sameSite = val
          break
        default:
          break
      }
    }

    const cookie: StoredCookie = { name, value, domain, hostOnly, path, expires, secure, httpOnly, ...(sameSite ? { sameSite } : {}) }
    const key = this.#key(cookie)
    if (expires <= this.#now()) this.#cookies.delete(key)
    else this.#cookies.set(key, cookie)
  }

  /** Value of a live cookie called `name` (the one with the longest path when several exist). */
  get(name: string): string | undefined {
    return this.#live()
      .filter((c) => c.name === name)
      .sort((a, b) => b.path.length - a.path.length)[0]?.value
  }

  /** Names of the live cookies, sorted, each once. */
  names(): string[] {
    return [...new Set(this.#live().map((c) => c.name))].sort()
  }

  /**
   * Set a cookie by hand. Without `url` or `domain` it is sent to every host (handy for forged or
   * tampered cookies); `path` defaults to `/`.
   */
  set(name: string, value: string, opts: { url?: string; domain?: string; path?: string } = {}): void {
    const domain = opts.domain?.toLowerCase() ?? (opts.url ? hostOf(opts.url) : '')
    const cookie: StoredCookie = {
      name,
      value,
      domain,
      hostOnly: opts.domain === undefined,
      path: opts.path ?? '/',
      expires: Number.POSITIVE_INFINITY,
      secure: false,
      httpOnly: false,
    }
    this.#cookies.set(this.#key(cookie), cookie)
  }

  /** Remove every cookie called `name` (any domain, any path). */
  delete(name: string): void {
    for (const [key, c] of this.#cookies) if (c.name === name) this.#cookies.delete(key)
  }

  /** Every live cookie with its attributes, for assertions on what was set. */
  all(): ReadonlyArray<Readonly<StoredCookie>> {
    return this.#live().map((c) => ({ ...c }))
  }
}

/** One parsed `Set-Cookie` line: name, value, attributes (names lower-cased; flags map to ''). */
export interface SetCookie {
  name: string
  value: string
  attrs: Map<string, string>
  line: string
}

export function parseSetCookie(line: string): SetCookie {
  const [pair = '', ...rest] = line.split(';')
  const eq = pair.indexOf('=')
  const attrs = new Map<string, string>()
  for (const attr of rest) {
    const i = attr.indexOf('=')
    attrs.set((i === -1 ? attr : attr.slice(0, i)).trim().toLowerCase(), i === -1 ? '' : attr.slice(i + 1).trim())
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs, line }
}

/** The attributes of a response's `WWW-Authenticate: Bearer ...` challenge (RFC 6750 §3); `notBearer` when it is another scheme. */
export function bearerChallenge(res: TestResponse): Record<string, string> {
  const header = String(res.headers['www-authenticate'] ?? '')
  const out: Record<string, string> = {}
  if (!header.startsWith('Bearer ')) return { notBearer: header }
  for (const m of header.slice(7).matchAll(/([a-z_]+)=(?:"([^"]*)"|([^\s,]+))/g)) out[m[1] as string] = m[2] ?? m[3] ?? ''
  return out
}
