/**
 * Header hygiene end to end, in every lane: what step 1 of the pipeline (`screenRequest`) strips from a
 * client's request, and what the forward (`upstreamHeaders`) drops, on public routes, on session
 * routes, on Portcullis's own routes and for methods the proxy does not take.
 *
 * Every check runs in three ways: the fast lane (a plain proxied path), the Fastify path reached from
 * the fast lane (the same path with a percent-escape left, `%20`), and an app on the same runtime with
 * the fast lane off (`startApp(..., { fastLane: false })`).
 *
 * The lists of names below are this file's own copies, written out (not imported from src): taking an
 * entry out of src must make a named assertion here fail. A membership check compares the copies with
 * the exported lists both ways, for the names no request can tell apart (the default identity headers
 * are stripped by a second rule as well).
 *
 * Raw sockets (`rawRequest`) carry what ordinary clients refuse or rewrite: two `Host` headers, names
 * with `_`.
 */
import t, { type Test } from 'tap'
import { startApp, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { rawRequest, type RawResponse } from '../helpers/raw-http.ts'
import type { EchoRecord } from '../helpers/upstream.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
// Only for the membership check: the expected names are this file's own literals.
import { FOREIGN_IDENTITY_HEADERS, FOREIGN_IDENTITY_PREFIXES } from '../../src/policy/headers.ts'

const alice = DEMO_USERS[0]!

/** The test's own normalization: lower case, `_` read as `-`. */
const norm = (name: string): string => name.toLowerCase().replaceAll('_', '-')

// ---------------------------------------------------------------------------------------------------
// The lists, written out

/** Other auth layers' identity headers, stripped by exact name (src: FOREIGN_IDENTITY_HEADERS). */
const FOREIGN_EXACT: readonly string[] = [
  'Remote-User',
  'Remote-Email',
  'Remote-Groups',
  'Remote-Name',
  'X-Remote-User',
  'X-Remote-Group',
  'X-Remote-Groups',
  'X-Remote-Email',
  'X-Remote-Name',
  'X-User',
  'X-Username',
  'X-Email',
  'X-User-Email',
  'X-User-Id',
  'X-Groups',
  'X-Roles',
  'X-Forwarded-User',
  'X-Forwarded-Email',
  'X-Forwarded-Groups',
  'X-Forwarded-Preferred-Username',
  'X-Forwarded-Access-Token',
  'GAP-Auth',
  'GAP-Signature',
  'X-Auth-Userid',
  'X-Auth-Username',
  'X-Auth-Email',
  'X-Auth-Subject',
  'X-Auth-Roles',
  'X-Auth-Groups',
  'X-Auth-Audience',
  'X-Auth-ExpiresIn',
  'X-Userinfo',
  'X-Id-Token',
  'X-Access-Token',
  'X-Authenticated-Userid',
  'X-Authenticated-Scope',
  'X-Authenticated-Groups',
  'X-Credential-Identifier',
  'X-Credential-Username',
  'X-Anonymous-Consumer',
  'X-Jwt-Payload',
  'X-Jwt-Assertion',
  'X-Goog-Authenticated-User-Email',
  'X-Goog-Authenticated-User-Id',
  'X-Goog-Iap-Jwt-Assertion',
  'X-Amzn-Oidc-Data',
  'X-Amzn-Oidc-Identity',
  'X-Amzn-Oidc-Accesstoken',
  'X-Vouch-User',
  'X-Vouch-Success',
  'Tailscale-User-Login',
  'Tailscale-User-Name',
  'Tailscale-User-Profile-Pic',
]

/**
 * Each prefix of other auth layers' identity headers (src: FOREIGN_IDENTITY_PREFIXES) with samples
 * that no exact name covers, so each sample is stripped by its prefix alone.
 */
const FOREIGN_PREFIXES: ReadonlyArray<readonly [prefix: string, samples: readonly string[]]> = [
  ['x-auth-request-', ['X-Auth-Request-Redirect', 'X-Auth-Request-Anything-Else']],
  ['x-webauth-', ['X-WEBAUTH-USER', 'X-WEBAUTH-EMAIL', 'X-WEBAUTH-ROLE']],
  ['x-remote-extra-', ['X-Remote-Extra-Scopes']],
  ['x-pomerium-', ['X-Pomerium-Claim-Email', 'X-Pomerium-Jwt-Assertion']],
  ['x-authentik-', ['X-Authentik-Username', 'X-Authentik-Groups']],
  ['x-ms-client-principal', ['X-MS-CLIENT-PRINCIPAL', 'X-MS-CLIENT-PRINCIPAL-NAME', 'X-MS-CLIENT-PRINCIPAL-ID']],
  ['x-ms-token-', ['X-MS-TOKEN-AAD-ACCESS-TOKEN']],
  ['cf-access-', ['Cf-Access-Jwt-Assertion', 'Cf-Access-Authenticated-User-Email']],
  ['x-vouch-idp-', ['X-Vouch-IdP-Claims-Email', 'X-Vouch-IdP-AccessToken']],
  ['x-consumer-', ['X-Consumer-Username', 'X-Consumer-ID']],
  ['oidc-', ['OIDC-Claim-Email', 'OIDC-Access-Token']],
  ['mellon-', ['Mellon-NameID']],
  ['shib-', ['Shib-Identity-Provider', 'Shib-Session-ID']],
]

/** Portcullis's default identity headers (injected on session routes) and its token headers. */
const INJECTED_BY_DEFAULT: Readonly<Record<string, string>> = {
  'X-Auth-Request-User': alice.id,
  'X-Auth-Request-Email': alice.email,
  'X-Auth-Request-Groups': alice.groups.join(','),
  'X-Auth-Request-Preferred-Username': alice.preferredUsername,
  'X-Forwarded-User': alice.id,
  'X-Forwarded-Email': alice.email,
  'X-Forwarded-Groups': alice.groups.join(','),
  'X-Forwarded-Preferred-Username': alice.preferredUsername,
}
/** Never injected with the default identity config (passAccessToken is off). */
const TOKEN_HEADERS: readonly string[] = ['X-Auth-Request-Access-Token', 'X-Forwarded-Access-Token']

/** Every identity header a client might send, each once (by normalized name). */
const IDENTITY_NAMES: readonly string[] = [
  ...new Map(
    [...FOREIGN_EXACT, ...FOREIGN_PREFIXES.flatMap(([, s]) => s), ...Object.keys(INJECTED_BY_DEFAULT), ...TOKEN_HEADERS].map((n) => [norm(n), n]),
  ).values(),
]

/**
 * The forward's list (src: NOT_FORWARDED in http/upstream-headers.ts), each with a value a client may
 * send. `Connection` is tested on its own (section 5): listing names in it removes them by another rule.
 */
const NOT_FORWARDED: ReadonlyArray<readonly [string, string]> = [
  ['Keep-Alive', 'timeout=5, spoof-keep-alive'],
  ['TE', 'spoof-te'],
  ['Trailer', 'X-Spoof-Trailer'],
  ['Upgrade', 'spoof-upgrade'],
  ['Proxy-Connection', 'spoof-proxy-connection'],
  ['Proxy-Authorization', 'Basic c3Bvb2Y6c3Bvb2Y='],
  ['Expect', '100-continue'],
  ['Forwarded', 'for=198.51.100.7;host=spoof.example;proto=https'],
  ['X-Forwarded-Uri', '/spoof-uri'],
  ['X-Forwarded-Prefix', '/spoof-prefix'],
  ['X-Forwarded-Port', '6443'],
  ['X-Forwarded-Scheme', 'spoof-scheme'],
  ['X-Forwarded-Ssl', 'on'],
  ['X-Forwarded-Server', 'spoof-server'],
  ['X-Forwarded-Method', 'SPOOF'],
  ['X-Original-URL', '/spoof-admin'],
  ['X-Original-URI', '/spoof-admin'],
  ['X-Original-Host', 'spoof.example'],
  ['X-Original-Method', 'SPOOF'],
  ['X-Rewrite-URL', '/spoof-admin'],
  ['X-Host', 'spoof.example'],
  ['X-Real-IP', '198.51.100.8'],
  ['X-HTTP-Method-Override', 'SPOOF'],
  ['X-HTTP-Method', 'SPOOF'],
  ['X-Method-Override', 'SPOOF'],
]

// ---------------------------------------------------------------------------------------------------
// Reading what the upstream got

/** Values of every raw header of `record` whose normalized name is `name`'s (duplicates kept). */
function values(record: EchoRecord, name: string): string[] {
  const want = norm(name)
  const out: string[] = []
  for (let i = 0; i + 1 < record.rawHeaders.length; i += 2) if (norm(record.rawHeaders[i] as string) === want) out.push(record.rawHeaders[i + 1] as string)
  return out
}

function rawNames(record: EchoRecord): string[] {
  return record.rawHeaders.filter((_, i) => i % 2 === 0)
}

/** Raw `name: value` lines whose value carries `marker`. */
function carrying(record: EchoRecord, marker: string): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < record.rawHeaders.length; i += 2) {
    const value = record.rawHeaders[i + 1] as string
    if (value.toLowerCase().includes(marker)) out.push(`${record.rawHeaders[i]}: ${value}`)
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// Lanes

interface Lane {
  label: string
  app: RunningPortcullis
  /** The path as sent in this lane: as given, or with a percent-escape left (Fastify path). */
  path: (p: string) => string
}

function lanesOf(fast: RunningPortcullis, slow: RunningPortcullis): Lane[] {
  return [
    { label: 'fast lane', app: fast, path: (p) => p },
    { label: 'Fastify path (a percent-escape left)', app: fast, path: (p) => `${p}%20y` },
    { label: 'Fastify path (fastLane: false)', app: slow, path: (p) => p },
  ]
}

const portOf = (app: RunningPortcullis): number => Number(new URL(app.url).port)

interface Forwarded {
  res: TestResponse
  record: EchoRecord
}

/** Send one request through `lane`; assert it was answered 200 by the upstream, exactly once. */
async function forward(t: Test, stack: Stack, lane: Lane, path: string, headers: Array<[string, string]>, method = 'GET'): Promise<Forwarded | null> {
  const before = stack.upstream.requests.length
  const res = await request(`${lane.app.url}${lane.path(path)}`, { method, headers: [['Accept', 'application/json'], ...headers] })
  if (!t.equal(res.status, 200, `${lane.label}: ${method} ${lane.path(path)} forwarded`)) {
    t.comment(res.body.slice(0, 300))
    return null
  }
  t.equal(stack.upstream.requests.length, before + 1, 'exactly one request reached the upstream')
  const record = stack.upstream.requests.at(-1) as EchoRecord
  t.equal(record.url, lane.path(path), 'the path the client sent')
  return { res, record }
}

/** The same with a raw socket. */
async function forwardRaw(t: Test, stack: Stack, lane: Lane, path: string, headers: Array<[string, string]>): Promise<{ res: RawResponse; record: EchoRecord } | null> {
  const before = stack.upstream.requests.length
  const res = await rawRequest(portOf(lane.app), lane.path(path), { headers: [['Accept', 'application/json'], ...headers] })
  if (!t.equal(res.status, 200, `${lane.label}: GET ${lane.path(path)} forwarded`)) {
    t.comment(res.text.slice(0, 400))
    return null
  }
  t.equal(stack.upstream.requests.length, before + 1, 'exactly one request reached the upstream')
  return { res, record: stack.upstream.requests.at(-1) as EchoRecord }
}

async function lanes(t: Test, stack: Stack): Promise<Lane[]> {
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  return lanesOf(stack.proxy, slow)
}

// ===================================================================================================
// The default configuration

t.test('default configuration', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/pca' }, upstream, passClientAuthorization: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const all = await lanes(t, stack)
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/app/' })
  const cookie = jar.header(`${stack.proxy.url}/`)
  t.match(cookie, /(^|; )_portcullis=/, 'logged in')
  const session: Array<[string, string]> = [['Cookie', cookie]]
  const publicHost = new URL(stack.proxy.url).host

  t.test('1a. the test\'s copies are the lists in src (names no request can tell apart included)', async (t) => {
    const exported = new Set(FOREIGN_IDENTITY_HEADERS)
    for (const name of FOREIGN_EXACT) t.ok(exported.has(norm(name)), `FOREIGN_IDENTITY_HEADERS has ${norm(name)}`)
    const mine = new Set(FOREIGN_EXACT.map(norm))
    t.same(FOREIGN_IDENTITY_HEADERS.filter((n) => !mine.has(n)), [], 'no exact name in src that this file does not send')
    const exportedPrefixes = new Set(FOREIGN_IDENTITY_PREFIXES)
    for (const [prefix, samples] of FOREIGN_PREFIXES) {
      t.ok(exportedPrefixes.has(prefix), `FOREIGN_IDENTITY_PREFIXES has ${prefix}`)
      for (const s of samples) {
        t.ok(norm(s).startsWith(prefix), `${s} starts with ${prefix}`)
        t.notOk(mine.has(norm(s)), `${s} is not an exact name (only its prefix strips it)`)
      }
    }
    t.same(FOREIGN_IDENTITY_PREFIXES.filter((p) => !FOREIGN_PREFIXES.some(([q]) => q === p)), [], 'no prefix in src that this file does not sample')
  })

  t.test('1b. identity headers: none reaches the upstream with the client\'s value', async (t) => {
    const spoofed = IDENTITY_NAMES.map((n, i): [string, string] => [n, `spoof-${i}`])
    for (const lane of all) {
      t.test(`${lane.label}, public route`, async (t) => {
        const got = await forward(t, stack, lane, '/public/ids', spoofed)
        if (got === null) return
        for (const name of IDENTITY_NAMES) t.same(values(got.record, name), [], `${name} absent`)
        t.same(carrying(got.record, 'spoof'), [], 'no client value in any header')
      })
      t.test(`${lane.label}, session route`, async (t) => {
        const got = await forward(t, stack, lane, '/app/ids', [...spoofed, ...session])
        if (got === null) return
        const injected = new Map(Object.entries(INJECTED_BY_DEFAULT).map(([k, v]) => [norm(k), v]))
        for (const name of IDENTITY_NAMES) {
          const want = injected.get(norm(name))
          t.same(values(got.record, name), want === undefined ? [] : [want], want === undefined ? `${name} absent` : `${name} is Portcullis's (${want})`)
        }
        t.same(carrying(got.record, 'spoof'), [], 'no client value in any header')
      })
    }
  })

  t.test('1c. the forward\'s list (hop-by-hop, forwarding and rewrite headers), one request per name', async (t) => {
    for (const lane of all) {
      for (const [kind, extra] of [['public', []], ['session', session]] as const) {
        t.test(`${lane.label}, ${kind} route`, async (t) => {
          for (const [name, value] of NOT_FORWARDED) {
            // Raw: node's client refuses some of these (a Trailer header without chunked encoding).
            const got = await forwardRaw(t, stack, lane, kind === 'public' ? '/public/nf' : '/app/nf', [[name, value], ['X-Control', 'kept'], ...extra])
            if (got === null) continue
            t.same(values(got.record, name), [], `${name} not forwarded`)
            t.same(values(got.record, 'X-Control'), ['kept'], `${name}: a harmless header next to it is forwarded`)
            if (kind === 'session') t.same(values(got.record, 'X-Auth-Request-User'), [alice.id], `${name}: still forwarded as alice`)
          }
        })
      }
    }
  })

  t.test('1d. X-Forwarded-For/-Proto/-Host are Portcullis\'s, X-Request-Id is the request\'s', async (t) => {
    for (const lane of all) {
      const got = await forward(t, stack, lane, '/public/fwd', [
        ['X-Forwarded-For', '203.0.113.7'],
        ['X-Forwarded-Proto', 'https'],
        ['X-Forwarded-Host', 'spoof.example'],
      ])
      if (got === null) continue
      t.same(values(got.record, 'X-Forwarded-For'), ['127.0.0.1'], `${lane.label}: X-Forwarded-For is the peer`)
      t.same(values(got.record, 'X-Forwarded-Proto'), ['http'], `${lane.label}: X-Forwarded-Proto from publicUrl`)
      t.same(values(got.record, 'X-Forwarded-Host'), [publicHost], `${lane.label}: X-Forwarded-Host from publicUrl`)
      t.same(values(got.record, 'X-Request-Id'), [got.res.headers['x-request-id']], `${lane.label}: X-Request-Id is the one answered`)
    }
  })

  t.test('2a. names with "_" are dropped (raw socket)', async (t) => {
    const underscored: Array<[string, string]> = [
      ['X_Forwarded_For', '203.0.113.9'],
      ['X_Forwarded_Host', 'spoof.example'],
      ['X_Request_Id', 'spoof-request-id'],
      ['X_Auth_Request_User', 'spoof-mallory'],
      ['My_Header', 'spoof-mine'],
    ]
    for (const lane of all) {
      for (const [kind, extra] of [['public', []], ['session', session]] as const) {
        const got = await forwardRaw(t, stack, lane, kind === 'public' ? '/public/us' : '/app/us', [...underscored, ['My-Other-Header', 'kept'], ...extra])
        if (got === null) continue
        const label = `${lane.label}, ${kind} route`
        for (const [name] of underscored) t.notOk(rawNames(got.record).includes(name), `${label}: ${name} dropped`)
        t.same(rawNames(got.record).filter((n) => n.includes('_')), [], `${label}: no name with "_" reached the upstream`)
        t.same(values(got.record, 'X-Forwarded-For'), ['127.0.0.1'], `${label}: X-Forwarded-For is the peer alone`)
        t.same(values(got.record, 'X-Forwarded-Host'), [publicHost], `${label}: X-Forwarded-Host is Portcullis's`)
        t.same(values(got.record, 'X-Request-Id'), got.res.headers['x-request-id'], `${label}: X-Request-Id is the one answered`)
        t.same(values(got.record, 'X-Auth-Request-User'), kind === 'session' ? [alice.id] : [], `${label}: X-Auth-Request-User is Portcullis's or absent`)
        t.same(values(got.record, 'My-Header'), [], `${label}: My_Header dropped`)
        t.same(values(got.record, 'My-Other-Header'), ['kept'], `${label}: a header spelled with "-" is kept`)
        t.same(carrying(got.record, 'spoof'), [], `${label}: no client value in any header`)
      }
    }
  })

  t.test('3 (control). without identity.stripHeaders, X-Legacy-User and X-Corp-* are forwarded', async (t) => {
    const got = await forward(t, stack, all[0]!, '/public/strip', [['X-Legacy-User', 'legacy'], ['X-Corp-Anything', 'corp']])
    if (got === null) return
    t.same(values(got.record, 'X-Legacy-User'), ['legacy'])
    t.same(values(got.record, 'X-Corp-Anything'), ['corp'])
  })

  t.test('4a. a client\'s Authorization: dropped on a session route, kept on a public one and with passClientAuthorization', async (t) => {
    const auth: [string, string] = ['Authorization', 'Basic Y2xpZW50OnNlY3JldA==']
    for (const lane of all) {
      const dropped = await forward(t, stack, lane, '/app/auth', [auth, ...session])
      if (dropped !== null) {
        t.same(values(dropped.record, 'Authorization'), [], `${lane.label}: session route, dropped`)
        t.same(values(dropped.record, 'X-Auth-Request-User'), [alice.id], `${lane.label}: forwarded as alice`)
      }
      const pub = await forward(t, stack, lane, '/public/auth', [auth])
      if (pub !== null) t.same(values(pub.record, 'Authorization'), [auth[1]], `${lane.label}: public route, kept`)
      const pub2 = await forward(t, stack, lane, '/public/auth', [auth, ...session])
      if (pub2 !== null) t.same(values(pub2.record, 'Authorization'), [auth[1]], `${lane.label}: public route with a session cookie, kept`)
      const pca = await forward(t, stack, lane, '/pca/auth', [auth, ...session])
      if (pca !== null) {
        t.same(values(pca.record, 'Authorization'), [auth[1]], `${lane.label}: passClientAuthorization, kept`)
        t.same(values(pca.record, 'X-Auth-Request-User'), [alice.id], `${lane.label}: passClientAuthorization, still forwarded as alice`)
      }
      const before = stack.upstream.requests.length
      const none = await request(`${lane.app.url}${lane.path('/pca/auth')}`, { headers: [['Accept', 'application/json'], auth] })
      t.equal(none.status, 401, `${lane.label}: passClientAuthorization does not make the client's credentials a session`)
      t.equal(stack.upstream.requests.length, before, 'nothing reached the upstream')
    }
  })

  t.test('5a. two Host headers: 400 on every route, nothing reaches the upstream (raw socket)', async (t) => {
    const port = (app: RunningPortcullis) => portOf(app)
    const hosts = (app: RunningPortcullis): Array<[string, string]> => [
      ['Host', `127.0.0.1:${port(app)}`],
      ['Host', 'spoof.example'],
    ]
    const cases: Array<{ label: string; app: RunningPortcullis; target: string; method?: string; extra?: Array<[string, string]> }> = []
    for (const lane of all) {
      cases.push({ label: `${lane.label}: session route, with a session`, app: lane.app, target: lane.path('/app/two-hosts'), extra: session })
      cases.push({ label: `${lane.label}: public route`, app: lane.app, target: lane.path('/public/two-hosts') })
    }
    for (const app of [all[0]!.app, all[2]!.app]) {
      const which = app === all[0]!.app ? 'fast-lane app' : 'fastLane: false app'
      cases.push({ label: `${which}: /oauth2/start`, app, target: '/oauth2/start?rd=/app/' })
      cases.push({ label: `${which}: /oauth2/userinfo, with a session`, app, target: '/oauth2/userinfo', extra: session })
      cases.push({ label: `${which}: /oauth2/sign_out`, app, target: '/oauth2/sign_out', extra: session })
      cases.push({ label: `${which}: /healthz`, app, target: '/healthz' })
      cases.push({ label: `${which}: PROPFIND (a method the proxy does not take)`, app, target: '/app/x', method: 'PROPFIND', extra: session })
    }
    for (const c of cases) {
      const before = stack.upstream.requests.length
      const providerBefore = stack.provider.requests.length
      const res = await rawRequest(port(c.app), c.target, { method: c.method, headers: [...hosts(c.app), ['Accept', 'application/json'], ...(c.extra ?? [])] })
      t.equal(res.status, 400, `${c.label} → 400`)
      t.match(res.body, /REQUEST_REJECTED/, `${c.label}: REQUEST_REJECTED`)
      t.notOk(res.headers['set-cookie'], `${c.label}: no cookie set`)
      t.equal(stack.upstream.requests.length, before, `${c.label}: nothing reached the upstream`)
      t.equal(stack.provider.requests.length, providerBefore, `${c.label}: nothing reached the provider`)
    }
    for (const [first, second] of [['host', 'HOST'], ['Host', 'host']]) {
      const before = stack.upstream.requests.length
      const res = await rawRequest(port(all[0]!.app), '/public/two-hosts', { headers: [[first, `127.0.0.1:${port(all[0]!.app)}`], [second, `127.0.0.1:${port(all[0]!.app)}`]] })
      t.equal(res.status, 400, `${first} + ${second}, the same value twice → 400`)
      t.equal(stack.upstream.requests.length, before, 'nothing reached the upstream')
    }
    // Control: the same requests with one Host header are served.
    const one = await rawRequest(port(all[0]!.app), '/app/one-host', { headers: [['Accept', 'application/json'], ...session] })
    t.equal(one.status, 200, 'control: one Host header, forwarded')
    const start = await rawRequest(port(all[0]!.app), '/oauth2/start?rd=/app/', { headers: [['Accept', 'text/html']] })
    t.equal(start.status, 302, 'control: one Host header, /oauth2/start redirects to the provider')
  })

  // The check answers only 200, 401 or 403 (nginx turns anything else into a 500): a request with two
  // Host headers is a refusal there, the same in every lane.
  const twoHostCheck = async (t: Test, app: RunningPortcullis, method: string, label: string) => {
    const headers: Array<[string, string]> = [['X-Original-URL', 'http://app.example/app/x'], ...session]
    const res = await rawRequest(portOf(app), '/oauth2/auth', { method, headers: [['Host', `127.0.0.1:${portOf(app)}`], ['Host', 'spoof.example'], ...headers] })
    t.equal(res.status, 401, `${label}: ${method} with two Host headers → 401 (although the session is valid)`)
    t.notOk(res.headers['x-auth-request-user'], `${label}: no identity handed out`)
    const control = await rawRequest(portOf(app), '/oauth2/auth', { method, headers })
    t.equal(control.status, 200, `${label}: control, ${method} with one Host header → 200`)
  }

  t.test('5b. two Host headers at the forward-auth check, fast lane: refused with 401', async (t) => {
    await twoHostCheck(t, all[0]!.app, 'GET', 'fast lane')
  })

  t.test(
    '5b. two Host headers at the forward-auth check, Fastify path: refused with 401',
    async (t) => {
      await twoHostCheck(t, all[2]!.app, 'GET', 'fastLane: false')
      await twoHostCheck(t, all[0]!.app, 'HEAD', 'fast-lane app (HEAD is left to Fastify)')
    },
  )

  t.test('5c. Connection: the headers it names are not forwarded; it cannot remove an injected one', async (t) => {
    for (const lane of all) {
      for (const [kind, extra] of [['public', []], ['session', session]] as const) {
        const path = kind === 'public' ? '/public/conn' : '/app/conn'
        const label = `${lane.label}, ${kind} route`
        const control = await forward(t, stack, lane, path, [['X-Foo', 'bar'], ...extra])
        if (control !== null) t.same(values(control.record, 'X-Foo'), ['bar'], `${label}: control, X-Foo forwarded without Connection`)
        for (const connection of ['X-Foo', 'keep-alive, X-Foo', 'x-foo, close', 'X-FOO']) {
          const got = await forward(t, stack, lane, path, [['Connection', connection], ['X-Foo', 'bar'], ['X-Bar', 'kept'], ...extra])
          if (got === null) continue
          t.same(values(got.record, 'X-Foo'), [], `${label}: Connection: ${connection} → X-Foo not forwarded`)
          t.same(values(got.record, 'X-Bar'), ['kept'], `${label}: Connection: ${connection} → X-Bar forwarded`)
          t.notOk(values(got.record, 'Connection').some((v) => v.toLowerCase().includes('x-foo')), `${label}: the client's Connection list is not forwarded`)
        }
        for (const connection of ['close', 'Close', 'keep-alive']) {
          const got = await forwardRaw(t, stack, lane, path, [['Connection', connection], ['X-Foo', 'bar'], ...extra])
          if (got === null) continue
          t.notOk(values(got.record, 'Connection').some((v) => v.toLowerCase() !== 'keep-alive'), `${label}: Connection: ${connection} → the upstream connection is Portcullis's (not the client's)`)
          t.same(values(got.record, 'X-Foo'), ['bar'], `${label}: Connection: ${connection} → X-Foo forwarded`)
        }
        for (const connection of ['X-Auth-Request-User', 'keep-alive, X-Auth-Request-User, X-Forwarded-User, X-Forwarded-For']) {
          const got = await forward(t, stack, lane, path, [['Connection', connection], ['X-Auth-Request-User', 'spoof-mallory'], ...extra])
          if (got === null) continue
          t.same(values(got.record, 'X-Auth-Request-User'), kind === 'session' ? [alice.id] : [], `${label}: Connection: ${connection} → X-Auth-Request-User is Portcullis's`)
          t.same(values(got.record, 'X-Forwarded-User'), kind === 'session' ? [alice.id] : [], `${label}: Connection: ${connection} → X-Forwarded-User is Portcullis's`)
          t.same(values(got.record, 'X-Forwarded-For'), ['127.0.0.1'], `${label}: Connection: ${connection} → X-Forwarded-For still set`)
          t.same(carrying(got.record, 'spoof'), [], `${label}: no client value`)
        }
      }
    }
  })

  t.test('6a. Portcullis\'s own paths answer from the session, whatever identity headers the client sends', async (t) => {
    const spoof: Array<[string, string]> = [
      ['X-Auth-Request-User', 'spoof-mallory'],
      ['X-Forwarded-User', 'spoof-mallory'],
      ['X_Auth_Request_User', 'spoof-mallory'],
      ['Remote-User', 'spoof-mallory'],
      ['X_Custom_Underscore', 'spoof'],
    ]
    for (const app of [all[0]!.app, all[2]!.app]) {
      const which = app === all[0]!.app ? 'fast-lane app' : 'fastLane: false app'
      for (const path of ['/oauth2/userinfo', '/oauth2/%75serinfo']) {
        const mine = await rawRequest(portOf(app), path, { headers: [['Accept', 'application/json'], ...spoof, ...session] })
        t.equal(mine.status, 200, `${which}: ${path} with a session`)
        t.match(JSON.parse(mine.body || '{}'), { user: alice.id, email: alice.email }, `${which}: ${path} answers alice`)
        t.notMatch(mine.body, /mallory|spoof/, `${which}: ${path}: no client value in the answer`)
        const none = await rawRequest(portOf(app), path, { headers: [['Accept', 'application/json'], ...spoof] })
        t.equal(none.status, 401, `${which}: ${path} without a session: 401, whatever the headers say`)
        t.notMatch(none.body, /mallory/, `${which}: ${path}: no client value in the answer`)
      }
      const check = await rawRequest(portOf(app), '/oauth2/auth', { headers: [['X-Original-URL', 'http://app.example/app/x'], ...spoof] })
      t.equal(check.status, 401, `${which}: the forward-auth check without a session: 401`)
      const allowed = await rawRequest(portOf(app), '/oauth2/auth', { headers: [['X-Original-URL', 'http://app.example/app/x'], ...spoof, ...session] })
      t.equal(allowed.status, 200, `${which}: the check with a session: 200`)
      t.same(allowed.headers['x-auth-request-user'], [alice.id], `${which}: the check hands out alice, not the client's value`)
    }
  })

  t.test('6c. WebSocket handshakes get the same screen (raw socket)', async (t) => {
    const handshake: Array<[string, string]> = [
      ['Upgrade', 'websocket'],
      ['Connection', 'Upgrade'],
      ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
      ['Sec-WebSocket-Version', '13'],
    ]
    const spoof: Array<[string, string]> = [
      ['X-Auth-Request-User', 'spoof-mallory'],
      ['X_Forwarded_User', 'spoof-mallory'],
      ['Remote-User', 'spoof-mallory'],
      ['Cf-Access-Jwt-Assertion', 'spoof-jwt'],
      ['X-Original-URL', '/spoof-admin'],
    ]
    for (const app of [all[0]!.app, all[2]!.app]) {
      const which = app === all[0]!.app ? 'fast-lane app' : 'fastLane: false app'
      for (const [kind, path, extra] of [['session', '/app/ws', session], ['public', '/public/ws', []]] as const) {
        const before = stack.upstream.requests.length
        const res = await rawRequest(portOf(app), path, { headers: [...handshake, ...spoof, ...extra] })
        t.equal(res.status, 101, `${which}: ${kind} route: the upgrade is relayed`)
        t.equal(stack.upstream.requests.length, before + 1, `${which}: ${kind} route: one handshake reached the upstream`)
        const record = stack.upstream.requests.at(-1) as EchoRecord
        t.same(values(record, 'X-Auth-Request-User'), kind === 'session' ? [alice.id] : [], `${which}: ${kind} route: X-Auth-Request-User is Portcullis's or absent`)
        t.same(values(record, 'X-Forwarded-User'), kind === 'session' ? [alice.id] : [], `${which}: ${kind} route: X-Forwarded-User is Portcullis's or absent`)
        for (const name of ['Remote-User', 'Cf-Access-Jwt-Assertion', 'X-Original-URL']) t.same(values(record, name), [], `${which}: ${kind} route: ${name} not forwarded`)
        t.same(rawNames(record).filter((n) => n.includes('_')), [], `${which}: ${kind} route: no name with "_"`)
        t.same(carrying(record, 'spoof'), [], `${which}: ${kind} route: no client value`)
      }
      const before = stack.upstream.requests.length
      const two = await rawRequest(portOf(app), '/app/ws', { headers: [['Host', `127.0.0.1:${portOf(app)}`], ['Host', 'spoof.example'], ...handshake, ...session] })
      t.equal(two.status, 400, `${which}: a handshake with two Host headers → 400`)
      t.equal(stack.upstream.requests.length, before, `${which}: nothing reached the upstream`)
    }
  })

  t.test('6b. methods the fast lane does not take: 405, never the upstream', async (t) => {
    for (const app of [all[0]!.app, all[2]!.app]) {
      const which = app === all[0]!.app ? 'fast-lane app' : 'fastLane: false app'
      for (const method of ['PROPFIND', 'TRACE', 'MKCOL', 'PROPPATCH']) {
        for (const [kind, path, extra] of [['session', '/app/dav', session], ['public', '/public/dav', []]] as const) {
          const before = stack.upstream.requests.length
          const res = await rawRequest(portOf(app), path, { method, headers: [['Accept', 'application/json'], ['X-Auth-Request-User', 'spoof-mallory'], ['X_Forwarded_User', 'spoof-mallory'], ...extra] })
          t.equal(res.status, 405, `${which}: ${method} ${path} (${kind}) → 405`)
          t.same(res.headers.allow, ['DELETE, GET, HEAD, PATCH, POST, PUT, OPTIONS'], `${which}: ${method}: Allow lists the proxied methods`)
          t.match(res.body, /METHOD_NOT_ALLOWED/, `${which}: ${method}: METHOD_NOT_ALLOWED`)
          t.notMatch(res.body, /mallory/, `${which}: ${method}: the request is not echoed`)
          t.equal(stack.upstream.requests.length, before, `${which}: ${method} ${path}: nothing reached the upstream`)
        }
      }
    }
  })
})

