import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, request } from '../helpers/http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'

t.test('a browser navigation without a session is sent to the provider and back with a session', async (t) => {
  const { proxy, upstream, provider } = await startStack(t)
  const first = await request(`${proxy.url}/reports?x=1`, { headers: NAVIGATION_HEADERS })
  t.equal(first.status, 302)
  const loc = new URL(first.headers.location as string)
  t.equal(loc.origin, proxy.url, 'absolute Location on our public origin')
  t.equal(loc.pathname, '/oauth2/start')
  t.equal(loc.searchParams.get('rd'), '/reports?x=1')
  t.equal(first.setCookies.length, 0, 'no cookie before /start')

  const result = await login({ proxyUrl: proxy.url, path: '/reports?x=1' })
  t.equal(result.finalLocation, `${proxy.url}/reports?x=1`, 'returned to rd')
  const auth = provider.authorizations.at(-1) as Record<string, string>
  t.equal(auth.response_type, 'code')
  t.equal(auth.code_challenge_method, 'S256')
  t.ok(auth.state && auth.nonce && auth.code_challenge, 'state, nonce and PKCE challenge sent')
  t.equal(auth.redirect_uri, `${proxy.url}/oauth2/callback`)
  t.ok(result.jar.get('_portcullis'), 'session cookie set')
  t.notOk(result.jar.names().some((n) => n.includes('_tx_')), 'transaction cookie cleared')

  const page = await request(result.finalLocation, { headers: { accept: 'application/json' }, jar: result.jar })
  t.equal(page.status, 200)
  const seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/reports?x=1')
  const alice = DEMO_USERS[0]!
  t.equal(seen?.headers['x-auth-request-user'], alice.id)
  t.equal(seen?.headers['x-auth-request-email'], alice.email)
  t.equal(seen?.headers['x-auth-request-groups'], alice.groups.join(','))
  t.equal(seen?.headers['x-auth-request-preferred-username'], alice.preferredUsername)
  t.equal(seen?.headers['x-forwarded-user'], alice.id)
  t.notOk(String(seen?.headers.cookie ?? '').includes('_portcullis'), 'own cookies not sent upstream')
  t.equal(page.headers['x-request-id'] !== undefined, true)
})

t.test('API requests without a session get 401 JSON and no login cookie', async (t) => {
  const { proxy, upstream } = await startStack(t)
  for (const headers of [{ accept: 'application/json' }, { accept: 'text/html', 'sec-fetch-mode': 'cors' }, { accept: '*/*' }]) {
    const res = await request(`${proxy.url}/api/data`, { headers })
    t.equal(res.status, 401)
    t.match(res.headers['www-authenticate'], /^Bearer/)
    t.equal(res.json<{ error: string }>().error, 'UNAUTHENTICATED')
    t.same(res.setCookies, [])
  }
  const post = await request(`${proxy.url}/form`, { method: 'POST', headers: { accept: 'text/html' }, body: 'a=1' })
  t.equal(post.status, 401, 'a POST is never redirected')
  t.equal(upstream.requests.length, 0, 'nothing reached the upstream')
})

t.test('userinfo returns the identity and never a token', async (t) => {
  const { proxy } = await startStack(t)
  const anon = await request(`${proxy.url}/oauth2/userinfo`)
  t.equal(anon.status, 401)
  const { jar } = await login({ proxyUrl: proxy.url })
  const res = await request(`${proxy.url}/oauth2/userinfo`, { jar })
  t.equal(res.status, 200)
  const body = res.json<Record<string, unknown>>()
  t.equal(body.user, 'alice')
  t.equal(body.email, 'alice@example.com')
  t.same(body.groups, ['admins', 'engineering'])
  t.notMatch(res.body, /eyJ/, 'no JWT in the body')
  t.notMatch(res.body, /token/i, 'no token field')
})

t.test('two tabs can log in at once', async (t) => {
  const { proxy } = await startStack(t)
  const jar = new CookieJar()
  const a = await request(`${proxy.url}/oauth2/start?rd=/a`, { jar })
  const b = await request(`${proxy.url}/oauth2/start?rd=/b`, { jar })
  t.equal(a.status, 302)
  t.equal(b.status, 302)
  t.equal(jar.names().filter((n) => n.startsWith('_portcullis_tx_')).length, 2)
})

t.test('a hostile rd falls back to / after login; an allowed one is honoured', async (t) => {
  const { proxy } = await startStack(t, { overrides: { redirects: { allowedDomains: ['.example.org'] } } })
  for (const rd of ['//evil.com', 'https://evil.com/', '/\\evil.com', 'javascript:alert(1)', `${proxy.url}@evil.com/`]) {
    const { finalLocation } = await login({ proxyUrl: proxy.url, startUrl: `${proxy.url}/oauth2/start?rd=${encodeURIComponent(rd)}` })
    t.equal(finalLocation, `${proxy.url}/`, `rd ${JSON.stringify(rd)} → /`)
  }
  const dup = await request(`${proxy.url}/oauth2/start?rd=/a&rd=/b`)
  t.equal(dup.status, 400, 'a duplicated rd is refused')
  const allowed = 'https://app.example.org/x?y=1'
  const { jar, callbackUrl } = await authorizeUntilCallback({ proxyUrl: proxy.url, startUrl: `${proxy.url}/oauth2/start?rd=${encodeURIComponent(allowed)}` })
  const done = await request(callbackUrl, { jar, headers: NAVIGATION_HEADERS })
  t.equal(done.status, 302)
  t.equal(done.headers.location, allowed, 'an allow-listed absolute rd is where the login ends')
})
