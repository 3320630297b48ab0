/**
 * The session cookie end to end: its attributes, chunking and stale-chunk clearing,
 * key rotation across two Portcullis instances, robustness against hostile cookie headers, and our
 * cookies never reaching the upstream. Real provider, real upstream, real sockets.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import Fastify from 'fastify'
import fastifyCookie from '@fastify/cookie'
import { reserveHeldPort, startPortcullis, startStack, type Stack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, request, type TestResponse, parseSetCookie, type SetCookie } from '../helpers/http.ts'
import { configFor, TEST_SECRET } from '../helpers/config.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { fakeClock } from '../helpers/clock.ts'
import { createRuntime } from '../../src/runtime.ts'
import { clearSessionCookieLines, putCookies, sessionCookieLines, setTransactionCookie } from '../../src/http/cookies.ts'
import { split } from '../../src/session/chunks.ts'
import { seal } from '../../src/session/codec.ts'
import { createKeyRing } from '../../src/session/keyring.ts'
import type { Session } from '../../src/session/model.ts'

const SECRET_B = 'rotation-secret-B-0123456789abcdefghijk'
const SECRET_C = 'rotation-secret-C-0123456789abcdefghijk'
const alice = DEMO_USERS[0]!

function cookiesOf(lines: string[] | string | undefined): SetCookie[] {
  if (lines === undefined) return []
  return (Array.isArray(lines) ? lines : [lines]).map(parseSetCookie)
}

/** Does this Set-Cookie delete the cookie (empty value, Max-Age=0 or an Expires in the past)? */
function isDeletion(c: SetCookie): boolean {
  const maxAge = c.attrs.get('max-age')
  const expires = c.attrs.get('expires')
  return c.value === '' && ((maxAge !== undefined && Number(maxAge) <= 0) || (expires !== undefined && Date.parse(expires) < Date.now()))
}

function deleted(res: { setCookies: string[] }): string[] {
  return cookiesOf(res.setCookies)
    .filter(isDeletion)
    .map((c) => c.name)
    .sort()
}

function navigate(url: string, cookie: string | undefined): Promise<TestResponse> {
  return request(url, { headers: { ...NAVIGATION_HEADERS, cookie } })
}

function api(url: string, cookie: string | undefined): Promise<TestResponse> {
  return request(url, { headers: { accept: 'application/json', cookie } })
}

/** Log in and return the jar and the session cookie value. */
async function loggedIn(stack: Stack): Promise<{ jar: CookieJar; value: string }> {
  const { jar } = await login({ proxyUrl: stack.proxy.url })
  const value = jar.get('_portcullis')
  if (value === undefined) throw new Error('no session cookie after login')
  return { jar, value }
}

// ---------------------------------------------------------------------------------------------------
// Attributes

t.test('the session Set-Cookie: HttpOnly, SameSite=Lax, Path=/, Max-Age of session.maxAge, no Secure on http', async (t) => {
  const stack = await startStack(t)
  const { jar, callbackUrl } = await authorizeUntilCallback({ proxyUrl: stack.proxy.url })
  const res = await request(callbackUrl, { headers: NAVIGATION_HEADERS, jar })
  t.equal(res.status, 302)
  const session = cookiesOf(res.setCookies).filter((c) => c.name === '_portcullis')
  t.equal(session.length, 1, 'one session cookie')
  const c = session[0]!
  t.ok(c.value.length > 100, 'a sealed value')
  t.ok(c.attrs.has('httponly'), 'HttpOnly')
  t.equal(c.attrs.get('samesite')?.toLowerCase(), 'lax', 'SameSite=Lax')
  t.equal(c.attrs.get('path'), '/', 'Path=/')
  t.notOk(c.attrs.has('secure'), 'no Secure: publicUrl is http')
  t.notOk(c.attrs.has('domain'), 'no Domain unless configured: host-only')
  const maxAge = Number(c.attrs.get('max-age'))
  const expected = stack.config.session.maxAge / 1000
  t.ok(maxAge <= expected && maxAge >= expected - 5, `Max-Age ${maxAge} ≈ session.maxAge ${expected}`)
  const tx = cookiesOf(res.setCookies).filter((x) => x.name.startsWith('_portcullis_tx_'))
  t.equal(tx.length, 1, 'the transaction cookie is cleared in the same response')
  t.ok(isDeletion(tx[0]!), 'deleted')
  t.equal(tx[0]!.attrs.get('path'), '/oauth2/', 'on the path it was set with, or the browser keeps it')
})

