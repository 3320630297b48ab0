/**
 * `npm run soak` (issue #12 point 10): Portcullis as its own process under moderate, mixed load for
 * 5 minutes (default), watching for errors and for memory that keeps growing.
 *
 * Virtual users, each in a loop: a full login through the real provider's form (a fresh cookie jar,
 * the authorization-code flow followed like a browser); authenticated requests for a while (API calls,
 * navigations, POSTs with a body, bursts of parallel calls, a route only admins may use), during which
 * the short-lived access tokens are refreshed by Portcullis; then the session ends, by an RP-initiated
 * sign-out (`{prefix}/sign_out`, then the provider's confirmation) or at the provider alone (its
 * end-session form, after which the provider posts a logout token to `{prefix}/backchannel-logout`);
 * then the cookies of the ended session (the newest and the one from the login) are sent again and
 * must be refused, at once and again later (a pool of ended sessions is probed throughout).
 *
 * The provider (src/demo/provider.ts, oidc-provider) runs in this process, so its events count the
 * refreshes and the back-channel deliveries; the upstream (bench/servers/identity-echo.ts) and
 * Portcullis (dist/main.js, or src/main.ts through tsx) are processes of their own; `--store=redis`
 * starts a redis-server too. Every unexpected status, a refused session answered 200, an answer made
 * for another user, a provider error event and an error line in Portcullis's log is an error.
 *
 * Prints Portcullis's RSS (VmRSS) after the warm-up (10% of the duration) and at the end, a progress
 * line every 30 s, and a summary; exits 1 when there were errors, when a kind of operation never ran,
 * or when RSS at the end is above 1.2 × RSS after the warm-up. `--help` lists the options.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { createConnection } from 'node:net'
import os from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { DEMO_USERS, PROVIDER_ROUTES, startProvider, type DemoUser, type RunningProvider } from '../src/demo/provider.ts'
import { CookieJar, request, type TestResponse } from '../test/helpers/http.ts'
import { NAVIGATION_HEADERS, parseForm } from '../test/helpers/login.ts'
import { connectInspector, type Inspector } from './lib/inspector.ts'
import { sessionCookieHeader } from './lib/logins.ts'
import { cpuMsOf, holdPort, readyLine, rssOf, sleep, start, waitForHttp, type Managed } from './lib/procs.ts'
import { fmtBytes, median, pad } from './lib/stats.ts'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = resolve(HERE, '..')
const COOKIE = '_portcullis'
const PREFIX = '/oauth2'
const REDIS_SERVER = '/usr/bin/redis-server'
const REQUEST_TIMEOUT_MS = 15_000
/** How long an ended session's cookies stay in the pool that is probed throughout the run. */
const ENDED_PROBE_MS = 120_000
const ENDED_POOL_MAX = 500
const API = { accept: 'application/json' }

const USAGE = `usage: npm run soak -- [options]      (or: npx tsx bench/soak.ts [options])
  --duration=D        how long the load runs (default 5m; e.g. 30s, 90s, 2m, 1h)
  --store=S           cookie | memory | redis (default cookie; redis starts ${REDIS_SERVER}
                      on a free loopback port and sets session.store: redis, session.redis.url)
  --users=N           virtual users, each logging in, using and ending sessions in a loop (default 40)
  --interval=D        mean pause between one user's requests (default 120ms: ~300 requests/s with 40 users)
  --session=A-B       how long each session is used, uniformly between A and B (default 8s-16s:
                      with 40 users about 3 logins/s)
  --token-ttl=D       the provider's access-token lifetime (default 10s)
  --refresh-ahead=D   Portcullis's session.refreshAhead (default 5s: tokens refreshed from 5 s of age)
  --warmup=F          fraction of the duration before RSS start is read (default 0.1)
  --progress=D        progress line interval (default 30s)
  --rss-limit=R       fail when RSS end > R x RSS start (default 1.2)
  --heap              also start Portcullis with --inspect and print its V8 heap after a full GC at
                      the start and the end (the forced GCs run after the RSS readings)
  --heap-snapshots    with --heap: write a .heapsnapshot at the start and the end (kept, with the temp dir).
                      Writing one stops Portcullis for seconds: requests and logout tokens around it
                      time out (errors) and RSS doubles, so such a run finds what grows, it judges nothing
  --portcullis=M      auto | dist | src (default auto: dist/main.js when it is at least as new as
                      every src file, else build it first (npm run build); src: src/main.ts via tsx)
  --no-build          auto never builds: src/main.ts via tsx when dist/ is missing or stale
  --keep              keep the temp dir (config, Portcullis's log)
`

type Kind = 'login' | 'request' | 'refresh' | 'signout' | 'backchannel' | 'refused'
const KINDS: readonly Kind[] = ['login', 'request', 'refresh', 'signout', 'backchannel', 'refused']
type Store = 'cookie' | 'memory' | 'redis'

interface Options {
  durationMs: number
  store: Store
  users: number
  intervalMs: number
  sessionMs: [number, number]
  tokenTtlSec: number
  refreshAheadSec: number
  warmup: number
  progressMs: number
  rssLimit: number
  heap: boolean
  heapSnapshots: boolean
  portcullis: 'auto' | 'dist' | 'src'
  build: boolean
  keep: boolean
}

class UsageError extends Error {}

