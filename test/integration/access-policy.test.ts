/**
 * Access rules end to end (issue #10 point 1), with the real provider's users (alice: admins and
 * engineering, role admin, org_example; bob: engineering, viewer, org_example; carol: no groups,
 * org_partner, partner.example, e-mail not verified) and the echo upstream, over real HTTP, in both
 * lanes: the fast lane and the Fastify path (`fastLane: false`) on one runtime must refuse and admit
 * alike. A refusal is a 403 naming the rule (JSON for API clients, a page for a browser navigation)
 * that never shows the user's claims or the configured lists; the upstream never sees it; the session
 * is kept. The forward-auth check (`GET /oauth2/auth` with `X-Original-URL` from a trusted peer)
 * judges the same rules: 200, 403, or 401 for a step-up.
 *
 * @see src/policy/access.ts, src/http/pipeline.ts (step 4b)
 */
import t, { type Test } from 'tap'
import { startApp, startStack, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { DEMO_USERS, type DemoUser } from '../helpers/provider.ts'

const [alice, bob, carol] = DEMO_USERS as [DemoUser, DemoUser, DemoUser]
const API = { accept: 'application/json' }

/** The routes, by index: the rule paths the refusals must name. */
const ROUTES = ['/', '/staff', '/partner', '/admins', '/viewers', '/org', '/claims', '/either', '/everyone', '/mfa', '/public'] as const
const at = (prefix: (typeof ROUTES)[number]) => ROUTES.indexOf(prefix)

interface Policy {
  stack: Stack
  fast: RunningPortcullis
  slow: RunningPortcullis
  /** A Cookie header of each user's session. */
  cookies: Record<string, string>
}

async function policyStack(t: Test): Promise<Policy> {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      server: { trustedProxies: ['127.0.0.1/32'] },
      access: { defaultAllow: { domains: ['example.com'] } },
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/staff' }, upstream, allow: { domains: ['example.com'] } },
        { match: { pathPrefix: '/partner' }, upstream, allow: { unverifiedEmail: true, domains: ['partner.example'] } },
        { match: { pathPrefix: '/admins' }, upstream, allow: { groups: ['admins'] } },
        { match: { pathPrefix: '/viewers' }, upstream, allow: { roles: ['viewer'] } },
        { match: { pathPrefix: '/org' }, upstream, allow: { organizations: ['org_partner'] } },
        { match: { pathPrefix: '/claims' }, upstream, allow: { claims: { name: { regex: 'Bob .*' }, email_verified: true } } },
        { match: { pathPrefix: '/either' }, upstream, allow: { any: [{ groups: ['admins'] }, { unverifiedEmail: true, domains: ['partner.example'] }] } },
        { match: { pathPrefix: '/everyone' }, upstream, allow: {} },
        { match: { pathPrefix: '/mfa' }, upstream, require: { mfa: true } },
        { match: { pathPrefix: '/public' }, upstream, public: true },
      ],
    }),
  })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  const cookies: Record<string, string> = {}
  for (const user of [alice, bob, carol]) {
    // carol may not see `/` (the default rule): she starts where she is allowed. A login is never
    // refused for the rules; only the page it returns to is judged.
    const { jar, finalLocation } = await login({ proxyUrl: stack.proxy.url, user, path: user === carol ? '/partner' : '/' })
    t.equal(new URL(finalLocation).pathname, user === carol ? '/partner' : '/', `${user.id} signed in`)
    cookies[user.id] = jar.header(`${stack.proxy.url}/`)
  }
  return { stack, fast: stack.proxy, slow, cookies }
}

let seq = 0
/**
 * The same request to both lanes (Fastify path first); the answers must agree (status, content type,
 * body; the request id is fixed per pair). Returns the fast lane's answer and how many requests
 * reached the upstream.
 */
