/**
 * GET {prefix}/debug (issue #10 point 7): the explanation of a request, with the caller's own
 * session, for loopback and trusted peers when `server.debug` is on; the 404 of an unknown path
 * otherwise.
 */
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { rawRequest } from '../helpers/raw-http.ts'
import { configFor } from '../helpers/config.ts'
import { buildApp } from '../../src/app.ts'
import { createRuntime } from '../../src/runtime.ts'
import { openSession } from '../../src/http/pipeline.ts'
import { isLoopback } from '../../src/http/routes/debug.ts'
import { createMetrics } from '../../src/metrics.ts'

const ROUTES = (upstream: string) => [
  { match: { pathPrefix: '/' }, upstream, public: true },
  { match: { pathPrefix: '/admin/' }, upstream, allow: { groups: ['admins'] } },
  { match: { pathPrefix: '/ops/' }, upstream, allow: { groups: ['sre'], roles: ['admin'] } },
]

/** An error body without its request id, to compare two answers. */
function withoutId(body: string): unknown {
  const { requestId: _id, ...rest } = JSON.parse(body) as Record<string, unknown>
  return rest
}

t.test('off by default: the 404 of an unknown path', async (t) => {
  const { proxy } = await startStack(t)
  const debug = await request(`${proxy.url}/oauth2/debug?url=/x`, { headers: { accept: 'application/json' } })
  const unknown = await request(`${proxy.url}/oauth2/nothing-here`, { headers: { accept: 'application/json' } })
  t.equal(debug.status, 404)
  t.strictSame(withoutId(debug.body), withoutId(unknown.body), 'the same body as an unknown path')
  t.strictSame(withoutId(debug.body), { error: 'NOT_FOUND', message: 'Nothing is served at this address.' })
  t.equal(debug.headers['content-type'], unknown.headers['content-type'])
})

t.test('on, from loopback: the explanation with the session of the request', async (t) => {
  const { proxy, upstream } = await startStack(t, { overrides: ({ upstream }) => ({ server: { debug: true }, routes: ROUTES(upstream) }) })
  const before = upstream.requests.length

  const anonymous = await request(`${proxy.url}/oauth2/debug?url=/admin/x`, { headers: { accept: 'application/json' } })
  t.equal(anonymous.status, 200)
  t.equal(anonymous.headers['cache-control'], 'no-store')
  const a = anonymous.json<{ session: { present: boolean; cookie: string }; route: { id: string }; decision: { outcome: string; answers: Array<{ status: number }> } }>()
  t.strictSame(a.session, { present: false, cookie: 'none sent' })
  t.equal(a.route.id, 'routes[1]')
  t.equal(a.decision.outcome, 'sign-in')
  t.strictSame(
    a.decision.answers.map((x) => x.status),
    [302, 401],
  )

  const { jar } = await login({ proxyUrl: proxy.url, path: '/admin/' })
  const debugUrl = `${proxy.url}/oauth2/debug?url=${encodeURIComponent('/ops/deploy?x=1')}&method=POST`
  const res = await request(debugUrl, { jar, headers: { accept: 'application/json' } })
  t.equal(res.status, 200, res.body)
  t.equal(res.headers['cache-control'], 'no-store')
  t.same(res.setCookies, [], 'no cookie is written')
  type Body = {
    session: { present: boolean; sub: string; authTime: number | null }
    request: { method: string; target: string; host: string; subject: { kind: string; sub: string } }
    routes: Array<{ id: string; chosen: boolean; reason: string }>
    route: { id: string }
    decision: { step: string; outcome: string; summary: string; conditions: Array<{ rule: string; ok: boolean; detail: string }> }
  }
  const body = res.json<Body>()
  t.equal(body.session.present, true)
  t.equal(body.session.sub, 'alice')
  t.type(body.session.authTime, 'number', 'auth_time of the login')
  t.equal(body.request.method, 'POST')
  t.equal(body.request.target, '/ops/deploy?x=1')
  t.equal(body.request.host, new URL(proxy.url).host)
  t.strictSame(body.request.subject, { kind: 'session', sub: 'alice', authTime: body.session.authTime })
  t.equal(body.route.id, 'routes[2]')
  t.strictSame(
    body.routes.map((l) => [l.id, l.chosen, l.reason]),
    [
      ['routes[0]', false, 'shorter'],
      ['routes[1]', false, 'prefix'],
      ['routes[2]', true, 'chosen'],
    ],
  )
  t.equal(body.decision.step, 'session')
  t.equal(body.decision.outcome, 'deny', 'alice is not in sre')
  t.strictSame(
    body.decision.conditions.map((c) => [c.rule, c.ok]),
    [
      ['routes[2].allow.groups', false],
      ['routes[2].allow.roles', true],
    ],
    "each of the rule's conditions, judged on the session's claims",
  )
  t.match(body.decision.conditions[0]?.detail, 'claim groups = ["admins","engineering"]; allowed: sre')

  // Nothing secret in it: no token, no cookie, no session id.
  const cookieHeader = jar.header(`${proxy.url}/`)
  const opened = await openSession(proxy.runtime, { cookie: cookieHeader })
  const session = opened.loaded?.session
  t.ok(session !== undefined, 'the test can open the session itself')
  const secrets = [session?.accessToken, session?.idToken, session?.refreshToken, session?.id, session?.sid, ...cookieHeader.split('; ').map((c) => c.slice(c.indexOf('=') + 1))]
  for (const secret of secrets) {
    if (secret === undefined || secret.length < 8) continue
    t.notOk(res.body.includes(secret), `the body does not hold ${secret.slice(0, 12)}…`)
  }
  t.notMatch(res.body, /"sid"|accessToken|idToken|refreshToken/)

  const allowed = await request(`${proxy.url}/oauth2/debug?url=${encodeURIComponent(`${proxy.url}/admin/x`)}`, { jar, headers: { accept: 'application/json' } })
  t.equal(allowed.json<Body>().decision.outcome, 'forward', 'an absolute URL on publicUrl\'s origin')

  const elsewhere = await request(`${proxy.url}/oauth2/debug?url=${encodeURIComponent('https://evil.example/admin/')}`, { jar, headers: { accept: 'application/json' } })
  t.equal(elsewhere.status, 400)
  t.match(elsewhere.json<{ message: string }>().message, 'must be a path or an absolute URL on')
  const twice = await request(`${proxy.url}/oauth2/debug?url=/a&url=/b`, { jar, headers: { accept: 'application/json' } })
  t.equal(twice.status, 400, 'a parameter given twice is refused')
  const notAPath = await request(`${proxy.url}/oauth2/debug?url=/a&method=G%20T`, { jar, headers: { accept: 'application/json' } })
  t.equal(notAPath.status, 400)

  const defaulted = await request(`${proxy.url}/oauth2/debug`, { jar, headers: { accept: 'application/json' } })
  t.equal(defaulted.json<Body>().request.target, '/', 'default: /')
  t.equal(defaulted.json<Body>().decision.outcome, 'forward')

  const twoHosts = await rawRequest(Number(new URL(proxy.url).port), '/oauth2/debug', { headers: [['Host', '127.0.0.1'], ['Host', 'evil.example'], ['Accept', 'application/json']] })
  t.equal(twoHosts.status, 400, 'screened like every own route: two Host headers are refused')
  t.equal(upstream.requests.length - before, 0, 'nothing reached the app: debug only explains')
})

