/**
 * Signing keys that change or carry no `kid`, and logins that fail: never a loop.
 * - the real provider rotates its signing key right after Portcullis connected: the next login's ID
 *   token (new `kid`) is verified by an immediate JWKS refetch, not refused for 30 s; sessions signed
 *   by the old key keep working;
 * - the misbehaving provider signs ID tokens without `kid` with its only key: the login succeeds;
 * - its access tokens are JWTs signed by a key it does not publish: the callback refuses the login with
 *   one error page, instead of making a session that every request would end, sending the browser back
 *   to the provider again and again. One authorize request per attempt the user made.
 */
import t from 'tap'
import type { Test } from 'tap'
import { startBadProvider, type KeyDefect } from '../helpers/bad-provider.ts'
import { configFor } from '../helpers/config.ts'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { reserveHeldPort, startPortcullis, startStack } from '../helpers/portcullis.ts'
import { PROVIDER_ROUTES } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'

const CLIENT_ID = 'bad-client'
const CLIENT_SECRET = 'bad-client-secret-that-is-long-enough'

t.test('the real provider rotates its key right after Portcullis connected: logins go on at once', async (t) => {
  const stack = await startStack(t)
  const before = await login({ proxyUrl: stack.proxy.url, path: '/before' })
  const jwksFetches = () => stack.provider.requests.filter((r) => r.path === PROVIDER_ROUTES.jwks).length
  const fetchesBefore = jwksFetches()

  await stack.provider.rotateSigningKey()
  const authorizesBefore = stack.provider.requests.filter((r) => r.path === PROVIDER_ROUTES.authorization && r.method === 'GET').length
  const after = await login({ proxyUrl: stack.proxy.url, path: '/after' })
  t.equal(after.finalLocation, `${stack.proxy.url}/after`, 'a login right after the rotation succeeds')
  const authorizes = stack.provider.requests.filter((r) => r.path === PROVIDER_ROUTES.authorization && r.method === 'GET').length - authorizesBefore
  t.equal(authorizes, 1, 'with one authorize request')
  t.equal(jwksFetches() - fetchesBefore, 1, 'the new kid was fetched once, within the cooldown of the startup fetch')

  const res = await request(`${stack.proxy.url}/after`, { jar: after.jar, headers: { accept: 'application/json' } })
  t.equal(res.status, 200, 'the new session is served')
  const old = await request(`${stack.proxy.url}/before`, { jar: before.jar, headers: { accept: 'application/json' } })
  t.equal(old.status, 200, 'a session from before the rotation is still served (the old key is still published)')
})

async function badStack(t: Test, defect: KeyDefect) {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const bad = await startBadProvider(t, { defect, redirectUri: `${publicUrl}/oauth2/callback`, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET })
  const upstream = await startTestUpstream(t)
  const config = configFor({ issuer: bad.issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, { port })
  await proxy.runtime.provider.whenReady()
  return { bad, upstream, publicUrl }
}

/** A browser's navigation to `path`, following redirects (the bad provider authorizes at once). */
async function navigate(publicUrl: string, path: string, jar: CookieJar): Promise<{ last: TestResponse; steps: string[] }> {
  let url = `${publicUrl}${path}`
  const steps: string[] = []
  for (let i = 0; i < 20; i++) {
    const res = await request(url, { jar, headers: NAVIGATION_HEADERS })
    steps.push(`${res.status} ${url}`)
    const location = res.headers.location
    if (res.status < 300 || res.status >= 400 || location === undefined) return { last: res, steps }
    url = new URL(location, url).href
  }
  throw new Error(`more than 20 redirects (a login loop):\n${steps.join('\n')}`)
}

t.test('an ID token without kid, signed with the only key: the login succeeds', async (t) => {
  const { bad, upstream, publicUrl } = await badStack(t, 'no-kid')
  const jar = new CookieJar()
  const { last, steps } = await navigate(publicUrl, '/wanted', jar)
  t.equal(last.status, 200, `the app answers (${steps.join(' → ')})`)
  t.equal(upstream.requests.at(-1)?.url, '/wanted', 'on the page the user wanted')
  t.equal(bad.requests.filter((r) => r.path === '/oauth/authorize').length, 1, 'after one authorize request')
})

t.test('an access token no request would accept: one error page, no login loop', async (t) => {
  const { bad, upstream, publicUrl } = await badStack(t, 'jwt-access-token-unknown-key')
  const jar = new CookieJar()
  const { last, steps } = await navigate(publicUrl, '/wanted', jar)
  t.equal(last.status, 400, `the callback answers with an error page (${steps.join(' → ')})`)
  t.match(last.body, /access token from the identity provider could not be verified/, 'that says why')
  t.equal(bad.requests.filter((r) => r.path === '/oauth/authorize').length, 1, 'one authorize request for one attempt')
  t.equal(jar.get('_portcullis'), undefined, 'no session was made')
  t.equal(upstream.requests.length, 0, 'the app saw nothing')

  // "Try again" is one more attempt: one more authorize request, and the same page.
  const again = await navigate(publicUrl, '/wanted', jar)
  t.equal(again.last.status, 400, 'the second attempt fails the same way')
  t.equal(bad.requests.filter((r) => r.path === '/oauth/authorize').length, 2, 'with one more authorize request')
})
