/**
 * Protected-resource metadata (issue #10 point 5, RFC 9728) and tokens for a resource (RFC 8707), the
 * way an MCP client meets them: its request without a token gets a 401 whose challenge names the
 * metadata URL; the metadata names the authorization server and the scopes; the server's discovery
 * document gives its endpoints; an authorization-code flow with PKCE and `resource=` gets a token whose
 * `aud` is the resource; with it the request reaches the upstream, as the token's user. A token for
 * another audience (the client id) is refused with `invalid_token`, one without the required scope
 * with `insufficient_scope`. The metadata is served by Portcullis in both lanes (never proxied), also
 * at the bare well-known path; a configuration without a resource leaves those paths to the app.
 */
import t from 'tap'
import { decodeJwt } from 'jose'
import { startApp, startStack } from '../helpers/portcullis.ts'
import { providerToken } from '../helpers/provider-token.ts'
import { bearerChallenge as challenge, request, type TestResponse } from '../helpers/http.ts'
import { DEMO_USERS } from '../helpers/provider.ts'

const bob = DEMO_USERS[1]!

/** What an MCP client sends (Streamable HTTP): a JSON-RPC POST. */
function mcpCall(url: string, token?: string): Promise<TestResponse> {
  return request(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  })
}

t.test('an MCP client: 401 → metadata → discovery → token for the resource → through', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream, publicUrl }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/mcp' }, upstream, bearer: true, resource: `${publicUrl}/mcp`, requiredScopes: ['mcp:tools'] },
      ],
    }),
  })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  const publicUrl = stack.config.server.publicUrl
  const resource = `${publicUrl}/mcp`
  const metadataUrl = `${publicUrl}/.well-known/oauth-protected-resource/mcp`
  const expected = { resource, authorization_servers: [stack.provider.issuer], scopes_supported: ['mcp:tools'], bearer_methods_supported: ['header'] }

  // 1. No token: the challenge says where the metadata is and which scope to ask for.
  const first = await mcpCall(`${stack.proxy.url}/mcp`)
  t.equal(first.status, 401)
  t.same(challenge(first), { realm: new URL(publicUrl).host, scope: 'mcp:tools', resource_metadata: metadataUrl }, 'RFC 9728 §5.1, no error code')

  // 2. The metadata, from Portcullis itself in both lanes.
  for (const lane of [stack.proxy, slow]) {
    const before = stack.upstream.requests.length
    const res = await request(challenge(first).resource_metadata!.replace(publicUrl, lane.url), { headers: { origin: 'https://client.example' } })
    t.equal(res.status, 200, 'metadata served')
    t.same(res.json(), expected)
    t.match(res.headers['content-type'], /^application\/json/)
    t.equal(res.headers['cache-control'], 'public, max-age=300')
    t.equal(res.headers['access-control-allow-origin'], '*', 'browser-based clients may read it')
    t.equal(stack.upstream.requests.length, before, 'never proxied')
    const bare = await request(`${lane.url}/.well-known/oauth-protected-resource`)
    t.same(bare.json(), expected, 'the bare path: the only resource')
    const head = await request(`${lane.url}/.well-known/oauth-protected-resource/mcp`, { method: 'HEAD' })
    t.equal(head.status, 200, 'HEAD')
    const other = await request(`${lane.url}/.well-known/oauth-protected-resource/other`)
    t.equal(other.status, 404, 'another resource path: 404')
    t.equal(other.headers['access-control-allow-origin'], '*', 'which a browser-based client can see')
    const preflight = await request(metadataUrl.replace(publicUrl, lane.url), {
      method: 'OPTIONS',
      headers: { origin: 'https://client.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'mcp-protocol-version' },
    })
    t.equal(preflight.status, 204, 'a CORS preflight is answered')
    t.equal(preflight.headers['access-control-allow-origin'], '*')
    t.equal(preflight.headers['access-control-allow-headers'], 'mcp-protocol-version')
    t.equal(stack.upstream.requests.length, before, 'none of them proxied')
  }
  const metadata = (await request(metadataUrl)).json<typeof expected>()
  t.equal(metadata.resource, resource, 'the client checks that the metadata is for the resource it asked (RFC 9728 §3.3)')

  // 3. The authorization server's discovery document.
  const server = metadata.authorization_servers[0]!
  const discovery = (await request(`${server}/.well-known/openid-configuration`)).json<{ issuer: string; authorization_endpoint: string; token_endpoint: string }>()
  t.equal(discovery.issuer, server)

  // 4. A token for the resource, with the scope the metadata names.
  const flow = {
    authorizationEndpoint: discovery.authorization_endpoint,
    tokenEndpoint: discovery.token_endpoint,
    clientId: stack.clientId,
    clientSecret: stack.clientSecret,
    redirectUri: `${publicUrl}/oauth2/callback`,
    user: bob,
  }
  const tokens = await providerToken({ ...flow, scope: ['openid', ...metadata.scopes_supported].join(' '), resource })
  const claims = decodeJwt(tokens.access_token)
  t.equal(claims.aud, resource, 'aud is the resource (RFC 8707)')
  t.equal(claims.scope, 'mcp:tools')

  // 5. Through, as the token's user, in both lanes.
  for (const lane of [stack.proxy, slow]) {
    const before = stack.upstream.requests.length
    const res = await mcpCall(`${lane.url}/mcp`, tokens.access_token)
    t.equal(res.status, 200, 'forwarded')
    const seen = stack.upstream.requests.at(-1)
    t.equal(stack.upstream.requests.length, before + 1)
    t.equal(seen?.method, 'POST')
    t.equal(seen?.headers['x-auth-request-user'], 'bob')
    t.equal(seen?.headers['x-auth-request-email'], 'bob@example.com')
    t.equal(seen?.headers['x-auth-request-groups'], 'engineering')
    t.equal(seen?.headers.authorization, undefined, 'the token stays with Portcullis')
    t.match(seen?.body, /tools\/list/, 'the body went along')
  }

  // 6. A token for another audience (the provider's default resource: aud = the client id).
  const forClient = await providerToken({ ...flow, scope: 'openid' })
  t.equal(decodeJwt(forClient.access_token).aud, stack.clientId)
  const wrongAudience = await mcpCall(`${stack.proxy.url}/mcp`, forClient.access_token)
  t.equal(wrongAudience.status, 401)
  t.same(challenge(wrongAudience), {
    realm: new URL(publicUrl).host,
    error: 'invalid_token',
    error_description: 'The token is not for this resource (aud).',
    scope: 'mcp:tools',
    resource_metadata: metadataUrl,
  })

  // 7. A token for the resource without the required scope.
  const readOnly = await providerToken({ ...flow, scope: 'openid api:read', resource })
  t.equal(decodeJwt(readOnly.access_token).scope, 'api:read')
  const insufficient = await mcpCall(`${stack.proxy.url}/mcp`, readOnly.access_token)
  t.equal(insufficient.status, 403)
  t.same(challenge(insufficient), {
    realm: new URL(publicUrl).host,
    error: 'insufficient_scope',
    error_description: 'The token does not carry the scopes this API requires. (routes[1].requiredScopes)',
    scope: 'mcp:tools',
    resource_metadata: metadataUrl,
  })
})

