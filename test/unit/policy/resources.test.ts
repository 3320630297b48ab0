/**
 * Which protected resource's metadata a request asks for (`resourceFor` in src/policy/routes.ts,
 * RFC 9728 §3.1): the resource whose well-known path it is; for the bare path, the resource at its
 * origin's root, or the only one; several at one path: the one on the request's host; else none.
 */
import t from 'tap'
import { compileRoutes, resourceFor } from '../../../src/policy/routes.ts'
import type { RouteConfig } from '../../../src/config/types.ts'

function table(resources: Array<[string, string, string[]?]>) {
  const configs = resources.map(([host, resource, scopes]) => ({
    match: { host, pathPrefix: new URL(resource).pathname, caseInsensitive: false },
    upstream: 'http://127.0.0.1:8080',
    public: false,
    passClientAuthorization: false,
    require: { mfa: false, acr: [], maxAuthAge: 0 },
    loginParams: {},
    bearer: true,
    audience: '',
    requiredScopes: scopes ?? [],
    resource,
    allowPreflight: false,
  })) as unknown as RouteConfig[]
  return compileRoutes(configs, undefined, 'client').resources
}

const P = '/.well-known/oauth-protected-resource'

t.test('one resource: its path, and the bare path', async (t) => {
  const r = table([['', 'https://api.example/mcp', ['mcp:tools']]])
  t.same(r, [{ resource: 'https://api.example/mcp', host: 'api.example', metadataPath: `${P}/mcp`, scopes: ['mcp:tools'] }])
  t.equal(resourceFor(r, 'api.example', `${P}/mcp`)?.resource, 'https://api.example/mcp')
  t.equal(resourceFor(r, 'api.example', `${P}/mcp/`)?.resource, 'https://api.example/mcp', 'a trailing slash')
  t.equal(resourceFor(r, 'elsewhere.example', `${P}/mcp`)?.resource, 'https://api.example/mcp', 'one candidate: the Host is not needed')
  t.equal(resourceFor(r, undefined, P)?.resource, 'https://api.example/mcp', 'the bare path: the only resource')
  t.equal(resourceFor(r, 'api.example', `${P}/mc`), null)
  t.equal(resourceFor(r, 'api.example', `${P}/mcp/x`), null)
})

t.test('several: the bare path only for a root resource; one path on two hosts by Host', async (t) => {
  const r = table([
    ['a.example', 'https://a.example/mcp'],
    ['b.example', 'https://b.example/mcp'],
    ['', 'https://c.example/api'],
  ])
  t.equal(resourceFor(r, 'a.example', P), null, 'no root resource, more than one: none')
  t.equal(resourceFor(r, 'B.Example', `${P}/mcp`)?.resource, 'https://b.example/mcp', 'by Host')
  t.equal(resourceFor(r, 'c.example', `${P}/mcp`), null, 'ambiguous, and the Host names neither')
  t.equal(resourceFor(r, 'c.example', `${P}/api`)?.resource, 'https://c.example/api')
  const root = table([['', 'https://a.example/'], ['', 'https://a.example/mcp']])
  t.equal(resourceFor(root, 'a.example', P)?.resource, 'https://a.example/', 'a resource at the root has the bare path')
})

t.test('routes of one resource: one entry, every scope once', async (t) => {
  const r = table([['', 'https://api.example/mcp', ['mcp:tools']], ['', 'https://api.example/mcp', ['mcp:tools', 'api:write']]])
  t.same(r.map((x) => x.scopes), [['mcp:tools', 'api:write']])
})
