import t from 'tap'
import type { Test } from 'tap'
import { validateConfig } from '../../../src/config/validate.ts'
import type { Config } from '../../../src/config/types.ts'
import { compileRoutes, type RouteTable } from '../../../src/policy/routes.ts'
import {
  ExplainInputError,
  explainRequest,
  explainSettingsOf,
  formatExplanation,
  openRouteWarning,
  PROXY_METHODS,
  requestOf,
  tokenScopes,
  type ExplainInput,
  type Explanation,
} from '../../../src/policy/explain.ts'
import { normalizePath, whyPathRejected } from '../../../src/policy/path.ts'
import { PROXIED_METHODS } from '../../../src/http/fast-lane.ts'
import { scopesOf } from '../../../src/oidc/bearer.ts'
import { TEST_SECRET } from '../../helpers/config.ts'

const NOW = Date.UTC(2026, 11, 2, 12, 0, 0)

function configWith(routes: unknown[], extra: Record<string, unknown> = {}): Config {
  const { server, provider, ...rest } = extra as { server?: Record<string, unknown>; provider?: Record<string, unknown> }
  const result = validateConfig({
    server: { publicUrl: 'https://app.example.com', ...server },
    provider: { issuer: 'https://idp.example.com', clientId: 'client', clientSecret: 'secret', ...provider },
    session: { secrets: [TEST_SECRET] },
    routes,
    ...rest,
  })
  if (!result.ok) throw new Error(result.issues.map((i) => `${i.path}: ${i.message}`).join('\n'))
  return result.config
}

function explainer(routes: unknown[], extra: Record<string, unknown> = {}) {
  const config = configWith(routes, extra)
  const table = compileRoutes(config.routes, config.access, config.provider.clientId)
  const explain = (url: string, more: Partial<Omit<ExplainInput, 'routes' | 'settings' | 'url'>> = {}): Explanation =>
    explainRequest({ routes: table, settings: explainSettingsOf(config), url, now: NOW, ...more })
  return { config, table, explain }
}

const up = (n: number) => `http://127.0.0.1:${9000 + n}`
const reasonOf = (e: Explanation, id: string) => e.routes.find((l) => l.id === id)?.reason

t.test('a public route: forwarded as it is, every other route says why not', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0) },
    { match: { pathPrefix: '/public/' }, upstream: up(1), public: true },
    { match: { pathPrefix: '/api' }, upstream: up(2) },
  ])
  const e = explain('/public/a.css?v=1')
  t.equal(e.request.host, 'app.example.com', 'a path is asked on server.publicUrl\'s host')
  t.equal(e.request.hostFrom, 'publicUrl')
  t.equal(e.request.query, '?v=1')
  t.equal(e.path.normalized, '/public/a.css')
  t.equal(e.route?.id, 'routes[1]')
  t.equal(e.route?.public, true)
  t.equal(e.decision.step, 'public')
  t.equal(e.decision.outcome, 'forward')
  t.strictSame(
    e.decision.answers.map((a) => [a.when, a.forward]),
    [['always', true]],
  )
  t.equal(reasonOf(e, 'routes[0]'), 'shorter')
  t.match(e.routes[0]?.detail, 'the longer prefix /public/ (routes[1]) is chosen')
  t.equal(reasonOf(e, 'routes[1]'), 'chosen')
  t.equal(reasonOf(e, 'routes[2]'), 'prefix')
  t.match(e.routes[2]?.detail, '"/public/a.css" is not under /api')
  t.strictSame(
    e.routes.map((l) => l.chosen),
    [false, true, false],
    'only the chosen route is marked',
  )
})

t.test('nested prefixes: protected inside public inside protected', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { pathPrefix: '/admin/' }, upstream: up(1) },
    { match: { pathPrefix: '/admin/help/' }, upstream: up(2), public: true },
  ])
  t.equal(explain('/admin/help/x').route?.id, 'routes[2]')
  t.equal(explain('/admin/help/x').decision.outcome, 'forward')
  const admin = explain('/admin/x')
  t.equal(admin.route?.id, 'routes[1]')
  t.equal(admin.decision.outcome, 'sign-in')
  t.equal(reasonOf(admin, 'routes[0]'), 'shorter')
  t.equal(reasonOf(admin, 'routes[2]'), 'prefix')
  const bare = explain('/admin')
  t.equal(bare.route?.id, 'routes[1]', '/admin/ also covers /admin')
  t.equal(explain('/adminx').route?.id, 'routes[0]', 'on a segment boundary only')
})