/** "300", "30s", "1.5m", "250ms", "1h" → ms. */
export function parseDurationMs(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (m === null) return null
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  return Math.round(n * (unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000))
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      store: { type: 'string' },
      users: { type: 'string' },
      interval: { type: 'string' },
      session: { type: 'string' },
      'token-ttl': { type: 'string' },
      'refresh-ahead': { type: 'string' },
      warmup: { type: 'string' },
      progress: { type: 'string' },
      'rss-limit': { type: 'string' },
      heap: { type: 'boolean' },
      'heap-snapshots': { type: 'boolean' },
      portcullis: { type: 'string' },
      'no-build': { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help === true) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const dur = (name: string, text: string | undefined, fallback: string, min: number): number => {
    const ms = parseDurationMs(text ?? fallback)
    if (ms === null || ms < min) throw new UsageError(`--${name} must be a duration of at least ${min} ms, e.g. 30s or 5m`)
    return ms
  }
  const num = (name: string, text: string | undefined, fallback: number, lo: number, hi: number): number => {
    if (text === undefined) return fallback
    const n = Number(text)
    if (!Number.isFinite(n) || n < lo || n > hi) throw new UsageError(`--${name} must be a number from ${lo} to ${hi}`)
    return n
  }
  const store = values.store ?? 'cookie'
  if (store !== 'cookie' && store !== 'memory' && store !== 'redis') throw new UsageError('--store must be cookie, memory or redis')
  const portcullis = values.portcullis ?? 'auto'
  if (portcullis !== 'auto' && portcullis !== 'dist' && portcullis !== 'src') throw new UsageError('--portcullis must be auto, dist or src')
  const [a, b] = (values.session ?? '8s-16s').split('-')
  const lo = parseDurationMs(a ?? '')
  const hi = parseDurationMs(b ?? a ?? '')
  if (lo === null || hi === null || lo < 100 || hi < lo) throw new UsageError('--session must be A-B, two durations with A <= B, e.g. 8s-16s')
  const tokenTtl = dur('token-ttl', values['token-ttl'], '10s', 2000)
  const refreshAhead = dur('refresh-ahead', values['refresh-ahead'], '5s', 1000)
  if (tokenTtl % 1000 !== 0 || refreshAhead % 1000 !== 0) throw new UsageError('--token-ttl and --refresh-ahead are whole seconds')
  if (refreshAhead >= tokenTtl) throw new UsageError('--refresh-ahead must be shorter than --token-ttl (else every request refreshes)')
  return {
    durationMs: dur('duration', values.duration, '5m', 2000),
    store,
    users: Math.round(num('users', values.users, 40, 1, 1000)),
    intervalMs: dur('interval', values.interval, '120ms', 1),
    sessionMs: [lo, hi],
    tokenTtlSec: tokenTtl / 1000,
    refreshAheadSec: refreshAhead / 1000,
    warmup: num('warmup', values.warmup, 0.1, 0, 0.9),
    progressMs: dur('progress', values.progress, '30s', 1000),
    rssLimit: num('rss-limit', values['rss-limit'], 1.2, 1, 100),
    heap: values.heap === true || values['heap-snapshots'] === true,
    heapSnapshots: values['heap-snapshots'] === true,
    portcullis,
    build: values['no-build'] !== true,
    keep: values.keep === true || values['heap-snapshots'] === true,
  }
}

// ---------------------------------------------------------------------------------------------------
// Launching Portcullis (as bench/run.ts does: dist/main.js when it is fresh, else src/main.ts via tsx)
// ---------------------------------------------------------------------------------------------------

interface Launch {
  args: string[]
  describe: string
}

function staleSources(): string[] {
  const list = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? list(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []))
  return list(join(ROOT, 'src')).filter((file) => {
    const js = join(ROOT, 'dist', relative(join(ROOT, 'src'), file)).replace(/\.ts$/, '.js')
    return !existsSync(js) || statSync(js).mtimeMs < statSync(file).mtimeMs
  })
}

function chooseLaunch(opts: Options, say: (line: string) => void): Launch {
  const src: Launch = { args: ['--import', 'tsx', join(ROOT, 'src/main.ts')], describe: 'src/main.ts via tsx' }
  const dist: Launch = { args: [join(ROOT, 'dist/main.js')], describe: 'dist/main.js' }
  if (opts.portcullis === 'src') return src
  if (opts.portcullis === 'dist') {
    if (!existsSync(join(ROOT, 'dist/main.js'))) throw new UsageError('--portcullis=dist but dist/main.js does not exist (npm run build)')
    return dist
  }
  if (staleSources().length === 0) return { ...dist, describe: 'dist/main.js (at least as new as every src file)' }
  if (!opts.build) return { ...src, describe: 'src/main.ts via tsx (dist/ is missing or stale; --no-build)' }
  say('dist/ is missing or older than src/: npm run build')
  const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status === 0 && staleSources().length === 0) return { ...dist, describe: 'dist/main.js (built now)' }
  return { ...src, describe: 'src/main.ts via tsx (npm run build failed)' }
}

// ---------------------------------------------------------------------------------------------------
// redis-server for --store=redis
// ---------------------------------------------------------------------------------------------------

/** One RESP inline command; the reply's first line (`+PONG`, `:3`), or null when nothing answers. */
function redisCommand(port: number, command: string): Promise<string | null> {
  return new Promise((done) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.setTimeout(2000, () => {
      socket.destroy()
      done(null)
    })
    socket.once('error', () => done(null))
    socket.once('connect', () => socket.write(`${command}\r\n`))
    socket.once('data', (d) => {
      socket.destroy()
      done(d.toString().split('\r\n')[0] ?? '')
    })
  })
}