t.test('the login transaction Set-Cookie: Path=/oauth2/, HttpOnly, Max-Age 600', async (t) => {
  const stack = await startStack(t)
  const res = await request(`${stack.proxy.url}/oauth2/start?rd=/x`, { headers: NAVIGATION_HEADERS })
  t.equal(res.status, 302)
  const all = cookiesOf(res.setCookies)
  t.equal(all.length, 1, 'only the transaction cookie')
  const c = all[0]!
  t.match(c.name, /^_portcullis_tx_[0-9a-f]{16}$/)
  t.equal(c.attrs.get('path'), '/oauth2/')
  t.ok(c.attrs.has('httponly'), 'HttpOnly')
  t.equal(c.attrs.get('samesite')?.toLowerCase(), 'lax', 'SameSite=Lax: it must come back on the cross-site redirect from the provider')
  t.equal(c.attrs.get('max-age'), '600')
  t.notOk(c.attrs.has('secure'))
})

t.test('session cookie lines and friends under an https publicUrl (Fastify inject)', async (t) => {
  const config = configFor({
    issuer: 'http://127.0.0.1:1',
    clientId: 'unit',
    clientSecret: 'unit-client-secret-long-enough-0123',
    upstream: 'http://127.0.0.1:2',
    publicUrl: 'https://app.example.com',
    overrides: { session: { cookieDomain: 'example.com' } },
  })
  // The provider connection retries in the background; it is never needed here.
  const rt = createRuntime(config, { retry: { initialMs: 3600_000, maxMs: 3600_000 } })
  t.teardown(() => rt.close())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCookie)
  const big = 'A'.repeat(3801)
  app.get('/set', async (request, reply) => {
    putCookies(reply, sessionCookieLines(rt, Object.keys(request.cookies), request.headers['x-big'] === '1' ? big : 'small-value', 43_200_000))
    return 'ok'
  })
  app.get('/clear', async (request, reply) => {
    putCookies(reply, clearSessionCookieLines(rt, Object.keys(request.cookies)))
    return 'ok'
  })
  app.get('/tx', async (_request, reply) => {
    setTransactionCookie(rt, reply, '_portcullis_tx_0123456789abcdef', 'tx-value')
    return 'ok'
  })

  t.equal(rt.secureCookies, true)
  const set = await app.inject({ method: 'GET', url: '/set', headers: { cookie: '_portcullis_1=old; _portcullis_2=old; _portcullis_tx_ab=1; other=1' } })
  const cookies = cookiesOf(set.headers['set-cookie'] as string[] | string | undefined)
  const session = cookies.find((c) => c.name === '_portcullis')
  t.ok(session, 'session cookie set')
  t.equal(session?.value, 'small-value')
  t.ok(session?.attrs.has('secure'), 'Secure')
  t.ok(session?.attrs.has('httponly'), 'HttpOnly')
  t.equal(session?.attrs.get('samesite')?.toLowerCase(), 'lax')
  t.equal(session?.attrs.get('path'), '/')
  t.equal(session?.attrs.get('domain'), 'example.com', 'configured cookieDomain')
  t.equal(session?.attrs.get('max-age'), '43200')
  const cleared = cookies.filter(isDeletion)
  t.strictSame(cleared.map((c) => c.name).sort(), ['_portcullis_1', '_portcullis_2'], 'stale chunks cleared; tx and other cookies left alone')
  for (const c of cleared) {
    t.ok(c.attrs.has('secure') && c.attrs.get('path') === '/' && c.attrs.get('domain') === 'example.com', `${c.name} cleared with the attributes it was set with`)
  }

  const chunked = await app.inject({ method: 'GET', url: '/set', headers: { 'x-big': '1', cookie: '_portcullis_1=old; _portcullis_2=old' } })
  const chunkCookies = cookiesOf(chunked.headers['set-cookie'] as string[] | string | undefined)
  t.strictSame(
    chunkCookies.filter((c) => !isDeletion(c)).map((c) => [c.name, c.value.length]),
    [
      ['_portcullis', 3800],
      ['_portcullis_1', 1],
    ],
    'a 3801-byte value is two chunks',
  )
  t.ok(chunkCookies.filter((c) => !isDeletion(c)).every((c) => c.attrs.has('secure') && c.attrs.get('max-age') === '43200'), 'every chunk with the same attributes')
  t.strictSame(chunkCookies.filter(isDeletion).map((c) => c.name), ['_portcullis_2'], '_portcullis_1 is overwritten, _portcullis_2 cleared')

  const clear = await app.inject({ method: 'GET', url: '/clear', headers: { cookie: '_portcullis=x; _portcullis_1=y; _portcullis_3=z; _portcullis_tx_ab=1' } })
  const clearCookies = cookiesOf(clear.headers['set-cookie'] as string[] | string | undefined)
  t.ok(clearCookies.every(isDeletion), 'only deletions')
  t.strictSame(clearCookies.map((c) => c.name).sort(), ['_portcullis', '_portcullis_1', '_portcullis_3'])
  t.ok(clearCookies.every((c) => c.attrs.has('secure') && c.attrs.get('domain') === 'example.com'))
  const clearNone = await app.inject({ method: 'GET', url: '/clear' })
  t.strictSame(cookiesOf(clearNone.headers['set-cookie'] as string[] | string | undefined).map((c) => c.name), ['_portcullis'], 'the base name is cleared in any case')

  const tx = cookiesOf((await app.inject({ method: 'GET', url: '/tx' })).headers['set-cookie'] as string[] | string | undefined)[0]
  t.equal(tx?.attrs.get('path'), '/oauth2/')
  t.ok(tx?.attrs.has('secure'))
  t.ok(tx?.attrs.has('httponly'))
  t.equal(tx?.attrs.get('max-age'), '600')
})

