/**
 * Self-test of the test fixtures, without Portcullis: the embedded provider (discovery paths, login
 * form, PKCE code flow, claims, JWT access tokens, refresh rotation and re-use detection, key
 * rotation, request records), the login helpers (against a stand-in relying party built on
 * openid-client), and the echo upstream (HTTP echo, HTML escaping, status paths, WebSocket).
 */
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import t from 'tap'
import type { Test } from 'tap'
import * as client from 'openid-client'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import { WebSocket } from 'ws'
import { DEMO_USERS, startTestProvider } from '../helpers/provider.ts'
import type { RunningProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { CookieJar, request } from '../helpers/http.ts'
import { authorizeUntilCallback, login, parseForm } from '../helpers/login.ts'

const CLIENT_ID = 'fixture-client'
const CLIENT_SECRET = 'fixture-client-secret-that-is-long-enough'

const alice = DEMO_USERS[0]!

/** Start a node:http server on 127.0.0.1:0 with `handler`, closed in teardown. */
async function startServer(
  t: Test,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string }> {
  const server = http.createServer(handler)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function discover(provider: RunningProvider): Promise<client.Configuration> {
  return client.discovery(new URL(provider.issuer), CLIENT_ID, undefined, client.ClientSecretBasic(CLIENT_SECRET), {
    execute: [client.allowInsecureRequests],
  })
}

function errorCode(err: unknown): unknown {
  return err && typeof err === 'object' ? (err as { error?: unknown }).error : undefined
}

t.test('embedded provider: discovery, login form, code flow, refresh rotation', async (t) => {
  const rp = await startServer(t, (_req, res) => res.end('callback'))
  const redirectUri = `${rp.url}/cb`
  const op = await startTestProvider(t, {
    clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [redirectUri] }],
  })
  const config = await discover(op)

  const meta = config.serverMetadata()
  t.equal(meta.issuer, op.issuer)
  t.equal(meta.authorization_endpoint, `${op.issuer}/oauth/authorize`)
  t.equal(meta.token_endpoint, `${op.issuer}/oauth/token`)
  t.equal(meta.jwks_uri, `${op.issuer}/keys`)
  t.equal(meta.end_session_endpoint, `${op.issuer}/oidc/logout`)
  t.equal(meta.userinfo_endpoint, `${op.issuer}/userinfo`)
  t.ok(meta.backchannel_logout_supported, 'back-channel logout advertised')

  const jwks = await request(`${op.issuer}/keys`)
  const published = jwks.json<{ keys: Array<{ kid: string; kty: string; alg?: string }> }>().keys
  t.equal(published.length, 1)
  t.not(published[0]?.kid, 'keystore-CHANGE-ME', 'the built-in development key is not used')
  t.equal(published[0]?.kty, 'RSA')

  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid email profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    login_hint: alice.email,
    organization_id: 'org_123',
  })

  const jar = new CookieJar()
  const toInteraction = await request(authUrl.href, { jar })
  t.equal(toInteraction.status, 303, 'authorize redirects to the interaction')
  const interactionUrl = new URL(toInteraction.headers.location ?? '', authUrl).href
  t.match(interactionUrl, `${op.issuer}/interaction/`)

  const formPage = await request(interactionUrl, { jar })
  t.equal(formPage.status, 200)
  const form = parseForm(formPage.body, interactionUrl)
  t.ok(form, 'login page has a form')
  t.equal(form?.method, 'POST')
  t.same(Object.keys(form?.fields ?? {}).sort(), ['login', 'otp', 'password'])
  t.equal(form?.fields.login, alice.email, 'login_hint pre-fills the login field')

  const wrong = await request(form!.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login: alice.email, password: 'not-the-password' }).toString(),
    jar,
  })
  t.equal(wrong.status, 200, 'a wrong password shows the form again, no redirect')
  t.equal(wrong.headers.location, undefined)
  t.match(wrong.body, 'Invalid email or password.')
  t.ok(parseForm(wrong.body, interactionUrl)?.fields.password !== undefined, 'the form is shown again')

  const right = await request(form!.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login: alice.email, password: alice.password }).toString(),
    jar,
  })
  t.equal(right.status, 303, 'the right password finishes the interaction')
  const resumeUrl = new URL(right.headers.location ?? '', interactionUrl).href
  const toCallback = await request(resumeUrl, { jar })
  t.equal(toCallback.status, 303, 'consent is granted without a page')
  const callbackUrl = new URL(toCallback.headers.location ?? '', resumeUrl)
  t.equal(`${callbackUrl.origin}${callbackUrl.pathname}`, redirectUri)
  t.ok(callbackUrl.searchParams.get('code'), 'callback carries a code')
  t.equal(callbackUrl.searchParams.get('iss'), op.issuer, 'RFC 9207 iss parameter')

  const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
  })
  const claims = tokens.claims()
  t.equal(claims?.sub, alice.id)
  t.equal(claims?.email, alice.email)
  t.equal(claims?.email_verified, true)
  t.equal(claims?.preferred_username, alice.preferredUsername)
  t.equal(claims?.name, alice.name)
  t.same(claims?.groups, alice.groups)

  t.equal(decodeProtectedHeader(tokens.access_token).typ, 'at+jwt', 'access token is a JWT')
  const jwksSet = createRemoteJWKSet(new URL(`${op.issuer}/keys`))
  const { payload: at } = await jwtVerify(tokens.access_token, jwksSet, { issuer: op.issuer, typ: 'at+jwt' })
  const aud = Array.isArray(at.aud) ? at.aud : [at.aud]
  t.ok(aud.includes(CLIENT_ID), 'access token audience contains the client id')
  t.equal(at.sub, alice.id)
  t.equal(at.email, alice.email, 'identity claims in the access token too')
  t.ok(at.exp! - at.iat! <= 300, 'access token lives 5 minutes')

  const firstRefresh = tokens.refresh_token
  t.ok(firstRefresh, 'a refresh token is issued')
  const refreshed = await client.refreshTokenGrant(config, firstRefresh!)
  t.ok(refreshed.refresh_token, 'refresh returns a refresh token')
  t.not(refreshed.refresh_token, firstRefresh, 'the refresh token rotated')
  t.equal(refreshed.claims()?.sub, alice.id)

  const oldKid = decodeProtectedHeader(refreshed.id_token!).kid
  await op.rotateSigningKey()
  const rotated = (await request(`${op.issuer}/keys`)).json<{ keys: Array<{ kid: string }> }>().keys
  t.equal(rotated.length, 2, 'old key kept after rotation')
  t.equal(rotated[1]?.kid, oldKid, 'old key second')
  const afterRotation = await client.refreshTokenGrant(config, refreshed.refresh_token!)
  t.equal(decodeProtectedHeader(afterRotation.id_token!).kid, rotated[0]?.kid, 'the new key signs')
  t.equal(decodeProtectedHeader(afterRotation.access_token).kid, rotated[0]?.kid)

  try {
    await client.refreshTokenGrant(config, firstRefresh!)
    t.fail('re-using a rotated refresh token must fail')
  } catch (err) {
    t.equal(errorCode(err), 'invalid_grant', 're-use of a rotated refresh token is invalid_grant')
  }

  t.ok(
    op.requests.some((r) => r.method === 'POST' && r.path === '/oauth/token' && r.grantType === 'refresh_token'),
    'requests recorded the refresh grant',
  )
  t.ok(op.requests.some((r) => r.path === '/oauth/token' && r.grantType === 'authorization_code'))
  t.ok(op.requests.some((r) => r.path === '/.well-known/openid-configuration'))
  t.equal(op.authorizations.length, 1)
  t.equal(op.authorizations[0]?.login_hint, alice.email, 'authorizations recorded login_hint')
  t.equal(op.authorizations[0]?.organization_id, 'org_123')
  t.equal(op.authorizations[0]?.code_challenge_method, 'S256')
})