async function both(t: Test, p: Policy, path: string, opts: { user?: DemoUser; headers?: Record<string, string> }): Promise<{ res: TestResponse; upstreamSaw: number }> {
  const reqId = `policy-${++seq}`
  const headers: Record<string, string> = { ...API, ...opts.headers, 'x-request-id': reqId }
  if (opts.user !== undefined) headers.cookie = p.cookies[opts.user.id] as string
  const before = p.stack.upstream.requests.length
  const slow = await request(`${p.slow.url}${path}`, { headers })
  const fast = await request(`${p.fast.url}${path}`, { headers })
  const label = `${opts.user?.id ?? 'nobody'} ${path}`
  t.equal(fast.status, slow.status, `${label}: the same status in both lanes`)
  t.equal(fast.headers['content-type'], slow.headers['content-type'], `${label}: the same content type`)
  t.equal(fast.body, slow.body, `${label}: the same body`)
  t.same(fast.setCookies, slow.setCookies, `${label}: the same cookies`)
  return { res: fast, upstreamSaw: p.stack.upstream.requests.length - before }
}

/** Asserts an API client's 403 naming `rule`, that reached nothing upstream and kept the session. */
async function denied(t: Test, p: Policy, user: DemoUser, path: string, rule: string): Promise<TestResponse> {
  const { res, upstreamSaw } = await both(t, p, path, { user })
  t.equal(res.status, 403, `${user.id} ${path}: 403`)
  t.match(res.headers['content-type'], /^application\/json/)
  t.match(res.json(), { error: 'ACCESS_DENIED', rule, message: String, requestId: String }, `${user.id} ${path}: names ${rule}`)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(upstreamSaw, 0, `${user.id} ${path}: the upstream never saw it (either lane)`)
  t.same(res.setCookies, [], `${user.id} ${path}: the session cookie is neither cleared nor rewritten`)
  return res
}

/** Asserts the request reached the upstream as `user`. */
async function allowed(t: Test, p: Policy, user: DemoUser, path: string): Promise<void> {
  const { res, upstreamSaw } = await both(t, p, path, { user })
  t.equal(res.status, 200, `${user.id} ${path}: allowed`)
  t.equal(upstreamSaw, 2, `${user.id} ${path}: the upstream got it from each lane`)
  const seen = p.stack.upstream.requests.at(-1)
  t.equal(seen?.headers['x-auth-request-user'], user.id, `${user.id} ${path}: as ${user.id}`)
  t.equal(seen?.headers['x-auth-request-email'], user.email)
}

t.test('e-mail domains: carol (unverified, partner.example) refused on example.com, admitted with unverifiedEmail', async (t) => {
  const p = await policyStack(t)
  const res = await denied(t, p, carol, '/staff/reports?q=1', `routes[${at('/staff')}].allow.domains`)
  const body = res.body
  for (const secret of [carol.email, 'partner.example', 'example.com', 'email_verified']) t.notOk(body.includes(secret), `the JSON does not contain ${secret}`)

  // A browser navigation gets the page, with the rule and nothing the rule compared.
  const { res: page, upstreamSaw } = await both(t, p, '/staff/reports', { user: carol, headers: NAVIGATION_HEADERS })
  t.equal(page.status, 403)
  t.match(page.headers['content-type'], /^text\/html/)
  t.equal(upstreamSaw, 0)
  t.match(page.body, '<title>')
  t.match(page.body, 'Access denied')
  t.match(page.body, `<code>routes[${at('/staff')}].allow.domains</code>`, 'the page shows the rule')
  for (const secret of [carol.email, 'carol@', 'partner.example', 'example.com', carol.name]) t.notOk(page.body.includes(secret), `the page does not show ${secret}`)
  t.equal(page.headers.location, undefined, 'no redirect to log in again: another login cannot change the e-mail')
  t.same(page.setCookies, [])

  await allowed(t, p, carol, '/partner/x')
  await denied(t, p, bob, '/partner/x', `routes[${at('/partner')}].allow.domains`)
  await allowed(t, p, bob, '/staff/x')
})

t.test('groups, roles, organizations, claim matchers and any-alternatives', async (t) => {
  const p = await policyStack(t)
  await allowed(t, p, alice, '/admins/panel')
  await denied(t, p, bob, '/admins/panel', `routes[${at('/admins')}].allow.groups`)
  await denied(t, p, carol, '/admins/panel', `routes[${at('/admins')}].allow.groups`)

  await allowed(t, p, bob, '/viewers')
  await denied(t, p, alice, '/viewers', `routes[${at('/viewers')}].allow.roles`)

  await allowed(t, p, carol, '/org/x')
  await denied(t, p, alice, '/org/x', `routes[${at('/org')}].allow.organizations`)

  await allowed(t, p, bob, '/claims')
  await denied(t, p, alice, '/claims', `routes[${at('/claims')}].allow.claims.name`)

  await allowed(t, p, alice, '/either')
  await allowed(t, p, carol, '/either')
  await denied(t, p, bob, '/either', `routes[${at('/either')}].allow.any`)
})

