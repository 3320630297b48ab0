/**
 * Config validation: every fixture in test/fixtures/configs is loaded the way
 * main.ts loads a file; `invalid-*.yaml` must produce exactly the lines of `invalid-*.expected.txt`
 * (the directory is written `<fixtures>` there), `valid-*.yaml` must load.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { formatIssues, loadConfig } from '../../../src/config/index.ts'
import { compareIssues, validateConfig } from '../../../src/config/validate.ts'
import type { ConfigIssue } from '../../../src/config/types.ts'

const FIXTURES = fileURLToPath(new URL('../../fixtures/configs', import.meta.url))
const env = {
  PORTCULLIS_CLIENT_SECRET: 'client-secret-value',
  PORTCULLIS_COOKIE_SECRET: 'cookie-secret-0123456789-abcdefghij',
}
const files = readdirSync(FIXTURES).sort()

/** A valid config as a plain tree, for cases that change one thing. */
function base(): Record<string, any> {
  return {
    server: { publicUrl: 'https://app.example.com' },
    provider: { issuer: 'https://yourenv.scalekit.com', clientId: 'skc_123', clientSecret: 'client-secret-value' },
    session: { secrets: ['0123456789abcdef0123456789abcdef'] },
    routes: [{ upstream: 'http://127.0.0.1:8080' }],
  }
}

function issuesOf(raw: unknown): ConfigIssue[] {
  const result = validateConfig(raw)
  return result.ok ? [] : result.issues
}

t.test('fixtures: invalid-*.yaml produce exactly the expected issues', async (t) => {
  const invalid = files.filter((f) => f.startsWith('invalid-') && f.endsWith('.yaml'))
  t.ok(invalid.length >= 15, 'there are fixtures')
  for (const name of invalid) {
    const expectedFile = name.replace(/\.yaml$/, '.expected.txt')
    t.ok(files.includes(expectedFile), `${expectedFile} exists`)
    const expected = readFileSync(`${FIXTURES}/${expectedFile}`, 'utf8').trimEnd()
    const result = loadConfig({ file: `${FIXTURES}/${name}`, env })
    t.equal(result.ok, false, `${name} is refused`)
    if (!result.ok) t.equal(formatIssues(result.issues).replaceAll(FIXTURES, '<fixtures>'), expected, name)
  }
})

t.test('fixtures: valid-*.yaml load', async (t) => {
  const valid = files.filter((f) => f.startsWith('valid-') && f.endsWith('.yaml'))
  t.ok(valid.length >= 4, 'there are fixtures')
  for (const name of valid) {
    const result = loadConfig({ file: `${FIXTURES}/${name}`, env })
    t.equal(result.ok, true, name)
    if (!result.ok) t.comment(formatIssues(result.issues))
  }
})

t.test('secrets are measured in bytes, not characters', async (t) => {
  const withSecret = (secret: string) => {
    const raw = base()
    raw.session.secrets = [secret]
    return issuesOf(raw)
  }
  t.same(withSecret('a'.repeat(32)), [], '32 ASCII characters')
  t.same(withSecret('é'.repeat(32)), [], '32 two-byte characters (64 bytes)')
  t.same(withSecret('é'.repeat(16)), [], '16 two-byte characters = 32 bytes')
  t.same(withSecret('€'.repeat(11)), [], '11 three-byte characters = 33 bytes')
  t.same(withSecret('a'.repeat(31)).map((i) => i.path), ['session.secrets[0]'], '31 ASCII characters')
  t.same(withSecret(`${'é'.repeat(15)}a`).map((i) => i.path), ['session.secrets[0]'], '31 bytes in 16 characters')
  const [issue] = withSecret('x')
  t.notMatch(issue?.message ?? '', /\bx\b/, 'the message does not echo the secret')
})