t.test('embedded provider: PKCE is required', async (t) => {
  const redirectUri = 'http://127.0.0.1:9/cb'
  const op = await startTestProvider(t, {
    clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [redirectUri] }],
  })
  const url = new URL(`${op.issuer}/oauth/authorize`)
  url.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    scope: 'openid',
    redirect_uri: redirectUri,
    state: 'xyz',
  }).toString()
  const res = await request(url.href)
  t.equal(res.status, 303)
  const back = new URL(res.headers.location ?? '')
  t.equal(back.searchParams.get('error'), 'invalid_request')
  t.match(back.searchParams.get('error_description') ?? '', /PKCE/)
})

/**
 * A stand-in for Portcullis, just enough of its request pipeline and login to drive the login helpers: navigations
 * to anything without a session go to /oauth2/start, which redirects to the provider; /oauth2/callback
 * exchanges the code and redirects to `rd` with a session cookie.
 */
async function startStandInProxy(t: Test): Promise<{ url: string; setProvider(op: RunningProvider): Promise<void> }> {
  let config: client.Configuration | undefined
  const pending = new Map<string, { verifier: string; nonce: string; rd: string }>()
  let selfUrl = ''
  const server = await startServer(t, (req, res) => {
    const url = new URL(req.url ?? '/', selfUrl)
    void (async () => {
      if (!config) throw new Error('no provider yet')
      if (url.pathname === '/oauth2/start') {
        const verifier = client.randomPKCECodeVerifier()
        const state = client.randomState()
        const nonce = client.randomNonce()
        pending.set(state, { verifier, nonce, rd: url.searchParams.get('rd') ?? '/' })
        const hints = Object.fromEntries([...url.searchParams].filter(([k]) => k === 'login_hint'))
        const auth = client.buildAuthorizationUrl(config, {
          redirect_uri: `${selfUrl}/oauth2/callback`,
          scope: 'openid email profile',
          code_challenge: await client.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
          state,
          nonce,
          ...hints,
        })
        res.writeHead(302, { location: auth.href, 'set-cookie': `_tx=${state}; Path=/oauth2; HttpOnly` }).end()
        return
      }
      if (url.pathname === '/oauth2/callback') {
        const state = url.searchParams.get('state') ?? ''
        const tx = pending.get(state)
        if (!tx) {
          res.writeHead(400).end('unknown state')
          return
        }
        const tokens = await client.authorizationCodeGrant(config, url, {
          pkceCodeVerifier: tx.verifier,
          expectedState: state,
          expectedNonce: tx.nonce,
        })
        res
          .writeHead(302, {
            location: tx.rd,
            'set-cookie': [`_rp_session=${String(tokens.claims()?.sub)}; Path=/; HttpOnly`, '_tx=; Path=/oauth2; Max-Age=0'],
          })
          .end()
        return
      }
      const cookie = req.headers.cookie ?? ''
      if (/(?:^|; )_rp_session=/.test(cookie)) {
        res.end('app')
        return
      }
      res.writeHead(302, { location: `/oauth2/start?rd=${encodeURIComponent(url.pathname + url.search)}` }).end()
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(err))
    })
  })
  selfUrl = server.url
  return {
    url: server.url,
    async setProvider(op) {
      config = await discover(op)
    },
  }
}

