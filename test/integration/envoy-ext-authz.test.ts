/**
 * Envoy's HTTP ext_authz in front of an app, without an Envoy binary: a small gateway in this test
 * does what the filter does, and the app sits behind it, not behind Portcullis.
 * - The check goes to Portcullis from the gateway's own address (127.0.0.2, the only one in
 *   server.trustedProxies) with the original method, `:path` = `path_prefix` (/oauth2/verify) + the
 *   original path and query as received, Host = the original authority, `Content-Length: 0`, no
 *   body, and only the headers `allowed_headers` lists (cookie, accept, authorization) plus the
 *   x-forwarded-proto Envoy sets.
 * - Only a 200 allows: its `allowed_upstream_headers` (the identity headers) are set on the request
 *   to the app, overwriting the client's. Any other answer goes to the client as it is.
 * - /oauth2/* goes straight to Portcullis (`ExtAuthzPerRoute { disabled: true }`).
 * Then the same checks sent by hand: dot segments in the suffix, and forwarding headers from a peer
 * that is not trusted.
 */
import t, { type Test } from 'tap'
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { API_HEADERS, SPOOFED, alice, bob, startFrontStack, withFront, type FrontStack } from '../helpers/front-scenario.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { rawRequest } from '../helpers/raw-http.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../src/config/schema.ts'

const ENVOY_ADDRESS = '127.0.0.2'
/** The filter's `allowed_headers` (Host, method, path, Content-Length and Authorization go anyway). */
const ALLOWED_HEADERS = ['cookie', 'accept', 'authorization']
/** `authorization_response.allowed_upstream_headers`: Portcullis's identity headers. */
const UPSTREAM_HEADERS = Object.keys(DEFAULT_IDENTITY_HEADERS).map((h) => h.toLowerCase())
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'upgrade'])

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

function send(port: number, method: string, path: string, headers: OutgoingHttpHeaders, body: Buffer, localAddress?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, ...(localAddress ? { localAddress } : {}) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end(body.length > 0 ? body : undefined)
  })
}

function without(headers: IncomingHttpHeaders, drop: Set<string>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !drop.has(k)) out[k] = v
  return out
}

function reply(res: http.ServerResponse, a: Answer): void {
  res.writeHead(a.status, { ...without(a.headers, HOP_BY_HOP), 'content-length': String(a.body.length) })
  res.end(a.body)
}

/** The ext_authz gateway on `port`, closed in `t.teardown`. */
async function startGateway(t: Test, s: FrontStack, port: number): Promise<void> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks)
        const method = req.method ?? 'GET'
        const url = req.url ?? '/'
        const client = { ...without(req.headers, HOP_BY_HOP), 'x-forwarded-proto': 'http', 'x-forwarded-for': req.socket.remoteAddress ?? '' }
        if (url.startsWith('/oauth2/')) return reply(res, await send(s.proxyPort, method, url, client, body, ENVOY_ADDRESS))
        const check: OutgoingHttpHeaders = { host: req.headers.host, 'content-length': '0', 'x-forwarded-proto': 'http' }
        for (const h of ALLOWED_HEADERS) if (req.headers[h] !== undefined) check[h] = req.headers[h]
        const verdict = await send(s.proxyPort, method, `/oauth2/verify${url}`, check, Buffer.alloc(0), ENVOY_ADDRESS)
        if (verdict.status !== 200) return reply(res, verdict)
        const upstream: OutgoingHttpHeaders = { ...client }
        for (const h of UPSTREAM_HEADERS) if (verdict.headers[h] !== undefined) upstream[h] = verdict.headers[h]
        if (body.length > 0) upstream['content-length'] = String(body.length)
        reply(res, await send(s.app.port, method, url, upstream, body))
      })().catch((err: unknown) => {
        res.writeHead(502).end(String(err))
      })
    })
  })
  await new Promise<void>((done) => server.listen(port, '127.0.0.1', done))
  t.equal((server.address() as AddressInfo).port, port)
  t.teardown(() => new Promise<void>((done) => server.close(() => done())))
}