// ---------------------------------------------------------------------------------------------------
// Chunking

t.test('chunking end to end: a large session in several cookies works, and the next login clears its stale chunks', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { jar, value } = await loggedIn(stack)
  const loaded = await proxy.runtime.sessions.load(value)
  t.ok(loaded, 'the login cookie loads')
  const session = loaded!.session
  // 6 KB of random text: 'x'.repeat(6000) would deflate to a few bytes and never need chunks.
  const big: Session = { ...session, claims: { ...session.claims, big: randomBytes(4500).toString('base64url') } }
  const sealed = await proxy.runtime.sessions.save(big)
  const huge: Session = { ...session, claims: { ...session.claims, big: randomBytes(12_000).toString('base64url') } }
  await t.rejects(proxy.runtime.sessions.save(huge), { code: 'SESSION_TOO_LARGE' }, 'a session over the cookie budget is refused, not written')
  const pieces = split('_portcullis', sealed)
  t.ok(pieces.length >= 3, `the large session takes ${pieces.length} cookies`)
  for (const [name, piece] of pieces) jar.set(name, piece, { url: proxy.url })

  const res = await request(`${proxy.url}/big`, { headers: { accept: 'application/json' }, jar })
  t.equal(res.status, 200, 'the joined chunks open')
  const seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/big')
  t.equal(seen?.headers['x-auth-request-user'], alice.id)
  t.equal(seen?.headers['x-auth-request-email'], alice.email)
  // The jar also sends the provider's cookies (same host, other port), as a browser would.
  t.notMatch(String(seen?.headers.cookie ?? ''), /(^|;\s*)_portcullis/, 'no chunk reaches the upstream')
  t.strictSame(res.setCookies, [], 'nothing to re-write')

  // A fresh (small) login with the chunks still in the jar: its response clears them.
  const before = jar.names().filter((n) => /^_portcullis(_\d+)?$/.test(n))
  t.strictSame(before, pieces.map(([n]) => n).sort(), 'the jar holds every chunk')
  const again = await authorizeUntilCallback({ proxyUrl: proxy.url, jar, startUrl: `${proxy.url}/oauth2/start?rd=/after` })
  const cb = await request(again.callbackUrl, { headers: NAVIGATION_HEADERS, jar })
  t.equal(cb.status, 302)
  t.equal(cb.headers.location, `${proxy.url}/after`)
  const set = cookiesOf(cb.setCookies)
  t.strictSame(set.filter((c) => c.name === '_portcullis' && !isDeletion(c)).length, 1, 'one new session cookie')
  t.ok(set.find((c) => c.name === '_portcullis')!.value.length <= 3800, 'small again: one chunk')
  t.strictSame(
    deleted(cb).filter((n) => !n.includes('_tx_')),
    pieces.slice(1).map(([n]) => n).sort(),
    'every stale chunk is cleared (Max-Age=0 / Expires in the past)',
  )
  t.strictSame(
    jar.names().filter((n) => /^_portcullis(_\d+)?$/.test(n)),
    ['_portcullis'],
    'the browser is left with one session cookie',
  )

  const next = await request(`${proxy.url}/after`, { headers: { accept: 'application/json' }, jar })
  t.equal(next.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
})

