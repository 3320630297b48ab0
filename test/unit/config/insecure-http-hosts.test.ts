/**
 * provider.allowInsecureHttpHosts: the named hosts (and only they, exactly) join loopback as places
 * where provider.allowInsecureHttp accepts plain http. It never turns plain http on by itself, takes
 * host names only, and is announced by a start-up warning. deploy/compose uses it for its provider.
 */
import t from 'tap'
import { loadConfig } from '../../../src/config/index.ts'
import { providerUrlAllowed, validateConfig } from '../../../src/config/validate.ts'
import type { ConfigIssue } from '../../../src/config/types.ts'

/** A valid config as a plain tree whose provider gets `provider` merged in. */
function withProvider(provider: Record<string, unknown>): ConfigIssue[] {
  const raw = {
    server: { publicUrl: 'http://app.localtest.me:4180' },
    provider: { issuer: 'https://idp.example.com', clientId: 'portcullis', clientSecret: 'client-secret-value', ...provider },
    session: { secrets: ['0123456789abcdef0123456789abcdef'] },
    routes: [{ upstream: 'http://demo-app:80' }],
  }
  const result = validateConfig(raw)
  return result.ok ? [] : result.issues
}

const ISSUER = 'http://id.localtest.me:9080/realms/portcullis'

t.test('a listed host may be reached over plain http, with the switch', async (t) => {
  t.same(withProvider({ issuer: ISSUER, allowInsecureHttp: true, allowInsecureHttpHosts: ['id.localtest.me'] }), [])
  t.same(withProvider({ issuer: ISSUER, allowInsecureHttp: true, allowInsecureHttpHosts: ['ID.LocalTest.ME'] }), [], 'compared case-insensitively')
  t.same(withProvider({ issuer: 'http://keycloak:8080/realms/x', allowInsecureHttp: true, allowInsecureHttpHosts: ['keycloak'] }), [], 'a one-label compose service name')
  t.same(
    withProvider({ issuer: 'http://127.0.0.1:9000', allowInsecureHttp: true, allowInsecureHttpHosts: ['id.localtest.me'] }),
    [],
    'loopback stays allowed next to the list',
  )
  t.same(
    withProvider({
      issuer: ISSUER,
      allowInsecureHttp: true,
      allowInsecureHttpHosts: ['id.localtest.me', 'keys.localtest.me'],
      endpoints: { jwks: 'http://keys.localtest.me/keys' },
      extraIssuers: [{ issuer: 'http://keys.localtest.me/other', jwksUri: 'http://keys.localtest.me/other/keys' }],
    }),
    [],
    'endpoints and extra issuers follow the same list',
  )
})

t.test('the list does not turn plain http on', async (t) => {
  t.same(withProvider({ issuer: ISSUER, allowInsecureHttpHosts: ['id.localtest.me'] }), [
    {
      path: 'provider.allowInsecureHttpHosts',
      message: 'needs provider.allowInsecureHttp: true (the list only widens where that switch applies; it does not turn it on)',
    },
    { path: 'provider.issuer', message: 'plain http to id.localtest.me (listed in provider.allowInsecureHttpHosts) needs provider.allowInsecureHttp: true' },
  ])
  t.same(
    withProvider({ issuer: 'https://idp.example.com', allowInsecureHttpHosts: ['id.localtest.me'] }).map((i) => i.path),
    ['provider.allowInsecureHttpHosts'],
    'even when nothing uses http: a list without the switch is a mistake',
  )
})

