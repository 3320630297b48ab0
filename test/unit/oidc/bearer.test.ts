/**
 * The bearer-token verifier's issuers (`src/oidc/bearer.ts`), against a local issuer the test
 * controls: an extra issuer's keys come from its `jwksUri` or its discovery document, loaded with its
 * first token; a discovery document naming another issuer, an issuer that cannot be reached, a
 * `jwks_uri` over plain http that is not allowed and a provider not yet connected all make its tokens
 * `unavailable` (a 503 upstream of here), never `invalid` and never a throw; a failed load waits a
 * backoff before it is tried again, and then recovers. Time is a fake clock; nothing sleeps.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import { createBearerVerifier, extraIssuer, scopesOf, type BearerResult, type TrustedIssuer } from '../../../src/oidc/bearer.ts'
import { ASYMMETRIC_ALGS } from '../../../src/oidc/jwks.ts'
import { fakeClock, type FakeClock } from '../../helpers/clock.ts'

type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey']

interface Issuer {
  url: string
  /** What discovery says the issuer is (default: `url`). */
  discoveredIssuer: string | null
  /** The `jwks_uri` discovery names (default: `${url}/keys`). */
  jwksUri: string | null
  /** 'ok', or 'down': every connection is dropped. */
  mode: 'ok' | 'down'
  hits: { discovery: number; jwks: number }
  sign(claims: Record<string, unknown>): Promise<string>
}

async function startIssuer(t: Test): Promise<Issuer> {
  const kid = 'k1'
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }
  const state: Issuer = {
    url: '',
    discoveredIssuer: null,
    jwksUri: null,
    mode: 'ok',
    hits: { discovery: 0, jwks: 0 },
    sign: (claims) => sign(privateKey, kid, claims),
  }
  const server = http.createServer((req, res) => {
    if (state.mode === 'down') {
      req.socket.destroy()
      return
    }
    if (req.url === '/.well-known/openid-configuration') {
      state.hits.discovery++
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: state.discoveredIssuer ?? state.url, jwks_uri: state.jwksUri ?? `${state.url}/keys` }))
      return
    }
    if (req.url === '/keys') {
      state.hits.jwks++
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }))
      return
    }
    res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return state
}

function sign(key: PrivateKey, kid: string, claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT({ sub: 'user-1', aud: 'api', iat: now, exp: now + 300, ...claims }).setProtectedHeader({ alg: 'RS256', kid, typ: 'at+jwt' }).sign(key)
}

const loopbackHttp = (url: URL) => url.protocol === 'https:' || url.hostname === '127.0.0.1'
const httpsOnly = (url: URL) => url.protocol === 'https:'

function verifier(clock: FakeClock, issuers: readonly TrustedIssuer[]) {
  return createBearerVerifier({ issuers: () => issuers, algorithms: ASYMMETRIC_ALGS, clockToleranceSec: 30, clock })
}

function status(r: BearerResult): string {
  return r.status === 'invalid' ? `invalid: ${r.description}` : r.status
}

t.test('an extra issuer with jwksUri: keys fetched with its first token, then kept', async (t) => {
  const idp = await startIssuer(t)
  const clock = fakeClock()
  const bearer = verifier(clock, [extraIssuer({ issuer: idp.url, jwksUri: `${idp.url}/keys` }, { timeoutMs: 2000, clock, urlAllowed: loopbackHttp })])
  t.equal(idp.hits.jwks, 0, 'nothing is fetched before a token arrives')
  const result = await bearer.verify(await idp.sign({ iss: idp.url, scope: 'a b' }), ['api'])
  t.equal(status(result), 'valid')
  if (result.status === 'valid') {
    t.equal(result.subject.issuer, idp.url)
    t.same([...result.subject.scopes], ['a', 'b'])
  }
  t.equal(status(await bearer.verify(await idp.sign({ iss: idp.url, jti: 'other' }), ['api'])), 'valid', 'a second token')
  t.same(idp.hits, { discovery: 0, jwks: 1 }, 'one JWKS fetch, no discovery')
})

t.test('an extra issuer without jwksUri: the jwks_uri of its discovery document', async (t) => {
  const idp = await startIssuer(t)
  const clock = fakeClock()
  const bearer = verifier(clock, [extraIssuer({ issuer: idp.url }, { timeoutMs: 2000, clock, urlAllowed: loopbackHttp })])
  t.equal(status(await bearer.verify(await idp.sign({ iss: idp.url }), ['api'])), 'valid')
  t.equal(status(await bearer.verify(await idp.sign({ iss: idp.url, aud: 'another-api' }), ['api'])), 'invalid: The token is not for this resource (aud).')
  t.equal(status(await bearer.verify(await idp.sign({ iss: 'https://someone.else.example' }), ['api'])), 'invalid: The token is not from an accepted issuer.')
  t.same(idp.hits, { discovery: 1, jwks: 1 })
})