async function startRedisServer(): Promise<{ proc: Managed; port: number; url: string }> {
  if (!existsSync(REDIS_SERVER)) throw new Error(`--store=redis needs ${REDIS_SERVER} (apt-get install redis-server)`)
  const held = await holdPort()
  await held.release()
  const proc = start('redis-server', REDIS_SERVER, ['--bind', '127.0.0.1', '--port', String(held.port), '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], { core: null })
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null) throw new Error(`redis-server exited (${proc.child.exitCode}): ${proc.tail()}`)
    if ((await redisCommand(held.port, 'PING')) === '+PONG') return { proc, port: held.port, url: `redis://127.0.0.1:${held.port}` }
    await sleep(50)
  }
  await proc.stop()
  throw new Error(`redis-server did not answer on 127.0.0.1:${held.port}: ${proc.tail()}`)
}

// ---------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------

const say = (line = ''): void => {
  process.stdout.write(`${line}\n`)
}

interface SoakError {
  atSec: number
  what: string
  detail: string
}

/** Everything the load counts; one per run. */
class Tally {
  readonly ops: Record<Kind, number> = { login: 0, request: 0, refresh: 0, signout: 0, backchannel: 0, refused: 0 }
  /** Back-channel logout tokens the provider delivered (after sign-outs too) / failed to deliver. */
  deliveries = 0
  errorCount = 0
  readonly errors: SoakError[] = []
  /** When the load began (error times are from it). */
  t0 = performance.now()
  fail(what: string, detail: string): void {
    this.errorCount++
    const atSec = (performance.now() - this.t0) / 1000
    if (this.errors.length < 20) this.errors.push({ atSec, what, detail })
    if (this.errorCount <= 3) say(`  ERROR at ${atSec.toFixed(1)} s: ${what}${detail === '' ? '' : `: ${detail.slice(0, 300)}`}`)
  }
}

/** A response's gist for an error message: status, Location, start of the body. */
function gist(res: TestResponse): string {
  const body = res.body.replace(/\s+/g, ' ').trim()
  return `status ${res.status}${res.headers.location !== undefined ? `, Location ${res.headers.location}` : ''}${body === '' ? '' : `, body ${body.slice(0, 160)}`}`
}

/** A step of a flow answered what it must not: carries the detail for the error list. */
class StepError extends Error {}

interface Env {
  opts: Options
  publicUrl: string
  issuer: string
  tally: Tally
  agent: http.Agent
  /** Set when the load should stop: users finish the step they are in and leave. */
  stopping: () => boolean
  ended: EndedSession[]
}

interface EndedSession {
  cookie: string
  at: number
  how: 'signout' | 'backchannel'
}

/**
 * The provider's server closes idle connections after 5 s (Node's default); a request sent on a
 * pooled connection just as the server closes it fails with "socket hang up", which a browser would
 * retry and this client would count. The provider is asked a few times per login and logout only:
 * a connection per request.
 */
const PROVIDER_AGENT = new http.Agent({ keepAlive: false })

/** One request with the soak's agent (keep-alive to Portcullis) and timeout; a failure names the request. */
async function send(env: Env, url: string, opts: { method?: string; headers?: Record<string, string>; body?: string; jar?: CookieJar } = {}): Promise<TestResponse> {
  const toPortcullis = url.startsWith(`${env.publicUrl}/`)
  try {
    return await request(url, { ...opts, agent: toPortcullis ? env.agent : PROVIDER_AGENT, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  } catch (err) {
    const code = (err as { code?: unknown }).code
    throw new Error(`${opts.method ?? 'GET'} ${toPortcullis ? 'Portcullis' : 'provider'} ${new URL(url).pathname}: ${(err as Error).message}${typeof code === 'string' ? ` (${code})` : ''}`)
  }
}

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)] as T
const between = (lo: number, hi: number): number => lo + Math.random() * (hi - lo)

/** A virtual user: one demo user, a client address per login (Portcullis trusts the soak's X-Forwarded-For). */
class VirtualUser {
  readonly n: number
  readonly user: DemoUser
  cycle = 0
  constructor(n: number) {
    this.n = n
    this.user = DEMO_USERS[n % DEMO_USERS.length] as DemoUser
  }
  get address(): string {
    return `10.${(this.n % 250) + 1}.${Math.floor(this.cycle / 250) % 250}.${(this.cycle % 250) + 1}`
  }
  get isAdmin(): boolean {
    return this.user.groups.includes('admins')
  }
}

/**
 * A browser login: GET a protected page → 302 {prefix}/start → 302 to the provider → its login
 * form → POST → 302s → {prefix}/callback → 302 back to the page → the page (200, as this user).
 * Every answer on the way must be the one a browser expects. Returns the jar holding the session.
 */
