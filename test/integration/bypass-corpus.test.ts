/**
 * A bypass corpus (issue #10, point 9): request targets that try to reach a protected path through a
 * public prefix, run against two pairs of routes (all to the echo upstream):
 *
 *   `/` protected   `/public/` public   `/public/admin/` protected   (a public prefix with a trailing slash)
 *                   `/static`  public   `/static/private` protected  (and one without)
 *
 * Every target is written byte for byte on a raw socket (`new URL()`, and so every ordinary client,
 * would normalize most of them before sending), in both lanes (the fast-lane app and one on the same
 * runtime with `fastLane: false`), and the test asserts properties, not answers:
 *
 * - without a session, a target is refused (400, 401, a 302 to the login, 404) or it reached the
 *   upstream; when it reached the upstream, (a) the path the upstream received, read the way a
 *   typical upstream reads it (`upstreamReading` below), is on a public route, and (b) the upstream
 *   received exactly the target the policy judged: the normalized path (`normalizeTarget`) and the
 *   query as sent;
 * - with a session, a target refused without one for lack of authentication is forwarded as alice, or
 *   refused with 400/404; a forwarded target still satisfies (b), and one whose reading is protected
 *   carries alice's identity (it went through a protected route);
 * - through the forward-auth check (`GET /oauth2/auth`, `X-Original-URL` from a trusted peer), a
 *   target whose reading is protected never gets a 200 without a session, and any 401 becomes a 200
 *   with one;
 * - nothing ever answers 5xx.
 *
 * The oracle (`upstreamReading`, `judgedByReading`) is independent of src/ and is unit-checked first.
 * When this was written, no target broke a property: every target an upstream reads as protected
 * was refused without a session, and every forwarded one reached the upstream as judged.
 */
import t, { type Test } from 'tap'
import { startApp, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { rawRequest, type RawResponse } from '../helpers/raw-http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import type { EchoRecord } from '../helpers/upstream.ts'
import { normalizeTarget } from '../../src/http/facts.ts'

const alice = DEMO_USERS[0]!

// ===================================================================================================
// The oracle: how a typical upstream reads the target it received

const UTF8 = new TextDecoder('utf-8', { fatal: false })

/**
 * Percent-decode once, as bytes: a character of the string is one byte of the wire (Node hands
 * request targets over as latin1), `%XX` with two hex digits is the byte XX, anything else (`%zz`,
 * `%u002e`, a lone `%`) stays as written; the bytes are then read as UTF-8 (an invalid sequence, an
 * overlong `%c0%ae` included, is U+FFFD, as WHATWG and most servers decode it).
 */
function decodeOnce(s: string): string {
  const bytes: number[] = []
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x25 && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16))
      i += 2
    } else if (c <= 0xff) {
      bytes.push(c)
    } else {
      bytes.push(...Buffer.from(s[i] as string, 'utf8'))
    }
  }
  return UTF8.decode(Uint8Array.from(bytes))
}

/**
 * The path an upstream reads in the target it received, the lax way many do: an absolute-form
 * target's scheme and authority dropped; cut at the first `?` or `#`; percent-decoded once (so `%2F`
 * and `%5C` become separators); `/` and `\` both separate segments; every segment's `;params`
 * dropped before dot segments are resolved (Tomcat's order, so `..;x` climbs); `.` and empty
 * segments (duplicate slashes) dropped; `..` climbs, never above the root; case folded; trailing dots
 * and spaces of a segment dropped (IIS and Windows file systems, which the README says Portcullis
 * guards against), unless it is made of nothing else. No trailing slash is kept (prefixes are
 * compared on segments).
 *
 * Not modelled (no typical upstream does it; see the lookalike family below): Unicode normalization
 * (NFKC maps U+FF0E and U+2024 to `.`, U+FF41 to `a`), case-insensitive comparison by upper-casing
 * (Java's `equalsIgnoreCase` takes `ı` for `i`), NTFS stream names (`admin::$INDEX_ALLOCATION`),
 * suffix patterns (`/admin.json` served as `/admin`), trimming of non-ASCII spaces.
 */