t.test('unknown keys: did-you-mean within edit distance 2, at parent.key', async (t) => {
  const raw = base()
  raw.server.authPrefx = '/auth'
  raw.server.LISTEN = '0.0.0.0:1'
  raw.provider.clientSecretFiel = '/x'
  raw.session.zzzzzz = 1
  raw.tracing = { endpoint: '' }
  t.same(issuesOf(raw), [
    { path: 'provider.clientSecretFiel', message: 'unknown key (did you mean clientSecretFile?)' },
    { path: 'server.authPrefx', message: 'unknown key (did you mean authPrefix?)' },
    { path: 'server.LISTEN', message: 'unknown key (did you mean listen?)' },
    { path: 'session.zzzzzz', message: 'unknown key' },
    { path: 'tracing', message: 'unknown key' },
  ])
})

t.test('http issuer and endpoints', async (t) => {
  const withProvider = (extra: Record<string, unknown>) => {
    const raw = base()
    Object.assign(raw.provider, extra)
    return issuesOf(raw)
  }
  t.same(withProvider({ issuer: 'http://127.0.0.1:9000', allowInsecureHttp: true }), [], 'loopback v4 with the switch')
  t.same(withProvider({ issuer: 'http://127.1.2.3:9000', allowInsecureHttp: true }), [], 'anywhere in 127.0.0.0/8')
  t.same(withProvider({ issuer: 'http://[::1]:9000', allowInsecureHttp: true }), [], 'loopback v6 with the switch')
  t.same(withProvider({ issuer: 'http://LOCALHOST:9000', allowInsecureHttp: true }), [], 'localhost')
  t.same(withProvider({ issuer: 'https://idp.example.com', allowInsecureHttp: true }), [], 'https with the switch is fine too')
  t.same(withProvider({ issuer: 'http://localhost.evil.com', allowInsecureHttp: true }).map((i) => i.path), ['provider.issuer'])
  t.same(withProvider({ issuer: 'http://128.0.0.1', allowInsecureHttp: true }).map((i) => i.path), ['provider.issuer'])
  t.same(withProvider({ issuer: 'http://[::2]', allowInsecureHttp: true }).map((i) => i.path), ['provider.issuer'])
  t.same(
    withProvider({ endpoints: { jwks: 'http://localhost/keys', userinfo: 'http://idp.example.com/userinfo' } }).map((i) => i.path),
    ['provider.endpoints.jwks', 'provider.endpoints.userinfo'],
    'every endpoint is checked like the issuer',
  )
})

t.test('extraIssuers: the http rule of the issuer, each once, never the provider itself', async (t) => {
  const withExtra = (extraIssuers: unknown[], allowInsecureHttp = false) => {
    const raw = base()
    Object.assign(raw.provider, { extraIssuers, allowInsecureHttp })
    return issuesOf(raw)
  }
  t.same(withExtra(['https://login.partner.example', { issuer: 'https://other.example', jwksUri: 'https://other.example/keys' }]), [], 'https, as a string or an object')
  t.same(withExtra(['http://127.0.0.1:9001', { issuer: 'http://localhost:9002', jwksUri: 'http://localhost:9002/keys' }], true), [], 'loopback http with the switch')
  t.same(
    withExtra(['http://127.0.0.1:9001', { issuer: 'https://other.example', jwksUri: 'http://other.example/keys' }], false).map((i) => i.path),
    ['provider.extraIssuers[0]', 'provider.extraIssuers[1].jwksUri'],
    'plain http without the switch, and to a host that is not loopback',
  )
  t.same(withExtra([{ issuer: 'http://idp.partner.example' }], true).map((i) => i.path), ['provider.extraIssuers[0].issuer'], 'not loopback: refused even with the switch')
  t.same(
    withExtra(['https://yourenv.scalekit.com', 'https://a.example', { issuer: 'https://a.example' }]),
    [
      { path: 'provider.extraIssuers[0]', message: "is provider.issuer: the provider's own tokens are accepted without it" },
      { path: 'provider.extraIssuers[2].issuer', message: 'is listed twice (also provider.extraIssuers[1])' },
    ],
  )
})