async function login(env: Env, vu: VirtualUser): Promise<CookieJar> {
  const jar = new CookieJar()
  const pub = new URL(env.publicUrl).origin
  const landing = `${env.publicUrl}/app/${vu.n}?cycle=${vu.cycle}`
  let method = 'GET'
  let url = landing
  let body: string | undefined
  let submitted = false
  const trail: string[] = []
  for (let step = 0; step < 20; step++) {
    const here = new URL(url)
    const headers: Record<string, string> = { ...NAVIGATION_HEADERS, ...(here.origin === pub ? { 'x-forwarded-for': vu.address } : {}) }
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
    const res = await send(env, url, { method, headers, jar, ...(body !== undefined ? { body } : {}) })
    trail.push(`${method} ${here.pathname} -> ${res.status}`)
    const location = res.headers.location
    if ((res.status === 302 || res.status === 303) && location !== undefined) {
      const next = new URL(location, url)
      if (next.origin === pub && !next.pathname.startsWith(`${PREFIX}/`)) {
        if (here.pathname !== `${PREFIX}/callback`) throw new StepError(`login: sent back to the app from ${here.pathname}, not by the callback (${trail.join(', ')})`)
        if (next.href !== landing) throw new StepError(`login: came back to ${next.href}, not to ${landing}`)
        if (sessionCookieHeader(jar, COOKIE) === null) throw new StepError(`login: the callback set no ${COOKIE} cookie (${trail.join(', ')})`)
        const page = await send(env, landing, { headers: { ...NAVIGATION_HEADERS, 'x-forwarded-for': vu.address }, jar })
        if (page.status !== 200) throw new StepError(`login: the page after the login answered ${gist(page)}`)
        const seen = (JSON.parse(page.body) as { user?: unknown }).user
        if (seen !== vu.user.id) throw new StepError(`login: the page after ${vu.user.id}'s login was made for ${String(seen)}`)
        return jar
      }
      if (step === 0 && !(next.origin === pub && next.pathname === `${PREFIX}/start`)) throw new StepError(`login: a navigation without a session went to ${next.href}, not to ${PREFIX}/start`)
      method = 'GET'
      body = undefined
      url = next.href
      continue
    }
    const form = res.status === 200 && here.origin !== pub ? parseForm(res.body, url) : undefined
    if (form !== undefined && 'login' in form.fields && 'password' in form.fields && !submitted) {
      submitted = true
      method = form.method
      url = form.action
      body = new URLSearchParams({ ...form.fields, login: vu.user.email, password: vu.user.password }).toString()
      continue
    }
    throw new StepError(`login: ${method} ${url} answered ${gist(res)} (${trail.join(', ')})`)
  }
  throw new StepError(`login: more than 20 steps (${trail.join(', ')})`)
}

/** One authenticated request that must be answered `want`, and a 200 made for this user (and body). */
async function use(env: Env, vu: VirtualUser, jar: CookieJar, kind: 'api' | 'nav' | 'post' | 'admin'): Promise<void> {
  const headers: Record<string, string> = { 'x-forwarded-for': vu.address, ...(kind === 'nav' ? NAVIGATION_HEADERS : API) }
  const path = kind === 'admin' ? `/admin/report?u=${vu.n}` : kind === 'nav' ? `/page/${vu.n}` : `/api/items/${Math.floor(Math.random() * 1000)}`
  const body = kind === 'post' ? JSON.stringify({ user: vu.n, note: randomBytes(Math.floor(between(10, 600))).toString('base64url') }) : undefined
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await send(env, `${env.publicUrl}${path}`, { method: body === undefined ? 'GET' : 'POST', headers, jar, ...(body !== undefined ? { body } : {}) })
  env.tally.ops.request++
  const want = kind === 'admin' && !vu.isAdmin ? 403 : 200
  if (res.status !== want) {
    env.tally.fail(`${kind === 'post' ? 'POST' : 'GET'} ${path} as ${vu.user.id} answered ${res.status}, expected ${want}`, gist(res))
    return
  }
  if (want !== 200) return
  const seen = JSON.parse(res.body) as { user?: unknown; bytes?: unknown }
  if (seen.user !== vu.user.id) env.tally.fail(`answer made for another user`, `${path} with ${vu.user.id}'s session reached the upstream as ${String(seen.user)}`)
  if (body !== undefined && seen.bytes !== Buffer.byteLength(body)) env.tally.fail('request body not passed on whole', `${Buffer.byteLength(body)} bytes sent, ${String(seen.bytes)} arrived`)
}

/** The cookie of an ended session is sent again: an API call must get 401, a navigation the login. */
async function expectRefused(env: Env, cookie: string, how: string, mode: 'api' | 'nav'): Promise<void> {
  const headers: Record<string, string> = { cookie, 'x-forwarded-for': '10.255.255.254', ...(mode === 'nav' ? NAVIGATION_HEADERS : API) }
  const res = await send(env, `${env.publicUrl}/api/after-end`, { headers })
  env.tally.ops.refused++
  if (res.status === 200) {
    const seen = (JSON.parse(res.body) as { user?: unknown }).user
    env.tally.fail(`an ended session was answered 200`, `the cookie of a session ended by ${how} reached the upstream as ${String(seen)}`)
  } else if (mode === 'api' && res.status !== 401) {
    env.tally.fail(`an ended session's API call answered ${res.status}, expected 401`, `${how}; ${gist(res)}`)
  } else if (mode === 'nav' && (res.status !== 302 || new URL(String(res.headers.location), env.publicUrl).pathname !== `${PREFIX}/start`)) {
    env.tally.fail(`an ended session's navigation was not sent to ${PREFIX}/start`, `${how}; ${gist(res)}`)
  }
}

/** Submit the first form of a provider page (its own fields); the answer must redirect. */
async function confirmAtProvider(env: Env, pageUrl: string, jar: CookieJar, what: string): Promise<URL> {
  const page = await send(env, pageUrl, { headers: NAVIGATION_HEADERS, jar })
  const form = page.status === 200 ? parseForm(page.body, pageUrl) : undefined
  if (form === undefined) throw new StepError(`${what}: the provider's end-session page answered ${gist(page)}`)
  const res = await send(env, form.action, {
    method: form.method,
    headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form.fields).toString(),
    jar,
  })
  if ((res.status !== 302 && res.status !== 303) || res.headers.location === undefined) throw new StepError(`${what}: the provider's confirmation answered ${gist(res)}`)
  return new URL(res.headers.location, form.action)
}

