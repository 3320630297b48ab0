/**
 * /oauth2/verify, the forward-auth check for the relay family (Traefik `forwardAuth`, Caddy
 * `forward_auth`, Envoy / Istio / Envoy Gateway ext_authz), and the original request both checks
 * rebuild: `X-Forwarded-Method/-Proto/-Host/-Uri` as Traefik and Caddy send them (believed from
 * trusted peers only), and Envoy's form, the original method and Host on `/oauth2/verify` + the
 * original path. Against the real provider; both lanes (the fast lane, Fastify's route) answer.
 * Behind a real Caddy: test/system/caddy-forward-auth.test.ts.
 */
import t, { type Test } from 'tap'
import { reserveHeldPort, reservePort, startApp, startPortcullis, startStack, type Stack } from '../helpers/portcullis.ts'
import { fakeClock } from '../helpers/clock.ts'
import { configFor } from '../helpers/config.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { rawRequest } from '../helpers/raw-http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../src/config/schema.ts'
import { eventually } from '../helpers/wait.ts'

const [alice, bob] = [DEMO_USERS[0]!, DEMO_USERS[1]!]
const IDENTITY_NAMES = Object.keys(DEFAULT_IDENTITY_HEADERS).map((h) => h.toLowerCase())
const BROWSER = { accept: 'text/html,application/xhtml+xml', 'sec-fetch-mode': 'navigate' }
const API = { accept: 'application/json' }

/** A stack with a public route, a protected one, one only alice may use and one that asks for MFA. */
function relayStack(t: Test, trusted: boolean): Promise<Stack> {
  return startStack(t, {
    overrides: ({ upstream }) => ({
      ...(trusted ? { server: { trustedProxies: ['127.0.0.1/32'] } } : {}),
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { host: 'app.example', pathPrefix: '/admin' }, upstream, allow: { emails: [alice.email] } },
        { match: { host: 'app.example', pathPrefix: '/strong' }, upstream, require: { mfa: true } },
      ],
    }),
  })
}

/** Traefik's and Caddy's way: the check on /oauth2/verify, the original in X-Forwarded-*. */
function forwarded(method: string, proto: string, host: string, uri: string): Record<string, string> {
  return { 'x-forwarded-method': method, 'x-forwarded-proto': proto, 'x-forwarded-host': host, 'x-forwarded-uri': uri }
}

/** The `rd` of a Location to the login. */
function rdOf(location: string | undefined): string | null {
  return location === undefined ? null : new URL(location).searchParams.get('rd')
}