// ---------------------------------------------------------------------------------------------------
// Lifetimes

t.test('session lifetimes on the proxy clock: idle timeout and absolute lifetime', async (t) => {
  const clock = fakeClock()
  // Tokens that outlive the test's jumps in time, so no refresh (against the provider's real clock)
  // gets in the way of the session clocks under test.
  const stack = await startStack(t, {
    runtime: { clock },
    provider: { accessTokenTtl: 86_400, idTokenTtl: 86_400 },
    overrides: { session: { idleTimeout: '10m', maxAge: '1h' } },
  })
  const { proxy } = stack
  const { idleTimeout, maxAge } = stack.config.session
  t.ok(idleTimeout < maxAge, 'the idle timeout is the shorter one')
  const { value } = await loggedIn(stack)
  const cookie = `_portcullis=${value}`

  const soon = await api(`${proxy.url}/active`, cookie)
  t.equal(soon.status, 200)
  t.notOk(soon.setCookies.some((c) => c.startsWith('_portcullis=')), 'within a minute of the last renewal the cookie is not rewritten')
  clock.advance(idleTimeout - 60_000)
  const active = await api(`${proxy.url}/active`, cookie)
  t.equal(active.status, 200, 'used just before the idle timeout')
  const renewed = active.setCookies.find((c) => c.startsWith('_portcullis='))
  t.ok(renewed, 'activity re-sealed the cookie with a new idle clock')
  clock.advance(120_000)
  // Issue #8: a client that keeps the login cookie (a forward-auth controller dropping Set-Cookie, an
  // API script) is served the newest state of its session, and handed its cookie again.
  const kept = await api(`${proxy.url}/active`, cookie)
  t.equal(kept.status, 200, 'the login cookie value, kept: served as the newest state (its idle clock moved)')
  const given = kept.setCookies.find((c) => c.startsWith('_portcullis='))?.split(';')[0]
  t.ok(given !== undefined && given !== cookie && given !== (renewed as string).split(';')[0], 'and given the newest value (the idle clock moved again)')
  const later = await api(`${proxy.url}/active`, (renewed as string).split(';')[0] as string)
  // Activity moves the idle clock (the cookie is re-sealed at most once a minute), so an active user is
  // not signed out `idleTimeout` after login.
  t.equal(later.status, 200, 'two minutes after the last request, the session is not idle')
  clock.advance(idleTimeout)
  t.equal((await api(`${proxy.url}/active`, (renewed as string).split(';')[0] as string)).status, 401, 'idleTimeout without a request: idle')
  t.equal((await api(`${proxy.url}/active`, cookie)).status, 401, 'the kept login value too')

  t.strictSame(deleted(await navigate(`${proxy.url}/active`, cookie)), ['_portcullis'], 'and the idle cookie is cleared')
})

