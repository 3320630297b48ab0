import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { PROVIDER_ROUTES } from '../helpers/provider.ts'

t.test('explicit provider.endpoints without discovery', async (t) => {
  const { proxy, upstream, provider } = await startStack(t, {
    overrides: ({ issuer }) => ({
      provider: {
        discovery: false,
        endpoints: {
          authorization: `${issuer}${PROVIDER_ROUTES.authorization}`,
          token: `${issuer}${PROVIDER_ROUTES.token}`,
          jwks: `${issuer}${PROVIDER_ROUTES.jwks}`,
          endSession: `${issuer}${PROVIDER_ROUTES.end_session}`,
        },
      },
    }),
  })
  t.notOk(
    provider.requests.some((r) => r.path.startsWith('/.well-known/')),
    'discovery was never fetched',
  )
  const { jar, finalLocation } = await login({ proxyUrl: proxy.url, path: '/x' })
  const res = await request(finalLocation, { jar, headers: { accept: 'application/json' } })
  t.equal(res.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-email'], 'alice@example.com')
  const out = await request(`${proxy.url}/oauth2/sign_out?rd=/`, { jar })
  t.equal(out.status, 302)
  t.ok(String(out.headers.location).startsWith(`${provider.issuer}${PROVIDER_ROUTES.end_session}?`), 'sign-out goes to the configured end-session endpoint')
})

t.test('discovery with one endpoint overridden', async (t) => {
  const { proxy } = await startStack(t, {
    overrides: { provider: { endpoints: { endSession: 'https://logout.example.com/bye' } } },
  })
  const { jar } = await login({ proxyUrl: proxy.url })
  const out = await request(`${proxy.url}/oauth2/sign_out`, { jar })
  const loc = new URL(String(out.headers.location))
  t.equal(`${loc.origin}${loc.pathname}`, 'https://logout.example.com/bye')
  t.ok(loc.searchParams.get('id_token_hint'), 'id_token_hint passed')
  t.equal(loc.searchParams.get('client_id'), 'portcullis-test')
})

t.test('sign-out clears the session and ends it at the provider', async (t) => {
  const { proxy, provider } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const out = await request(`${proxy.url}/oauth2/sign_out?rd=${encodeURIComponent(`${proxy.url}/signed-out`)}`, { jar })
  t.equal(out.status, 302)
  const loc = new URL(String(out.headers.location))
  t.equal(loc.origin + loc.pathname, `${provider.issuer}${PROVIDER_ROUTES.end_session}`)
  t.equal(loc.searchParams.get('post_logout_redirect_uri'), `${proxy.url}/signed-out`)
  t.notOk(jar.get('_portcullis'), 'session cookie cleared')
  const after = await request(`${proxy.url}/oauth2/userinfo`, { jar })
  t.equal(after.status, 401)
  const evil = await request(`${proxy.url}/oauth2/sign_out?rd=https://evil.example/`, { headers: { accept: 'application/json' } })
  t.equal(evil.status, 400, 'an off-list rd is refused')
  t.equal(evil.headers.location, undefined, 'and nobody is redirected anywhere')
  t.equal(evil.json<{ error: string }>().error, 'REDIRECT_REJECTED')
})

t.test('sign-out by POST (a form) works and proxied form posts still stream through untouched', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const form = await request(`${proxy.url}/submit`, {
    method: 'POST',
    jar,
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: 'a=1&b=%20two',
  })
  t.equal(form.status, 200)
  t.equal(upstream.requests.at(-1)?.body, 'a=1&b=%20two', 'the upstream got the body byte for byte')
  const out = await request(`${proxy.url}/oauth2/sign_out`, {
    method: 'POST',
    jar,
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
    body: `rd=${encodeURIComponent(`${proxy.url}/signed-out`)}`,
  })
  t.equal(out.status, 302)
  t.equal(new URL(String(out.headers.location)).searchParams.get('post_logout_redirect_uri'), `${proxy.url}/signed-out`)
  t.notOk(jar.get('_portcullis'))
})
