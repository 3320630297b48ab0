/**
 * GET /oauth2/auth, the forward-auth check for the nginx family (`auth_request` and proxies like it),
 * against the real provider: 200 + every identity header / 401 / 403 and nothing else; the client's
 * identity headers never echoed; `X-Original-URL` believed only from trusted proxies; the check's own
 * query ignored; re-sealed cookies on the 200. Both lanes answer it: the fast lane when the session
 * needs nothing written, Fastify's route otherwise (the idle-clock move, no session, refusals); the
 * tests cover each and compare them. Behind a real nginx: test/system/nginx-auth-request.test.ts.
 */
import t from 'tap'
import { reserveHeldPort, reservePort, startPortcullis, startStack } from '../helpers/portcullis.ts'
import { configFor } from '../helpers/config.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { login } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { fakeClock } from '../helpers/clock.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../src/config/schema.ts'
import { eventually } from '../helpers/wait.ts'

const alice = DEMO_USERS[0]!
const IDENTITY_NAMES = Object.keys(DEFAULT_IDENTITY_HEADERS).map((h) => h.toLowerCase())

/** The identity headers of a check response, by lower-case name. */
function identityOf(res: TestResponse): Record<string, string | undefined> {
  return Object.fromEntries(IDENTITY_NAMES.map((h) => [h, res.headers[h] as string | undefined]))
}