t.test('routes[].resource: a bearer route, no query or fragment, not with audience', async (t) => {
  const withRoute = (route: Record<string, unknown>) => {
    const raw = base()
    raw.routes = [{ upstream: 'http://127.0.0.1:8080', ...route }]
    return issuesOf(raw)
  }
  t.same(withRoute({ bearer: true, resource: 'https://app.example.com/mcp', requiredScopes: ['mcp:tools'] }), [])
  t.same(withRoute({ resource: 'https://app.example.com/mcp' }).map((i) => i.path), ['routes[0].resource'], 'needs bearer: true')
  t.same(withRoute({ bearer: true, resource: 'https://app.example.com/mcp#x' }).map((i) => i.path), ['routes[0].resource'], 'a fragment')
  t.same(withRoute({ bearer: true, resource: 'https://app.example.com/mcp', audience: 'api' }).map((i) => i.path), ['routes[0].audience'], 'audience and resource')
  t.same(withRoute({ bearer: true, audience: 'api' }), [], 'audience alone')
})

t.test('authorizeParams: one issue per protocol parameter or hint parameter', async (t) => {
  const raw = base()
  raw.provider.authorizeParams = { response_type: 'token', request_uri: 'x', state: 's', login_hint: 'a@b', acr_values: 'mfa' }
  raw.provider.hintParams = ['login_hint']
  t.same(
    issuesOf(raw).map((i) => i.path),
    ['provider.authorizeParams.login_hint', 'provider.authorizeParams.request_uri', 'provider.authorizeParams.response_type', 'provider.authorizeParams.state'],
  )
  raw.provider.hintParams = []
  t.same(issuesOf(raw).map((i) => i.path).includes('provider.authorizeParams.login_hint'), false, 'a hint parameter not listed is allowed')
})

t.test('publicUrl and cookieDomain', async (t) => {
  const withUrl = (publicUrl: string, cookieDomain = '') => {
    const raw = base()
    raw.server.publicUrl = publicUrl
    raw.session.cookieDomain = cookieDomain
    return issuesOf(raw).map((i) => i.path)
  }
  t.same(withUrl('https://app.example.com/'), [], 'a trailing slash is an empty path')
  t.same(withUrl('https://app.example.com:8443'), [], 'a port is part of the origin')
  t.same(withUrl('https://app.example.com/app'), ['server.publicUrl'])
  t.same(withUrl('https://app.example.com?'), ['server.publicUrl'], 'an empty query')
  t.same(withUrl('https://app.example.com#x'), ['server.publicUrl'])
  t.same(withUrl('https://u:p@app.example.com'), ['server.publicUrl'])
  t.same(withUrl('https://app.example.com', 'example.com'), [])
  t.same(withUrl('https://app.example.com', '.Example.com'), [], 'leading dot and case are ignored')
  t.same(withUrl('https://app.example.com', 'app.example.com'), [])
  t.same(withUrl('https://app.example.com', 'ample.com'), ['session.cookieDomain'], 'not on a dot boundary')
  t.same(withUrl('https://app.example.com', 'other.example.com'), ['session.cookieDomain'])
  t.same(withUrl('https://app.example.com', 'com'), ['session.cookieDomain'], 'a top-level domain')
})

t.test('trustedProxies', async (t) => {
  const raw = base()
  raw.server.trustedProxies = ['10.0.0.0/8', '192.168.1.10', 'fd00::/8', '::1', '0.0.0.0/0', '10.0.0.0/x', '300.1.1.1', '']
  t.same(issuesOf(raw).map((i) => i.path), ['server.trustedProxies[5]', 'server.trustedProxies[6]', 'server.trustedProxies[7]'])
})