t.test('absolute lifetime: past maxAge no activity keeps a session', async (t) => {
  const clock = fakeClock()
  const stack = await startStack(t, {
    runtime: { clock },
    provider: { accessTokenTtl: 86_400, idTokenTtl: 86_400 },
    overrides: { session: { idleTimeout: '10m', maxAge: '1h' } },
  })
  const { proxy } = stack
  const { value } = await loggedIn(stack)
  const cookie = `_portcullis=${value}`
  let current = cookie
  for (let minute = 9; minute < 60; minute += 9) {
    clock.advance(9 * 60_000)
    const res = await api(`${proxy.url}/active`, current)
    t.equal(res.status, 200, `active at minute ${minute}`)
    current = res.setCookies.find((c) => c.startsWith('_portcullis='))?.split(';')[0] ?? current
  }
  clock.set(clock.now() + 6 * 60_000)
  for (const [name, c] of [['the newest cookie', current], ['the login cookie', cookie]]) {
    const expired = await navigate(`${proxy.url}/active`, c as string)
    t.equal(expired.status, 302, `${name} past maxAge: no session, whatever the activity`)
    t.strictSame(deleted(expired), ['_portcullis'], 'and the expired cookie is cleared')
  }
})

// ---------------------------------------------------------------------------------------------------
// Key rotation

