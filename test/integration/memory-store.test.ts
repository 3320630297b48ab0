/**
 * `session.store: memory` end to end (issue #3 point 9), with the real provider, a real
 * upstream and real sockets: the browser holds one short ticket cookie; a refresh updates the stored
 * session without rewriting the cookie (what forward-auth behind proxies that drop `Set-Cookie` on a 200
 * needs); sign-out removes the entry; a restart forgets every ticket; `/oauth2/userinfo` works with one.
 */
import t from 'tap'
import { startPortcullis, startStack, type Stack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request, type TestResponse, parseSetCookie, type SetCookie } from '../helpers/http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { fakeClock } from '../helpers/clock.ts'

const alice = DEMO_USERS[0]!
const MEMORY = { session: { store: 'memory' } }
/** `<session id>.<key>` (src/session/memory-store.ts). */
const TICKET = /^[A-Za-z0-9_-]{16,64}\.[A-Za-z0-9_-]{43}$/

const cookiesOf = (lines: string[]): SetCookie[] => lines.map(parseSetCookie)

/** Set-Cookies that set or delete the session cookie or one of its chunks. */
function sessionCookies(res: TestResponse): SetCookie[] {
  return cookiesOf(res.setCookies).filter((c) => /^_portcullis(_\d+)?$/.test(c.name))
}

function navigate(url: string, cookie: string | undefined): Promise<TestResponse> {
  return request(url, { headers: { ...NAVIGATION_HEADERS, cookie } })
}

function api(url: string, cookie: string | undefined): Promise<TestResponse> {
  return request(url, { headers: { accept: 'application/json', cookie } })
}

async function loggedIn(stack: Stack): Promise<string> {
  const { jar } = await login({ proxyUrl: stack.proxy.url })
  const ticket = jar.get('_portcullis')
  if (ticket === undefined) throw new Error('no session cookie after login')
  return ticket
}

t.test('login: one short ticket cookie; the upstream gets alice and no cookie of ours', async (t) => {
  const stack = await startStack(t, { overrides: MEMORY })
  const { proxy, upstream } = stack
  t.equal(proxy.runtime.sessions.kind, 'memory')
  const { jar, callbackUrl } = await authorizeUntilCallback({ proxyUrl: proxy.url, path: '/app?x=1' })
  const cb = await request(callbackUrl, { headers: NAVIGATION_HEADERS, jar })
  t.equal(cb.status, 302)
  t.equal(cb.headers.location, `${proxy.url}/app?x=1`)

  const set = sessionCookies(cb)
  t.strictSame(set.map((c) => c.name), ['_portcullis'], 'a single session cookie, no _portcullis_1')
  const ticket = set[0]!
  t.match(ticket.value, TICKET, 'a ticket <id>.<key>')
  t.ok(ticket.value.length < 100, `short: ${ticket.value.length} characters`)
  t.notOk(ticket.value.startsWith('eyJ'), 'no JWE')
  t.ok(ticket.attrs.has('httponly'), 'HttpOnly')
  t.equal(ticket.attrs.get('samesite')?.toLowerCase(), 'lax')
  t.equal(ticket.attrs.get('path'), '/')
  const maxAge = Number(ticket.attrs.get('max-age'))
  const expected = stack.config.session.maxAge / 1000
  t.ok(maxAge <= expected && maxAge >= expected - 5, `Max-Age ${maxAge} ≈ session.maxAge ${expected}`)

  const stored = (await proxy.runtime.sessions.load(ticket.value))?.session
  t.equal(stored?.sub, alice.id, 'the session lives in the store')
  t.equal(ticket.value.split('.')[0], stored?.id, 'behind the ticket id')
  for (const secret of [stored?.accessToken, stored?.refreshToken, stored?.idToken, alice.email]) {
    if (secret !== undefined) t.notOk(ticket.value.includes(secret), 'no token or claim in the cookie')
  }

  const res = await request(`${proxy.url}/app?x=1`, { headers: { ...NAVIGATION_HEADERS, cookie: 'other=1' }, jar })
  t.equal(res.status, 200)
  t.strictSame(sessionCookies(res), [], 'nothing to rewrite')
  const seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/app?x=1')
  t.equal(seen?.headers['x-auth-request-user'], alice.id)
  t.equal(seen?.headers['x-auth-request-email'], alice.email)
  t.notMatch(String(seen?.headers.cookie ?? ''), /(^|;\s*)_portcullis/, 'no Portcullis cookie reaches the upstream')
  t.match(String(seen?.headers.cookie ?? ''), /(^|;\s*)other=1(;|$)/, 'other cookies do')

  const only = await api(`${proxy.url}/only`, `_portcullis=${ticket.value}`)
  t.equal(only.status, 200)
  t.equal(upstream.requests.at(-1)?.headers.cookie, undefined, 'the ticket alone: no Cookie header upstream')
})