t.test('only the hosts named, exactly', async (t) => {
  const refused = (issuer: string) => withProvider({ issuer, allowInsecureHttp: true, allowInsecureHttpHosts: ['id.localtest.me'] })
  const message = (host: string) =>
    `plain http is refused for ${host}: use https (provider.allowInsecureHttp only allows localhost, 127.0.0.0/8, [::1] and provider.allowInsecureHttpHosts)`
  t.same(refused('http://evil.id.localtest.me/'), [{ path: 'provider.issuer', message: message('evil.id.localtest.me') }], 'not a subdomain')
  t.same(refused('http://id.localtest.me.evil.example/'), [{ path: 'provider.issuer', message: message('id.localtest.me.evil.example') }], 'not a longer name')
  t.same(refused('http://localtest.me/'), [{ path: 'provider.issuer', message: message('localtest.me') }], 'not the parent')
  t.same(
    withProvider({ issuer: ISSUER, allowInsecureHttp: true, allowInsecureHttpHosts: ['id.localtest.me'], endpoints: { token: 'http://10.0.0.5/token' } }),
    [{ path: 'provider.endpoints.token', message: message('10.0.0.5') }],
    'an endpoint on another host',
  )
  t.same(
    withProvider({ issuer: 'http://idp.example.com', allowInsecureHttp: true }),
    [{ path: 'provider.issuer', message: 'plain http is refused for idp.example.com: use https (provider.allowInsecureHttp only allows localhost, 127.0.0.0/8 and [::1])' }],
    'without a list the message is the loopback one',
  )
})

t.test('entries are host names, nothing wider', async (t) => {
  const bad = ['*.localtest.me', '.localtest.me', 'http://id.localtest.me', 'id.localtest.me:9080', 'id.localtest.me/realms', '10.0.0.5', '', 'a b']
  const issues = withProvider({ issuer: 'https://idp.example.com', allowInsecureHttp: true, allowInsecureHttpHosts: bad })
  t.same(
    issues.map((i) => i.path),
    bad.map((_, i) => `provider.allowInsecureHttpHosts[${i}]`),
    'every entry is refused at its index',
  )
  t.match(issues[0]?.message, /must be a host name such as id\.localtest\.me/)
  t.equal(issues[5]?.message, 'must be a host name, not an IP address')
})

t.test('a start-up warning names the hosts; the environment can set the list', async (t) => {
  const text = `
server: { publicUrl: "http://app.localtest.me:4180" }
provider: { issuer: "${ISSUER}", allowInsecureHttp: true, clientId: a, clientSecret: b }
session: { secrets: ["0123456789abcdef0123456789abcdef"] }
routes: [{ upstream: "http://demo-app:80" }]
`
  const refused = loadConfig({ text, env: {} })
  t.equal(refused.ok, false, 'without the list the http issuer is refused')

  const loaded = loadConfig({ text, env: { PORTCULLIS_PROVIDER_ALLOW_INSECURE_HTTP_HOSTS: 'id.localtest.me' } })
  t.equal(loaded.ok, true, 'PORTCULLIS_PROVIDER_ALLOW_INSECURE_HTTP_HOSTS sets it (one host: a list of one)')
  if (!loaded.ok) return
  t.same(loaded.config.provider.allowInsecureHttpHosts, ['id.localtest.me'])
  t.same(loaded.warnings.filter((w) => w.startsWith('provider.')), [
    'provider.allowInsecureHttp is on with provider.allowInsecureHttpHosts (id.localtest.me): the provider is reached over plain http, also across a network, where codes and tokens can be read (local stacks only; never in production)',
  ])
})

t.test('providerUrlAllowed: what the runtime may fetch from an extra issuer', async (t) => {
  const on = { allowInsecureHttp: true, allowInsecureHttpHosts: ['id.localtest.me'] }
  t.equal(providerUrlAllowed(new URL('https://anything.example/keys'), { allowInsecureHttp: false, allowInsecureHttpHosts: [] }), true, 'https always')
  t.equal(providerUrlAllowed(new URL('http://id.localtest.me:9080/keys'), on), true, 'a listed host with the switch')
  t.equal(providerUrlAllowed(new URL('http://127.0.0.1:9080/keys'), on), true, 'loopback with the switch')
  t.equal(providerUrlAllowed(new URL('http://other.localtest.me/keys'), on), false, 'a host not listed')
  t.equal(providerUrlAllowed(new URL('http://id.localtest.me/keys'), { ...on, allowInsecureHttp: false }), false, 'a listed host without the switch')
  t.equal(providerUrlAllowed(new URL('ftp://id.localtest.me/keys'), on), false, 'not http(s)')
})