t.test('X-Forwarded-* from a trusted peer: 200 / 302 absolute / 401 / 403, on the original request', async (t) => {
  const { proxy } = await relayStack(t, true)
  const verify = `${proxy.url}/oauth2/verify`

  const pub = await request(verify, { headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/public/page?x=1') } })
  t.equal(pub.status, 200, 'a public route: allowed without a session')
  for (const h of IDENTITY_NAMES) t.equal(pub.headers[h], '', `${h} sent empty on a public route (Caddy 2.6 would pass a placeholder otherwise)`)
  t.equal(pub.headers['cache-control'], 'no-store')

  const nav = await request(`${verify}?rd=https://evil.example/&y=2`, { headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/reports/q3?sort=desc') } })
  t.equal(nav.status, 302, 'a browser navigation without a session is sent to login')
  t.match(nav.headers.location, new RegExp(`^${proxy.url}/oauth2/(start|sign_in)\\?`), 'an absolute Location on the public URL')
  t.equal(rdOf(nav.headers.location), 'https://app.example/reports/q3?sort=desc', 'rd is the original absolute URL, never the check query')

  const api = await request(verify, { headers: { ...API, ...forwarded('GET', 'https', 'app.example', '/api/items') } })
  t.equal(api.status, 401, 'an API client gets 401')
  t.match(api.json(), { error: 'UNAUTHENTICATED' })
  t.equal(api.headers.location, undefined)

  const post = await request(verify, { headers: { ...BROWSER, ...forwarded('POST', 'https', 'app.example', '/form') } })
  t.equal(post.status, 401, 'the original method decides: a POST is never redirected')

  t.equal((await request(verify, { headers: { ...API, ...forwarded('GET', 'https', 'app.example', 'no-slash') } })).status, 403, 'an X-Forwarded-Uri that is no path: 403')
  t.equal((await request(verify, { headers: { ...API, ...forwarded('GET', 'https', 'app.example', '/public%2F..%2Fadmin') } })).status, 403, 'an encoded separator: 403')
  t.equal((await request(verify, { headers: { ...API, ...forwarded('GET', 'https', 'app.example', '/public/../admin') } })).status, 401, 'dot segments out of a public route: a session is required')

  const { jar } = await login({ proxyUrl: proxy.url })
  const ok = await request(verify, { jar, headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/reports') } })
  t.equal(ok.status, 200)
  t.equal(ok.body, '')
  t.equal(ok.headers['x-auth-request-user'], alice.id)
  t.equal(ok.headers['x-auth-request-email'], alice.email)
  const spoofed = await request(verify, { jar, headers: { ...API, 'x-auth-request-user': 'mallory', 'remote-user': 'mallory', ...forwarded('GET', 'https', 'app.example', '/reports') } })
  t.equal(spoofed.headers['x-auth-request-user'], alice.id, "the client's copy never comes back")
  t.equal(spoofed.headers['remote-user'], undefined)
  t.equal((await request(verify, { jar, headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/admin/users') } })).status, 200, 'alice may use /admin')

  const lines = () => proxy.logs.filter((l) => l.msg === 'request' && l.route === 'auth:verify')
  t.ok(await eventually(() => lines().some((l) => l.status === 200 && l.sub === alice.id)), 'access lines name the relay check')
  t.notMatch(proxy.logText.join('\n'), /_portcullis=/, 'no cookie in the log')

  // /oauth2/auth reads the same headers (Traefik or Caddy pointed at the nginx family's check).
  const auth = await request(`${proxy.url}/oauth2/auth`, { headers: forwarded('GET', 'https', 'app.example', '/public/x') })
  t.equal(auth.status, 200, '/oauth2/auth: a public original from X-Forwarded-Uri')
  t.equal((await request(`${proxy.url}/oauth2/auth`, { headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/private') } })).status, 401, '/oauth2/auth: 401, never a redirect')
})

t.test('a denied user gets 403, a step-up is a redirect (relay) or a 401 (nginx family)', async (t) => {
  const { proxy } = await relayStack(t, true)
  const { jar } = await login({ proxyUrl: proxy.url, user: bob })
  const admin = forwarded('GET', 'https', 'app.example', '/admin/users')
  const denied = await request(`${proxy.url}/oauth2/verify`, { jar, headers: { ...BROWSER, ...admin } })
  t.equal(denied.status, 403, 'bob may not use /admin')
  t.match(denied.headers['content-type'], /^text\/html/, 'a page for the browser (Traefik and Caddy pass it on)')
  const deniedApi = await request(`${proxy.url}/oauth2/verify`, { jar, headers: { ...API, ...admin } })
  t.equal(deniedApi.status, 403)
  t.match(deniedApi.json(), { error: 'ACCESS_DENIED' })
  const deniedCheck = await request(`${proxy.url}/oauth2/auth`, { jar, headers: { 'x-original-url': 'https://app.example/admin/users', 'x-original-method': 'GET' } })
  t.equal(deniedCheck.status, 403, '/oauth2/auth: 403')
  for (const h of IDENTITY_NAMES) t.equal(deniedCheck.headers[h], undefined, `no ${h} on a 403`)

  const strong = forwarded('GET', 'https', 'app.example', '/strong/x')
  const stepUp = await request(`${proxy.url}/oauth2/verify`, { jar, headers: { ...BROWSER, ...strong } })
  t.equal(stepUp.status, 302, 'relay: a step-up is a login again')
  t.match(stepUp.headers.location, new RegExp(`^${proxy.url}/oauth2/start\\?`))
  t.equal(rdOf(stepUp.headers.location), 'https://app.example/strong/x')
  const stepUpApi = await request(`${proxy.url}/oauth2/verify`, { jar, headers: { ...API, ...strong } })
  t.equal(stepUpApi.status, 401)
  t.match(stepUpApi.headers['www-authenticate'], /insufficient_user_authentication/)
  const stepUpCheck = await request(`${proxy.url}/oauth2/auth`, { jar, headers: { ...BROWSER, 'x-original-url': 'https://app.example/strong/x' } })
  t.equal(stepUpCheck.status, 401, 'nginx family: 401 (the sign-in location takes it from there)')
})

t.test('from an untrusted peer the forwarding headers are ignored, and the log says so', async (t) => {
  const { proxy } = await relayStack(t, false)
  const pub = await request(`${proxy.url}/oauth2/verify`, { headers: { ...API, ...forwarded('GET', 'https', 'app.example', '/public/page') } })
  t.equal(pub.status, 401, 'a public original URL claimed by an untrusted peer still needs a session')
  const orig = await request(`${proxy.url}/oauth2/verify`, { headers: { ...API, 'x-original-url': 'https://app.example/public/page' } })
  t.equal(orig.status, 401, 'X-Original-URL too')
  const nav = await request(`${proxy.url}/oauth2/verify`, { headers: { ...BROWSER, ...forwarded('GET', 'https', 'evil.example', '/x') } })
  t.equal(nav.status, 302)
  t.equal(rdOf(nav.headers.location), null, 'no rd from headers nobody vouches for')
  t.equal((await request(`${proxy.url}/oauth2/auth`, { headers: forwarded('GET', 'https', 'app.example', '/public/page') })).status, 401, '/oauth2/auth: the same')
  t.ok(await eventually(() => proxy.logs.some((l) => l.level === 40 && /not in server\.trustedProxies/.test(String(l.msg)))), 'a warning names server.trustedProxies')
})

t.test("Envoy's form: the original method and Host on /oauth2/verify + the original path", async (t) => {
  const { proxy } = await relayStack(t, false)
  const port = Number(new URL(proxy.url).port)
  const envoy = (method: string, path: string, headers: Array<[string, string]> = []) =>
    rawRequest(port, `/oauth2/verify${path}`, { method, headers: [['Host', 'app.example'], ['Content-Length', '0'], ...headers] })

  const pub = await envoy('GET', '/public/page?x=1')
  t.equal(pub.status, 200, 'a public original path: 200 without a session')
  t.same(pub.headers['x-auth-request-user'], [''])
  const nav = await envoy('GET', '/reports?q=1', [['Accept', 'text/html']])
  t.equal(nav.status, 302, 'a browser navigation: to login')
  t.equal(rdOf(nav.headers.location?.[0]), `${new URL(proxy.url).protocol}//app.example/reports?q=1`, 'rd: the original authority, path and query')
  t.equal((await envoy('POST', '/form', [['Accept', 'text/html']])).status, 401, 'the original method is the check method: a POST gets 401')
  t.equal((await envoy('DELETE', '/items/1')).status, 401)
  t.equal((await envoy('GET', '/public/../admin', [['Accept', 'application/json']])).status, 401, 'dot segments are judged as written: not the public route, never proxied')
  t.equal((await envoy('GET', '/../admin', [['Accept', 'application/json']])).status, 403, 'climbing out of the check: still a check, and a path that climbs above the root is refused')
  t.equal((await envoy('GET', '/public/..%2fadmin')).status, 403, 'an encoded separator: 403')
  t.equal((await envoy('GET', '/public%2F..%2Fadmin')).status, 403)
  const httpsProto = await envoy('GET', '/x', [['Accept', 'text/html'], ['X-Forwarded-Proto', 'https']])
  t.match(rdOf(httpsProto.headers.location?.[0]), /^http:\/\//, 'an untrusted X-Forwarded-Proto is not believed')

  const { jar } = await login({ proxyUrl: proxy.url })
  const cookie = jar.header(`${proxy.url}/`)
  const ok = await envoy('GET', '/reports', [['Cookie', cookie]])
  t.equal(ok.status, 200, 'with the session cookie: 200')
  t.same(ok.headers['x-auth-request-user'], [alice.id])
  t.equal((await envoy('POST', '/form', [['Cookie', cookie]])).status, 200, 'any method')
  t.equal((await envoy('GET', '/admin/x', [['Cookie', cookie]])).status, 200, 'alice may use /admin')

  // A path that only normalizes into the check is no check; nor is a look-alike prefix.
  t.equal((await rawRequest(port, '/oauth2/%76erify/public/x')).status, 404, 'an encoded "verify" is not the check')
  t.equal((await rawRequest(port, '/oauth2/verifyx')).status, 404)
})

t.test("Envoy's form from a trusted peer believes X-Forwarded-Proto", async (t) => {
  const { proxy } = await relayStack(t, true)
  const port = Number(new URL(proxy.url).port)
  const res = await rawRequest(port, '/oauth2/verify/reports', { headers: [['Host', 'app.example'], ['Accept', 'text/html'], ['X-Forwarded-Proto', 'https']] })
  t.equal(res.status, 302)
  t.equal(rdOf(res.headers.location?.[0]), 'https://app.example/reports')
})

t.test('the session cookie is re-set on the 200 when it moved (Traefik addAuthCookiesToResponse, Envoy on_success)', async (t) => {
  const clock = fakeClock()
  const { proxy } = await startStack(t, { runtime: { clock }, overrides: { server: { trustedProxies: ['127.0.0.1/32'] } } })
  const { jar } = await login({ proxyUrl: proxy.url })
  const fresh = await request(`${proxy.url}/oauth2/verify`, { jar, headers: forwarded('GET', 'https', 'app.example', '/x') })
  t.same(fresh.setCookies, [], 'nothing to re-seal right after login')
  const before = jar.get('_portcullis')
  clock.advance(61_000)
  const moved = await request(`${proxy.url}/oauth2/verify`, { jar, headers: forwarded('GET', 'https', 'app.example', '/x') })
  t.equal(moved.status, 200)
  t.equal(moved.setCookies.length, 1, 'one Set-Cookie')
  t.match(moved.setCookies[0], /^_portcullis=[^;]+; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax/)
  t.not(jar.get('_portcullis'), before)
})

t.test('provider unreachable: the relay check says 503 to a browser, the nginx family 401', async (t) => {
  const providerPort = await reservePort()
  const proxyPort = await reserveHeldPort()
  const upstream = await startTestUpstream(t)
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const config = configFor({ issuer: `http://127.0.0.1:${providerPort}`, clientId: 'c', clientSecret: 'outage-client-secret-long-enough', upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, { port: proxyPort })
  const verify = await request(`${proxy.url}/oauth2/verify`, { headers: BROWSER })
  t.equal(verify.status, 503, 'a login cannot start: 503, a page the gateway passes on')
  t.match(verify.headers['content-type'], /^text\/html/)
  t.equal((await request(`${proxy.url}/oauth2/auth`, { headers: BROWSER })).status, 401)
})

t.test('both lanes answer the same', async (t) => {
  const { proxy } = await relayStack(t, true)
  const slow = await startApp(t, proxy.runtime, { fastLane: false })
  const { jar } = await login({ proxyUrl: proxy.url })
  const cookie = jar.header(`${proxy.url}/`)
  for (const lane of [proxy, slow]) {
    const port = Number(new URL(lane.url).port)
    const name = lane === proxy ? 'fast lane' : 'Fastify route'
    for (const method of ['GET', 'HEAD', 'POST']) {
      const ok = await request(`${lane.url}/oauth2/verify`, { method, headers: { cookie, ...forwarded('GET', 'https', 'app.example', '/x') } })
      t.equal(ok.status, 200, `${name} ${method}: 200`)
      t.equal(ok.headers['x-auth-request-user'], alice.id, `${name} ${method}: identity`)
      const nav = await request(`${lane.url}/oauth2/verify`, { method, headers: { ...BROWSER, ...forwarded('GET', 'https', 'app.example', '/x') } })
      t.equal(nav.status, 302, `${name} ${method}: 302 (the original method decides)`)
    }
    const post = await rawRequest(port, '/oauth2/verify/public/x', { method: 'POST', headers: [['Host', 'app.example'], ['Content-Type', 'application/x-weird'], ['Content-Length', '3']], body: 'abc' })
    t.equal(post.status, 200, `${name}: a check with a body of any type is decided, its body never read`)
    t.equal((await rawRequest(port, '/oauth2/verify/../admin', { headers: [['Host', 'app.example'], ['Accept', 'application/json']] })).status, 403, `${name}: a climbing suffix is still a check (refused), never /oauth2/admin`)
    t.equal((await rawRequest(port, '/oauth2/verify/x/../../admin', { headers: [['Host', 'app.example'], ['Accept', 'application/json']] })).status, 403, `${name}: nor /admin`)
    t.equal((await rawRequest(port, '/oauth2/%76erify/public/x')).status, 404, `${name}: an encoded "verify" is not the check`)
  }
})