t.test('without a session: a login for browsers, a 401 for the rest', async (t) => {
  const { explain } = explainer([{ match: { pathPrefix: '/' }, upstream: up(0), require: { maxAuthAge: '5m', acr: ['gold'] }, loginParams: { organization_id: 'org_1' } }])
  const get = explain('/reports?q=1')
  t.equal(get.decision.step, 'no-session')
  t.equal(get.decision.outcome, 'sign-in')
  const [browser, api] = get.decision.answers
  t.equal(browser?.status, 302)
  t.match(browser?.when, 'a browser navigation')
  t.match(browser?.detail, 'https://app.example.com/oauth2/start?rd=%2Freports%3Fq%3D1')
  t.match(browser?.detail, 'organization_id=org_1', 'with the route\'s login parameters')
  t.match(browser?.detail, 'acr_values=gold')
  t.match(browser?.detail, 'max_age=300')
  t.equal(api?.status, 401)
  t.equal(api?.when, 'any other request')
  t.strictSame(get.route?.loginParams, { organization_id: 'org_1', acr_values: 'gold', max_age: '300' })

  const post = explain('/reports', { method: 'post' })
  t.equal(post.request.method, 'POST')
  t.strictSame(
    post.decision.answers.map((a) => [a.when, a.status]),
    [['always', 401]],
    'a POST is never a navigation',
  )

  const signIn = explainer([{ match: { pathPrefix: '/' }, upstream: up(0) }], { provider: { signInPage: true } }).explain('/x')
  t.match(signIn.decision.answers[0]?.detail, 'https://app.example.com/oauth2/sign_in?rd=%2Fx', 'provider.signInPage: the sign-in page')
})

t.test('signed in: every condition with its result, and the verdict', async (t) => {
  const { explain } = explainer(
    [
      { match: { pathPrefix: '/' }, upstream: up(0) },
      { match: { pathPrefix: '/admin' }, upstream: up(1), allow: { groups: ['admins'], domains: ['example.com'] } },
      { match: { pathPrefix: '/vault' }, upstream: up(2), allow: { groups: ['admins'] }, require: { mfa: true, maxAuthAge: '10m' } },
    ],
    { access: { defaultAllow: { any: [{ groups: ['staff'] }, { emails: ['guest@partner.example'], unverifiedEmail: true }] } } },
  )
  const alice = { sub: 'alice', email: 'alice@example.com', email_verified: true, groups: ['admins', 'staff'] }

  const allowed = explain('/admin/x', { claims: alice })
  t.equal(allowed.request.subject?.kind, 'session')
  t.equal(allowed.request.subject?.sub, 'alice')
  t.equal(allowed.decision.step, 'session')
  t.equal(allowed.decision.outcome, 'forward')
  t.strictSame(allowed.decision.verdict, { kind: 'allow' })
  t.strictSame(
    allowed.decision.conditions?.map((c) => [c.rule, c.ok]),
    [
      ['routes[1].allow.domains', true],
      ['routes[1].allow.groups', true],
    ],
  )
  t.match(allowed.decision.conditions?.[1]?.detail, 'claim groups = ["admins","staff"]; allowed: admins')

  const bob = { sub: 'bob', email: 'bob@example.com', email_verified: true, groups: ['staff'] }
  const denied = explain('/admin/x', { claims: bob })
  t.equal(denied.decision.outcome, 'deny')
  t.equal(denied.decision.verdict?.kind, 'deny')
  t.match(denied.decision.summary, 'denied (403) by routes[1].allow.groups')
  t.strictSame(
    denied.decision.answers.map((a) => a.status),
    [403, 403],
  )
  t.match(denied.decision.answers[1]?.detail, 'rule routes[1].allow.groups')

  const byDefault = explain('/x', { claims: bob })
  t.equal(byDefault.route?.allowRule, 'access.defaultAllow')
  t.equal(byDefault.decision.outcome, 'forward')
  t.equal(byDefault.decision.conditions?.[0]?.rule, 'access.defaultAllow.any')
  t.equal(byDefault.decision.conditions?.[0]?.alternatives?.length, 2, 'alternatives explained one by one')
  t.equal(explain('/x', { claims: { sub: 'eve', groups: [] } }).decision.outcome, 'deny')

  // Step-up: MFA missing, then a login too old.
  const noMfa = explain('/vault', { claims: alice, authTime: NOW - 60_000 })
  t.equal(noMfa.decision.outcome, 'step-up')
  const verdict = noMfa.decision.verdict
  t.equal(verdict?.kind === 'step-up' ? verdict.rule : '', 'routes[2].require.mfa')
  t.strictSame(verdict?.kind === 'step-up' ? verdict.params : {}, { max_age: '600', prompt: 'login' })
  t.strictSame(
    noMfa.decision.answers.map((a) => a.status),
    [302, 401],
  )
  t.match(noMfa.decision.answers[1]?.detail, 'insufficient_user_authentication')
  const old = explain('/vault', { claims: { ...alice, amr: ['pwd', 'otp'], auth_time: (NOW - 3_600_000) / 1000 } })
  t.equal(old.request.subject?.authTime, NOW - 3_600_000, 'auth_time from the claims')
  t.equal(old.decision.verdict?.kind === 'step-up' ? old.decision.verdict.rule : '', 'routes[2].require.maxAuthAge')
  t.match(old.decision.conditions?.find((c) => c.rule === 'routes[2].require.maxAuthAge')?.detail, 'login age 3600s; at most 600s')
  t.equal(explain('/vault', { claims: { ...alice, amr: ['otp'] }, authTime: NOW - 1000 }).decision.outcome, 'forward')
})

