import t from 'tap'
import { reserveHeldPort, reservePort, startPortcullis } from '../helpers/portcullis.ts'
import { configFor } from '../helpers/config.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'


t.test('provider down at start: Portcullis starts, says 503, and recovers by itself', async (t) => {
  const providerPort = await reservePort()
  const proxyPort = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const upstream = await startTestUpstream(t)
  const clientId = 'outage-client'
  const clientSecret = 'outage-client-secret-long-enough'
  const config = configFor({ issuer: `http://127.0.0.1:${providerPort}`, clientId, clientSecret, upstream: upstream.url, publicUrl })
  const proxy = await startPortcullis(t, config, { port: proxyPort })

  const health = await request(`${proxy.url}/healthz`)
  t.equal(health.status, 200, 'alive while the provider is down')
  const ready = await request(`${proxy.url}/readyz`)
  t.equal(ready.status, 503, 'not ready while the provider is down')

  const nav = await request(`${proxy.url}/app`, { headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 503, 'a protected navigation gets a 503 page, not a redirect to a dead provider')
  t.equal(nav.headers.location, undefined)
  t.ok(nav.headers['retry-after'], 'Retry-After set')
  t.match(nav.body, /temporarily unavailable/i)
  t.notMatch(nav.body, /\bat \S+\.(ts|js):\d+/, 'no stack trace')
  const start = await request(`${proxy.url}/oauth2/start?rd=/app`, { headers: NAVIGATION_HEADERS })
  t.equal(start.status, 503)
  t.same(start.setCookies, [], 'no login transaction while the provider is down')
  const api = await request(`${proxy.url}/api`, { headers: { accept: 'application/json' } })
  t.equal(api.status, 503)
  t.equal(api.json<{ error: string }>().error, 'NOT_READY')
  t.equal(upstream.requests.length, 0)
  t.ok(
    proxy.logs.some((l) => l.msg === 'request' && l.status === 503),
    'the refusals were logged',
  )

  await startTestProvider(t, { port: providerPort, clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`] }] })
  t.ok(await eventually(async () => (await request(`${proxy.url}/readyz`)).status === 200), 'ready once the provider is up')
  const { finalLocation, jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  t.equal(finalLocation, `${publicUrl}/app`)
  const page = await request(finalLocation, { jar, headers: { accept: 'application/json' } })
  t.equal(page.status, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], 'alice')
})
