/**
 * CORS preflights (issue #10 point 8): an `OPTIONS` with `Origin` and `Access-Control-Request-Method`
 * passes a protected route without a session only where `routes[].allowPreflight` is set, and never
 * carries identity headers or credentials upstream. Anything short of a preflight (no Origin, no
 * requested method, another method) still needs a session. Both lanes.
 */
import t from 'tap'
import { startApp, startStack } from '../helpers/portcullis.ts'
import { request } from '../helpers/http.ts'
import { login } from '../helpers/login.ts'

const PREFLIGHT = { origin: 'https://spa.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
const SPOOFED = { 'x-auth-request-user': 'admin', 'x-forwarded-email': 'admin@example.com', authorization: 'Bearer forged' }

t.test('CORS preflights', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/api/' }, upstream, allowPreflight: true },
      ],
    }),
  })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  const { jar } = await login({ proxyUrl: stack.proxy.url, path: '/' })

  for (const [lane, base] of [
    ['fast lane', stack.proxy.url],
    ['Fastify path', slow.url],
  ] as const) {
    await t.test(lane, async (t) => {
      const before = stack.upstream.requests.length
      const res = await request(`${base}/api/items`, { method: 'OPTIONS', headers: { ...PREFLIGHT, ...SPOOFED } })
      t.equal(res.status, 200, 'a preflight on an allowPreflight route reaches the app')
      t.equal(stack.upstream.requests.length, before + 1, 'once')
      const seen = stack.upstream.requests.at(-1)
      t.equal(seen?.method, 'OPTIONS')
      t.equal(seen?.url, '/api/items')
      const names = Object.keys(seen?.headers ?? {})
      for (const name of ['x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-forwarded-user', 'x-forwarded-email', 'authorization']) {
        t.notOk(names.includes(name), `no ${name} upstream, not even an empty one`)
      }
      t.equal(seen?.headers.origin, PREFLIGHT.origin, 'the CORS headers reach the app')
      t.equal(seen?.headers['access-control-request-method'], 'POST')

      // With a session a preflight is still anonymous: browsers send no cookie on preflights, and one
      // that does must not turn it into an identified request.
      const withCookie = await request(`${base}/api/items`, { method: 'OPTIONS', headers: PREFLIGHT, jar })
      t.equal(withCookie.status, 200)
      t.notOk('x-auth-request-user' in (stack.upstream.requests.at(-1)?.headers ?? {}), 'no identity on a preflight, session or not')

      const count = stack.upstream.requests.length
      const notPreflights: Array<[string, { method: string; headers: Record<string, string> }]> = [
        ['a preflight on a route without allowPreflight', { method: 'OPTIONS', headers: PREFLIGHT }],
        ['OPTIONS without Origin', { method: 'OPTIONS', headers: { 'access-control-request-method': 'POST' } }],
        ['OPTIONS without Access-Control-Request-Method', { method: 'OPTIONS', headers: { origin: PREFLIGHT.origin } }],
        ['a GET with the preflight headers', { method: 'GET', headers: PREFLIGHT }],
      ]
      for (const [what, opts] of notPreflights) {
        const path = what.startsWith('a preflight on a route without') ? '/other' : '/api/items'
        const refused = await request(`${base}${path}`, { method: opts.method, headers: { ...opts.headers, accept: 'application/json' } })
        t.equal(refused.status, 401, `${what}: a session is required`)
      }
      t.equal(stack.upstream.requests.length, count, 'none of those reached the app')

      const real = await request(`${base}/api/items`, { method: 'POST', headers: { origin: PREFLIGHT.origin, 'content-type': 'application/json' }, body: '{}', jar })
      t.equal(real.status, 200, 'the actual request after the preflight needs and uses the session')
      t.equal(stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], 'alice')
    })
  }
})