/** RP-initiated: {prefix}/sign_out clears the cookie and sends the browser to the provider, which confirms and returns. */
async function signOut(env: Env, vu: VirtualUser, jar: CookieJar): Promise<void> {
  const res = await send(env, `${env.publicUrl}${PREFIX}/sign_out?rd=%2F`, { headers: { ...NAVIGATION_HEADERS, 'x-forwarded-for': vu.address }, jar })
  const to = res.headers.location === undefined ? null : new URL(res.headers.location, env.publicUrl)
  if (res.status !== 302 || to === null || `${to.origin}${to.pathname}` !== `${env.issuer}${PROVIDER_ROUTES.end_session}`) {
    throw new StepError(`sign-out: answered ${gist(res)}, expected a 302 to the provider's end-session endpoint`)
  }
  if (to.searchParams.get('id_token_hint') === null) throw new StepError('sign-out: no id_token_hint for the provider')
  if (sessionCookieHeader(jar, COOKIE) !== null) throw new StepError('sign-out: the session cookie was not cleared')
  const back = await confirmAtProvider(env, to.href, jar, 'sign-out')
  if (back.href !== `${env.publicUrl}/`) throw new StepError(`sign-out: the provider returned to ${back.href}, not to the post_logout_redirect_uri ${env.publicUrl}/`)
  env.tally.ops.signout++
}

/**
 * The user signs out at the provider alone (another app's sign-out link): its end-session form, with
 * no id_token_hint. The provider posts a logout token to Portcullis before it answers the confirmation.
 */
async function logoutAtProvider(env: Env, jar: CookieJar): Promise<void> {
  await confirmAtProvider(env, `${env.issuer}${PROVIDER_ROUTES.end_session}`, jar, 'provider logout')
  env.tally.ops.backchannel++
}

async function runUser(env: Env, vu: VirtualUser): Promise<void> {
  const { opts, tally } = env
  const pause = () => sleep(between(0.5, 1.5) * opts.intervalMs)
  while (!env.stopping()) {
    vu.cycle++
    try {
      const jar = await login(env, vu)
      tally.ops.login++
      const first = sessionCookieHeader(jar, COOKIE) as string
      const until = performance.now() + between(opts.sessionMs[0], opts.sessionMs[1])
      while (performance.now() < until && !env.stopping()) {
        await pause()
        const r = Math.random()
        if (r < 0.06) await Promise.all([use(env, vu, jar, 'api'), use(env, vu, jar, 'api'), use(env, vu, jar, 'api'), use(env, vu, jar, 'nav')])
        else if (r < 0.12) await use(env, vu, jar, 'admin')
        else if (r < 0.3) await use(env, vu, jar, 'nav')
        else if (r < 0.4) await use(env, vu, jar, 'post')
        else await use(env, vu, jar, 'api')
      }
      if (env.stopping()) return
      const last = sessionCookieHeader(jar, COOKIE)
      if (last === null) throw new StepError('the session cookie disappeared while in use')
      const how = Math.random() < 0.5 ? 'signout' : 'backchannel'
      if (how === 'signout') await signOut(env, vu, jar)
      else await logoutAtProvider(env, jar)
      // At once: the newest cookie and the one the login set (a copy taken earlier).
      await expectRefused(env, last, how, 'api')
      await expectRefused(env, first, how, 'nav')
      env.ended.push({ cookie: last, at: performance.now(), how })
      if (first !== last) env.ended.push({ cookie: first, at: performance.now(), how })
      if (env.ended.length > ENDED_POOL_MAX) env.ended.splice(0, env.ended.length - ENDED_POOL_MAX)
    } catch (err) {
      if (err instanceof StepError) tally.fail(`${vu.user.id}`, err.message)
      else tally.fail(`${vu.user.id}: request failed`, (err as Error).message)
      await sleep(500)
    }
    await sleep(between(200, 800))
  }
}

/** Throughout the run: cookies of sessions ended up to 2 minutes ago are sent again, and must be refused. */
async function probeEnded(env: Env): Promise<void> {
  while (!env.stopping()) {
    await sleep(between(50, 150))
    const now = performance.now()
    while (env.ended.length > 0 && now - (env.ended[0] as EndedSession).at > ENDED_PROBE_MS) env.ended.shift()
    if (env.ended.length === 0) continue
    const e = pick(env.ended)
    try {
      await expectRefused(env, e.cookie, `${e.how} ${((now - e.at) / 1000).toFixed(0)} s ago`, Math.random() < 0.5 ? 'api' : 'nav')
    } catch (err) {
      env.tally.fail('probe of an ended session failed', (err as Error).message)
    }
  }
}

/** Portcullis's log from byte `from` on: lines at level error or fatal (50+), and the warnings by message. */
async function scanLog(file: string, from: number, readyAt: number): Promise<{ lines: number; errors: Array<Record<string, unknown>>; errorCount: number; warnings: Map<string, number> }> {
  const out = { lines: 0, errors: [] as Array<Record<string, unknown>>, errorCount: 0, warnings: new Map<string, number>() }
  if (!existsSync(file)) return out
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8', start: from }), crlfDelay: Infinity })
  for await (const line of rl) {
    if (line === '') continue
    out.lines++
    let entry: Record<string, unknown>
    try {
      entry = JSON.parse(line) as Record<string, unknown>
    } catch {
      // Node's own lines on stderr for --inspect (--heap) are not Portcullis's.
      if (/^(Debugger (listening|attached|ending)|For help, see: https:\/\/nodejs\.org)/.test(line)) continue
      out.errorCount++
      if (out.errors.length < 5) out.errors.push({ unparsed: line.slice(0, 300) })
      continue
    }
    const level = typeof entry.level === 'number' ? entry.level : 0
    // The startup's readiness polls (503 until the provider is connected) may reach the file after
    // the offset was taken: lines are written in batches. Judged by their own time, they are not the soak's.
    if (entry.route === 'ops:readyz' && typeof entry.time === 'number' && entry.time <= readyAt) continue
    if (level >= 50) {
      out.errorCount++
      if (out.errors.length < 5) out.errors.push(entry)
    } else if (level >= 40) {
      const msg = String(entry.msg)
      out.warnings.set(msg, (out.warnings.get(msg) ?? 0) + 1)
    }
  }
  return out
}