t.test('bearer routes: the token\'s claims and scopes; a preflight passes', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0) },
    { match: { host: 'api.example.com', pathPrefix: '/v1' }, upstream: up(1), bearer: true, requiredScopes: ['read'], allowPreflight: true },
  ])
  const token = { sub: 'svc', scope: 'read write' }
  const ok = explain('https://api.example.com/v1/items', { claims: token, bearer: true })
  t.equal(ok.request.hostFrom, 'url')
  t.equal(ok.request.subject?.kind, 'bearer')
  t.strictSame(ok.request.subject?.scopes, ['read', 'write'])
  t.equal(ok.decision.step, 'bearer')
  t.equal(ok.decision.outcome, 'forward')
  const noScope = explain('https://api.example.com/v1/items', { claims: { sub: 'svc', scp: ['write'] }, bearer: true })
  t.equal(noScope.decision.outcome, 'deny')
  t.match(noScope.decision.answers[0]?.detail, 'insufficient_scope')
  const noToken = explain('https://api.example.com/v1/items', { method: 'POST' })
  t.equal(noToken.decision.outcome, 'sign-in')
  t.match(noToken.decision.answers.at(-1)?.detail, 'RFC 6750')
  const notBearer = explain('https://app.example.com/x', { claims: token, bearer: true })
  t.equal(notBearer.decision.outcome, 'sign-in', 'a route that takes no bearer token never reads it')
  t.match(notBearer.decision.reasons[0], 'does not take bearer tokens')

  const preflight = explain('https://api.example.com/v1/items', { method: 'OPTIONS' })
  t.equal(preflight.route?.allowPreflight, true)
  t.equal(preflight.decision.answers[0]?.forward, true)
  t.match(preflight.decision.answers[0]?.when, 'a CORS preflight')
  t.equal(preflight.decision.answers[1]?.when, 'any other request')
  t.throws(() => explain('/x', { bearer: true }), ExplainInputError, 'a bearer token needs its claims')

  for (const claims of [{ scope: 'a b  c' }, { scp: ['a', 'b'] }, { scp: 'a b' }, { scope: 'a', scp: ['b', 1] }, {}]) {
    t.strictSame(tokenScopes(claims).sort(), [...scopesOf(claims)].sort(), `scopes of ${JSON.stringify(claims)} as the bearer verifier reads them`)
  }
})