t.test('routes: duplicates compare host case-insensitively and pathPrefix exactly', async (t) => {
  const raw = base()
  raw.routes = [
    { match: { host: 'a.example.com', pathPrefix: '/x' }, upstream: 'http://127.0.0.1:1' },
    { match: { host: 'a.example.com', pathPrefix: '/x/' }, upstream: 'http://127.0.0.1:2' },
    { match: { host: 'b.example.com', pathPrefix: '/x' }, upstream: 'http://127.0.0.1:3' },
    { match: { host: 'A.example.com', pathPrefix: '/x' }, upstream: 'http://127.0.0.1:4' },
    { upstream: 'http://127.0.0.1:5' },
    { match: {}, upstream: 'http://127.0.0.1:6' },
  ]
  t.same(issuesOf(raw), [
    { path: 'routes[3].match', message: 'same host ("A.example.com") and pathPrefix ("/x") as routes[0]' },
    { path: 'routes[5].match', message: 'same host ("") and pathPrefix ("/") as routes[4]' },
  ])
})

t.test('session durations', async (t) => {
  const withTimes = (times: Record<string, string>) => {
    const raw = base()
    Object.assign(raw.session, times)
    return issuesOf(raw).map((i) => i.path)
  }
  t.same(withTimes({ maxAge: '2h', idleTimeout: '2h' }), [], 'idleTimeout may equal maxAge')
  t.same(withTimes({ maxAge: '1h' }), ['session.idleTimeout'], 'the default idleTimeout (2h) is compared too')
  t.same(withTimes({ refreshAhead: '299s' }), [])
  t.same(withTimes({ refreshAhead: '300000ms' }), ['session.refreshAhead'])
})

t.test('identity headers', async (t) => {
  const raw = base()
  raw.identity = { headers: { 'X-User': 'sub', Host: 'sub', 'keep_alive': 'sub', TE: 'sub', AUTHORIZATION: 'sub', 'x-user': 'email' } }
  t.same(issuesOf(raw).map((i) => i.path), [
    'identity.headers.AUTHORIZATION',
    'identity.headers.Host',
    'identity.headers.keep_alive',
    'identity.headers.TE',
    'identity.headers.x-user',
  ])
})

t.test('cross-field rules run even when other parts fail the schema', async (t) => {
  const raw = base()
  raw.server.publicUrl = 'not a url'
  raw.provider.scopes = ['email']
  raw.session.secrets = ['short']
  raw.routes.push({ upstream: 'http://127.0.0.1:8080' })
  t.same(issuesOf(raw).map((i) => i.path), ['provider.scopes', 'routes[1].match', 'server.publicUrl', 'session.secrets[0]'])
})

t.test('issues are sorted by path, indexes as numbers', async (t) => {
  const sorted = ['', 'a', 'a[2]', 'a[10]', 'a.B', 'a.c', 'b'].map((path) => ({ path, message: '' }))
  t.same([...sorted].reverse().sort(compareIssues), sorted)
  const raw = base()
  raw.routes = Array.from({ length: 12 }, () => ({ upstream: 'nope' }))
  const paths = issuesOf(raw).map((i) => i.path)
  t.equal(paths.indexOf('routes[2].upstream') < paths.indexOf('routes[10].upstream'), true)
})

t.test('a valid config is deep-frozen', async (t) => {
  const raw = base()
  raw.routes.push({ match: { host: 'b.example.com' }, upstream: 'http://127.0.0.1:8081' })
  const result = validateConfig(raw)
  t.equal(result.ok, true)
  if (!result.ok) return
  const config = result.config
  t.ok(Object.isFrozen(config))
  t.ok(Object.isFrozen(config.server))
  t.ok(Object.isFrozen(config.server.trustedProxies))
  t.ok(Object.isFrozen(config.provider.endpoints))
  t.ok(Object.isFrozen(config.session.secrets))
  t.ok(Object.isFrozen(config.routes))
  t.ok(Object.isFrozen(config.routes[1]?.match))
  t.ok(Object.isFrozen(config.identity.headers))
  t.throws(() => {
    ;(config.server as { publicUrl: string }).publicUrl = 'https://evil.example.com'
  }, TypeError, 'assigning throws in strict mode (ES modules are strict)')
  t.throws(() => (config.session.secrets as string[]).push('x'), TypeError)
  t.equal(config.server.publicUrl, 'https://app.example.com')
  t.equal(config.session.maxAge, 12 * 3_600_000, 'durations are milliseconds')
})