t.test('key rotation: [A] → [B, A] re-seals with B; [B] opens the new value; [C] sees no session', async (t) => {
  const stack = await startStack(t)
  const { value } = await loggedIn(stack)
  const sibling = async (secrets: string[]) => {
    const port = await reserveHeldPort()
    const config = configFor({
      issuer: stack.provider.issuer,
      clientId: stack.clientId,
      clientSecret: stack.clientSecret,
      upstream: stack.upstream.url,
      publicUrl: `http://127.0.0.1:${port}`,
      overrides: { session: { secrets } },
    })
    const p = await startPortcullis(t, config, { port })
    await p.runtime.provider.whenReady()
    return p
  }
  const rotated = await sibling([SECRET_B, TEST_SECRET])
  const onlyB = await sibling([SECRET_B])
  const other = await sibling([SECRET_C])

  const res = await api(`${rotated.url}/rotated`, `_portcullis=${value}`)
  t.equal(res.status, 200, '[B, A] accepts a value sealed with A')
  t.equal(stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  const reset = cookiesOf(res.setCookies).filter((c) => c.name === '_portcullis')
  t.equal(reset.length, 1, 'the cookie is re-set')
  const renewed = reset[0]!
  t.not(renewed.value, value, 'with a new value')
  t.ok(renewed.attrs.has('httponly') && renewed.attrs.get('path') === '/', 'same attributes')
  const maxAge = Number(renewed.attrs.get('max-age'))
  t.ok(maxAge > 0 && maxAge <= stack.config.session.maxAge / 1000, `Max-Age ${maxAge}: the remaining lifetime, not a new one`)

  const again = await api(`${rotated.url}/rotated`, `_portcullis=${renewed.value}`)
  t.equal(again.status, 200)
  t.strictSame(again.setCookies, [], 'the renewed value is not re-set again')

  const b = await api(`${onlyB.url}/b`, `_portcullis=${renewed.value}`)
  t.equal(b.status, 200, '[B] alone opens the renewed value')
  t.equal(stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
  const bOld = await navigate(`${onlyB.url}/b`, `_portcullis=${value}`)
  t.equal(bOld.status, 302, '[B] alone does not open the value sealed with A')

  for (const v of [value, renewed.value]) {
    const c = await navigate(`${other.url}/c?q=1`, `_portcullis=${v}`)
    t.equal(c.status, 302, '[C]: no session')
    const loc = new URL(c.headers.location as string)
    t.equal(loc.pathname, '/oauth2/start')
    t.equal(loc.searchParams.get('rd'), '/c?q=1')
    t.strictSame(deleted(c), ['_portcullis'], 'and the unreadable cookie is cleared')
    t.equal((await api(`${other.url}/c`, `_portcullis=${v}`)).status, 401)
  }
})

// ---------------------------------------------------------------------------------------------------
// Robustness (issue #13): a bad cookie is no session, never an error

t.test('hostile and broken cookies: a fresh login, never a 500', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { value } = await loggedIn(stack)
  const parts = value.split('.')
  const flipAt = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
  const otherKid = createKeyRing([SECRET_C], 'session').current.kid
  const loginKid = proxy.runtime.loginKeys.current.kid
  const headerWith = (kid: string) => Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid })).toString('base64url')
  const foreign = await seal((await proxy.runtime.sessions.load(value))!.session, createKeyRing([SECRET_C], 'session'))
  const garbagePieces = split('_portcullis', randomBytes(9000).toString('base64url'))
  const garbageChunks = garbagePieces.map(([n, v]) => `${n}=${v}`).join('; ')
  const garbageNames = garbagePieces.map(([n]) => n).sort()
  const fifty = Array.from({ length: 50 }, (_, i) => `_portcullis_${i + 1}=chunk${i + 1}`).join('; ')
  const requestsBefore = upstream.requests.length

  /**
   * Each case: the Cookie header, and which cookies the response must delete. A value that joins
   * (all chunks well-formed) but does not open is cleared by the pipeline.
   */
  const cases: Array<{ label: string; cookie: string; clears: string[] }> = [
    { label: 'garbage', cookie: '_portcullis=hello', clears: ['_portcullis'] },
    { label: 'truncated', cookie: `_portcullis=${value.slice(0, Math.floor(value.length / 2))}`, clears: ['_portcullis'] },
    { label: 'last character cut', cookie: `_portcullis=${value.slice(0, -1)}`, clears: ['_portcullis'] },
    { label: 'one character changed in the ciphertext', cookie: `_portcullis=${[parts[0], parts[1], parts[2], flipAt(parts[3]!, 5), parts[4]].join('.')}`, clears: ['_portcullis'] },
    { label: 'one character changed in the tag', cookie: `_portcullis=${[...parts.slice(0, 4), flipAt(parts[4]!, 3)].join('.')}`, clears: ['_portcullis'] },
    { label: 'header naming the kid of another key', cookie: `_portcullis=${[headerWith(otherKid), ...parts.slice(1)].join('.')}`, clears: ['_portcullis'] },
    { label: 'header naming our login key', cookie: `_portcullis=${[headerWith(loginKid), ...parts.slice(1)].join('.')}`, clears: ['_portcullis'] },
    { label: 'sealed with a foreign secret', cookie: `_portcullis=${foreign}`, clears: ['_portcullis'] },
    { label: 'four chunks of garbage', cookie: garbageChunks, clears: garbageNames },
    { label: 'a valid value followed by a stray chunk', cookie: `_portcullis=${value}; _portcullis_1=AAAA`, clears: ['_portcullis', '_portcullis_1'] },
    { label: 'two _portcullis cookies, both bad', cookie: '_portcullis=hello; _portcullis=world', clears: ['_portcullis'] },
    { label: 'odd spacing and semicolons around garbage', cookie: ';;  _portcullis =  hello ;; ;other=1;  ; ', clears: ['_portcullis'] },
  ]
  /**
   * Cases where the chunks cannot even be joined (`readSessionCookie` → null). They are no session as
   * well; whether their cookies are cleared is asserted separately below.
   */
  const unjoinable: Array<{ label: string; cookie: string; ours: string[] }> = [
    { label: 'empty', cookie: '_portcullis=', ours: ['_portcullis'] },
    { label: 'a value longer than one chunk in _portcullis', cookie: `_portcullis=${'A'.repeat(5000)}`, ours: ['_portcullis'] },
    // Only the chunk names a value can have (_1 … _7) are cleared: 50 made-up chunks get 8 lines back, not 51.
    { label: '_portcullis_1 … _portcullis_50', cookie: `_portcullis=${value}; ${fifty}`, ours: ['_portcullis', ...Array.from({ length: 7 }, (_, i) => `_portcullis_${i + 1}`)] },
    { label: '_portcullis_1 … _portcullis_50 without _portcullis', cookie: fifty, ours: Array.from({ length: 7 }, (_, i) => `_portcullis_${i + 1}`) },
    { label: '_portcullis_1 without _portcullis', cookie: `_portcullis_1=${value}`, ours: ['_portcullis_1'] },
    { label: 'an empty middle chunk', cookie: `${garbageChunks.replace(/_portcullis_1=[^;]*/, '_portcullis_1=')}`, ours: garbageNames },
  ]
  const noSession: Array<{ label: string; cookie: string }> = [
    { label: '_portcullis_99999999999999999999 alone', cookie: `_portcullis_99999999999999999999=${value}` },
    { label: 'a transaction cookie only', cookie: '_portcullis_tx_0123456789abcdef=hello' },
    { label: 'a hundred unrelated cookies', cookie: Array.from({ length: 100 }, (_, i) => `c${i}=v${i}`).join('; ') },
    { label: 'a name that only starts like ours', cookie: `_portcullisX=${value}; _portcullis-1=${value}` },
    { label: 'a cookie header of semicolons', cookie: ';;;;' },
    { label: 'a cookie without =', cookie: `_portcullis; ${value}` },
  ]

  const expectLogin = async (t: Test, label: string, cookie: string): Promise<{ nav: TestResponse; api: TestResponse }> => {
    const nav = await navigate(`${proxy.url}/page?a=1`, cookie)
    t.equal(nav.status, 302, `${label}: navigation → 302`)
    const loc = new URL(String(nav.headers.location), proxy.url)
    t.equal(loc.pathname, '/oauth2/start', `${label}: to /oauth2/start`)
    t.equal(loc.searchParams.get('rd'), '/page?a=1')
    const res = await api(`${proxy.url}/page`, cookie)
    t.equal(res.status, 401, `${label}: API → 401`)
    t.equal(res.json<{ error: string }>().error, 'UNAUTHENTICATED')
    t.notMatch(res.body, /\bat .*\.ts:\d+/, 'no stack')
    return { nav, api: res }
  }

  for (const c of cases) {
    t.test(c.label, async (t) => {
      const { nav, api: res } = await expectLogin(t, c.label, c.cookie)
      t.strictSame(deleted(nav), c.clears, 'the bad session cookies are cleared (navigation)')
      t.strictSame(deleted(res), c.clears, 'the bad session cookies are cleared (API)')
    })
  }
  for (const c of unjoinable) {
    t.test(c.label, async (t) => {
      const { nav } = await expectLogin(t, c.label, c.cookie)
      // Chunks that cannot be joined are no session, and are cleared so the browser stops sending them.
      const ours = [...c.ours].sort()
      t.strictSame(deleted(nav).filter((n) => ours.includes(n)), ours, 'the unusable session cookies are cleared')
    })
  }
  for (const c of noSession) {
    t.test(c.label, async (t) => {
      const { nav } = await expectLogin(t, c.label, c.cookie)
      t.strictSame(deleted(nav).filter((n) => n !== '_portcullis'), [], 'no cookie of anyone else is touched')
    })
  }

  t.test('an oversized cookie header (50 KB) is refused by the HTTP layer, not with a 500', async (t) => {
    // A fresh agent without keep-alive: the server closes this connection after answering, and a
    // pooled socket would be handed to the next request just as it closes.
    const agent = new http.Agent({ keepAlive: false })
    t.teardown(() => agent.destroy())
    const res = await request(`${proxy.url}/page`, { headers: { ...NAVIGATION_HEADERS, cookie: `_portcullis=${'A'.repeat(50 * 1024)}` }, agent }).catch((err: NodeJS.ErrnoException) => {
      // The server may close the connection after its 431 before the client finished writing.
      t.comment(`connection ended: ${err.code}`)
      return null
    })
    if (res !== null) {
      t.ok(res.status >= 400 && res.status < 500, `status ${res.status}`)
      t.equal(res.status, 431, 'Request Header Fields Too Large')
      t.notMatch(res.body, /\bat .*:\d+:\d+/, 'no stack')
    }
    const after = await api(`${proxy.url}/page`, `_portcullis=${value}`)
    t.equal(after.status, 200, 'the server is fine afterwards')
  })

  t.test('a hundred unrelated cookies alongside a valid session: the session works', async (t) => {
    const noise = Array.from({ length: 100 }, (_, i) => `c${i}=v${i}`)
    for (const cookie of [[...noise, `_portcullis=${value}`].join('; '), [`_portcullis=${value}`, ...noise].join('; ')]) {
      const res = await api(`${proxy.url}/noisy`, cookie)
      t.equal(res.status, 200)
      const seen = upstream.requests.at(-1)
      t.equal(seen?.headers['x-auth-request-user'], alice.id)
      t.equal(seen?.headers.cookie, noise.join('; '), 'every unrelated cookie reaches the upstream, ours do not')
    }
  })

  t.test('duplicated _portcullis names: the first one counts, and a bad first one is no session', async (t) => {
    const validFirst = await api(`${proxy.url}/dup`, `_portcullis=${value}; _portcullis=hello`)
    t.equal(validFirst.status, 200, 'valid, then garbage: the valid one (first) is used')
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
    const badFirst = await navigate(`${proxy.url}/dup`, `_portcullis=hello; _portcullis=${value}`)
    t.ok(badFirst.status < 500, `garbage, then valid: ${badFirst.status}`)
    t.equal(badFirst.status, 302, 'the first one is used: no session')
  })

  t.test('a valid session with odd spacing and semicolons still works', async (t) => {
    for (const cookie of [` ;; _portcullis=${value} ;; `, `other=1;_portcullis=${value};x=y`, `other=1 ;  _portcullis=${value}`]) {
      const res = await api(`${proxy.url}/spaced`, cookie)
      t.equal(res.status, 200, JSON.stringify(cookie.replace(value, 'VALUE')))
    }
  })

  t.test('a valid session with a stray _portcullis_99999999999999999999 still works', async (t) => {
    const res = await api(`${proxy.url}/stray`, `_portcullis=${value}; _portcullis_99999999999999999999=x`)
    t.equal(res.status, 200, 'not a chunk name: ignored by the join')
    t.equal(upstream.requests.at(-1)?.headers.cookie, undefined, 'and still not sent upstream (a name of ours)')
  })

  t.test('no bad case reached the upstream', async (t) => {
    const reached = upstream.requests.slice(requestsBefore).map((r) => r.url)
    t.ok(reached.every((u) => ['/page', '/noisy', '/dup', '/spaced', '/stray'].includes(u)), 'only the deliberate valid requests')
    t.notOk(proxy.logs.some((l) => Number(l.level) >= 50), 'nothing logged at error level')
    t.notOk(proxy.logs.some((l) => (l as { res?: { statusCode?: number } }).res?.statusCode === 500 || l.statusCode === 500), 'no 500 logged')
  })
})