t.test('host routes: exact, without the port, other hosts, a Host that is not plain', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { host: 'app.example.com', pathPrefix: '/' }, upstream: up(1) },
    { match: { host: 'app.example.com:8443', pathPrefix: '/x' }, upstream: up(2) },
    { match: { host: 'wiki.example.com', pathPrefix: '/' }, upstream: up(3) },
  ])
  const onApp = explain('https://app.example.com/x')
  t.equal(onApp.request.host, 'app.example.com')
  t.equal(onApp.route?.id, 'routes[1]')
  t.equal(reasonOf(onApp, 'routes[0]'), 'tried-later')
  t.match(onApp.routes[0]?.detail, 'routes for app.example.com are tried first')
  t.equal(reasonOf(onApp, 'routes[2]'), 'host')
  t.equal(reasonOf(onApp, 'routes[3]'), 'host')
  t.match(onApp.routes[3]?.detail, 'the route is for wiki.example.com, the request\'s host is app.example.com')

  t.equal(explain('https://app.example.com:443/x').request.host, 'app.example.com', 'the default port is left out, as clients do')
  const withPort = explain('https://APP.example.com:8443/x/y')
  t.equal(withPort.route?.id, 'routes[2]')
  t.equal(reasonOf(withPort, 'routes[1]'), 'tried-later', 'the host without the port comes after the host with it')
  t.equal(withPort.routes[1]?.fit?.host, 'portless')
  t.equal(explain('https://app.example.com:8443/z').route?.id, 'routes[1]', 'then the routes of the host without the port')

  const other = explain('https://other.example/x')
  t.equal(other.route?.id, 'routes[0]')
  t.equal(reasonOf(other, 'routes[1]'), 'host')

  const odd = explain('http://app.example.com:/x')
  t.equal(odd.route, null)
  t.equal(odd.decision.outcome, 'no-route')
  t.match(odd.decision.reasons[0], 'not a plain host')
  t.ok(odd.routes.every((l) => l.reason === 'host-unusable'))
})

t.test('case-insensitive routes and the case-folding guard', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { pathPrefix: '/admin/' }, upstream: up(1) },
    { match: { pathPrefix: '/Files', caseInsensitive: true }, upstream: up(2) },
  ])
  const guarded = explain('/ADMIN./x')
  t.equal(guarded.route?.id, 'routes[1]')
  t.equal(reasonOf(guarded, 'routes[1]'), 'chosen-by-guard')
  t.match(guarded.routes[1]?.detail, 'case-folding guard')
  t.equal(reasonOf(guarded, 'routes[0]'), 'guarded')
  t.match(guarded.routes[0]?.detail, 'the case-folding guard chose routes[1]')
  t.equal(guarded.path.folded, '/admin/x')
  t.equal(guarded.decision.outcome, 'sign-in', 'a session is required')

  const folded = explain('/FILES%20/x')
  t.equal(folded.route?.id, 'routes[2]')
  t.equal(reasonOf(folded, 'routes[2]'), 'chosen')
  t.equal(folded.routes[2]?.fit?.path, '/files/x', 'compared folded')
  t.equal(folded.routes[2]?.fit?.prefix, '/files')

  const plain = explain('/about')
  t.equal(reasonOf(plain, 'routes[1]'), 'prefix')
  t.notMatch(plain.routes[1]?.detail, 'ignoring case')
  // Protected over public only: no public match, no guard.
  const noPublic = explainer([
    { match: { pathPrefix: '/app' }, upstream: up(0) },
    { match: { pathPrefix: '/app/admin/' }, upstream: up(1) },
  ]).explain('/app/ADMIN')
  t.equal(noPublic.route?.id, 'routes[0]')
  t.equal(reasonOf(noPublic, 'routes[1]'), 'prefix')
  t.match(noPublic.routes[1]?.detail, 'it does match ignoring case, but the case-folding guard only overrides a public match')
})