export function upstreamReading(received: string): string {
  let target = received
  const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(target)
  if (absolute !== null) target = target.slice(absolute[0].length)
  const cut = target.search(/[?#]/)
  const path = decodeOnce(cut < 0 ? target : target.slice(0, cut))
  const segments: string[] = []
  for (const raw of path.split(/[/\\]/)) {
    const semi = raw.indexOf(';')
    const segment = semi < 0 ? raw : raw.slice(0, semi)
    if (segment === '' || segment === '.') continue
    if (segment === '..') {
      segments.pop()
      continue
    }
    // A segment of dots and spaces only (`...`, `.. `) is a name, not a dot segment (Windows keeps it too).
    segments.push(/^[. ]+$/.test(segment) ? segment : segment.toLowerCase().replace(/[. ]+$/, ''))
  }
  return `/${segments.join('/')}`
}

interface OracleRoute {
  readonly prefix: string
  readonly public: boolean
}

/** The routes of this test, as the oracle knows them (written again here, not taken from src/). */
const ORACLE_ROUTES: readonly OracleRoute[] = [
  { prefix: '/', public: false },
  { prefix: '/public/', public: true },
  { prefix: '/public/admin/', public: false },
  { prefix: '/static', public: true },
  { prefix: '/static/private', public: false },
]

/** Whether `prefix` covers a path read by `upstreamReading` (segments, no trailing slash). */
function covers(prefix: string, reading: string): boolean {
  if (prefix === '/') return true
  const bare = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
  return reading === bare || reading.startsWith(`${bare}/`)
}

/** The route an upstream's reading falls under: the longest prefix that covers it. */
export function judgedByReading(reading: string): OracleRoute {
  let best = ORACLE_ROUTES[0] as OracleRoute
  for (const r of ORACLE_ROUTES) if (covers(r.prefix, reading) && r.prefix.length > best.prefix.length) best = r
  return best
}

const readsProtected = (received: string): boolean => !judgedByReading(upstreamReading(received)).public

t.test('the oracle reads paths the way a lax upstream does', async (t) => {
  const cases: Array<[string, string]> = [
    ['/public/x', '/public/x'],
    ['/public/x/../admin', '/public/admin'],
    ['/public/./admin/', '/public/admin'],
    ['/public/%2e%2e/admin', '/admin'],
    ['/public/.%2E/admin', '/admin'],
    ['/public%2fadmin', '/public/admin'],
    ['/public%5C..%5Cadmin', '/admin'],
    ['/public\\..\\admin', '/admin'],
    ['/public/%252e%252e/admin', '/public/%2e%2e/admin'],
    ['/public/admin;x/y', '/public/admin/y'],
    ['/public;x/admin', '/public/admin'],
    ['/public/..;x/admin', '/admin'],
    ['//PUBLIC//Admin', '/public/admin'],
    ['/public/admin.', '/public/admin'],
    ['/public/admin%20/x', '/public/admin/x'],
    ['/public/admin. . ', '/public/admin'],
    ['/public/.../admin', '/public/.../admin'],
    ['/public/x/.. /admin', '/public/x/.. /admin'],
    ['/public/x?/../admin', '/public/x'],
    ['/public#/../admin', '/public'],
    ['/public/%3f/../admin', '/public/admin'],
    ['/../../admin', '/admin'],
    ['http://host/public/../admin?q', '/admin'],
    ['/public/%c3%a9', '/public/\u00e9'],
    // An invalid lead byte and a lone continuation byte are one U+FFFD each (WHATWG's decoder).
    ['/public/%c0%ae%c0%ae/admin', '/public/\ufffd\ufffd\ufffd\ufffd/admin'],
    ['/public/%ef%bc%8e%ef%bc%8e/admin', '/public/\uff0e\uff0e/admin'],
    ['/public/%zz/%u002e', '/public/%zz/%u002e'],
  ]
  for (const [received, reading] of cases) t.equal(upstreamReading(received), reading, `${JSON.stringify(received)} reads as ${JSON.stringify(reading)}`)

  const judged: Array<[string, boolean]> = [
    ['/', false],
    ['/x', false],
    ['/publicx', false],
    ['/public', true],
    ['/public/x', true],
    ['/public/adminx', true],
    ['/public/admin', false],
    ['/public/admin/x', false],
    ['/static', true],
    ['/static/x', true],
    ['/static/privatex', true],
    ['/static/private', false],
    ['/static/private/x', false],
    ['/staticx', false],
  ]
  for (const [reading, isPublic] of judged) t.equal(judgedByReading(reading).public, isPublic, `${reading}: ${isPublic ? 'public' : 'protected'}`)

  // What the corpus relies on: the oracle would catch the classic bypasses had they been forwarded.
  for (const received of ['/public/../admin', '/public/%2e%2e/admin/', '/public%2f..%2fadmin', '/public/admin;x', '/PUBLIC/ADMIN', '/public/admin.', '/static/..;/private', '/static/PRIVATE%20', '/static\\private']) {
    t.ok(readsProtected(received), `${JSON.stringify(received)} would be a bypass if forwarded without a session`)
  }
})

// ===================================================================================================
// The corpus

interface Pair {
  readonly name: string
  /** The public prefix, without a trailing slash. */
  readonly p: string
  /** The nested protected segment under it. */
  readonly a: string
}

const PAIRS: readonly Pair[] = [
  { name: '/public/ + /public/admin/', p: '/public', a: 'admin' },
  { name: '/static + /static/private', p: '/static', a: 'private' },
]

/** A target built from a pair: `p` is the public prefix (`/public`), `a` the nested segment (`admin`). */
type Make = (p: string, a: string) => string

const up = (s: string): string => s.toUpperCase()
const cap = (s: string): string => `${up(s.slice(0, 1))}${s.slice(1)}`
/** Every character of `s` as a percent-escape (`%61%64...`). */
const esc = (s: string): string => [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')
/** The fullwidth form of an ASCII letter (`a` → U+FF41), percent-encoded as UTF-8. */
const fullwidth = (c: string): string => esc(String.fromCharCode((c.charCodeAt(0) - 0x21) + 0xff01))
/** Raw bytes (as latin1 characters of the string) of a UTF-8 encoding. */
const rawUtf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1')

const FAMILIES: Record<string, readonly Make[]> = {
  // Controls: a plain public path, the protected one, its subtree.
  controls: [(p) => `${p}/x`, (p, a) => `${p}/${a}`, (p, a) => `${p}/${a}/`, (p, a) => `${p}/${a}/x`, (p, a) => `${p}/${a}x`, (p) => p],
  'dot segments': [
    (p, a) => `${p}/x/../${a}`,
    (p, a) => `${p}/./${a}`,
    (p, a) => `${p}/./././${a}/.`,
    (p, a) => `${p}/../${a}`,
    (p, a) => `${p}/x/y/../../${a}/z`,
    (p, a) => `${p}/${a}/..`,
    (p, a) => `${p}/${a}/x/../../${a}`,
    (p, a) => `${p}/../../${a}`,
    (p, a) => `/x/..${p}/${a}`,
    (p, a) => `${p}/${a}/../../${p.slice(1)}/${a}`,
    (p, a) => `${p}/${'x/../'.repeat(600)}${a}`,
    // Dots with a space or a third dot are names (forwarded under the public prefix as written).
    // Windows trims the trailing space of a path's last segment, so an IIS static-file handler
    // could take `/public/..%20` for the root's directory; the oracle does not model that.
    (p, a) => `${p}/.../${a}`,
    (p, a) => `${p}/x/..%20/${a}`,
    (p) => `${p}/..%20`,
  ],
  'encoded dots': [
    (p, a) => `${p}/%2e/${a}`,
    (p, a) => `${p}/%2E/${a}`,
    (p, a) => `${p}/x/.%2e/${a}`,
    (p, a) => `${p}/x/%2e%2e/${a}`,
    (p, a) => `${p}/x/%2E%2E/${a}`,
    (p, a) => `${p}/x/%2e./${a}`,
    (p, a) => `${p}/%2e%2e/${a}`,
    (p, a) => `${p}/${a}%2e`,
    (p, a) => `${p}/${a}/%2e%2e/%2e%2e/${a}`,
    (p, a) => `${p}/x/%2e%2E/${a}/%2e`,
    (p, a) => `${p}/..%2e/${a}`,
  ],
  'encoded slashes and backslashes': [
    (p, a) => `${p}%2f${a}`,
    (p, a) => `${p}%2F${a}`,
    (p, a) => `${p}/x%2f..%2f${a}`,
    (p, a) => `${p}/..%2f${a}`,
    (p, a) => `${p}/%2e%2e%2f${a}`,
    (p, a) => `${p}%5c${a}`,
    (p, a) => `${p}%5C..%5C${a}`,
    (p, a) => `${p}/x%5c..%5c${a}`,
    (p, a) => `${p}/${a}%2f`,
  ],
  'double encoding': [
    (p, a) => `${p}/x/%252e%252e/${a}`,
    (p, a) => `${p}%252f${a}`,
    (p, a) => `${p}%255c${a}`,
    (p, a) => `${p}/x/%25%32%65%25%32%65/${a}`,
    (p, a) => `${p}/${esc(a).replace(/%/g, '%25')}`,
    (p, a) => `${p}/x/%25252e%25252e/${a}`,
    (p, a) => `${p}/x/%%32%65%%32%65/${a}`,
  ],
  '; parameters': [
    (p, a) => `${p}/${a};x`,
    (p, a) => `${p};x/${a}`,
    (p, a) => `${p}/${a};/`,
    (p, a) => `${p}/..;/${a}`,
    (p, a) => `${p}/.;/${a}`,
    (p, a) => `${p}/%2e%2e;/${a}`,
    (p, a) => `${p}/..%3b/${a}`,
    (p, a) => `${p}/${a};jsessionid=1/x`,
    (p, a) => `${p}/x;/../${a}`,
    (p, a) => `${p}/${a}%3b`,
    (p, a) => `${p}/${a}%3B.css`,
    (p, a) => `${p};/../${a}`,
    (p, a) => `${p}/${a};/../x`,
    (p, a) => `${p}%3b/${a}`,
    (p, a) => `${p}%3B/../${a}`,
    (p, a) => `${p}/${a}.;x`,
    (p, a) => `${p}/${a}%20;x`,
  ],
  'raw backslashes': [(p, a) => `${p}\\${a}`, (p, a) => `${p}\\..\\${a}`, (p, a) => `${p}/x\\..\\${a}`, (p, a) => `${p}/${a}\\`],
  'NUL and control bytes': [
    (p, a) => `${p}/${a}%00`,
    (p, a) => `${p}/%00/../${a}`,
    (p, a) => `${p}/${a}%0a`,
    (p, a) => `${p}/${a}%0d%0a`,
    (p, a) => `${p}/${a}%09`,
    (p, a) => `${p}/${a}%1f`,
    (p, a) => `${p}/${a}%7f`,
    (p, a) => `${p}/${a}%00.css`,
    // Raw bytes: Node's parser refuses most of them itself (a 400 before Portcullis sees anything).
    (p, a) => `${p}/${a}\x00`,
    (p, a) => `${p}/${a}\x01`,
    (p, a) => `${p}/${a}\t`,
    (p, a) => `${p}/${a}\x0b`,
    (p, a) => `${p}/${a}\x0c`,
    (p, a) => `${p}/${a}\x7f`,
    (p, a) => `${p}/${a}\x1b`,
  ],
  case: [
    (p, a) => `${up(p)}/${up(a)}`,
    (p, a) => `${p}/${up(a)}`,
    (p, a) => `${up(p)}/${a}`,
    (p, a) => `${p}/${cap(a)}`,
    (p, a) => `${p}/${esc(up(a.slice(0, 1)))}${a.slice(1)}`,
    (p, a) => `${p}/${up(a)}/x`,
    // Escapes of unreserved characters, in the public prefix too (decoded before matching).
    (p, a) => `${p.slice(0, 2)}${esc(p.slice(2, 3))}${p.slice(3)}/${a}`,
    (p, a) => `/${esc(p.slice(1))}/${esc(a)}`,
  ],
  'duplicate slashes': [
    (p, a) => `/${p}//${a}`,
    (p, a) => `${p}//${a}`,
    (p, a) => `${p}///${a}//`,
    (p, a) => `//${p.slice(1)}/../${a}`,
    (p, a) => `//127.0.0.1${p}/${a}`,
  ],
  'trailing dots and spaces': [
    (p, a) => `${p}/${a}.`,
    (p, a) => `${p}/${a}%20`,
    (p, a) => `${p}/${a}..`,
    (p, a) => `${p}/${a}./x`,
    (p, a) => `${p}/${a}%20/x`,
    (p, a) => `${p}/${a}.%20.`,
    (p, a) => `${p}/${a}%2e%20`,
    (p, a) => `${p}/${up(a)}%20%20.`,
    (p, a) => `${p}./${a}`,
    (p, a) => `${p}%20/${a}`,
    (p, a) => `${p}/${a}+`,
  ],
  // Percent-encoded overlong forms are not UTF-8 (a 400); raw bytes above 0x7f are refused by Node's
  // parser. The valid lookalikes (U+FF0E, U+2024, U+FF41, U+0131, U+200B, U+00A0) are forwarded as
  // written under the public prefix: a typical upstream reads them as other names. An upstream that
  // applied NFKC, compared case by upper-casing or trimmed Unicode spaces would read some of them
  // under the protected prefix; the oracle does not model those (see `upstreamReading`).
  'overlong UTF-8 and unicode lookalikes': [
    (p, a) => `${p}/%c0%ae%c0%ae/${a}`,
    (p, a) => `${p}/x/%c0%ae%c0%ae/${a}`,
    (p, a) => `${p}%c0%af${a}`,
    (p, a) => `${p}/%e0%80%ae%e0%80%ae/${a}`,
    (p, a) => `${p}/%f0%80%80%ae%f0%80%80%ae/${a}`,
    (p, a) => `${p}/%ef%bc%8e%ef%bc%8e/${a}`,
    (p, a) => `${p}%ef%bc%8f${a}`,
    (p, a) => `${p}/%e2%80%a4%e2%80%a4/${a}`,
    (p, a) => `${p}/%u002e%u002e/${a}`,
    (p, a) => `${p}/${fullwidth(a.slice(0, 1))}${a.slice(1)}`,
    (p, a) => `${p}/${a}%e2%80%8b`,
    (p, a) => `${p}/${a.replace('i', '%c4%b1')}`,
    (p, a) => `${p}/${a}%ff`,
    (p, a) => `${p}/${rawUtf8('\uff0e\uff0e')}/${a}`,
    (p, a) => `${p}/\xc0\xae\xc0\xae/${a}`,
    (p, a) => `${p}/${a}\xa0`,
    (p, a) => `${p}/${a}%c2%a0`,
  ],
  'query and fragment': [
    (p, a) => `${p}?/${a}`,
    (p, a) => `${p}#/../${a}`,
    (p, a) => `${p}/%3f/../${a}`,
    (p, a) => `${p}/${a}?x=${p}`,
    (p, a) => `${p}/%23/../${a}`,
    (p, a) => `${p}/x?/../${a}`,
    (p, a) => `${p}/%3F${a}`,
    (p, a) => `${p}/${a}#`,
    (p, a) => `${p}/x#/${a}`,
    (p, a) => `${p}/x/..?${a}`,
    (p, a) => `${p}/${a}%3f/..`,
    (p, a) => `${p}?x#/../${a}`,
    (p, a) => `${p}/x?a=1#/../../${a}`,
  ],
  'absolute form': [
    (p, a) => `http://127.0.0.1${p}/../${a}`,
    (p, a) => `http://host${p}/x/../${a}`,
    (p, a) => `http://host${p}/${a}`,
    (p, a) => `https://host${p}/${a}`,
    (p, a) => `http:${p}/${a}`,
    (p, a) => `HTTP://HOST${p}/${a}`,
  ],
  'malformed escapes and odd forms': [
    (p, a) => `${p}/${a}%`,
    (p, a) => `${p}/${a}%2`,
    (p, a) => `${p}/${a}%zz`,
    (p, a) => `${p}/%u0061${a.slice(1)}`,
    (p, a) => `${p.slice(1)}/${a}`,
    (p, a) => `${p}/${a}::$DATA`,
    (p, a) => `${p}/${a}::$INDEX_ALLOCATION/x`,
    (p, a) => `${p}/${a}.json`,
    (p, a) => `${p}/${'x/'.repeat(4200)}../${a}`,
  ],
}

interface Entry {
  readonly family: string
  readonly pair: Pair
  readonly target: string
}

const CORPUS: readonly Entry[] = PAIRS.flatMap((pair) => Object.entries(FAMILIES).flatMap(([family, makes]) => makes.map((make) => ({ family, pair, target: make(pair.p, pair.a) }))))

/** A target, readable in a message (control and non-ASCII bytes escaped; long ones cut). */
function show(target: string): string {
  const s = JSON.stringify(target).replace(/[\u007f-\u00ff]/g, (c) => `\\x${c.charCodeAt(0).toString(16)}`)
  return s.length > 120 ? `${s.slice(0, 100)}…(${target.length} chars)` : s
}

// ===================================================================================================
// Sending

const API: Array<[string, string]> = [['Accept', 'application/json']]
const NAV: Array<[string, string]> = Object.entries(NAVIGATION_HEADERS)
const portOf = (app: RunningPortcullis): number => Number(new URL(app.url).port)

interface Lane {
  readonly label: string
  readonly app: RunningPortcullis
}

interface Sent {
  readonly res: RawResponse
  /** What the upstream received, when the request reached it. */
  readonly record: EchoRecord | null
  /** How many requests the upstream received meanwhile (0 or 1). */
  readonly reached: number
}

async function send(stack: Stack, lane: Lane, target: string, headers: Array<[string, string]>): Promise<Sent> {
  const before = stack.upstream.requests.length
  const res = await rawRequest(portOf(lane.app), target, { headers })
  const reached = stack.upstream.requests.length - before
  return { res, record: reached === 1 ? (stack.upstream.requests.at(-1) as EchoRecord) : null, reached }
}

/** The route Portcullis judges a target by (for messages): its id and whether it is public. */
function judgedRoute(stack: Stack, target: string): string {
  const { path } = normalizeTarget(target)
  if (path === null) return 'none (path refused)'
  const r = stack.proxy.runtime.routes.match('127.0.0.1', path)
  return r === null ? 'none' : `${r.id} ${r.pathPrefix} (${r.public ? 'public' : 'protected'})`
}

const REFUSED = new Set([400, 401, 302, 404])

/** What a request without a session ended as, per lane and target. */
type Verdict = 'forwarded' | 'needs-session' | 'refused'

// ===================================================================================================

t.test('bypass corpus', async (t) => {
  const targets = new Set(CORPUS.map((e) => e.target))
  t.ok(targets.size >= 60, `${targets.size} distinct targets (at least 60)`)
  t.equal(targets.size, CORPUS.length, 'no target twice')
  for (const pair of PAIRS) {
    for (const family of Object.keys(FAMILIES)) t.ok(CORPUS.some((e) => e.pair === pair && e.family === family), `${pair.name}: ${family}`)
  }

  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      server: { trustedProxies: ['127.0.0.1/32'] },
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/public/' }, upstream, public: true },
        { match: { pathPrefix: '/public/admin/' }, upstream },
        { match: { pathPrefix: '/static' }, upstream, public: true },
        { match: { pathPrefix: '/static/private' }, upstream },
      ],
    }),
  })
  const lanes: Lane[] = [
    { label: 'fast-lane app', app: stack.proxy },
    { label: 'fastLane: false', app: await startApp(t, stack.proxy.runtime, { fastLane: false }) },
  ]
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/' })
  const cookie = jar.header(`${stack.proxy.url}/`)
  t.match(cookie, /(^|; )_portcullis=/, 'logged in')
  const session: Array<[string, string]> = [['Cookie', cookie]]

  const verdicts = new Map<string, Verdict>()
  const key = (lane: Lane, target: string): string => `${lane.label}\u0000${target}`

  /** (b): the upstream received the normalized path the policy judged, and the query as sent. */
  const judgedTargetReached = (t: Test, label: string, target: string, record: EchoRecord): void => {
    const judged = normalizeTarget(target)
    t.equal(record.url, judged.path === null ? `(a refused path: ${show(target)})` : judged.target, `${label}: the upstream received the judged target ${show(judged.target)}`)
  }

  t.test('without a session: refused, or forwarded on a public reading as judged', async (t) => {
    for (const lane of lanes) {
      for (const { family, pair, target } of CORPUS) {
        const label = `${lane.label}: [${pair.p} ${family}] ${show(target)}`
        const api = await send(stack, lane, target, API)
        const nav = await send(stack, lane, target, NAV)
        t.ok(api.res.status < 500 && nav.res.status < 500, `${label}: no 5xx (${api.res.status}, ${nav.res.status})`)
        t.ok(api.reached <= 1 && nav.reached <= 1, `${label}: at most one upstream request each`)
        t.equal(nav.reached, api.reached, `${label}: a navigation and an API client are judged alike`)
        if (api.record === null) {
          t.ok(REFUSED.has(api.res.status), `${label}: refused (${api.res.status})`)
          t.ok(REFUSED.has(nav.res.status), `${label}: navigation refused (${nav.res.status})`)
          if (nav.res.status === 302) t.match(nav.res.headers.location?.[0] ?? '', /\/oauth2\/start\?rd=/, `${label}: a 302 goes to the login`)
          t.not(api.res.status, 302, `${label}: an API client is not redirected`)
          verdicts.set(key(lane, target), api.res.status === 401 ? 'needs-session' : 'refused')
          continue
        }
        verdicts.set(key(lane, target), 'forwarded')
        for (const [how, got] of [['API', api], ['navigation', nav]] as const) {
          const record = got.record as EchoRecord
          const reading = upstreamReading(record.url)
          // (a) A protected reading forwarded without a session is a bypass.
          t.ok(judgedByReading(reading).public, `${label} (${how}): forwarded without a session as ${show(record.url)}, which an upstream reads as ${show(reading)}: must be public (Portcullis judged it by ${judgedRoute(stack, target)})`)
          judgedTargetReached(t, `${label} (${how})`, target, record)
          t.equal(record.headers['x-auth-request-user'], undefined, `${label} (${how}): no identity`)
        }
      }
    }
  })

  t.test('with a session: what needed one is forwarded as alice, or refused with 400/404', async (t) => {
    for (const lane of lanes) {
      for (const { family, pair, target } of CORPUS) {
        const label = `${lane.label}: [${pair.p} ${family}] ${show(target)}`
        const got = await send(stack, lane, target, [...API, ...session])
        t.ok(got.res.status < 500, `${label}: no 5xx (${got.res.status})`)
        t.ok(got.reached <= 1, `${label}: at most one upstream request`)
        const before = verdicts.get(key(lane, target))
        if (got.record === null) {
          t.ok(got.res.status === 400 || got.res.status === 404, `${label}: with a session, refused only with 400 or 404 (${got.res.status})`)
          t.not(before, 'forwarded', `${label}: a session never refuses what was forwarded without one`)
          continue
        }
        t.equal(got.res.status, 200, `${label}: forwarded`)
        t.not(before, 'refused', `${label}: what was refused without a session as invalid is not forwarded with one`)
        judgedTargetReached(t, label, target, got.record)
        if (before === 'needs-session') t.equal(got.record.headers['x-auth-request-user'], alice.id, `${label}: as alice`)
        if (readsProtected(got.record.url)) {
          t.equal(got.record.headers['x-auth-request-user'], alice.id, `${label}: an upstream reads ${show(upstreamReading(got.record.url))}, protected: it came through a protected route, as alice`)
        }
      }
    }
  })

  t.test('the forward-auth check: a protected reading never gets a 200 without a session', async (t) => {
    for (const lane of lanes) {
      for (const { family, pair, target } of CORPUS) {
        const label = `${lane.label}: [${pair.p} ${family}] check ${show(target)}`
        const original = target.startsWith('/') ? `http://app.example${target}` : target
        const header: Array<[string, string]> = [['X-Original-URL', original]]
        const before = stack.upstream.requests.length
        const anon = await rawRequest(portOf(lane.app), '/oauth2/auth', { headers: [...API, ...header] })
        const authed = await rawRequest(portOf(lane.app), '/oauth2/auth', { headers: [...API, ...header, ...session] })
        t.equal(stack.upstream.requests.length, before, `${label}: the check sends nothing upstream`)
        // 400: Node's parser refused the header itself (a control byte in it).
        for (const [how, res] of [['without a session', anon], ['with a session', authed]] as const) {
          t.ok([200, 401, 403, 400].includes(res.status), `${label}: ${how}, an answer nginx's auth_request takes (${res.status})`)
        }
        if (anon.status === 200) {
          t.notOk(readsProtected(target), `${label}: 200 without a session, and the app reads ${show(upstreamReading(target))}: must be public (Portcullis judged it by ${judgedRoute(stack, target)})`)
          // A public route's 200 carries the identity headers empty (auth_request_set overwrites any spoof).
          t.equal(anon.headers['x-auth-request-user']?.[0] ?? '', '', `${label}: no identity without a session`)
        }
        if (anon.status === 401) {
          t.equal(authed.status, 200, `${label}: a 401 without a session is a 200 with one`)
          t.equal(authed.headers['x-auth-request-user']?.[0], alice.id, `${label}: as alice`)
        }
        if (anon.status === 403 || anon.status === 400) t.equal(authed.status, anon.status, `${label}: refused alike with a session`)
      }
    }
  })

  t.test('the corpus means something: each kind of answer occurs', async (t) => {
    const counts = { forwarded: 0, 'needs-session': 0, refused: 0 }
    for (const v of verdicts.values()) counts[v]++
    t.comment(`${CORPUS.length} targets × ${lanes.length} lanes: ${JSON.stringify(counts)}`)
    for (const pair of PAIRS) {
      for (const lane of lanes) {
        t.equal(verdicts.get(key(lane, `${pair.p}/x`)), 'forwarded', `${lane.label}: ${pair.p}/x is public`)
        t.equal(verdicts.get(key(lane, `${pair.p}/${pair.a}`)), 'needs-session', `${lane.label}: ${pair.p}/${pair.a} needs a session`)
      }
    }
  })
})