// ---------------------------------------------------------------------------------------------------
// Our cookies never reach the upstream

t.test('own cookies are removed from the upstream Cookie header', async (t) => {
  const stack = await startStack(t)
  const { proxy, upstream } = stack
  const { value } = await loggedIn(stack)

  const mixed = await api(`${proxy.url}/mixed`, `_portcullis=${value}; other=1; _portcullis_tx_x=1`)
  t.equal(mixed.status, 200)
  let seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/mixed')
  t.equal(seen?.headers.cookie, 'other=1', 'exactly the foreign cookie')
  t.equal(seen?.headers['x-auth-request-user'], alice.id)

  const ours = await api(`${proxy.url}/ours`, `_portcullis=${value}; _portcullis_tx_x=1; _portcullis_1=`)
  t.equal(ours.status, 401, 'an empty chunk makes the value unusable')
  const onlyOurs = await api(`${proxy.url}/ours`, `_portcullis=${value}; _portcullis_tx_x=1`)
  t.equal(onlyOurs.status, 200)
  seen = upstream.requests.at(-1)
  t.equal(seen?.url, '/ours')
  t.equal(seen?.headers.cookie, undefined, 'no Cookie header at all')
  const raw = seen?.rawHeaders ?? []
  t.notOk(raw.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'cookie'), 'not even an empty one')

  const session = await api(`${proxy.url}/just-session`, `_portcullis=${value}`)
  t.equal(session.status, 200)
  t.equal(upstream.requests.at(-1)?.headers.cookie, undefined, 'the session cookie alone: no Cookie header')

  const order = await api(`${proxy.url}/order`, `a=1; _portcullis=${value}; b=2; _portcullis_tx_x=1; c=3`)
  t.equal(order.status, 200)
  t.equal(upstream.requests.at(-1)?.headers.cookie, 'a=1; b=2; c=3', 'others keep their order')
})