t.test(';params, double encoding, paths that cannot be normalized', async (t) => {
  const routes = [
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { pathPrefix: '/admin' }, upstream: up(1) },
  ]
  const { explain } = explainer(routes)
  const params = explain('/admin;jsessionid=1/x')
  t.equal(params.path.normalized, '/admin;jsessionid=1/x')
  t.equal(params.path.matchPath, '/admin/x')
  t.equal(params.route?.id, 'routes[1]')
  t.match(formatExplanation(params), '(;parameters removed)')

  const twice = explain('/public/%2561dmin/')
  t.equal(twice.path.doubleEncoded, true)
  t.equal(twice.decision.outcome, 'rejected')
  t.match(twice.decision.summary, 'encoded twice')
  t.ok(twice.routes.every((l) => l.reason === 'not-consulted'))
  const allowed = explainer(routes, { server: { allowDoubleEncoding: true } }).explain('/public/%2561dmin/')
  t.equal(allowed.decision.outcome, 'forward', 'server.allowDoubleEncoding: routed as it is')

  const cases: Array<[string, RegExp]> = [
    ['/../x', /climb above/],
    ['/a/%2e%2e/%2E%2E/x', /climb above/],
    ['/a%2Fb', /encoded slash \("%2F"\)/],
    ['/a%5cb', /encoded backslash/],
    ['/a\\b', /backslash/],
    ['/a%zz', /invalid percent-escape \("%zz"\)/],
    ['/a%4', /invalid percent-escape/],
    ['/a%', /invalid percent-escape/],
    ['/a%00', /encoded control character/],
    ['/a b', /control character or a space/],
    ['/..;/admin', /dot segment with ;parameters/],
    ['/a/.%3Bx/b', /dot segment with ;parameters/],
    ['/a#b', /holds "#"/],
    [`/${'a'.repeat(9000)}`, /longer than 8192/],
  ]
  for (const [path, why] of cases) {
    const e = explain(path)
    t.equal(e.path.normalized, null, `${path.slice(0, 40)} is refused`)
    t.match(e.path.rejected, why, `and why: ${e.path.rejected}`)
    t.equal(e.decision.outcome, 'rejected')
    t.equal(e.decision.answers[0]?.status, 400)
  }
  for (const path of ['/', '/a/../b', '/%41', '/a;b', '/a/%2e/b', '/caf%C3%A9']) t.equal(whyPathRejected(path), null, `${path} is not refused`)
  t.equal(whyPathRejected('x'), 'it does not start with "/"')
  // Every refusal gets a reason of its own, never the fallback.
  for (const raw of ['/%2e%2e', '/.%2e/', '/a/..%3B/b', '/%1f', '/%7F', '/a/%2f', '/\u0001', '/%g0', '/a/b/../../../c']) {
    t.equal(normalizePath(raw), null)
    t.not(whyPathRejected(raw), 'it cannot be normalized safely', `${JSON.stringify(raw)}: ${whyPathRejected(raw)}`)
  }
})

t.test("Portcullis's own endpoints and the methods it proxies", async (t) => {
  const { explain } = explainer([{ match: { pathPrefix: '/' }, upstream: up(0) }], { server: { authPrefix: '/auth' } })
  for (const path of ['/auth/start', '/auth/nope', '/auth/debug']) {
    const e = explain(path)
    t.equal(e.decision.outcome, 'own-endpoint', path)
    t.ok(e.routes.every((l) => l.reason === 'not-consulted'))
  }
  t.match(explain('/auth/auth').decision.reasons[0], 'forward-auth check')
  t.equal(explain('/healthz').decision.outcome, 'own-endpoint')
  t.equal(explain('/readyz', { method: 'HEAD' }).decision.outcome, 'own-endpoint')
  t.equal(explain('/healthz', { method: 'POST' }).decision.outcome, 'sign-in', 'only GET and HEAD are the ops endpoints')
  t.equal(explain('/auth').decision.outcome, 'sign-in', 'the prefix itself is no own endpoint')
  t.equal(explain('/oauth2/start').decision.outcome, 'sign-in', 'another prefix is a path like any')
  const trace = explain('/x', { method: 'TRACE' })
  t.equal(trace.decision.outcome, 'method-not-allowed')
  t.equal(trace.decision.answers[0]?.status, 405)
  t.strictSame([...PROXY_METHODS].sort(), [...PROXIED_METHODS].sort(), 'the same methods as the proxy takes')
  t.throws(() => explain('/x', { method: 'G E T' }), ExplainInputError)
})

