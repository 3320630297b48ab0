/**
 * Two Portcullis processes sharing one real redis-server behind a round-robin nginx front (issue #12
 * point 3), once with `session.store: redis` and once with the cookie store and Redis for
 * coordination only. Nothing is sticky: each request may land on either replica.
 *
 * - A session made by the replica that handled the callback is served by the other one.
 * - 50 parallel requests, split across both replicas, on a session whose access token is due for
 *   refresh: exactly one refresh_token grant reaches the provider, and every request is answered with
 *   the user's identity.
 * - A back-channel logout the provider posts to replica A ends the session on replica B at once.
 */
import t from 'tap'
import type { Test } from 'tap'
import { startRedis } from '../helpers/redis.ts'
import { DEMO_USERS, PROVIDER_ROUTES, startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { rawConfigFor } from '../helpers/config.ts'
import { holdPorts, servedBy, startReplicas } from '../helpers/replicas.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { CookieJar, request } from '../helpers/http.ts'
import { waitUntil } from '../helpers/wait.ts'

const alice = DEMO_USERS[0]!
const CLIENT = { clientId: 'portcullis-replicas', clientSecret: 'replicas-client-secret-0123456789' }
/** Access tokens live 245 s and are refreshed 240 s ahead: due 5 s after they were issued. */
const ACCESS_TTL_SEC = 245
const REFRESH_AHEAD = '4m'

/** A jar with only the Portcullis session cookies of `jar`, sent to `url` (another replica's origin). */
function sessionCookiesFor(jar: CookieJar, url: string): CookieJar {
  const copy = new CookieJar()
  for (const c of jar.all()) if (/^_portcullis(_\d+)?$/.test(c.name)) copy.set(c.name, c.value, { url })
  return copy
}

async function scenario(t: Test, store: 'redis' | 'cookie'): Promise<void> {
  const redis = await startRedis(t)
  const [front, a, b] = await holdPorts(3)
  if (front === undefined || a === undefined || b === undefined) throw new Error('ports')
  const upstream = await startTestUpstream(t)
  const provider = await startTestProvider(t, {
    clients: [{ ...CLIENT, redirectUris: [`${front.url}/oauth2/callback`], backchannelLogoutUri: `${a.url}/oauth2/backchannel-logout` }],
    accessTokenTtl: ACCESS_TTL_SEC,
    allowLoopbackFetch: true,
  })
  const config = (port: number) =>
    JSON.stringify(
      rawConfigFor({
        issuer: provider.issuer,
        ...CLIENT,
        upstream: upstream.url,
        publicUrl: front.url,
        overrides: {
          server: { listen: `127.0.0.1:${port}`, trustedProxies: ['127.0.0.1'] },
          session: { store, refreshAhead: REFRESH_AHEAD, redis: { url: redis.url, keyPrefix: 'replicas:' } },
        },
      }),
    )
  const stack = await startReplicas(t, front, [a, b], config)
  const [ra, rb] = stack.replicas
  if (ra === undefined || rb === undefined) throw new Error('replicas')
  await waitUntil(async () => (await request(`${ra.url}/readyz`)).status === 200 && (await request(`${rb.url}/readyz`)).status === 200, 'both replicas ready', 15_000)

  // Log in through the front; the replica that handled the callback made the session.
  const { jar } = await login({ proxyUrl: stack.url, user: alice })
  const loggedInAt = Date.now()
  await waitUntil(() => servedBy(stack.replicas, '/oauth2/callback').reduce((x, y) => x + y, 0) === 1, 'the callback in an access log', 5_000)
  const [callbackOnA] = servedBy(stack.replicas, '/oauth2/callback')
  const maker = callbackOnA === 1 ? ra : rb
  const other = maker === ra ? rb : ra
  t.ok(jar.get('_portcullis'), `${store}: the browser holds a session cookie`)

  const onOther = await request(`${other.url}/made-elsewhere`, { jar: sessionCookiesFor(jar, other.url), headers: { accept: 'application/json' } })
  t.equal(onOther.status, 200, `${store}: the replica that did not make the session serves it`)
  t.equal(upstream.requests.at(-1)?.headers['x-forwarded-user'], alice.id, `${store}: with alice's identity`)
  if (store === 'redis') {
    t.match(jar.get('_portcullis') ?? '', /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/, 'the redis store: the cookie is a ticket, not the session')
  }

  // Wait until the access token is due for refresh, then 50 requests at once through the front.
  const due = loggedInAt + (ACCESS_TTL_SEC - 240) * 1000 + 1000
  await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())))
  const refreshesBefore = provider.requests.filter((r) => r.grantType === 'refresh_token').length
  t.equal(refreshesBefore, 0, `${store}: no refresh yet`)
  const since = stack.replicas.map((r) => r.logs.length)
  const cookieHeader = jar
    .all()
    .filter((c) => /^_portcullis(_\d+)?$/.test(c.name))
    .map((c) => `${c.name}=${c.value}`)
    .join('; ')
  const answers = await Promise.all(
    Array.from({ length: 50 }, (_, i) => request(`${stack.url}/blast/${i}`, { headers: { cookie: cookieHeader, accept: 'application/json' } })),
  )
  t.same(
    answers.map((r) => r.status),
    Array.from({ length: 50 }, () => 200),
    `${store}: all 50 answered 200`,
  )
  const blasts = upstream.requests.filter((r) => r.url.startsWith('/blast/'))
  t.equal(blasts.length, 50, `${store}: all 50 reached the app`)
  t.ok(
    blasts.every((r) => r.headers['x-forwarded-user'] === alice.id),
    `${store}: each with alice's identity`,
  )
  await waitUntil(() => stack.replicas.every((r, i) => r.logs.slice(since[i]).filter((l) => String(l.path).startsWith('/blast/')).length > 0), 'both replicas served part of the 50', 5_000)
  const split = stack.replicas.map((r, i) => r.logs.slice(since[i]).filter((l) => l.msg === 'request' && String(l.path).startsWith('/blast/')).length)
  t.ok(split.every((n) => n > 0), `${store}: split across both replicas (${split.join(' + ')})`)
  const refreshes = provider.requests.filter((r) => r.grantType === 'refresh_token').length
  t.equal(refreshes, 1, `${store}: exactly one refresh at the provider for 50 requests on two replicas`)

  // The provider ends alice's session; its back-channel logout goes to replica A only.
  const backchannelBefore = ra.logs.length
  const endSession = `${provider.issuer}${PROVIDER_ROUTES.end_session}`
  const page = await request(endSession, { headers: NAVIGATION_HEADERS, jar })
  t.ok(parseForm(page.body, endSession), `${store}: the provider's logout confirmation`)
  await submitForm({ url: endSession, body: page.body }, jar)
  await waitUntil(() => ra.logs.slice(backchannelBefore).some((l) => l.msg === 'request' && l.route === 'auth:backchannel'), 'the logout token at replica A', 10_000)
  const received = ra.logs.slice(backchannelBefore).find((l) => l.msg === 'request' && l.route === 'auth:backchannel')
  t.equal(received?.status, 200, `${store}: replica A accepted the logout token`)
  t.notOk(
    rb.logs.some((l) => l.msg === 'request' && l.route === 'auth:backchannel'),
    `${store}: replica B never received it`,
  )
  const before = upstream.requests.length
  const nav = await request(`${rb.url}/after-logout`, { jar: sessionCookiesFor(jar, rb.url), headers: NAVIGATION_HEADERS })
  t.equal(nav.status, 302, `${store}: on replica B the session has ended: a navigation goes to login`)
  t.match(String(nav.headers.location), /\/oauth2\/start/, `${store}: to /oauth2/start`)
  const api = await request(`${rb.url}/after-logout`, { jar: sessionCookiesFor(jar, rb.url), headers: { accept: 'application/json' } })
  t.equal(api.status, 401, `${store}: an API call on replica B is a 401`)
  const onA = await request(`${ra.url}/after-logout`, { jar: sessionCookiesFor(jar, ra.url), headers: { accept: 'application/json' } })
  t.equal(onA.status, 401, `${store}: and on replica A too`)
  t.equal(upstream.requests.length, before, `${store}: nothing after the logout reached the app`)
}

t.test('store: redis — two replicas, one Redis, a round-robin front', (t) => scenario(t, 'redis'))
t.test('store: cookie with Redis for coordination — two replicas, one Redis, a round-robin front', (t) => scenario(t, 'cookie'))