const counts = (ops: Record<Kind, number>): string => KINDS.map((k) => `${k} ${ops[k].toLocaleString('en-US')}`).join(', ')

async function main(): Promise<number> {
  let opts: Options
  try {
    opts = parseOptions(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`)
    return 2
  }
  let launch: Launch
  try {
    launch = chooseLaunch(opts, say)
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`)
    return 2
  }

  const tmp = mkdtempSync(join(os.tmpdir(), 'portcullis-soak-'))
  const procs: Managed[] = []
  const holder: { provider: RunningProvider | null } = { provider: null }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
  const cleanup = async (): Promise<void> => {
    agent.destroy()
    await Promise.allSettled(procs.splice(0).reverse().map((p) => p.stop()))
    await holder.provider?.close()
    holder.provider = null
    if (opts.keep) say(`temp dir kept: ${tmp}`)
    else rmSync(tmp, { recursive: true, force: true })
  }
  let interrupted = false
  const onSignal = (): void => {
    if (interrupted) return
    interrupted = true
    say('\ninterrupted: stopping')
    void cleanup().finally(() => process.exit(130))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  try {
    return await soak(opts, launch, tmp, procs, agent, (p) => (holder.provider = p))
  } finally {
    if (!interrupted) await cleanup()
  }
}

async function soak(opts: Options, launch: Launch, tmp: string, procs: Managed[], agent: http.Agent, setProvider: (p: RunningProvider) => void): Promise<number> {
  const held = await holdPort()
  const port = held.port
  const publicUrl = `http://127.0.0.1:${port}`
  const clientId = 'portcullis-soak'
  const clientSecret = randomBytes(24).toString('base64url')
  const secret = randomBytes(32).toString('base64url')
  const tsx = ['--import', 'tsx']

  const upstreamProc = start('upstream', process.execPath, [...tsx, join(HERE, 'servers/identity-echo.ts')], { core: null, cwd: ROOT })
  procs.push(upstreamProc)
  const upstream = `http://127.0.0.1:${(await readyLine<{ port: number }>(upstreamProc)).port}`

  let redis: { proc: Managed; port: number; url: string } | null = null
  if (opts.store === 'redis') {
    redis = await startRedisServer()
    procs.push(redis.proc)
  }

  const provider = await startProvider({
    clients: [
      {
        clientId,
        clientSecret,
        redirectUris: [`${publicUrl}${PREFIX}/callback`],
        postLogoutRedirectUris: [`${publicUrl}/`],
        backchannelLogoutUri: `${publicUrl}${PREFIX}/backchannel-logout`,
      },
    ],
    accessTokenTtl: opts.tokenTtlSec,
    allowLoopbackFetch: true,
  })
  setProvider(provider)
  // The demo provider records every request for tests; nothing here reads the records.
  const trim = setInterval(() => {
    provider.requests.length = 0
    provider.authorizations.length = 0
  }, 1000)
  trim.unref()

  const tally = new Tally()
  type Ctx = { oidc?: { params?: { grant_type?: unknown } } }
  const errText = (err: unknown): string => (err instanceof Error ? `${err.name}: ${err.message}${'error_description' in err ? ` (${String((err as { error_description?: unknown }).error_description)})` : ''}` : String(err))
  provider.provider.on('grant.success', (ctx) => {
    if ((ctx as Ctx).oidc?.params?.grant_type === 'refresh_token') tally.ops.refresh++
  })
  provider.provider.on('backchannel.success', () => tally.deliveries++)
  for (const event of ['grant.error', 'backchannel.error', 'server_error', 'authorization.error', 'end_session.error']) {
    provider.provider.on(event, (ctx, err) => {
      const grant = (ctx as Ctx).oidc?.params?.grant_type
      tally.fail(`provider ${event}${typeof grant === 'string' ? ` (${grant})` : ''}`, errText(err))
    })
  }

  const config = {
    // The soak stands in for the ingress: its X-Forwarded-For (a client address per login) is believed.
    server: { listen: `127.0.0.1:${port}`, publicUrl, trustedProxies: ['127.0.0.1/32'] },
    provider: { issuer: provider.issuer, clientId, clientSecret, allowInsecureHttp: true },
    session: {
      secrets: [secret],
      store: opts.store,
      refreshAhead: `${opts.refreshAheadSec}s`,
      ...(redis !== null ? { redis: { url: redis.url } } : {}),
    },
    routes: [
      { match: { pathPrefix: '/' }, upstream },
      { match: { pathPrefix: '/admin/' }, upstream, allow: { groups: ['admins'] } },
    ],
    logging: { level: 'info', requests: true },
  }
  const configFile = join(tmp, 'portcullis.yaml')
  writeFileSync(configFile, JSON.stringify(config, null, 2)) // JSON is YAML
  const logFile = join(tmp, 'portcullis.log')
  const env: Record<string, string | undefined> = { NODE_ENV: 'production' }
  for (const k of Object.keys(process.env)) if (k.startsWith('PORTCULLIS_')) env[k] = undefined
  let inspectPort = 0
  if (opts.heap) {
    const h = await holdPort()
    inspectPort = h.port
    await h.release()
  }
  await held.release()
  const portcullis = start('portcullis', process.execPath, [...(opts.heap ? [`--inspect=127.0.0.1:${inspectPort}`] : []), ...launch.args, '--config', configFile], {
    core: null,
    cwd: ROOT,
    env,
    logFile,
  })
  procs.push(portcullis)
  await waitForHttp(`${publicUrl}/readyz`, portcullis, { timeoutMs: 60_000 })
  const readyAt = Date.now()
  const inspector: Inspector | null = opts.heap ? await connectInspector(inspectPort) : null
  // Portcullis's log is judged from here on (its start and the readiness polls are not the soak's).
  const logFrom = statSync(logFile).size

  const warmupMs = Math.round(opts.durationMs * opts.warmup)
  const [slo, shi] = opts.sessionMs
  say(`Portcullis soak ${new Date().toISOString()}`)
  say(`machine     ${os.cpus()[0]?.model.trim() ?? 'cpu'}, ${os.availableParallelism()} cores; Node ${process.version}`)
  say(`portcullis  ${launch.describe} (pid ${portcullis.pid}), ${opts.store} store${redis !== null ? ` (redis-server ${redis.url}, pid ${redis.proc.pid})` : ''}, log level info, access log to a file`)
  say(`provider    ${provider.issuer} (in this process), access tokens ${opts.tokenTtlSec} s, session.refreshAhead ${opts.refreshAheadSec} s`)
  if (opts.heapSnapshots) say('snapshots   WARNING: writing a heap snapshot stops Portcullis for seconds: errors around it and the RSS ratio do not count')
  say(
    `load        ${(opts.durationMs / 1000).toFixed(0)} s; ${opts.users} users, a request every ~${opts.intervalMs} ms each, sessions used ${slo / 1000}-${shi / 1000} s, ` +
      `then signed out (half) or logged out at the provider (half); warm-up ${(warmupMs / 1000).toFixed(0)} s`,
  )

  // RSS every second; RSS start = median of the 5 s before the warm-up ends, RSS end = of the last 5 s.
  const samples: Array<{ t: number; rss: number }> = []
  const sampler = setInterval(() => {
    const rss = rssOf(portcullis.pid)
    if (rss !== null) samples.push({ t: performance.now() - t0, rss })
  }, 1000)
  const medianRss = (from: number, to: number): number => {
    const within = samples.filter((s) => s.t > from && s.t <= to).map((s) => s.rss)
    return within.length > 0 ? median(within) : (rssOf(portcullis.pid) ?? Number.NaN)
  }

  let stop = false
  const t0 = performance.now()
  tally.t0 = t0
  const stopAt = t0 + opts.durationMs
  const envRun: Env = { opts, publicUrl, issuer: provider.issuer, tally, agent, stopping: () => stop || performance.now() >= stopAt, ended: [] }
  const users = Array.from({ length: opts.users }, (_, i) => new VirtualUser(i))
  // Users start spread over the shortest session (or a tenth of the run), not all logging in at once.
  const staggerMs = Math.min(opts.sessionMs[0], opts.durationMs / 10) / Math.max(1, opts.users)
  const running = [
    ...users.map(async (vu, i) => {
      await sleep(i * staggerMs)
      await runUser(envRun, vu)
    }),
    probeEnded(envRun),
  ]

  let rssStart = Number.NaN
  let heapStart: number | null = null
  let lastCpu = cpuMsOf(portcullis.pid)
  let lastAt = performance.now()
  let lastRequests = 0
  let died = false
  const progress = (label: string): void => {
    const now = performance.now()
    const cpu = cpuMsOf(portcullis.pid)
    const cpuPct = cpu !== null && lastCpu !== null ? ((cpu - lastCpu) / (now - lastAt)) * 100 : Number.NaN
    const rps = (tally.ops.request + tally.ops.refused - lastRequests) / ((now - lastAt) / 1000)
    lastCpu = cpu
    lastAt = now
    lastRequests = tally.ops.request + tally.ops.refused
    say(
      `${pad(label, 7, true)}  ${counts(tally.ops)}; errors ${tally.errorCount}; RSS ${fmtBytes(rssOf(portcullis.pid) ?? Number.NaN)}; ` +
        `${Math.round(rps)} req/s; Portcullis CPU ${Number.isFinite(cpuPct) ? cpuPct.toFixed(0) : '-'}%`,
    )
  }
  let nextProgress = t0 + opts.progressMs
  let warmedUp = warmupMs === 0
  if (warmedUp) {
    rssStart = rssOf(portcullis.pid) ?? Number.NaN
    say(`RSS start  ${fmtBytes(rssStart)} (no warm-up)`)
  }
  while (performance.now() < stopAt) {
    await sleep(Math.min(250, Math.max(1, stopAt - performance.now())))
    if (portcullis.child.exitCode !== null || portcullis.child.signalCode !== null) {
      tally.fail('Portcullis exited during the run', `${portcullis.child.exitCode ?? portcullis.child.signalCode}: ${portcullis.tail().slice(-600)}`)
      died = true
      break
    }
    const now = performance.now()
    if (!warmedUp && now - t0 >= warmupMs) {
      warmedUp = true
      rssStart = medianRss(warmupMs - 5000, now - t0)
      say(`RSS start  ${fmtBytes(rssStart)} (after the ${(warmupMs / 1000).toFixed(0)} s warm-up; median of the last 5 s)`)
      if (inspector !== null) {
        heapStart = (await inspector.gcAndHeap()).usedBytes
        say(`heap start ${fmtBytes(heapStart)} (V8 heap used after a full GC)`)
        if (opts.heapSnapshots) say(`           snapshot: ${await inspector.heapSnapshot(join(tmp, 'start.heapsnapshot'))}`)
      }
    }
    if (now >= nextProgress) {
      progress(`${((now - t0) / 1000).toFixed(0)} s`)
      nextProgress += opts.progressMs
    }
  }
  const endT = performance.now() - t0
  const rssEnd = medianRss(endT - 5000, endT)
  stop = true
  clearInterval(sampler)
  const settled = await Promise.race([Promise.all(running).then(() => true), sleep(REQUEST_TIMEOUT_MS + 5000).then(() => false)])
  if (!settled) tally.fail('users still busy 20 s after the end', 'a request hung')
  let heapEnd: number | null = null
  if (inspector !== null && !died) {
    heapEnd = (await inspector.gcAndHeap()).usedBytes
    if (opts.heapSnapshots) say(`snapshot end: ${await inspector.heapSnapshot(join(tmp, 'end.heapsnapshot'))}`)
    inspector.close()
  }
  const hwm = (() => {
    try {
      const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${portcullis.pid}/status`, 'utf8'))
      return m === null ? Number.NaN : Number(m[1]) * 1024
    } catch {
      return Number.NaN
    }
  })()

  // With the Redis store, Redis should hold the sessions.
  let redisKeys: string | null = null
  if (redis !== null) redisKeys = await redisCommand(redis.port, 'DBSIZE')

  // Portcullis stops on SIGTERM, draining, and exits 0.
  agent.destroy()
  if (!died) {
    await portcullis.stop()
    if (portcullis.child.exitCode !== 0) tally.fail('Portcullis did not exit 0 on SIGTERM', `exit ${portcullis.child.exitCode ?? portcullis.child.signalCode}`)
  }
  procs.splice(procs.indexOf(portcullis), 1)
  const log = await scanLog(logFile, logFrom, readyAt)
  for (const entry of log.errors) tally.fail('Portcullis logged an error', JSON.stringify(entry).slice(0, 400))
  for (let i = log.errors.length; i < log.errorCount; i++) tally.errorCount++

  const ratio = rssEnd / rssStart
  const seconds = endT / 1000
  say()
  say(`summary after ${seconds.toFixed(0)} s (${opts.store} store, ${launch.describe})`)
  say(`counts     ${counts(tally.ops)}`)
  say(
    `rates      ${(tally.ops.request / seconds).toFixed(0)} requests/s, ${(tally.ops.login / seconds).toFixed(2)} logins/s, ${(tally.ops.refresh / seconds).toFixed(2)} refreshes/s; ` +
      `the provider delivered ${tally.deliveries.toLocaleString('en-US')} logout tokens (one per sign-out and per provider logout)`,
  )
  say(`RSS start  ${fmtBytes(rssStart)}`)
  say(`RSS end    ${fmtBytes(rssEnd)}  ratio ${Number.isFinite(ratio) ? ratio.toFixed(3) : '-'} (limit ${opts.rssLimit.toFixed(2)}); peak (VmHWM) ${fmtBytes(hwm)}`)
  if (heapStart !== null && heapEnd !== null) say(`heap       ${fmtBytes(heapStart)} -> ${fmtBytes(heapEnd)} (V8 heap used after a full GC)`)
  if (redisKeys !== null) say(`redis      DBSIZE ${redisKeys}`)
  // Users were in the middle of sessions when the load stopped: a Redis store holds them.
  if (redis !== null && redisKeys === ':0') tally.fail('--store=redis, but Redis holds no keys at the end', 'the sessions are not in Redis: is session.store: redis implemented?')
  say(`log        ${log.lines.toLocaleString('en-US')} lines; ${log.errorCount} at level error or above; warnings: ${log.warnings.size === 0 ? 'none' : [...log.warnings].map(([m, n]) => `${m} (${n})`).join(', ')}`)
  say(`errors     ${tally.errorCount}`)
  for (const e of tally.errors.slice(0, 8)) say(`  at ${e.atSec.toFixed(1)} s: ${e.what}${e.detail === '' ? '' : `\n    ${e.detail.slice(0, 600)}`}`)
  const never = KINDS.filter((k) => tally.ops[k] === 0)
  const failures: string[] = []
  if (tally.errorCount > 0) failures.push(`${tally.errorCount} error(s)`)
  if (never.length > 0) failures.push(`never ran: ${never.join(', ')}`)
  if (!(ratio <= opts.rssLimit)) failures.push(`RSS grew ${Number.isFinite(ratio) ? `${((ratio - 1) * 100).toFixed(0)}%` : '(unknown)'}, over the ${((opts.rssLimit - 1) * 100).toFixed(0)}% limit`)
  say(`SOAKJSON ${JSON.stringify({ seconds, store: opts.store, ops: tally.ops, deliveries: tally.deliveries, errors: tally.errorCount, rssStartBytes: rssStart, rssEndBytes: rssEnd, rssRatio: ratio, heapStartBytes: heapStart, heapEndBytes: heapEnd, logErrors: log.errorCount })}`)
  say(failures.length === 0 ? 'result     PASS' : `result     FAIL: ${failures.join('; ')}`)
  return failures.length === 0 ? 0 : 1
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