t.test('login helpers drive the provider through a relying party', async (t) => {
  const proxy = await startStandInProxy(t)
  const op = await startTestProvider(t, {
    clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [`${proxy.url}/oauth2/callback`] }],
  })
  await proxy.setProvider(op)

  const result = await login({ proxyUrl: proxy.url, path: '/app/page?x=1' })
  t.equal(result.finalLocation, `${proxy.url}/app/page?x=1`)
  t.equal(result.jar.get('_rp_session'), alice.id)
  t.ok(result.jar.get('_session'), "the provider's session cookie shares the jar (same host, other port)")
  t.notOk(result.jar.get('_tx'), 'Max-Age=0 deleted the transaction cookie')
  t.ok(result.steps.length <= 20)
  t.ok(result.steps.some((s) => s.method === 'POST' && s.url.includes('/interaction/')), 'the form was posted')

  // The provider session is in the same jar: once the app session is gone, a login needs no form.
  result.jar.delete('_rp_session')
  const again = await login({ proxyUrl: proxy.url, path: '/other', jar: result.jar })
  t.notOk(again.steps.some((s) => s.method === 'POST'), 'provider session reused, no form')

  const bob = DEMO_USERS.find((u) => u.id === 'bob')!
  const tokenRequests = (): number => op.requests.filter((r) => r.path === '/oauth/token').length
  const before = tokenRequests()
  const cb = await authorizeUntilCallback({
    proxyUrl: proxy.url,
    user: bob,
    startUrl: `${proxy.url}/oauth2/start?rd=/bob&login_hint=${encodeURIComponent(bob.email)}`,
  })
  const callback = new URL(cb.callbackUrl)
  t.equal(callback.pathname, '/oauth2/callback')
  t.ok(callback.searchParams.get('code'))
  t.ok(cb.jar.get('_tx'), 'the transaction cookie is still there')
  t.equal(op.authorizations.at(-1)?.login_hint, bob.email)
  t.equal(tokenRequests(), before, 'the callback was not requested by the helper')
  const done = await request(cb.callbackUrl, { jar: cb.jar })
  t.equal(done.status, 302)
  t.equal(cb.jar.get('_rp_session'), 'bob')

  await t.rejects(
    login({ proxyUrl: proxy.url, user: { ...alice, password: 'wrong' } }),
    /rejected alice@example\.com: Invalid email or password/,
  )
})

