/**
 * Hint parameters on `/oauth2/start`: only the configured `provider.hintParams` reach
 * the provider's authorize request, next to the static `provider.authorizeParams`; a hint given twice
 * is refused; nothing a caller passes can replace a protocol parameter or a static one.
 */
import t from 'tap'
import type { Test } from 'tap'
import { request, CookieJar } from '../helpers/http.ts'
import { startStack, type Stack } from '../helpers/portcullis.ts'

/** `GET /oauth2/start?<query>`, then the provider's authorize URL, requested so the provider records it. */
async function start(t: Test, stack: Stack, query: string): Promise<{ location: URL; recorded: Record<string, string> }> {
  const jar = new CookieJar()
  const res = await request(`${stack.proxy.url}/oauth2/start?${query}`, { jar })
  t.equal(res.status, 302, 'start redirects')
  const location = new URL(String(res.headers.location))
  t.equal(`${location.origin}${location.pathname}`, `${stack.provider.issuer}/oauth/authorize`, 'to the provider')
  const seen = stack.provider.authorizations.length
  await request(location.href, { jar })
  t.equal(stack.provider.authorizations.length, seen + 1, 'the provider recorded the authorization request')
  return { location, recorded: stack.provider.authorizations.at(-1) as Record<string, string> }
}

function onlyOnce(t: Test, location: URL): void {
  const repeated = [...new Set(location.searchParams.keys())].filter((k) => location.searchParams.getAll(k).length > 1)
  t.same(repeated, [], 'no parameter appears twice in the authorize URL')
}

t.test('allow-listed hints and static params reach the provider; others do not', async (t) => {
  const stack = await startStack(t, {
    overrides: { provider: { hintParams: ['login_hint', 'organization_id'], authorizeParams: { connection_id: 'conn_fixed' } } },
  })
  const { location, recorded } = await start(
    t,
    stack,
    'rd=/&login_hint=alice@example.com&organization_id=org_1&domain_hint=x.com&prompt=login',
  )
  t.equal(recorded.login_hint, 'alice@example.com')
  t.equal(recorded.organization_id, 'org_1')
  t.equal(recorded.connection_id, 'conn_fixed', 'the static parameter')
  t.notOk('domain_hint' in recorded, 'domain_hint is not in hintParams')
  t.notOk('prompt' in recorded, 'prompt is not in hintParams')
  onlyOnce(t, location)

  const twice = await request(`${stack.proxy.url}/oauth2/start?rd=/&login_hint=a&login_hint=b`, { headers: { accept: 'application/json' } })
  t.equal(twice.status, 400, 'a hint given twice is refused')
  t.equal(twice.json<{ error: string }>().error, 'REQUEST_REJECTED')
  t.equal(twice.headers.location, undefined, 'no redirect')
  t.same(twice.setCookies, [], 'no login transaction')

  const bad = await request(`${stack.proxy.url}/oauth2/start?rd=/&login_hint=${encodeURIComponent('a\r\nb')}`, { headers: { accept: 'application/json' } })
  t.equal(bad.status, 400, 'a hint with control characters is refused')
})

t.test('query parameters cannot replace protocol or static parameters', async (t) => {
  // The config refuses a name that is both a hint and a static parameter, so `connection_id` here is
  // a static parameter the caller tries to override from the query.
  const stack = await startStack(t, {
    overrides: { provider: { hintParams: ['login_hint'], authorizeParams: { connection_id: 'conn_fixed' } } },
  })
  const query = new URLSearchParams({
    rd: '/',
    login_hint: 'bob@example.com',
    connection_id: 'conn_evil',
    state: 'evil',
    nonce: 'evil',
    redirect_uri: 'https://evil.example/cb',
    scope: 'openid admin',
    response_type: 'token',
    client_id: 'evil-client',
    code_challenge: 'evil',
    code_challenge_method: 'plain',
    response_mode: 'form_post',
    request_uri: 'https://evil.example/req',
  })
  const { location, recorded } = await start(t, stack, query.toString())
  const p = location.searchParams
  t.equal(p.get('login_hint'), 'bob@example.com', 'the allowed hint passes')
  t.equal(p.get('connection_id'), 'conn_fixed', 'the query cannot override a static parameter')
  t.not(p.get('state'), 'evil', 'state is ours')
  t.ok((p.get('state') ?? '').length >= 32, 'a random state')
  t.not(p.get('nonce'), 'evil', 'nonce is ours')
  t.equal(p.get('redirect_uri'), `${stack.proxy.url}/oauth2/callback`, 'redirect_uri is ours')
  t.equal(p.get('scope'), stack.config.provider.scopes.join(' '), 'scope is the configured one')
  t.equal(p.get('response_type'), 'code')
  t.equal(p.get('client_id'), stack.clientId)
  t.not(p.get('code_challenge'), 'evil')
  t.equal(p.get('code_challenge_method'), 'S256')
  t.equal(p.get('response_mode'), null)
  t.equal(p.get('request_uri'), null)
  onlyOnce(t, location)
  t.equal(recorded.connection_id, 'conn_fixed', 'the provider saw the static value')
  t.equal(recorded.redirect_uri, `${stack.proxy.url}/oauth2/callback`)
  t.not(recorded.state, 'evil')
})