t.test('URLs: absolute or a request target, as written', async (t) => {
  const pub = 'https://app.example.com'
  t.strictSame(requestOf('/a/../b?x#y', pub), { host: 'app.example.com', hostFrom: 'publicUrl', target: '/a/../b?x#y' }, 'a target is taken whole')
  t.strictSame(requestOf('https://Wiki.example.com/a/../b?x=1#frag', pub), { host: 'Wiki.example.com', hostFrom: 'url', target: '/a/../b?x=1' }, 'the fragment is never sent')
  t.strictSame(requestOf('http://h.example:80', pub), { host: 'h.example', hostFrom: 'url', target: '/' })
  t.strictSame(requestOf('http://h.example:8080?q', pub), { host: 'h.example:8080', hostFrom: 'url', target: '/?q' })
  t.strictSame(requestOf('https://[::1]:443/x', pub), { host: '[::1]', hostFrom: 'url', target: '/x' })
  for (const bad of ['app.example.com/x', 'ftp://a/x', 'https://user@a/x', 'https://a\\b/x', '']) {
    t.throws(() => requestOf(bad, pub), ExplainInputError, JSON.stringify(bad))
  }
})

t.test('the text report', async (t) => {
  const { explain } = explainer([
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { pathPrefix: '/admin' }, upstream: up(1), allow: { groups: ['admins'] } },
  ])
  const text = formatExplanation(explain('/admin', { claims: { sub: 'bob', groups: ['users'] } }))
  for (const section of ['Request\n', '\nPath\n', '\nRoutes\n', '\nRoute\n', '\nDecision\n']) t.match(text, section)
  t.match(text, '  ✓ routes[1] * /admin — chosen')
  t.match(text, '  ✗ routes[0] * / (public) — it fits, but the longer prefix /admin (routes[1]) is chosen')
  t.match(text, '  ✗ routes[1].allow.groups: claim groups = ["users"]; allowed: admins')
  t.match(text, 'denied (403) by routes[1].allow.groups')
  t.match(text, 'as:     a session of bob')
})

t.test('openRouteWarning names the routes every signed-in user may use', async (t) => {
  const config = configWith([
    { match: { host: 'app.example.com', pathPrefix: '/' }, upstream: up(0) },
    { match: { pathPrefix: '/pub' }, upstream: up(1), public: true },
    { match: { pathPrefix: '/a' }, upstream: up(2), allow: { groups: ['x'] } },
    { match: { pathPrefix: '/b' }, upstream: up(3), allow: { any: [{ groups: ['x'] }, {}] } },
  ])
  const table = compileRoutes(config.routes, config.access)
  t.strictSame(table.routes.map(openRouteWarning), [
    'routes[0] (app.example.com /): admits every signed-in user — add routes[0].allow or access.defaultAllow',
    null,
    null,
    'routes[3] (any host /b): admits every signed-in user — routes[3].allow has no condition',
  ])
  const guarded = configWith([{ match: { pathPrefix: '/' }, upstream: up(0) }], { access: { defaultAllow: { domains: ['example.com'] } } })
  t.equal(openRouteWarning(compileRoutes(guarded.routes, guarded.access).routes[0] as never), null, 'access.defaultAllow covers it')
})

// ---------------------------------------------------------------------------------------------------
// The explanation agrees with the route table