t.test('echo upstream', async (t) => {
  const upstream = await startTestUpstream(t, { title: 'Fixture app' })

  const echoed = await request(`${upstream.url}/echo/path?q=1`, {
    headers: [
      ['X-Custom', 'one'],
      ['x-custom', 'two'],
      ['Accept', 'application/json'],
    ],
  })
  t.equal(echoed.status, 200)
  t.match(echoed.headers['content-type'], /^application\/json/)
  const json = echoed.json<{ method: string; url: string; headers: Record<string, string>; body: string }>()
  t.equal(json.method, 'GET')
  t.equal(json.url, '/echo/path?q=1')
  t.equal(json.headers['x-custom'], 'one, two')
  const record = upstream.requests.at(-1)
  t.same(
    record?.rawHeaders.filter((_v, i, a) => (a[i - 1] ?? '').toLowerCase() === 'x-custom'),
    ['one', 'two'],
  )
  t.ok(record?.rawHeaders.includes('X-Custom'), 'raw header casing kept')

  const posted = await request(`${upstream.url}/submit`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain' },
    body: 'hello body',
  })
  t.equal(posted.json<{ body: string }>().body, 'hello body')
  t.equal(upstream.requests.at(-1)?.body, 'hello body')

  const html = await request(`${upstream.url}/`, {
    headers: {
      accept: 'text/html',
      'x-auth-request-email': '<script>alert(1)</script>',
      'X-Forwarded-User': `alice"&'`,
      'x-other': 'not shown',
    },
  })
  t.equal(html.status, 200)
  t.match(html.headers['content-type'], /^text\/html/)
  t.match(html.body, '<title>Fixture app</title>')
  t.match(html.body, '&lt;script&gt;alert(1)&lt;/script&gt;')
  t.notMatch(html.body, '<script>', 'header values are escaped')
  t.match(html.body, 'alice&quot;&amp;&#39;')
  t.match(html.body, '<td>x-auth-request-email</td>')
  t.match(html.body, '<td>x-forwarded-user</td>')
  t.notMatch(html.body, 'x-other')
  t.match(html.body, 'href="/oauth2/sign_out"')

  const unavailable = await request(`${upstream.url}/status/503`)
  t.equal(unavailable.status, 503)
  t.equal(unavailable.json<{ url: string }>().url, '/status/503')

  const slow = await request(`${upstream.url}/slow?ms=5`)
  t.equal(slow.status, 200)

  const ws = new WebSocket(`${upstream.url.replace(/^http/, 'ws')}/socket?room=1`, {
    headers: { 'x-auth-request-user': 'alice' },
  })
  t.teardown(() => ws.terminate())
  const [hello] = (await once(ws, 'message')) as [Buffer]
  const helloMsg = JSON.parse(hello.toString()) as { type: string; url: string; headers: Record<string, string> }
  t.equal(helloMsg.type, 'hello')
  t.equal(helloMsg.url, '/socket?room=1')
  t.equal(helloMsg.headers['x-auth-request-user'], 'alice')
  t.equal(upstream.requests.at(-1)?.url, '/socket?room=1', 'the upgrade is recorded')
  ws.send('ping')
  const [echo, isBinary] = (await once(ws, 'message')) as [Buffer, boolean]
  t.equal(echo.toString(), 'ping')
  t.equal(isBinary, false)
  ws.close()
  await once(ws, 'close')
})