t.test('formatIssues: one line per issue', async (t) => {
  t.equal(
    formatIssues([
      { path: '', message: 'YAML syntax error' },
      { path: 'session.secrets[0]', message: 'too short' },
    ]),
    'config error: YAML syntax error\nconfig error: session.secrets[0]: too short',
  )
  t.equal(formatIssues([]), '')
})

t.test('warnings for switches that weaken security', async (t) => {
  const text = `
server: { publicUrl: "http://app.internal", trustedProxies: ["0.0.0.0/0"] }
provider: { issuer: "http://127.0.0.1:9000", allowInsecureHttp: true, clientId: a, clientSecret: b }
session: { secrets: ["0123456789abcdef0123456789abcdef"] }
routes: [{ upstream: "http://127.0.0.1:8080" }]
`
  const result = loadConfig({ text, env: {} })
  t.equal(result.ok, true)
  if (!result.ok) return
  t.same(result.warnings, [
    'provider.allowInsecureHttp is on: the provider is reached over plain http (loopback only; never in production)',
    'server.publicUrl is plain http on app.internal: session cookies are sent without the Secure attribute',
    'server.trustedProxies contains 0.0.0.0/0: X-Forwarded-* headers are believed from every peer',
  ])
})

t.test('access rules: invalid regex, a matcher with two kinds, an e-mail with two @, each at its key path', async (t) => {
  const withAllow = (allow: unknown, at: 'route' | 'default' = 'route') => {
    const raw = base()
    if (at === 'route') raw.routes[0].allow = allow
    else raw.access = { defaultAllow: allow }
    return issuesOf(raw)
  }
  t.same(withAllow({ claims: { department: { regex: 'eng(' } } }), [{ path: 'routes[0].allow.claims.department.regex', message: 'is not a valid regular expression' }])
  t.same(withAllow({ claims: { department: { regex: 'eng(ineering)?' } } }), [], 'a valid one')
  t.same(withAllow({ claims: { department: { equals: 'eng', regex: 'eng.*' } } }), [
    { path: 'routes[0].allow.claims.department', message: 'must have exactly one of equals, anyOf or regex (or be a plain value: equals)' },
  ])
  t.same(withAllow({ claims: { department: { anyOf: ['a'], equals: 'a' } } }).map((i) => i.path), ['routes[0].allow.claims.department'])
  t.same(withAllow({ claims: { department: {} } }).map((i) => i.path), ['routes[0].allow.claims.department'], 'none at all')
  t.same(withAllow({ claims: { department: 'eng', level: 3, staff: true } }), [], 'plain values')
  t.same(withAllow({ emails: ['ok@example.com', 'a@b@example.com'] }), [{ path: 'routes[0].allow.emails[1]', message: 'must be an e-mail address with exactly one "@"' }])
  t.same(withAllow({ domains: ['@example.com', '*.example.com', 'example.com'] }).map((i) => i.path), ['routes[0].allow.domains[0]', 'routes[0].allow.domains[1]'])
  t.same(withAllow({ any: [{ groups: ['a'] }, { claims: { x: { regex: '[' } } }] }).map((i) => i.path), ['routes[0].allow.any[1].claims.x.regex'], 'inside any')
  t.same(withAllow({ grups: ['a'] }), [{ path: 'routes[0].allow.grups', message: 'unknown key (did you mean groups?)' }], 'a misspelled condition')
  t.same(withAllow({ emails: ['a@b@c.example'] }, 'default').map((i) => i.path), ['access.defaultAllow.emails[0]'], 'access.defaultAllow too')
})

