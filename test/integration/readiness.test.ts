/**
 * Readiness after startup (issue #12 point 6): once the provider was connected, its going down does
 * not make `/readyz` 503 (existing sessions are still served: taking every replica out of the load
 * balancer would stop those too); its state is in the body (`provider: unreachable` and why) and in
 * the log, once per change, and turns `ok` again by itself. Before the first connection the provider
 * still decides readiness (test/integration/idp-outage.test.ts). No Redis here.
 */
import t from 'tap'
import { reserveHeldPort, reservePort, startStack, startPortcullis } from '../helpers/portcullis.ts'
import { configFor } from '../helpers/config.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { eventually } from '../helpers/wait.ts'

interface Readiness {
  status: string
  provider: string
  providerError?: string
  redis?: string
}

t.test('the provider going down after startup leaves /readyz 200, with its state in the body and the log', async (t) => {
  const logs: Array<{ event: string; message?: string }> = []
  const stack = await startStack(t, {
    runtime: {
      retry: { initialMs: 50, maxMs: 400, probeMs: 100 },
      providerEvents: {
        onStateChange: (up) => logs.push({ event: up ? 'reachable' : 'unreachable' }),
      },
    },
  })
  const { proxy, provider, upstream } = stack
  const first = await request(`${proxy.url}/readyz`)
  t.equal(first.status, 200)
  t.strictSame(first.json<Readiness>(), { status: 'ready', provider: 'ok' }, 'ready, provider ok, no redis key without session.redis')

  const { finalLocation, jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  t.equal((await request(finalLocation, { jar, headers: { accept: 'application/json' } })).status, 200, 'signed in')

  await provider.close()
  t.ok(await eventually(async () => (await request(`${proxy.url}/readyz`)).json<Readiness>().provider === 'unreachable', { timeoutMs: 10_000 }), 'the probe sees the provider gone')
  const down = await request(`${proxy.url}/readyz`)
  t.equal(down.status, 200, '/readyz stays 200 while only the provider is down')
  t.equal(down.headers['retry-after'], undefined)
  const body = down.json<Readiness>()
  t.equal(body.status, 'ready')
  t.match(body.providerError, /identity provider does not answer/, 'with why')
  t.notMatch(down.body, /ECONNREFUSED|127\.0\.0\.1/, 'no address or socket error in the public body')

  const before = upstream.requests.length
  const page = await request(`${proxy.url}/app/still-served`, { jar, headers: { accept: 'application/json' } })
  t.equal(page.status, 200, 'an existing session is still served')
  t.equal(upstream.requests.length, before + 1)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], 'alice', 'as its user')
  t.equal((await request(`${proxy.url}/healthz`)).status, 200)

  // Several probes fail; the change is reported once.
  await new Promise((r) => setTimeout(r, 350))
  t.strictSame(logs.map((l) => l.event), ['unreachable'], 'one report for the outage')

  await startTestProvider(t, {
    port: provider.port,
    clients: [{ clientId: stack.clientId, clientSecret: stack.clientSecret, redirectUris: [`${proxy.url}/oauth2/callback`] }],
    allowLoopbackFetch: true,
  })
  t.ok(await eventually(async () => (await request(`${proxy.url}/readyz`)).json<Readiness>().provider === 'ok', { timeoutMs: 10_000 }), 'back by itself')
  const back = await request(`${proxy.url}/readyz`)
  t.equal(back.status, 200)
  t.strictSame(back.json<Readiness>(), { status: 'ready', provider: 'ok' }, 'no providerError once it answers')
  t.strictSame(logs.map((l) => l.event), ['unreachable', 'reachable'], 'and one report for its return')
})

t.test('before the first connection the provider still decides: /readyz 503 while connecting', async (t) => {
  const proxyPort = await reserveHeldPort()
  const config = configFor({
    issuer: `http://127.0.0.1:${await reservePort()}`,
    clientId: 'never',
    clientSecret: 'never-connects-secret-long-enough',
    upstream: 'http://127.0.0.1:1',
    publicUrl: `http://127.0.0.1:${proxyPort}`,
  })
  const proxy = await startPortcullis(t, config, { port: proxyPort })
  const res = await request(`${proxy.url}/readyz`)
  t.equal(res.status, 503)
  t.equal(res.headers['retry-after'], '5')
  const body = res.json<Readiness>()
  t.equal(body.status, 'not ready')
  t.equal(body.provider, 'connecting')
  t.equal(body.redis, undefined, 'no redis key without session.redis')
  const nav = await request(`${proxy.url}/app`, { headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 503, 'and a login cannot start')
})