t.test('a discovery document naming another issuer: unavailable, retried after the backoff', async (t) => {
  const idp = await startIssuer(t)
  idp.discoveredIssuer = `${idp.url}/another-tenant`
  const clock = fakeClock()
  const bearer = verifier(clock, [extraIssuer({ issuer: idp.url }, { timeoutMs: 2000, clock, urlAllowed: loopbackHttp, retryMs: 1000 })])
  const token = await idp.sign({ iss: idp.url })
  const first = await bearer.verify(token, ['api'])
  t.equal(status(first), 'unavailable')
  if (first.status === 'unavailable') t.match(String((first.cause as Error).message), /names the issuer .*another-tenant.*, not http:\/\/127\.0\.0\.1/, 'the cause names both issuers')
  t.same(idp.hits, { discovery: 1, jwks: 0 }, 'its JWKS is never fetched')
  t.equal(status(await bearer.verify(token, ['api'])), 'unavailable', 'within the backoff')
  t.equal(idp.hits.discovery, 1, 'without asking again')
  idp.discoveredIssuer = null
  clock.advance(1001)
  t.equal(status(await bearer.verify(token, ['api'])), 'valid', 'once the backoff is over and the document is right')
  t.same(idp.hits, { discovery: 2, jwks: 1 })
})

t.test('an issuer that cannot be reached: unavailable, with a backoff that doubles', async (t) => {
  const idp = await startIssuer(t)
  idp.mode = 'down'
  const clock = fakeClock()
  const bearer = verifier(clock, [extraIssuer({ issuer: idp.url, jwksUri: `${idp.url}/keys` }, { timeoutMs: 2000, clock, urlAllowed: loopbackHttp, retryMs: 1000 })])
  const token = await idp.sign({ iss: idp.url })
  t.equal(status(await bearer.verify(token, ['api'])), 'unavailable')
  clock.advance(1001)
  t.equal(status(await bearer.verify(token, ['api'])), 'unavailable', 'second failure')
  clock.advance(1500)
  t.equal(status(await bearer.verify(token, ['api'])), 'unavailable', 'within the doubled backoff: not tried')
  idp.mode = 'ok'
  t.equal(status(await bearer.verify(token, ['api'])), 'unavailable', 'still within it')
  t.equal(idp.hits.jwks, 0, 'the dropped connections were not counted as answers')
  clock.advance(600)
  t.equal(status(await bearer.verify(token, ['api'])), 'valid', 'after 2 s')
})

t.test('a jwks_uri over plain http that allowInsecureHttp does not allow: unavailable', async (t) => {
  const idp = await startIssuer(t)
  const clock = fakeClock()
  const bearer = verifier(clock, [extraIssuer({ issuer: idp.url }, { timeoutMs: 2000, clock, urlAllowed: httpsOnly })])
  const result = await bearer.verify(await idp.sign({ iss: idp.url }), ['api'])
  t.equal(status(result), 'unavailable')
  if (result.status === 'unavailable') t.match(String((result.cause as Error).message), /plain http/)
  t.equal(idp.hits.jwks, 0)
})

t.test('the provider not yet connected: its tokens are unavailable, not invalid', async (t) => {
  const clock = fakeClock()
  const bearer = verifier(clock, [{ issuer: 'https://idp.example', jwks: null }])
  const { privateKey } = await generateKeyPair('RS256')
  t.equal(status(await bearer.verify(await sign(privateKey, 'k', { iss: 'https://idp.example' }), ['api'])), 'unavailable')
  t.equal(status(await bearer.verify(await sign(privateKey, 'k', { iss: 'https://other.example' }), ['api'])), 'invalid: The token is not from an accepted issuer.')
})

t.test('scopes: scope (space-separated) and scp (a list or a string)', async (t) => {
  t.same([...scopesOf({ scope: 'a  b' })], ['a', 'b'])
  t.same([...scopesOf({ scp: ['c', 'd', 3] })], ['c', 'd'])
  t.same([...scopesOf({ scope: 'a', scp: 'b' })], ['a', 'b'])
  t.same([...scopesOf({})], [])
})