t.test('refresh updates the stored session: no Set-Cookie, and the same ticket carries the new tokens', async (t) => {
  const clock = fakeClock()
  const stack = await startStack(t, { runtime: { clock }, overrides: { ...MEMORY, identity: { passAccessToken: true } } })
  const { proxy, upstream, provider } = stack
  t.equal(stack.config.session.refreshAhead, 30_000, 'refreshAhead 30 s')
  const ticket = await loggedIn(stack)
  const cookie = `_portcullis=${ticket}`
  const before = (await proxy.runtime.sessions.load(ticket))!.session
  t.ok(before.refreshToken, 'a refresh token to refresh with')
  const refreshGrants = () => provider.requests.filter((r) => r.path === '/oauth/token' && r.grantType === 'refresh_token').length
  t.equal(refreshGrants(), 0, 'no refresh yet')

  const fresh = await api(`${proxy.url}/fresh`, cookie)
  t.equal(fresh.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-access-token'], before.accessToken, 'the login access token goes upstream')
  t.equal(refreshGrants(), 0, 'a fresh token is not refreshed')

  // The provider's access tokens live 300 s (of its real time); 280 s later on the proxy's clock the
  // token expires within refreshAhead (30 s).
  clock.advance(280_000)
  const res = await api(`${proxy.url}/after-refresh`, cookie)
  t.equal(res.status, 200, 'served')
  t.equal(refreshGrants(), 1, 'one refresh_token grant at the provider')
  t.strictSame(sessionCookies(res), [], 'no Set-Cookie for the session cookie: the ticket stays the same')
  const after = (await proxy.runtime.sessions.load(ticket))?.session
  t.ok(after, 'the same ticket still loads')
  t.not(after?.accessToken, before.accessToken, 'a new access token in the store')
  t.not(after?.refreshToken, before.refreshToken, 'the rotated refresh token in the store')
  t.equal(after?.id, before.id, 'the same session')
  t.equal(after?.sub, alice.id)
  t.ok((after?.accessExpiresAt ?? 0) - clock.now() > 30_000, 'no longer about to expire')
  let seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/after-refresh')
  t.equal(seen?.headers['x-auth-request-user'], alice.id)
  t.equal(seen?.headers['x-auth-request-access-token'], after?.accessToken, 'the refreshed access token went upstream')

  const next = await api(`${proxy.url}/next`, cookie)
  t.equal(next.status, 200, 'the next request with the same ticket works')
  t.strictSame(sessionCookies(next), [])
  t.equal(refreshGrants(), 1, 'and needs no second refresh')
  seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/next')
  t.equal(seen?.headers['x-auth-request-user'], alice.id)
  t.equal(seen?.headers['x-auth-request-access-token'], after?.accessToken, 'with the new tokens')
  t.not(seen?.headers['x-auth-request-access-token'], before.accessToken, 'not the old ones')
})

t.test('sign-out removes the entry: a copied ticket no longer works', async (t) => {
  const stack = await startStack(t, { overrides: MEMORY })
  const { proxy, upstream } = stack
  const ticket = await loggedIn(stack)
  const cookie = `_portcullis=${ticket}`
  t.equal((await api(`${proxy.url}/before`, cookie)).status, 200)

  const out = await navigate(`${proxy.url}/oauth2/sign_out`, cookie)
  t.equal(out.status, 302)
  const loc = new URL(String(out.headers.location))
  t.equal(loc.origin, stack.provider.issuer, 'to the provider end-session endpoint')
  t.ok(loc.searchParams.get('id_token_hint'), 'with id_token_hint')
  const cleared = sessionCookies(out)
  t.strictSame(cleared.map((c) => c.name), ['_portcullis'], 'the session cookie is cleared')
  t.equal(cleared[0]?.value, '')

  t.equal(await proxy.runtime.sessions.load(ticket), null, 'the store no longer holds the session')
  const requestsBefore = upstream.requests.length
  const nav = await navigate(`${proxy.url}/after`, cookie)
  t.equal(nav.status, 302, 'a copied ticket: navigation → login')
  t.equal(new URL(String(nav.headers.location), proxy.url).pathname, '/oauth2/start')
  const res = await api(`${proxy.url}/after`, cookie)
  t.equal(res.status, 401, 'a copied ticket: API → 401')
  t.equal(upstream.requests.length, requestsBefore, 'nothing reached the upstream')
  const me = await api(`${proxy.url}/oauth2/userinfo`, cookie)
  t.equal(me.status, 401, 'and no userinfo')
})

t.test('a restart forgets every ticket: the same config in a fresh runtime sends the browser to login', async (t) => {
  const stack = await startStack(t, { overrides: MEMORY })
  const { proxy, upstream } = stack
  const ticket = await loggedIn(stack)
  const cookie = `_portcullis=${ticket}`
  t.equal((await api(`${proxy.url}/before`, cookie)).status, 200)

  // The restart: stop this Portcullis and start the same config on the same port in a new runtime.
  await proxy.app.fastify.close()
  proxy.runtime.close()
  const restarted = await startPortcullis(t, stack.config)
  await restarted.runtime.provider.whenReady()
  t.equal(restarted.url, proxy.url, 'the same address')

  const requestsBefore = upstream.requests.length
  const nav = await navigate(`${restarted.url}/page?a=1`, cookie)
  t.equal(nav.status, 302, 'the old ticket is unknown: navigation → login')
  const loc = new URL(String(nav.headers.location), restarted.url)
  t.equal(loc.pathname, '/oauth2/start')
  t.equal(loc.searchParams.get('rd'), '/page?a=1')
  t.ok(sessionCookies(nav).some((c) => c.name === '_portcullis' && c.value === ''), 'and the unknown ticket is cleared')
  t.equal((await api(`${restarted.url}/page`, cookie)).status, 401, 'API → 401')
  t.equal(upstream.requests.length, requestsBefore, 'nothing reached the upstream')

  const again = await login({ proxyUrl: restarted.url })
  const fresh = again.jar.get('_portcullis')
  t.match(fresh, TICKET, 'a new login gets a new ticket')
  t.not(fresh, ticket)
  t.equal((await api(`${restarted.url}/page`, `_portcullis=${fresh}`)).status, 200, 'which works')
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
})

t.test('/oauth2/userinfo works with a ticket', async (t) => {
  const stack = await startStack(t, { overrides: MEMORY })
  const { proxy } = stack
  const ticket = await loggedIn(stack)
  const res = await api(`${proxy.url}/oauth2/userinfo`, `_portcullis=${ticket}`)
  t.equal(res.status, 200)
  t.match(String(res.headers['content-type']), /^application\/json/)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json<{ user: string; email?: string; claims: Record<string, unknown> }>()
  t.equal(body.user, alice.id)
  t.equal(body.email, alice.email)
  t.equal(body.claims.sub, alice.id)
  const session = (await proxy.runtime.sessions.load(ticket))!.session
  for (const token of [session.accessToken, session.refreshToken, session.idToken]) {
    if (token !== undefined) t.notOk(res.body.includes(token), 'no token in the answer')
  }
  t.strictSame(sessionCookies(res), [], 'nothing to rewrite')
  t.equal((await api(`${proxy.url}/oauth2/userinfo`, '_portcullis=unknown-ticket-0123456789.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).status, 401, 'an unknown ticket: 401')
})