t.test('an ext_authz gateway in front of an app', async (t) => {
  const s = await startFrontStack(t, { trustedProxies: [`${ENVOY_ADDRESS}/32`] })
  await withFront(s, async () => (await startGateway(t, s, s.frontPort), true))
  const { publicUrl, app } = s
  const rdOf = (location: string | undefined): string | null => (location === undefined ? null : new URL(location).searchParams.get('rd'))

  // No session.
  const nav = await request(`${publicUrl}/reports?q=1&x=a%20b`, { headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 302, 'a browser navigation: to the login')
  t.equal(new URL(nav.headers.location ?? '', 'http://relative.invalid').origin, publicUrl, `an absolute Location (${nav.headers.location})`)
  t.equal(new URL(nav.headers.location ?? '', 'http://relative.invalid').pathname, '/oauth2/start')
  t.equal(rdOf(nav.headers.location), `${publicUrl}/reports?q=1&x=a%20b`, 'rd: the original absolute URL')
  const api = await request(`${publicUrl}/reports`, { headers: API_HEADERS })
  t.equal(api.status, 401, 'an API client: 401')
  t.match(api.json(), { error: 'UNAUTHENTICATED' })
  const post = await request(`${publicUrl}/reports`, { method: 'POST', body: 'a=1', headers: { accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(post.status, 401, 'a POST (checked as a POST with Content-Length: 0): 401, not a redirect')
  t.equal(app.requests.length, 0, 'the app saw nothing')

  const pub = await request(`${publicUrl}/public/page`, { headers: SPOOFED })
  t.equal(pub.status, 200, 'a public route without a session')
  t.equal(app.requests.at(-1)?.headers['x-auth-request-user'], '', "the client's X-Auth-Request-User is overwritten with the check's empty one")
  t.equal(app.requests.at(-1)?.headers['x-forwarded-user'], '')

  // A session: the login runs through the gateway (its /oauth2/* bypasses the check).
  const { jar, finalLocation } = await login({ proxyUrl: publicUrl, path: '/reports?q=1' })
  t.equal(finalLocation, `${publicUrl}/reports?q=1`, 'the login comes back to the original URL')
  const ok = await request(`${publicUrl}/reports?q=1`, { jar, headers: { ...API_HEADERS, ...SPOOFED } })
  t.equal(ok.status, 200, 'with a session: the app answers')
  const at = app.requests.at(-1)
  t.equal(at?.url, '/reports?q=1')
  t.equal(at?.headers['x-auth-request-user'], alice.id, 'the identity is the check’s')
  t.equal(at?.headers['x-auth-request-email'], alice.email)
  t.equal(at?.headers['x-forwarded-user'], alice.id)
  const okPost = await request(`${publicUrl}/reports`, { method: 'POST', jar, body: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(okPost.status, 200, 'a POST with a session')
  t.equal(app.requests.at(-1)?.body, 'a=1', 'the body reaches the app')

  // An access rule: bob is refused with Portcullis's 403, relayed as it is.
  const bobJar = (await login({ proxyUrl: publicUrl, path: '/admin/panel', user: bob })).jar
  const seen = app.requests.length
  const denied = await request(`${publicUrl}/admin/panel`, { jar: bobJar, headers: API_HEADERS })
  t.equal(denied.status, 403, 'bob on /admin: 403')
  t.match(denied.json(), { error: 'ACCESS_DENIED' })
  t.equal((await request(`${publicUrl}/admin/panel`, { jar, headers: API_HEADERS })).status, 200, 'alice on /admin')
  t.equal(app.requests.length, seen + 1, "the app saw alice's request only")

  // Dot segments in the original path, through the gateway (Envoy without normalize_path passes
  // them on as received): never the public route's, never proxied without a session.
  const bobCookie = bobJar.header(`${publicUrl}/`)
  for (const path of ['/public/../admin/panel', '/public/..%2fadmin/panel', '/public/%2e%2e/admin/panel']) {
    const before = app.requests.length
    const res = await rawRequest(s.frontPort, path, { headers: [['Accept', 'application/json']] })
    t.not(res.status, 200, `${path} without a session: refused (${res.status})`)
    t.equal(app.requests.length, before, `${path}: the app saw nothing`)
  }
  // ...nor does it get a user past an access rule the normalized path is under (an app that
  // resolves dot segments serves /admin/panel): both readings' rules apply.
  for (const path of ['/public/../admin/panel', '/reports/../admin/panel']) {
    const before = app.requests.length
    const res = await rawRequest(s.frontPort, path, { headers: [['Accept', 'application/json'], ['Cookie', bobCookie]] })
    t.not(res.status, 200, `${path} as bob: refused (${res.status})`)
    t.equal(app.requests.length, before, `${path} as bob: the app saw nothing`)
  }
})

t.test('the checks by hand, as ext_authz sends them', async (t) => {
  const s = await startFrontStack(t, { trustedProxies: [`${ENVOY_ADDRESS}/32`] })
  await withFront(s, async () => (await startGateway(t, s, s.frontPort), true))
  const host = new URL(s.publicUrl).host
  const { jar } = await login({ proxyUrl: s.publicUrl, path: '/reports' })
  const cookie = jar.header(`${s.publicUrl}/`)
  const appSeen = s.app.requests.length
  const check = (path: string, headers: Array<[string, string]> = [], from: string = ENVOY_ADDRESS, method = 'GET') =>
    rawRequest(s.proxyPort, path, { method, localAddress: from, headers: [['Host', host], ['Content-Length', '0'], ...headers] })

  const ok = await check('/oauth2/verify/reports?q=1', [['Cookie', cookie]])
  t.equal(ok.status, 200, 'a session: 200')
  t.same(ok.headers['x-auth-request-user'], [alice.id], 'with the identity headers')
  const post = await check('/oauth2/verify/reports', [['Cookie', cookie]], ENVOY_ADDRESS, 'POST')
  t.equal(post.status, 200, 'a POST check with Content-Length: 0 and a session: 200')

  // The path-prefix form with dot segments: a check (never proxied to the routes' upstream), never the public route.
  for (const path of ['/oauth2/verify/../admin', '/oauth2/verify/public/..%2fadmin', '/oauth2/verify/public/../admin', '/oauth2/verify/public/%2e%2e/admin']) {
    const res = await check(path, [['Accept', 'application/json']])
    t.ok(res.status === 401 || res.status === 403 || res.status === 400, `${path}: refused (${res.status})`)
    t.notOk(res.headers['x-auth-request-user'], `${path}: no identity headers, not an allow`)
  }
  t.equal(s.app.requests.length, appSeen, "nothing was proxied to the routes' upstream")

  // From a peer not in trustedProxies the forwarding headers are not believed.
  const untrusted = '127.0.0.1'
  const fwd = await check('/oauth2/verify', [['Accept', 'application/json'], ['X-Forwarded-Uri', '/public/x'], ['X-Forwarded-Host', host], ['X-Forwarded-Method', 'GET']], untrusted)
  t.equal(fwd.status, 401, 'an untrusted X-Forwarded-Uri/-Host naming a public URL: still a session needed')
  const orig = await check('/oauth2/verify', [['Accept', 'application/json'], ['X-Original-URL', `${s.publicUrl}/public/x`]], untrusted)
  t.equal(orig.status, 401, 'an untrusted X-Original-URL naming a public URL: the same')
  const envoyForm = await check('/oauth2/verify/reports', [['Accept', 'application/json'], ['X-Original-URL', `${s.publicUrl}/public/x`]], untrusted)
  t.equal(envoyForm.status, 401, "Envoy's form from an untrusted peer: the path is the check's own, X-Original-URL is not read")
  const nav = await check('/oauth2/verify', [['Accept', 'text/html'], ['X-Forwarded-Uri', '/elsewhere'], ['X-Forwarded-Host', 'evil.example']], untrusted)
  t.equal(nav.status, 302)
  t.not(new URL(nav.headers.location?.[0] ?? '').searchParams.get('rd'), 'http://evil.example/elsewhere', 'no rd from headers nobody vouches for')
  // The same public claim from the trusted address is believed: the refusals above are about trust.
  const trusted = await check('/oauth2/verify', [['Accept', 'application/json'], ['X-Forwarded-Uri', '/public/x'], ['X-Forwarded-Host', host], ['X-Forwarded-Method', 'GET']])
  t.equal(trusted.status, 200, 'from the trusted address the same headers are believed')
})