const TABLES: unknown[][] = [
  [
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { pathPrefix: '/admin/' }, upstream: up(1) },
    { match: { pathPrefix: '/admin/public' }, upstream: up(2), public: true },
    { match: { pathPrefix: '/api' }, upstream: up(3) },
  ],
  [
    { match: { pathPrefix: '/' }, upstream: up(0) },
    { match: { pathPrefix: '/Public/', caseInsensitive: true }, upstream: up(1), public: true },
    { match: { pathPrefix: '/public/admin' }, upstream: up(2) },
    { match: { pathPrefix: '/x' }, upstream: up(3), public: true },
    { match: { pathPrefix: '/X', caseInsensitive: true }, upstream: up(4) },
  ],
  [
    { match: { pathPrefix: '/' }, upstream: up(0), public: true },
    { match: { host: 'app.example.com', pathPrefix: '/' }, upstream: up(1), public: true },
    { match: { host: 'app.example.com', pathPrefix: '/admin' }, upstream: up(2) },
    { match: { host: 'app.example.com:8443', pathPrefix: '/public' }, upstream: up(3), public: true },
    { match: { host: 'app.example.com:8443', pathPrefix: '/api/' }, upstream: up(4) },
    { match: { pathPrefix: '/admin/' }, upstream: up(5) },
    { match: { host: 'files.example.com', pathPrefix: '/Share', caseInsensitive: true }, upstream: up(6) },
  ],
  [{ match: { host: 'only.example.com', pathPrefix: '/app' }, upstream: up(0) }],
]
const HOSTS = ['app.example.com', 'APP.example.com.', 'app.example.com:8443', 'app.example.com:80', 'files.example.com', 'only.example.com', 'other.example', 'app.example.com:']
const SEGMENTS = ['', 'admin', 'ADMIN', 'Admin.', 'admin%20', 'admin;x', 'public', 'PUBLIC', 'api', 'apix', 'x', 'share', 'SHARE.', 'app']

function paths(): string[] {
  const out = new Set<string>(['/'])
  for (const a of SEGMENTS) {
    out.add(`/${a}`)
    out.add(`/${a}/`)
    for (const b of SEGMENTS) {
      out.add(`/${a}/${b}`)
      for (const c of ['', 'x', 'admin']) out.add(`/${a}/${b}/${c}`)
    }
  }
  return [...out]
}

function check(t: Test, table: RouteTable, e: Explanation, host: string, path: string): void {
  const want = table.match(host, path)
  const chosen = e.routes.filter((l) => l.chosen)
  const label = `${host} ${path}`
  if (e.route?.id !== want?.id) t.fail(`${label}: explained ${e.route?.id ?? 'none'}, matched ${want?.id ?? 'none'}`)
  if (chosen.length !== (want === null ? 0 : 1) || chosen[0]?.id !== want?.id) t.fail(`${label}: route lines mark ${chosen.map((l) => l.id).join(',') || 'none'}`)
  if ((e.decision.outcome === 'no-route') !== (want === null)) t.fail(`${label}: outcome ${e.decision.outcome}`)
  for (const l of e.routes) {
    if (l.reason === 'unexplained') t.fail(`${label}: ${l.id} unexplained: ${l.detail}`)
    const fits = l.fit !== null && ['exact', 'portless', 'any'].includes(l.fit.host) && l.fit.prefixMatches
    if (['shorter', 'tried-later', 'guarded'].includes(l.reason) && !fits) t.fail(`${label}: ${l.id} said to fit but does not`)
    if (['host', 'prefix'].includes(l.reason) && fits) t.fail(`${label}: ${l.id} said not to fit but does`)
    if (l.reason === 'chosen' && !fits) t.fail(`${label}: ${l.id} chosen without fitting`)
    if (l.reason === 'chosen-by-guard' && l.fit?.guardMatches !== true) t.fail(`${label}: ${l.id} chosen by the guard without its test`)
  }
}

t.test('for every table, host and path the explanation names the route match() chooses, and says why of every other', async (t) => {
  let checked = 0
  const seen = new Set<string>()
  for (const routes of TABLES) {
    const { table, explain } = explainer(routes)
    for (const host of HOSTS) {
      for (const path of paths()) {
        const e = explain(`http://${host}${path}`)
        if (e.path.normalized === null || e.decision.outcome === 'own-endpoint') continue
        t.equal(e.request.host, host.replace(/:80$/, ''))
        check(t, table, e, e.request.host, e.path.normalized)
        for (const l of e.routes) seen.add(l.reason)
        // trace() is match() step by step, with or without a Host header.
        for (const h of [e.request.host, undefined]) {
          if (table.trace(h, e.path.normalized).chosen !== table.match(h, e.path.normalized)) t.fail(`trace and match differ for ${h} ${e.path.normalized}`)
        }
        checked++
      }
    }
  }
  t.ok(checked > 10_000, `checked ${checked} requests`)
  t.strictSame(
    [...seen].sort(),
    ['chosen', 'chosen-by-guard', 'guarded', 'host', 'host-unusable', 'prefix', 'shorter', 'tried-later'],
    'every reason but "unexplained" came up',
  )
})
