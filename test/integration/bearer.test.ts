/**
 * Bearer routes (issue #10 point 4): `Authorization: Bearer <JWT>` from API clients, verified against
 * the provider's keys or an extra issuer's (`provider.extraIssuers`), with the route's audience,
 * required scopes and allow rules. Tokens of the real provider come from an authorization-code flow
 * at it (test/helpers/provider-token.ts); the misbehaving provider (test/helpers/bad-provider.ts) is
 * the extra issuer, and its key signs the tokens no real provider would issue (expired, wrong
 * issuer, wrong audience, `alg: none`, HS256 keyed with the public key, a broken signature, an
 * unknown key). Every refusal is an RFC 6750 challenge; a bearer request never gets a redirect, and a
 * token is never taken from the query string or a form body. Both lanes, and the forward-auth check.
 */
import t, { type Test } from 'tap'
import { createPublicKey } from 'node:crypto'
import { SignJWT, type JWTPayload } from 'jose'
import { startApp, startStack, reservePort, type RunningPortcullis, type Stack } from '../helpers/portcullis.ts'
import { startBadProvider, type BadProvider } from '../helpers/bad-provider.ts'
import { providerToken } from '../helpers/provider-token.ts'
import { bearerChallenge as challenge, request, type TestResponse } from '../helpers/http.ts'
import { NAVIGATION_HEADERS } from '../helpers/login.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import type { EchoRecord } from '../helpers/upstream.ts'

const alice = DEMO_USERS[0]!
const bob = DEMO_USERS[1]!

interface Bed {
  stack: Stack
  /** The extra issuer. */
  partner: BadProvider
  /** An extra issuer nothing listens for. */
  deadIssuer: string
  /** The same runtime with the fast lane off. */
  slow: RunningPortcullis
  tokens: { alice: string; bob: string }
  /** A token of the extra issuer, `claims` over a valid set (iss, sub, aud = the client id, iat, exp). */
  partnerToken(claims?: JWTPayload, key?: 'provider' | 'unknown' | 'none'): Promise<string>
}

let bed: Promise<Bed> | undefined

/** One stack for the whole file (torn down when the file's tests end): provider, extra issuer, upstream, Portcullis in both lanes. */
function testBed(_sub: Test): Promise<Bed> {
  bed ??= (async () => {
    const partner = await startBadProvider(t, { defect: 'none', redirectUri: 'http://127.0.0.1:9/callback', clientId: 'partner-client', clientSecret: 'partner-secret' })
    const deadIssuer = `http://127.0.0.1:${await reservePort()}`
    const stack = await startStack(t, {
      overrides: ({ upstream }) => ({
        server: { trustedProxies: ['127.0.0.1/32'] },
        provider: { extraIssuers: [partner.issuer, { issuer: deadIssuer, jwksUri: `${deadIssuer}/keys` }] },
        routes: [
          { match: { pathPrefix: '/' }, upstream },
          { match: { pathPrefix: '/api' }, upstream, bearer: true },
          { match: { pathPrefix: '/api-pass' }, upstream, bearer: true, passClientAuthorization: true },
          { match: { pathPrefix: '/admin-api' }, upstream, bearer: true, allow: { groups: ['admins'] } },
          { match: { pathPrefix: '/write-api' }, upstream, bearer: true, requiredScopes: ['api:write'] },
        ],
      }),
    })
    const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
    const flow = {
      authorizationEndpoint: `${stack.provider.issuer}/oauth/authorize`,
      tokenEndpoint: `${stack.provider.issuer}/oauth/token`,
      clientId: stack.clientId,
      clientSecret: stack.clientSecret,
      redirectUri: `${stack.config.server.publicUrl}/oauth2/callback`,
      scope: 'openid email profile',
    }
    const [a, b] = await Promise.all([providerToken({ ...flow, user: alice }), providerToken({ ...flow, user: bob })])
    const partnerToken = (claims: JWTPayload = {}, key: 'provider' | 'unknown' | 'none' = 'provider') => {
      const now = Math.floor(Date.now() / 1000)
      return partner.signLogoutToken({ iss: partner.issuer, sub: 'mallory', aud: stack.clientId, iat: now, exp: now + 300, email: 'mallory@partner.example', ...claims }, { key, typ: 'at+jwt' })
    }
    return { stack, partner, deadIssuer, slow, tokens: { alice: a.access_token, bob: b.access_token }, partnerToken }
  })()
  return bed
}