t.test('access.defaultAllow applies to routes without allow, not to routes with their own', async (t) => {
  const p = await policyStack(t)
  await allowed(t, p, bob, '/')
  await denied(t, p, carol, '/', 'access.defaultAllow.domains')
  await denied(t, p, carol, '/anything/else', 'access.defaultAllow.domains')
  await allowed(t, p, carol, '/everyone')
  await allowed(t, p, carol, '/partner')
  const { res, upstreamSaw } = await both(t, p, '/public/x', {})
  t.equal(res.status, 200, 'a public route needs no login and judges no rule')
  t.equal(upstreamSaw, 2)
  const withCookie = await both(t, p, '/public/x', { user: carol })
  t.equal(withCookie.res.status, 200, 'not even for carol')
})

t.test('a refused session is kept: its cookie still works where the user is allowed', async (t) => {
  const p = await policyStack(t)
  for (let i = 0; i < 3; i++) await denied(t, p, carol, '/staff', `routes[${at('/staff')}].allow.domains`)
  await allowed(t, p, carol, '/partner/after')
  const info = await request(`${p.fast.url}/oauth2/userinfo`, { headers: { ...API, cookie: p.cookies.carol as string } })
  t.equal(info.status, 200, 'the session is still there')
  t.match(info.json(), { user: carol.id, email: carol.email })
  // Without a session the same routes ask for a login, never a 403.
  const { res } = await both(t, p, '/staff', {})
  t.equal(res.status, 401)
  const nav = await both(t, p, '/staff', { headers: NAVIGATION_HEADERS })
  t.equal(nav.res.status, 302)
  t.match(nav.res.headers.location, /\/oauth2\/start\?rd=/)
})

t.test('the forward-auth check judges the same rules: 200 allowed, 403 denied, 401 step-up', async (t) => {
  const p = await policyStack(t)
  const check = async (user: DemoUser | null, original: string | null) => {
    const headers: Record<string, string> = original === null ? {} : { 'x-original-url': `http://app.example${original}` }
    return both(t, p, '/oauth2/auth', { ...(user === null ? {} : { user }), headers })
  }
  const ok = await check(alice, '/admins/panel')
  t.equal(ok.res.status, 200, 'alice: 200')
  t.equal(ok.res.headers['x-auth-request-user'], alice.id)
  t.equal(ok.upstreamSaw, 0, 'the check never proxies')

  const no = await check(bob, '/admins/panel')
  t.equal(no.res.status, 403, 'bob: 403')
  t.match(no.res.json(), { error: 'ACCESS_DENIED', rule: `routes[${at('/admins')}].allow.groups` })
  t.equal(no.res.headers['x-auth-request-user'], undefined, 'no identity on a 403')
  t.notOk(no.res.body.includes('admins'), 'the configured group is not named')

  const partner = await check(carol, '/partner/x')
  t.equal(partner.res.status, 200, 'carol where she is allowed')
  const staff = await check(carol, '/staff/x')
  t.equal(staff.res.status, 403, 'and 403 where she is not')
  t.match(staff.res.json(), { rule: `routes[${at('/staff')}].allow.domains` })
  t.equal((await check(carol, '/')).res.status, 403, 'the default rule for a route without its own')
  t.match((await check(carol, null)).res.json(), { rule: 'access.defaultAllow.domains' }, 'no original URL: access.defaultAllow')
  t.equal((await check(bob, null)).res.status, 200)
  t.equal((await check(carol, '/public/x')).res.status, 200, 'a public original URL')

  const stepUp = await check(alice, '/mfa/x')
  t.equal(stepUp.res.status, 401, 'a password-only login on a route that requires MFA: 401 (nginx sends the browser to sign in)')
  t.match(stepUp.res.headers['www-authenticate'], /^Bearer /)
  t.same(stepUp.res.setCookies, [], 'the session is kept')
  t.equal((await check(alice, '/admins')).res.status, 200, 'and still serves what it may')
  t.equal((await check(null, '/admins/panel')).res.status, 401, 'no session: 401')
})