t.test('embedded provider: prompt=consent, RP-initiated logout and back-channel logout to loopback', async (t) => {
  const logoutTokens: string[] = []
  const logLines: string[] = []
  let gotLogoutToken: () => void = () => {}
  const logoutTokenArrived = new Promise<void>((resolve) => {
    gotLogoutToken = resolve
  })
  const rp = await startServer(t, (req, res) => {
    if (req.method === 'POST' && req.url === '/backchannel') {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (chunk: string) => (body += chunk))
      req.on('end', () => {
        const token = new URLSearchParams(body).get('logout_token')
        if (token) logoutTokens.push(token)
        res.writeHead(200).end()
        gotLogoutToken()
      })
      return
    }
    res.end('rp')
  })
  const redirectUri = `${rp.url}/cb`
  const op = await startTestProvider(t, {
    clients: [
      {
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUris: [redirectUri],
        postLogoutRedirectUris: [`${rp.url}/signed-out`],
        backchannelLogoutUri: `${rp.url}/backchannel`,
        tokenEndpointAuthMethod: 'client_secret_post',
      },
    ],
    allowLoopbackFetch: true,
    logger: (line) => logLines.push(line),
  })
  const config = await client.discovery(
    new URL(op.issuer),
    CLIENT_ID,
    undefined,
    client.ClientSecretPost(CLIENT_SECRET),
    { execute: [client.allowInsecureRequests] },
  )

  const verifier = client.randomPKCECodeVerifier()
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid email',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: 's1',
    prompt: 'consent',
  })
  const jar = new CookieJar()
  let url = authUrl.href
  let res = await request(url, { jar })
  let callback: URL | undefined
  for (let i = 0; i < 10 && !callback; i++) {
    if (res.status === 200) {
      const form = parseForm(res.body, url)!
      res = await request(form.action, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ login: alice.email, password: alice.password }).toString(),
        jar,
      })
      continue
    }
    t.equal(res.status, 303, `redirect at step ${i}`)
    const next = new URL(res.headers.location ?? '', url)
    if (next.href.startsWith(redirectUri)) callback = next
    else res = await request((url = next.href), { jar })
  }
  t.ok(callback, 'prompt=consent is granted without a page')
  t.equal(
    op.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/interaction/')).length,
    2,
    'one login interaction, then one consent interaction that finished by itself',
  )
  const tokens = await client.authorizationCodeGrant(config, callback!, {
    pkceCodeVerifier: verifier,
    expectedState: 's1',
  })
  const sid = tokens.claims()?.sid
  t.ok(sid, 'ID token carries sid (back-channel logout session required)')
  t.ok(
    op.requests.some((r) => r.path === '/oauth/token' && r.grantType === 'authorization_code'),
    'client_secret_post token request recorded',
  )

  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token!,
    post_logout_redirect_uri: `${rp.url}/signed-out`,
    state: 'bye',
  })
  const confirmPage = await request(endSession.href, { jar })
  t.equal(confirmPage.status, 200, 'the provider asks to confirm')
  const confirm = parseForm(confirmPage.body, endSession.href)
  t.equal(confirm?.action, `${op.issuer}/oidc/logout/confirm`)
  t.ok(confirm?.fields.xsrf, 'xsrf field')
  t.equal(confirm?.fields.logout, 'yes', 'the submit button is inside the form')
  const done = await request(confirm!.action, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(confirm!.fields).toString(),
    jar,
  })
  t.equal(done.status, 303)
  const back = new URL(done.headers.location ?? '')
  t.equal(`${back.origin}${back.pathname}`, `${rp.url}/signed-out`)
  t.equal(back.searchParams.get('state'), 'bye')

  await logoutTokenArrived
  t.equal(logoutTokens.length, 1, 'one logout token posted to the loopback receiver')
  const { payload, protectedHeader } = await jwtVerify(logoutTokens[0]!, createRemoteJWKSet(new URL(`${op.issuer}/keys`)), {
    issuer: op.issuer,
    audience: CLIENT_ID,
    typ: 'logout+jwt',
  })
  t.equal(protectedHeader.alg, 'RS256')
  t.equal(payload.sub, alice.id)
  t.equal(payload.sid, sid)
  t.ok(payload.jti)
  t.same(payload.events, { 'http://schemas.openid.net/event/backchannel-logout': {} })
  t.notOk('nonce' in payload)

  try {
    await client.refreshTokenGrant(config, tokens.refresh_token!)
    t.fail('refresh after logout must fail')
  } catch (err) {
    t.equal(errorCode(err), 'invalid_grant', 'logout revoked the grant')
  }
  t.ok(logLines.some((l) => l.startsWith('backchannel.success')), 'logger sees the back-channel delivery')
  t.ok(logLines.some((l) => l.startsWith('login ok: alice')))
  t.same(
    logLines.filter((l) => /server_error|provider error|interaction error/.test(l)),
    [],
    'no server errors',
  )
})