/** The access line of a request id (the fast lane writes its lines in batches: wait a little). */
async function waitForLine(lane: { logs: Array<Record<string, unknown>> }, id: string): Promise<Record<string, unknown> | undefined> {
  for (let i = 0; i < 50; i++) {
    const line = lane.logs.find((l) => l.msg === 'request' && l.reqId === id)
    if (line !== undefined) return line
    await new Promise((r) => setTimeout(r, 20))
  }
  return undefined
}

async function upstreamSaw(stack: Stack, send: () => Promise<TestResponse>): Promise<{ res: TestResponse; record: EchoRecord | undefined }> {
  const before = stack.upstream.requests.length
  const res = await send()
  return { res, record: stack.upstream.requests.length > before ? stack.upstream.requests.at(-1) : undefined }
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}`, accept: 'application/json' })

t.test('a valid token of the provider: forwarded with identity headers, without the client\'s Authorization', async (t) => {
  const { stack, slow, tokens } = await testBed(t)
  for (const lane of [stack.proxy, slow]) {
    const { res, record } = await upstreamSaw(stack, () => request(`${lane.url}/api/items?x=1`, { headers: bearer(tokens.alice) }))
    t.equal(res.status, 200, 'forwarded')
    t.equal(record?.url, '/api/items?x=1')
    t.equal(record?.headers['x-auth-request-user'], 'alice', 'sub')
    t.equal(record?.headers['x-auth-request-email'], 'alice@example.com', 'email, from the token')
    t.equal(record?.headers['x-auth-request-groups'], 'admins,engineering', 'groups, from the token')
    t.equal(record?.headers.authorization, undefined, 'the token does not reach the app')
    t.equal(res.headers['set-cookie'], undefined, 'no cookie: a bearer request makes no session')
    const id = String(res.headers['x-request-id'])
    const line = await waitForLine(lane, id)
    t.equal(line?.sub, 'alice', "the access line names the token's user")
  }
  const { record } = await upstreamSaw(stack, () => request(`${stack.proxy.url}/api-pass/x`, { headers: bearer(tokens.alice) }))
  t.equal(record?.headers.authorization, `Bearer ${tokens.alice}`, 'passClientAuthorization keeps it')
  t.equal(record?.headers['x-auth-request-user'], 'alice', 'and the identity headers are there too')
  const lower = await request(`${stack.proxy.url}/api/x`, { headers: { authorization: `bearer ${tokens.alice}` } })
  t.equal(lower.status, 200, 'the scheme is case-insensitive (RFC 6750 §2.1)')
})

t.test('an extra issuer\'s token: forwarded as its subject', async (t) => {
  const { stack, slow, partnerToken } = await testBed(t)
  const token = await partnerToken()
  for (const lane of [stack.proxy, slow]) {
    const { res, record } = await upstreamSaw(stack, () => request(`${lane.url}/api/x`, { headers: bearer(token) }))
    t.equal(res.status, 200)
    t.equal(record?.headers['x-auth-request-user'], 'mallory')
    t.equal(record?.headers['x-auth-request-email'], 'mallory@partner.example')
  }
})

t.test('tokens that must not pass: 401 invalid_token, in both lanes', async (t) => {
  const { stack, slow, partner, partnerToken } = await testBed(t)
  const now = Math.floor(Date.now() / 1000)
  const good = await partnerToken()
  const [h, p, s] = good.split('.') as [string, string, string]
  const sig = Buffer.from(s, 'base64url')
  sig[10] = (sig[10] as number) ^ 0x01
  // Algorithm confusion: HS256 keyed with the PEM of the issuer's public RSA key.
  const jwks = await request(`${partner.issuer}/keys`).then((r) => r.json<{ keys: Array<Record<string, unknown>> }>())
  const jwk = jwks.keys[0] as Record<string, unknown>
  const pem = createPublicKey({ key: jwk as never, format: 'jwk' }).export({ format: 'pem', type: 'spki' }).toString()
  const hs256 = await new SignJWT({ iss: partner.issuer, sub: 'mallory', aud: stack.clientId, iat: now, exp: now + 300 })
    .setProtectedHeader({ alg: 'HS256', kid: String(jwk.kid) })
    .sign(new TextEncoder().encode(pem))
  const cases: Array<[string, string, RegExp]> = [
    ['expired', await partnerToken({ iat: now - 3600, exp: now - 1800 }), /expired/],
    ['wrong issuer', await partnerToken({ iss: `${partner.issuer}/another-tenant` }), /not from an accepted issuer/],
    ['wrong audience', await partnerToken({ aud: 'another-client' }), /not for this resource \(aud\)/],
    ['alg none', await partnerToken({}, 'none'), /could not be verified|not a JWT/],
    ['HS256 signed with the public key', hs256, /signature could not be verified/],
    ['bad signature', `${h}.${p}.${sig.toString('base64url')}`, /signature could not be verified/],
    ['a key the issuer does not publish', await partnerToken({}, 'unknown'), /signature could not be verified/],
    ['iat in the future', await partnerToken({ iat: now + 3600, exp: now + 7200 }), /iat/],
    ['no sub', await partnerToken({ sub: undefined }), /sub/],
    ['not a JWT', 'opaque-token-value', /not a JWT/],
  ]
  for (const [what, token, description] of cases) {
    for (const lane of [stack.proxy, slow]) {
      const { res, record } = await upstreamSaw(stack, () => request(`${lane.url}/api/x`, { headers: { ...bearer(token), ...NAVIGATION_HEADERS } }))
      t.equal(res.status, 401, `${what}: 401 (${lane === slow ? 'Fastify path' : 'fast lane'})`)
      t.equal(record, undefined, `${what}: not forwarded`)
      const c = challenge(res)
      t.equal(c.error, 'invalid_token', `${what}: error="invalid_token"`)
      t.match(c.error_description ?? '', description, `${what}: error_description`)
      t.equal(res.headers.location, undefined, `${what}: never a redirect, even for a browser`)
      t.equal(res.json<{ error: string }>().error, 'TOKEN_INVALID')
    }
  }
})

t.test('a token in the query or a form body is never taken: 401 without an error code, never a redirect', async (t) => {
  const { stack, slow, tokens } = await testBed(t)
  for (const lane of [stack.proxy, slow]) {
    const q = await upstreamSaw(stack, () => request(`${lane.url}/api/x?access_token=${tokens.alice}`, { headers: { ...NAVIGATION_HEADERS } }))
    t.equal(q.res.status, 401, '?access_token=: 401')
    t.equal(q.res.headers.location, undefined, 'no redirect, though the client accepts HTML')
    t.equal(q.record, undefined)
    t.same(challenge(q.res), { realm: new URL(stack.config.server.publicUrl).host }, 'no error attribute: no credentials were presented (RFC 6750 §3.1)')
    const form = await upstreamSaw(stack, () =>
      request(`${lane.url}/api/x`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `access_token=${tokens.alice}` }),
    )
    t.equal(form.res.status, 401, 'access_token in a form body: 401')
    t.equal(form.record, undefined)
    t.equal(challenge(form.res).error, undefined)
  }
})

t.test('allow rules and required scopes apply to bearer identities', async (t) => {
  const { stack, slow, tokens, partnerToken } = await testBed(t)
  for (const lane of [stack.proxy, slow]) {
    const ok = await request(`${lane.url}/admin-api/x`, { headers: bearer(tokens.alice) })
    t.equal(ok.status, 200, 'alice is in admins')
    const denied = await upstreamSaw(stack, () => request(`${lane.url}/admin-api/x`, { headers: { ...bearer(tokens.bob), ...NAVIGATION_HEADERS } }))
    t.equal(denied.res.status, 403, 'bob is not')
    t.equal(denied.record, undefined)
    t.equal(denied.res.headers.location, undefined, 'never a redirect')
    const c = challenge(denied.res)
    t.equal(c.error, 'insufficient_scope')
    t.match(c.error_description, /routes\[3\]\.allow\.groups/, 'the rule is named')
    t.same(denied.res.json<{ rule: string }>().rule, 'routes[3].allow.groups')
  }
  const noScope = await request(`${stack.proxy.url}/write-api/x`, { headers: bearer(await partnerToken({ scope: 'api:read' })) })
  t.equal(noScope.status, 403, 'scope without api:write')
  t.same(challenge(noScope), {
    realm: new URL(stack.config.server.publicUrl).host,
    error: 'insufficient_scope',
    error_description: 'The token does not carry the scopes this API requires. (routes[4].requiredScopes)',
    scope: 'api:write',
  })
  t.equal((await request(`${stack.proxy.url}/write-api/x`, { headers: bearer(await partnerToken({ scope: 'api:read api:write' })) })).status, 200, 'scope holding it')
  t.equal((await request(`${stack.proxy.url}/write-api/x`, { headers: bearer(await partnerToken({ scp: ['api:write'] })) })).status, 200, 'scp as a list')
  const none = await request(`${stack.proxy.url}/write-api/x`)
  t.equal(challenge(none).scope, 'api:write', 'the challenge without credentials names the scope to ask for')
})

t.test('an extra issuer that cannot be reached: 503, never a crash, and the service goes on', async (t) => {
  const { stack, slow, deadIssuer, partner, tokens } = await testBed(t)
  const token = await partner.signLogoutToken({ iss: deadIssuer, sub: 'x', aud: stack.clientId, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300 }, { typ: 'at+jwt' })
  for (const lane of [stack.proxy, slow]) {
    for (let i = 0; i < 2; i++) {
      const res = await request(`${lane.url}/api/x`, { headers: bearer(token) })
      t.equal(res.status, 503, `503 (attempt ${i + 1})`)
      t.equal(res.headers['retry-after'], '5')
      t.equal(res.json<{ error: string }>().error, 'IDP_UNAVAILABLE')
    }
  }
  t.equal((await request(`${stack.proxy.url}/api/x`, { headers: bearer(tokens.alice) })).status, 200, "the provider's tokens still pass")
  const line = stack.proxy.logs.find((l) => l.msg === 'request' && l.status === 503)
  t.ok(line !== undefined, 'logged')
  t.match(JSON.stringify(line), /could not be fetched|could not be loaded/, 'with why')
})

t.test('the forward-auth check on a bearer route reads the client\'s Authorization', async (t) => {
  const { stack, slow, tokens } = await testBed(t)
  const original = `${stack.config.server.publicUrl}/admin-api/reports`
  for (const lane of [stack.proxy, slow]) {
    for (const method of ['GET', 'HEAD']) {
      const check = (headers: Record<string, string>) => request(`${lane.url}/oauth2/auth`, { method, headers: { 'x-original-url': original, ...headers } })
      const ok = await check({ authorization: `Bearer ${tokens.alice}` })
      t.equal(ok.status, 200, `${method}: a valid token: 200`)
      t.equal(ok.headers['x-auth-request-user'], 'alice', 'with the identity headers')
      t.equal(ok.headers['x-auth-request-groups'], 'admins,engineering')
      const denied = await check({ authorization: `Bearer ${tokens.bob}` })
      t.equal(denied.status, 403, `${method}: the allow rule refuses: 403`)
      const invalid = await check({ authorization: 'Bearer not-a-token' })
      t.equal(invalid.status, 401, `${method}: an invalid token: 401`)
      t.equal(challenge(invalid).error, 'invalid_token')
      const none = await check({})
      t.equal(none.status, 401, `${method}: no token: 401`)
      t.equal(challenge(none).error, undefined, 'without an error code')
    }
  }
  // Another peer's X-Original-URL is not believed: the check then needs a session, which a token is not.
  const session = await request(`${stack.proxy.url}/oauth2/auth`, { headers: { authorization: `Bearer ${tokens.alice}` } })
  t.equal(session.status, 401, 'without an original URL, a session is required')
})