// ===================================================================================================
// Options: underscore names allowed, stripHeaders, Portcullis's bearer

t.test('allowUnderscoreHeaders, identity.stripHeaders, passAuthorizationHeader', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      server: { allowUnderscoreHeaders: true },
      identity: { stripHeaders: ['X-Legacy-User', 'X-Corp-', 'X-Wild*'], passAuthorizationHeader: true, passAccessToken: true },
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/pca' }, upstream, passClientAuthorization: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const all = await lanes(t, stack)
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/app/' })
  const session: Array<[string, string]> = [['Cookie', jar.header(`${stack.proxy.url}/`)]]

  t.test('2b. My_Header arrives; X_Auth_Request_User and other identity headers are still stripped (raw socket)', async (t) => {
    for (const lane of all) {
      for (const [kind, extra] of [['public', []], ['session', session]] as const) {
        const label = `${lane.label}, ${kind} route`
        const got = await forwardRaw(t, stack, lane, kind === 'public' ? '/public/us' : '/app/us', [
          ['My_Header', 'mine'],
          ['X_Auth_Request_User', 'spoof-1'],
          ['x_auth_request_email', 'spoof-2'],
          ['X_Forwarded_User', 'spoof-3'],
          ['Remote_User', 'spoof-4'],
          ['X_WEBAUTH_USER', 'spoof-5'],
          ['OIDC_CLAIM_email', 'spoof-6'],
          ['X_Original_URL', '/spoof-7'],
          ['Proxy_Authorization', 'Basic spoof-8'],
          ['X_HTTP_Method_Override', 'spoof-9'],
          ...extra,
        ])
        if (got === null) continue
        t.same(values(got.record, 'My_Header'), ['mine'], `${label}: My_Header arrives`)
        t.ok(rawNames(got.record).some((n) => n.toLowerCase() === 'my_header'), `${label}: spelled with "_"`)
        t.same(values(got.record, 'X-Auth-Request-User'), kind === 'session' ? [alice.id] : [], `${label}: X_Auth_Request_User stripped (only Portcullis's)`)
        t.same(values(got.record, 'X-Auth-Request-Email'), kind === 'session' ? [alice.email] : [], `${label}: x_auth_request_email stripped`)
        t.same(values(got.record, 'X-Forwarded-User'), kind === 'session' ? [alice.id] : [], `${label}: X_Forwarded_User stripped`)
        for (const name of ['Remote_User', 'X_WEBAUTH_USER', 'OIDC_CLAIM_email', 'X_Original_URL', 'Proxy_Authorization', 'X_HTTP_Method_Override']) {
          t.same(values(got.record, name), [], `${label}: ${name} stripped (normalized)`)
        }
        t.same(carrying(got.record, 'spoof'), [], `${label}: no client value`)
      }
    }
  })

  t.test('2c. the headers Portcullis sets itself, spelled with "_", when underscores are allowed', async (t) => {
    for (const lane of all) {
      const got = await forwardRaw(t, stack, lane, '/public/us-fwd', [
        ['X_Forwarded_For', '203.0.113.9'],
        ['X_Forwarded_Host', 'spoof.example'],
        ['X_Forwarded_Proto', 'spoof'],
        ['X_Request_Id', 'spoof-request-id'],
      ])
      if (got === null) continue
      for (const name of ['X-Forwarded-For', 'X-Forwarded-Host', 'X-Forwarded-Proto', 'X-Request-Id']) {
        t.equal(values(got.record, name).length, 1, `${lane.label}: one ${name} in any spelling (CGI/PHP/WSGI fold them into one variable)`)
      }
      t.same(carrying(got.record, 'spoof').concat(carrying(got.record, '203.0.113.9')), [], `${lane.label}: no client value`)
    }
  })

  t.test('3. identity.stripHeaders: a name, a prefix ending in "-", a prefix ending in "*"', async (t) => {
    const stripped: Array<[string, string]> = [
      ['X-Legacy-User', 'spoof-1'],
      ['x-legacy-user', 'spoof-2'],
      ['X_Legacy_User', 'spoof-3'],
      ['X-Corp-Anything', 'spoof-4'],
      ['x-corp-anything', 'spoof-5'],
      ['X-CORP-ROLE', 'spoof-6'],
      ['x_corp_id', 'spoof-7'],
      ['X-Wild', 'spoof-8'],
      ['X-Wildcard', 'spoof-9'],
      ['x-wild-thing', 'spoof-10'],
    ]
    const kept: Array<[string, string]> = [
      ['X-Legacy-User-Id', 'kept-1'],
      ['X-Legacy', 'kept-2'],
      ['X-Corpus', 'kept-3'],
      ['X-Corp', 'kept-4'],
      ['X-Wil', 'kept-5'],
    ]
    for (const lane of all) {
      for (const [kind, extra] of [['public', []], ['session', session]] as const) {
        const label = `${lane.label}, ${kind} route`
        const got = await forwardRaw(t, stack, lane, kind === 'public' ? '/public/strip' : '/app/strip', [...stripped, ...kept, ...extra])
        if (got === null) continue
        for (const [name] of stripped) t.same(values(got.record, name), [], `${label}: ${name} stripped`)
        for (const [name, value] of kept) t.same(values(got.record, name), [value], `${label}: ${name} kept (not covered by an entry)`)
        t.same(carrying(got.record, 'spoof'), [], `${label}: no stripped value anywhere`)
      }
    }
  })

  t.test('4b. passAuthorizationHeader: the upstream gets Portcullis\'s bearer, never the client\'s', async (t) => {
    const auth: [string, string] = ['Authorization', 'Bearer spoof-client-token']
    for (const lane of all) {
      for (const path of ['/app/bearer', '/pca/bearer']) {
        const got = await forward(t, stack, lane, path, [auth, ['authorization', 'Basic c3Bvb2Y6eA=='], ...session])
        if (got === null) continue
        const token = values(got.record, 'X-Auth-Request-Access-Token')
        t.equal(token.length, 1, `${lane.label}: ${path}: the access token is passed`)
        t.same(values(got.record, 'Authorization'), [`Bearer ${token[0]}`], `${lane.label}: ${path}: Authorization is Portcullis's bearer`)
        const payload = JSON.parse(Buffer.from(String(token[0]).split('.')[1] ?? '', 'base64url').toString('utf8') || '{}') as { sub?: string }
        t.equal(payload.sub, alice.id, `${lane.label}: ${path}: alice's token`)
        t.same(carrying(got.record, 'spoof'), [], `${lane.label}: ${path}: no client value`)
      }
      const pub = await forward(t, stack, lane, '/public/bearer', [auth])
      if (pub !== null) t.same(values(pub.record, 'Authorization'), [], `${lane.label}: public route: the client's Authorization is stripped (it could pass for Portcullis's)`)
    }
  })
})
