/**
 * Refresh in forward-auth mode (issue #11 point 3), where a `Set-Cookie` on the check's 200 may
 * never reach the browser (Caddy 2.6 drops it; Traefik and Envoy only pass it when configured):
 * - memory store: the refreshed tokens live server-side; the ticket the browser holds never changes,
 *   so a controller that drops every `Set-Cookie` loses nothing, refresh after refresh (the provider
 *   rotates refresh tokens: a replayed old one would end the session);
 * - cookie store: the check's 200 carries the one re-sealed session cookie (nginx copies it with
 *   `auth_request_set` + `add_header`), and a client that sends it back is served its new tokens.
 * Both checks, the relay family's and the nginx family's, with the client standing in for a
 * controller that keeps (or drops) cookies.
 */
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { parseSetCookie, request } from '../helpers/http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { fakeClock } from '../helpers/clock.ts'

const alice = DEMO_USERS[0]!
const TRUSTED = { server: { trustedProxies: ['127.0.0.1/32'] }, identity: { passAccessToken: true } }
const CHECKS = [
  { name: '/oauth2/verify', path: '/oauth2/verify', headers: { 'x-forwarded-method': 'GET', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example', 'x-forwarded-uri': '/x' } },
  { name: '/oauth2/auth', path: '/oauth2/auth', headers: { 'x-original-url': 'https://app.example/x', 'x-original-method': 'GET' } },
] as const

for (const check of CHECKS) {
  t.test(`memory store, ${check.name}: refreshed server-side, the browser's ticket never changes`, async (t) => {
    const clock = fakeClock()
    // The provider keeps real time while the proxy's clock runs ahead: ID tokens that outlive the
    // rounds keep each refresh's ID token valid on the proxy's clock.
    const { proxy, provider } = await startStack(t, { runtime: { clock }, provider: { idTokenTtl: 7200 }, overrides: { ...TRUSTED, session: { store: 'memory' } } })
    const { jar } = await login({ proxyUrl: proxy.url })
    // The controller drops every Set-Cookie: the login's ticket is all the browser ever sends.
    const cookie = jar.header(`${proxy.url}/`)
    const refreshGrants = () => provider.requests.filter((r) => r.path === '/oauth/token' && r.grantType === 'refresh_token').length
    const first = await request(`${proxy.url}${check.path}`, { headers: { cookie, ...check.headers } })
    t.equal(first.status, 200)
    const tokens = [first.headers['x-auth-request-access-token']]
    for (let round = 1; round <= 3; round++) {
      // The provider's access tokens live 300 s; 280 s on they expire within refreshAhead (30 s).
      clock.advance(280_000)
      const res = await request(`${proxy.url}${check.path}`, { headers: { cookie, ...check.headers } })
      t.equal(res.status, 200, `round ${round}: allowed with the login's ticket`)
      t.equal(res.headers['x-auth-request-user'], alice.id)
      t.equal(refreshGrants(), round, `round ${round}: one refresh at the provider (a replayed refresh token would have ended the session)`)
      t.same(res.setCookies, [], `round ${round}: nothing for the controller to copy`)
      tokens.push(res.headers['x-auth-request-access-token'])
    }
    t.equal(new Set(tokens).size, tokens.length, 'a new access token each round, from the store')
  })

  t.test(`cookie store, ${check.name}: the one re-sealed cookie on the 200 carries the new tokens`, async (t) => {
    const clock = fakeClock()
    const { proxy, provider } = await startStack(t, { runtime: { clock }, overrides: TRUSTED })
    const { jar } = await login({ proxyUrl: proxy.url })
    const refreshGrants = () => provider.requests.filter((r) => r.path === '/oauth/token' && r.grantType === 'refresh_token').length
    const before = jar.get('_portcullis')
    const first = await request(`${proxy.url}${check.path}`, { jar, headers: check.headers })
    clock.advance(280_000)
    const refreshed = await request(`${proxy.url}${check.path}`, { jar, headers: check.headers })
    t.equal(refreshed.status, 200)
    t.equal(refreshGrants(), 1, 'refreshed once')
    t.equal(refreshed.setCookies.length, 1, 'exactly one Set-Cookie (nginx copies only the first)')
    const line = parseSetCookie(refreshed.setCookies[0]!)
    t.equal(line.name, '_portcullis')
    t.equal(line.attrs.get('path'), '/')
    t.ok(line.attrs.has('httponly'), 'HttpOnly')
    t.not(jar.get('_portcullis'), before, 'the jar (the browser, through nginx) holds the re-sealed cookie')
    t.not(refreshed.headers['x-auth-request-access-token'], first.headers['x-auth-request-access-token'], 'a new access token')
    // Later, from a fresh process's point of view: the new cookie itself holds the new tokens.
    clock.advance(6_000)
    const next = await request(`${proxy.url}${check.path}`, { jar, headers: check.headers })
    t.equal(next.status, 200)
    t.equal(next.headers['x-auth-request-access-token'], refreshed.headers['x-auth-request-access-token'], 'the re-sealed cookie carries the refreshed token')
    t.equal(refreshGrants(), 1, 'no second refresh')
    t.same(next.setCookies, [])
  })
}