t.test('several resources: each at its own path; the bare path for the one at the root, else 404', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream, publicUrl }) => ({
      provider: { extraIssuers: [{ issuer: 'http://127.0.0.1:9', jwksUri: 'http://127.0.0.1:9/keys' }] },
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/mcp' }, upstream, bearer: true, resource: `${publicUrl}/mcp`, requiredScopes: ['mcp:tools'] },
        { match: { pathPrefix: '/mcp/admin' }, upstream, bearer: true, resource: `${publicUrl}/mcp`, requiredScopes: ['mcp:tools', 'api:write'] },
        { match: { pathPrefix: '/api' }, upstream, bearer: true, resource: `${publicUrl}/api/v1/` },
      ],
    }),
  })
  const base = `${stack.proxy.url}/.well-known/oauth-protected-resource`
  const mcp = (await request(`${base}/mcp`)).json<Record<string, unknown>>()
  t.same(mcp.scopes_supported, ['mcp:tools', 'api:write'], 'the scopes of every route of the resource')
  t.same(mcp.authorization_servers, [stack.provider.issuer, 'http://127.0.0.1:9'], 'the extra issuers too')
  const api = await request(`${base}/api/v1`)
  t.equal(api.status, 200, 'a resource with a trailing slash: its path without it')
  t.same(api.json<Record<string, unknown>>().resource, `${stack.config.server.publicUrl}/api/v1/`)
  t.notOk('scopes_supported' in api.json<Record<string, unknown>>(), 'no scopes: none listed')
  t.equal((await request(base)).status, 404, 'the bare path: no resource at the root, and more than one')
  t.equal(stack.upstream.requests.length, 0, 'nothing proxied')
})

t.test('without a resource the well-known paths are the app\'s: proxied like any other', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({ routes: [{ match: { pathPrefix: '/.well-known/' }, upstream, public: true }, { match: { pathPrefix: '/' }, upstream }] }),
  })
  const slow = await startApp(t, stack.proxy.runtime, { fastLane: false })
  for (const lane of [stack.proxy, slow]) {
    for (const path of ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp']) {
      const before = stack.upstream.requests.length
      const res = await request(`${lane.url}${path}`, { headers: { 'x-auth-request-user': 'forged' } })
      t.equal(res.status, 200, `${path}: the app answers`)
      t.equal(stack.upstream.requests.length, before + 1)
      t.equal(stack.upstream.requests.at(-1)?.url, path)
      t.equal(stack.upstream.requests.at(-1)?.headers['x-auth-request-user'], undefined, 'screened as any request')
    }
  }
})