t.test('no session: 401 JSON with WWW-Authenticate, never a redirect, and no identity', async (t) => {
  const { proxy } = await startStack(t)
  for (const headers of [{}, { accept: 'text/html', 'sec-fetch-mode': 'navigate' }, { cookie: '_portcullis=garbage' }]) {
    const res = await request(`${proxy.url}/oauth2/auth`, { headers })
    t.equal(res.status, 401, `401 for ${JSON.stringify(headers)}`)
    t.match(res.headers['www-authenticate'], /^Bearer realm="/)
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(res.headers.location, undefined, 'no Location: nginx turns a 302 into a 500')
    t.match(JSON.parse(res.body), { error: 'UNAUTHENTICATED', requestId: String })
    for (const h of IDENTITY_NAMES) t.equal(res.headers[h], undefined, `no ${h} on a 401`)
  }
})

t.test('with a session: 200, every identity header with the user, no body, not cacheable', async (t) => {
  const { proxy } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const first = await request(`${proxy.url}/oauth2/auth`, { jar })
  const second = await request(`${proxy.url}/oauth2/auth`, { jar })
  for (const res of [first, second]) {
    t.equal(res.status, 200)
    t.equal(res.body, '')
    t.equal(res.headers['content-length'], '0')
    t.equal(res.headers['cache-control'], 'no-store')
    t.match(res.headers['x-request-id'], /^[0-9a-f-]{36}$/)
    t.same(identityOf(res), {
      'x-auth-request-user': alice.id,
      'x-auth-request-email': alice.email,
      'x-auth-request-groups': alice.groups.join(','),
      'x-auth-request-preferred-username': alice.preferredUsername,
      'x-forwarded-user': alice.id,
      'x-forwarded-email': alice.email,
      'x-forwarded-groups': alice.groups.join(','),
      'x-forwarded-preferred-username': alice.preferredUsername,
    })
    t.equal(res.headers['x-auth-request-access-token'], undefined, 'the access token only when asked for')
    t.same(res.setCookies, [], 'nothing to re-seal')
  }
  t.not(first.headers['x-request-id'], second.headers['x-request-id'])
  const checkLines = () => proxy.logs.filter((l) => l.msg === 'request' && l.route === 'auth:check')
  t.ok(await eventually(() => checkLines().length >= 2), "two access lines")
  t.match(checkLines()[0], { method: 'GET', path: '/oauth2/auth', status: 200, sub: alice.id, reqId: first.headers['x-request-id'] })
  t.notMatch(proxy.logText.join('\n'), /_portcullis=/, 'no cookie in the log')
})

t.test("the client's identity headers never come back; the check's own query is ignored", async (t) => {
  const { proxy } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const res = await request(`${proxy.url}/oauth2/auth?rd=https://evil.example/&x-auth-request-user=mallory`, {
    jar,
    headers: { 'X-Auth-Request-User': 'mallory', 'X_Forwarded_Email': 'mallory@evil.example', 'x-auth-request-access-token': 'forged' },
  })
  t.equal(res.status, 200)
  t.equal(res.headers['x-auth-request-user'], alice.id)
  t.equal(res.headers['x-forwarded-email'], alice.email)
  t.equal(res.headers['x-auth-request-access-token'], undefined)
  t.equal(res.headers.location, undefined)
  const anon = await request(`${proxy.url}/oauth2/auth`, { headers: { 'X-Auth-Request-User': 'mallory' } })
  t.equal(anon.status, 401, 'a spoofed identity header is no session')
})

t.test('passAccessToken: the access token is on the 200 (for auth-response-headers)', async (t) => {
  const { proxy } = await startStack(t, { overrides: { identity: { passAccessToken: true } } })
  const { jar } = await login({ proxyUrl: proxy.url })
  const res = await request(`${proxy.url}/oauth2/auth`, { jar })
  t.equal(res.status, 200)
  t.match(res.headers['x-auth-request-access-token'], /^[A-Za-z0-9._-]{20,}$/)
})

t.test('the idle-clock move goes through the full route: 200 with the re-sealed cookie, then the fast lane', async (t) => {
  const clock = fakeClock()
  const { proxy } = await startStack(t, { runtime: { clock } })
  const { jar } = await login({ proxyUrl: proxy.url })
  const before = jar.get('_portcullis')
  clock.advance(61_000)
  const moved = await request(`${proxy.url}/oauth2/auth`, { jar })
  t.equal(moved.status, 200)
  t.equal(moved.headers['x-auth-request-user'], alice.id)
  t.equal(moved.setCookies.length, 1, 'one Set-Cookie (nginx passes only the first)')
  t.match(moved.setCookies[0], /^_portcullis=[^;]+; Max-Age=\d+; Path=\/; HttpOnly; SameSite=Lax/)
  t.not(jar.get('_portcullis'), before, 'the cookie was re-sealed')
  const after = await request(`${proxy.url}/oauth2/auth`, { jar })
  t.equal(after.status, 200)
  t.same(after.setCookies, [])
  t.same(identityOf(after), identityOf(moved), 'both lanes send the same identity headers')
})

t.test('a signed-out session is refused', async (t) => {
  const { proxy } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const cookie = `_portcullis=${jar.get('_portcullis')}`
  t.equal((await request(`${proxy.url}/oauth2/auth`, { headers: { cookie } })).status, 200)
  await request(`${proxy.url}/oauth2/sign_out`, { jar })
  const res = await request(`${proxy.url}/oauth2/auth`, { headers: { cookie } })
  t.equal(res.status, 401, 'the old cookie, replayed after sign-out')
})

t.test('X-Original-URL: believed from trusted proxies only; public routes need no session; bad paths 403', async (t) => {
  const routes = (upstream: string) => [
    { match: { pathPrefix: '/' }, upstream },
    { match: { pathPrefix: '/public' }, upstream, public: true },
  ]
  await t.test('trusted peer', async (t) => {
    const { proxy } = await startStack(t, { overrides: ({ upstream }) => ({ routes: routes(upstream), server: { trustedProxies: ['127.0.0.1/32'] } }) })
    const check = (original: string, extra: Record<string, string> = {}) =>
      request(`${proxy.url}/oauth2/auth`, { headers: { 'x-original-url': original, 'x-original-method': 'GET', ...extra } })
    const pub = await check('https://app.example/public/page?x=1')
    t.equal(pub.status, 200, 'a public route: allowed without a session')
    for (const h of IDENTITY_NAMES) t.equal(pub.headers[h], '', `${h} sent empty (overwrites a spoofed copy behind Caddy-like proxies)`)
    const spoofed = await check('https://app.example/public/page', { 'x-auth-request-user': 'mallory' })
    t.equal(spoofed.headers['x-auth-request-user'], '', 'a spoofed header is not echoed on a public route either')
    t.equal((await check('https://app.example/private')).status, 401, 'a protected route needs a session')
    t.equal((await check('https://app.example/publicity')).status, 401, 'prefixes match on segment boundaries')
    t.equal((await check('https://app.example/public%2F..%2Fprivate')).status, 403, 'an encoded separator is refused with 403')
    t.equal((await check('not a url')).status, 403, 'an unparsable original URL is refused with 403')
    t.equal((await check('https://app.example/private/x\\..\\..\\public/')).status, 403, 'backslashes are refused, not turned into slashes')
    t.equal((await check('https://user@app.example/public/page')).status, 403, 'userinfo in the authority is refused')
    t.equal((await check('https://app.example/private/%2e%2e/public/x')).status, 401, 'a path that normalizes to a public one is not public: the app reads it as written')
    t.equal((await check('https://app.example//public/x')).status, 401, 'duplicate slashes: the same')
    t.equal((await check('https://app.example/public/../private')).status, 401, 'dot segments resolving into a protected route: a session is required')
    const { jar } = await login({ proxyUrl: proxy.url })
    const withSession = await request(`${proxy.url}/oauth2/auth`, { jar, headers: { 'x-original-url': 'https://app.example/private' } })
    t.equal(withSession.status, 200)
    t.equal(withSession.headers['x-auth-request-user'], alice.id)
  })
  await t.test('a public host is matched on the host as written', async (t) => {
    const { proxy } = await startStack(t, {
      overrides: ({ upstream }) => ({
        server: { trustedProxies: ['127.0.0.1/32'] },
        routes: [
          { match: { pathPrefix: '/' }, upstream },
          { match: { host: 'public.example', pathPrefix: '/' }, upstream, public: true },
        ],
      }),
    })
    const check = (original: string) => request(`${proxy.url}/oauth2/auth`, { headers: { 'x-original-url': original } })
    t.equal((await check('https://public.example/x')).status, 200)
    t.equal((await check('https://PUBLIC.example./x')).status, 200, 'case and a trailing dot do not matter for a host')
    t.equal((await check('https://pub%6cic.example/x')).status, 401, 'a percent-encoded host is not decoded into the public one')
  })
  await t.test('untrusted peer (trustedProxies empty)', async (t) => {
    const { proxy } = await startStack(t, { overrides: ({ upstream }) => ({ routes: routes(upstream) }) })
    const res = await request(`${proxy.url}/oauth2/auth`, { headers: { 'x-original-url': 'https://app.example/public/page' } })
    t.equal(res.status, 401, 'X-Original-URL from an untrusted peer is ignored: a session is required')
    const bad = await request(`${proxy.url}/oauth2/auth`, { headers: { 'x-original-url': 'not a url' } })
    t.equal(bad.status, 401, 'and not even parsed')
  })
})

t.test('provider unreachable: still only 401 (nginx would turn a 503 into a 500)', async (t) => {
  const providerPort = await reservePort() // reserved and released: no provider there
  const proxyPort = await reserveHeldPort()
  const upstream = await startTestUpstream(t)
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const config = configFor({ issuer: `http://127.0.0.1:${providerPort}`, clientId: 'c', clientSecret: 'outage-client-secret-long-enough', upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, { port: proxyPort })
  t.equal((await request(`${proxy.url}/app`, { headers: { accept: 'application/json' } })).status, 503, 'a proxied route says 503')
  const res = await request(`${proxy.url}/oauth2/auth`, { headers: { accept: 'application/json' } })
  t.equal(res.status, 401, 'the check says 401')
})

t.test('HEAD is answered like GET, by the full route', async (t) => {
  const { proxy } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  t.equal((await request(`${proxy.url}/oauth2/auth`, { method: 'HEAD', jar })).status, 200)
  t.equal((await request(`${proxy.url}/oauth2/auth`, { method: 'HEAD' })).status, 401)
  const post = await request(`${proxy.url}/oauth2/auth`, { method: 'POST', jar })
  t.equal(post.status, 404, 'other methods find no check (the auth prefix answers 404)')
})