t.test('on, from a peer that is neither loopback nor trusted: 404', async (t) => {
  const config = configFor({
    issuer: 'http://127.0.0.1:1',
    clientId: 'c',
    clientSecret: 'debug-test-client-secret',
    upstream: 'http://127.0.0.1:2',
    publicUrl: 'http://127.0.0.1:3',
    overrides: { server: { debug: true, trustedProxies: ['10.0.0.0/8'] }, routes: ROUTES('http://127.0.0.1:2') },
  })
  const runtime = createRuntime(config, { retry: { initialMs: 60_000, maxMs: 60_000 } })
  t.teardown(() => runtime.close())
  const app = buildApp(runtime, { logger: { level: 'silent' }, metrics: createMetrics({ defaultMetrics: false }) })
  t.teardown(() => app.fastify.close())
  const ask = (remoteAddress: string, url = '/oauth2/debug?url=/admin/') => app.fastify.inject({ method: 'GET', url, remoteAddress, headers: { accept: 'application/json' } })

  const outsider = await ask('203.0.113.7')
  const unknown = await ask('203.0.113.7', '/oauth2/nothing-here')
  t.equal(outsider.statusCode, 404)
  t.strictSame(withoutId(outsider.body), withoutId(unknown.body), 'indistinguishable from an unknown path')
  t.equal((await ask('::ffff:203.0.113.7')).statusCode, 404)
  t.equal((await ask('11.0.0.1')).statusCode, 404, 'outside trustedProxies')

  const trusted = await ask('10.1.2.3')
  t.equal(trusted.statusCode, 200, 'a peer in server.trustedProxies')
  t.equal(trusted.json<{ route: { id: string } }>().route.id, 'routes[1]')
  t.equal((await ask('::ffff:10.1.2.3')).statusCode, 200)
  t.equal((await ask('127.0.0.1')).statusCode, 200, 'loopback')
  t.equal((await ask('::1')).statusCode, 200, 'loopback (IPv6)')

  for (const [peer, loop] of [
    ['127.0.0.1', true],
    ['127.8.9.10', true],
    ['::ffff:127.0.0.1', true],
    ['::1', true],
    ['', false],
    ['10.0.0.1', false],
    ['::2', false],
    ['128.0.0.1', false],
    ['::ffff:10.0.0.1', false],
  ] as const) {
    t.equal(isLoopback(peer), loop, `${peer || '(none)'} ${loop ? 'is' : 'is not'} loopback`)
  }
})