t.test('routes: loginParams, bearer-only keys, audience with resource, access rules on a public route', async (t) => {
  const withRoute = (extra: Record<string, unknown>) => {
    const raw = base()
    Object.assign(raw.routes[0], extra)
    return issuesOf(raw)
  }
  t.same(withRoute({ loginParams: { organization_id: 'org_1', connection_id: 'c' } }), [], 'ordinary parameters')
  t.same(
    withRoute({ loginParams: { prompt: 'login', acr_values: 'x', Max_Age: '0', state: 's', redirect_uri: 'https://evil.example/' } }).map((i) => i.path),
    ['routes[0].loginParams.acr_values', 'routes[0].loginParams.Max_Age', 'routes[0].loginParams.prompt', 'routes[0].loginParams.redirect_uri', 'routes[0].loginParams.state'],
    'each parameter Portcullis sets itself, in any case',
  )
  t.match(withRoute({ loginParams: { prompt: 'login' } })[0]?.message, 'routes[0].require', 'prompt points to require')
  t.match(withRoute({ loginParams: { state: 's' } })[0]?.message, 'protocol parameter')

  t.same(withRoute({ audience: 'api://x' }), [{ path: 'routes[0].audience', message: 'applies to bearer tokens only; set bearer: true on this route, or remove it' }])
  t.same(withRoute({ requiredScopes: ['api:read'] }).map((i) => i.path), ['routes[0].requiredScopes'])
  t.same(withRoute({ resource: 'https://app.example.com/mcp' }).map((i) => i.path), ['routes[0].resource'])
  t.same(withRoute({ audience: '', requiredScopes: [] }), [], 'the defaults written out are fine')
  t.same(withRoute({ bearer: true, audience: 'api://x', requiredScopes: ['api:read'] }), [], 'on a bearer route')
  t.same(withRoute({ bearer: true, resource: 'https://app.example.com/mcp', requiredScopes: ['mcp:tools'] }), [])
  t.same(withRoute({ bearer: true, audience: 'api://x', resource: 'https://app.example.com/mcp' }), [
    { path: 'routes[0].audience', message: 'set either audience or resource, not both (tokens must carry routes[0].resource in aud)' },
  ])

  t.same(withRoute({ public: true, allow: { groups: ['admins'] } }).map((i) => i.path), ['routes[0].allow'])
  t.same(withRoute({ public: true, require: { mfa: true } }).map((i) => i.path), ['routes[0].require'])
  t.match(withRoute({ public: true, allow: {} })[0]?.message, 'public route', 'even an empty rule')
  t.same(withRoute({ public: true }), [])
  t.same(withRoute({ public: false, allow: { groups: ['admins'] }, require: { mfa: true, acr: ['x'], maxAuthAge: '5m' } }), [])

  const raw = base()
  raw.routes.push({ match: { pathPrefix: '/pub' }, upstream: 'http://127.0.0.1:8080', public: true, require: { maxAuthAge: '1m' } })
  t.same(issuesOf(raw).map((i) => i.path), ['routes[1].require'], 'named by its own index')
})

t.test('metrics.listen: not the proxy address, except port 0 (each listener gets its own port)', async (t) => {
  const same = { ...base(), server: { ...base().server, listen: '127.0.0.1:4180' }, metrics: { listen: '127.0.0.1:4180' } }
  t.strictSame(
    issuesOf(same).map((i) => i.path),
    ['metrics.listen'],
    'the same host:port is refused',
  )
  const zero = { ...base(), server: { ...base().server, listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' } }
  t.strictSame(issuesOf(zero), [], 'port 0 for both is fine')
  t.strictSame(issuesOf({ ...base(), metrics: { listen: '' } }), [], '"" is off')
  t.strictSame(
    issuesOf({ ...base(), metrics: { listen: '/metrics' } }).map((i) => i.path),
    ['metrics.listen'],
    'a path is not an address',
  )
})
