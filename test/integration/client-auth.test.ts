/**
 * A wrong client secret, against the real provider: the token endpoint answers `invalid_client` (a
 * `WWW-Authenticate` challenge for HTTP Basic client authentication, a JSON body for
 * client_secret_post). The user gets a "Sign-in is misconfigured" page (502) that says it is the
 * operator's problem and gives the request id; the operator gets a log line that names client
 * authentication at the token endpoint, the URL, status and error code, and the two settings to
 * look at. No secret and no `[object …]` anywhere.
 */
import t from 'tap'
import { request } from '../helpers/http.ts'
import { authorizeUntilCallback, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { configFor } from '../helpers/config.ts'
import { reserveHeldPort, startPortcullis } from '../helpers/portcullis.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { eventually } from '../helpers/wait.ts'

const WRONG_SECRET = 'this-is-not-the-registered-client-secret'

for (const method of ['client_secret_basic', 'client_secret_post'] as const) {
  t.test(`a wrong client secret (${method}): a misconfiguration page and a log line that names it`, async (t) => {
    const port = await reserveHeldPort()
    const publicUrl = `http://127.0.0.1:${port}`
    const clientId = 'portcullis-client-auth'
    const clientSecret = 'the-registered-client-secret-0123456789'
    const provider = await startTestProvider(t, {
      clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`], tokenEndpointAuthMethod: method }],
    })
    const upstream = await startTestUpstream(t)
    const config = configFor({
      issuer: provider.issuer,
      clientId,
      clientSecret: WRONG_SECRET,
      upstream: upstream.url,
      publicUrl,
      overrides: { provider: { tokenEndpointAuthMethod: method } },
    })
    const proxy = await startPortcullis(t, config, { port })
    await proxy.runtime.provider.whenReady()
    t.not(clientSecret, WRONG_SECRET, 'the provider knows another secret than Portcullis is configured with')
    const tokenEndpoint = `${provider.issuer}/oauth/token`

    for (const [label, headers, html] of [
      ['browser', NAVIGATION_HEADERS, true],
      ['API client', { accept: 'application/json' }, false],
    ] as const) {
      const { jar, callbackUrl } = await authorizeUntilCallback({ proxyUrl: proxy.url, path: '/wanted' })
      const before = proxy.logs.length
      const res = await request(callbackUrl, { jar, headers: { ...headers, 'x-request-id': `client-auth-${label.replace(' ', '-')}` } })
      t.equal(res.status, 502, `${label}: 502`)
      t.equal(res.headers['x-request-id'], `client-auth-${label.replace(' ', '-')}`, `${label}: the request id is sent back`)
      t.notOk(jar.get('_portcullis'), `${label}: no session`)
      t.notOk(res.body.includes(WRONG_SECRET) || res.body.includes(clientSecret), `${label}: no secret in the body`)
      t.notMatch(res.body, /\[object/, `${label}: no [object …] in the body`)
      if (html) {
        t.match(res.headers['content-type'], /^text\/html/)
        t.match(res.body, /<h1>Sign-in is misconfigured<\/h1>/, 'the page says sign-in is misconfigured')
        t.match(res.body, /configuration problem for the operator of this site, not something you did/, 'an operator problem, not the user’s')
        t.match(res.body, /request client-auth-browser/, 'the page gives the request id')
        t.notMatch(res.body, /could not be understood/, 'not "a response that could not be understood"')
        t.match(res.body, /IDP_CLIENT_AUTH/)
      } else {
        const body = res.json<{ error: string; requestId: string; providerError?: string; message: string }>()
        t.equal(body.error, 'IDP_CLIENT_AUTH')
        t.equal(body.requestId, 'client-auth-API-client', 'the JSON gives the request id')
        t.equal(body.providerError, 'invalid_client', 'and the provider’s code')
      }

      t.ok(await eventually(() => proxy.logs.slice(before).some((l) => l.path === '/oauth2/callback')), `${label}: the callback was logged`)
      const line = proxy.logs.slice(before).find((l) => l.path === '/oauth2/callback') as Record<string, unknown>
      t.equal(line.level, 50, 'at error level (a 502)')
      t.match(line.err, { type: 'PortcullisError', code: 'IDP_CLIENT_AUTH' }, 'the error is named')
      const problem = String(line.problem)
      t.match(problem, /^client authentication failed at the token endpoint/, 'the log line says client authentication failed at the token endpoint')
      t.ok(problem.includes(`url: ${tokenEndpoint}`), 'with the token endpoint URL')
      t.match(problem, /answer: HTTP 401 invalid_client/, 'its status and error code')
      t.ok(problem.includes(`check: provider.clientSecret and provider.tokenEndpointAuthMethod (now ${method})`), 'and the settings to look at')
    }

    const text = proxy.logText.join('\n')
    t.notMatch(text, /\[object/, 'no log line holds [object …]')
    t.notOk(text.includes(WRONG_SECRET) || text.includes(clientSecret), 'no secret in the logs')
    t.notMatch(text, /eyJ/, 'no JWT in the logs')
  })
}
