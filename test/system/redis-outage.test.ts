/**
 * Redis down (issue #12 point 4), with `session.store: redis`, a real provider and a real
 * redis-server that is killed mid-test and started again (empty: it kept nothing):
 * - while it is down, everything that needs a session answers 503 with Retry-After, in both lanes
 *   (the fast lane and the Fastify path: a second app on the same runtime with `fastLane: false`):
 *   a browser gets the HTML page, an API client JSON, the forward-auth checks (`/oauth2/auth`,
 *   `/oauth2/verify`) 503, never a 401 or a 302 that would start a login that cannot complete, and
 *   never a 200; the upstream sees nothing; the browser's cookie is not cleared; a login does not
 *   start; an open WebSocket is closed with 1013 (try again later); `/readyz` is 503 and says
 *   `redis: unreachable`, `/healthz` 200; nothing crashes and no promise is left unhandled;
 * - when it is back, `/readyz` turns 200 by itself; the old cookie is no session now (Redis lost
 *   it), so the browser is sent to a fresh login, which completes.
 *
 * Needs Debian's redis-server (scripts/install-system-deps.sh). Without it this test FAILS, it never
 * skips.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { startApp, startStack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { startRedis } from '../helpers/redis.ts'
import { eventually } from '../helpers/wait.ts'
import type { RedisServer } from '../helpers/redis.ts'

/** The session store's keys in Redis (`s:<id>` and the `sessions` index), not the revocations' or rate limits'. */
async function sessionKeys(redis: RedisServer): Promise<number> {
  const [entries, index] = await Promise.all([redis.command('KEYS', 'portcullis:s:*'), redis.command('EXISTS', 'portcullis:sessions')])
  return Number(entries.slice(1)) + Number(index.slice(1))
}

const API = { accept: 'application/json' }

interface Readiness {
  status: string
  provider: string
  redis?: string
}

/** A 503 of the store outage, with Retry-After, as a page or as JSON. */
function isOutage(t: Test, res: TestResponse, as: 'html' | 'json', what: string): void {
  t.equal(res.status, 503, `${what}: 503`)
  t.equal(res.headers['retry-after'], '5', `${what}: Retry-After`)
  t.equal(res.headers.location, undefined, `${what}: no redirect`)
  t.notOk(res.headers['x-auth-request-user'], `${what}: no identity header`)
  t.same(res.setCookies, [], `${what}: the cookie is neither cleared nor set`)
  if (as === 'html') {
    t.match(res.headers['content-type'], /^text\/html/, `${what}: an HTML page`)
    t.match(res.body, /temporarily unavailable/i, `${what}: saying so`)
  } else {
    t.match(res.headers['content-type'], /^application\/json/, `${what}: JSON`)
    t.equal(res.json<{ error: string }>().error, 'STORE_UNAVAILABLE', `${what}: STORE_UNAVAILABLE`)
  }
  t.notMatch(res.body, /\bat \S+\.(ts|js):\d+|ECONNREFUSED|Stream isn't writeable/, `${what}: no stack or client error text`)
}

t.test('Redis down mid-test: 503s in both lanes, /readyz 503, nothing let through; back: ready again and a fresh login', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason)
  }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => {
    process.off('unhandledRejection', onUnhandled)
  })

  const redis = await startRedis(t)
  const { proxy, upstream } = await startStack(t, {
    overrides: { session: { store: 'redis', redis: { url: redis.url, commandTimeout: '500ms' } } },
    runtime: { app: { tunnelCheckMs: 150 } },
  })
  const rt = proxy.runtime
  t.equal(rt.sessions.kind, 'redis', 'the Redis store')
  await rt.redis?.whenReady()
  // The Fastify path: the same runtime (same store, same Redis connection), the fast lane off.
  const slow = await startApp(t, rt, { fastLane: false, tunnelCheckMs: 150 })
  const lanes = [
    { name: 'fast lane', url: proxy.url },
    { name: 'Fastify path', url: slow.url },
  ]

  const { finalLocation, jar } = await login({ proxyUrl: proxy.url, path: '/app' })
  t.equal(finalLocation, `${proxy.url}/app`)
  t.equal(await sessionKeys(redis), 2, 'Redis holds the session and the index')
  for (const lane of lanes) {
    const res = await request(`${lane.url}/app/before`, { jar, headers: API })
    t.equal(res.status, 200, `${lane.name}: signed in`)
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], 'alice')
  }
  t.equal((await request(`${proxy.url}/readyz`)).json<Readiness>().redis, 'ok')
  const cookieBefore = jar.header(`${proxy.url}/app`)

  // An open WebSocket, checked every 150 ms.
  const ws = new WebSocket(`${proxy.url.replace(/^http/, 'ws')}/socket`, { headers: { cookie: cookieBefore } })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))

  await redis.stop()
  t.ok(await eventually(() => rt.redis?.ready === false, { timeoutMs: 5_000 }), 'the connection noticed')
  const seen = upstream.requests.length

  t.equal(await closed, 1013, 'the open WebSocket is closed with 1013 (try again later)')

  for (const lane of lanes) {
    isOutage(t, await request(`${lane.url}/app/page`, { jar, headers: NAVIGATION_HEADERS }), 'html', `${lane.name}: a browser navigation`)
    isOutage(t, await request(`${lane.url}/app/api`, { jar, headers: API }), 'json', `${lane.name}: an API client`)
    isOutage(t, await request(`${lane.url}/app/form`, { jar, method: 'POST', headers: { ...API, 'content-type': 'text/plain' }, body: 'x' }), 'json', `${lane.name}: a POST`)
    isOutage(t, await request(`${lane.url}/oauth2/auth`, { jar, headers: { ...NAVIGATION_HEADERS, 'x-original-url': `${proxy.url}/app` } }), 'json', `${lane.name}: /oauth2/auth`)
    const head = await request(`${lane.url}/oauth2/auth`, { jar, method: 'HEAD' })
    t.equal(head.status, 503, `${lane.name}: HEAD /oauth2/auth: 503`)
    t.equal(head.headers['retry-after'], '5')
    isOutage(t, await request(`${lane.url}/oauth2/verify`, { jar, headers: NAVIGATION_HEADERS }), 'html', `${lane.name}: /oauth2/verify, a browser`)
    isOutage(t, await request(`${lane.url}/oauth2/verify/app/x`, { jar, headers: API }), 'json', `${lane.name}: /oauth2/verify, an API client`)
    isOutage(t, await request(`${lane.url}/oauth2/userinfo`, { jar, headers: API }), 'json', `${lane.name}: /oauth2/userinfo`)
    isOutage(t, await request(`${lane.url}/oauth2/sign_out`, { jar, headers: NAVIGATION_HEADERS }), 'html', `${lane.name}: /oauth2/sign_out (the session is not half-ended)`)
    // Without any cookie: a login that could not complete does not start.
    isOutage(t, await request(`${lane.url}/app/new`, { headers: NAVIGATION_HEADERS }), 'html', `${lane.name}: a navigation without a session`)
    isOutage(t, await request(`${lane.url}/oauth2/start?rd=/app`, { headers: NAVIGATION_HEADERS }), 'html', `${lane.name}: /oauth2/start`)
    // A WebSocket handshake.
    const refused = await new Promise<number>((resolve, reject) => {
      const h = new WebSocket(`${lane.url.replace(/^http/, 'ws')}/socket`, { headers: { cookie: cookieBefore } })
      h.once('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0)
        h.terminate()
      })
      h.once('open', () => reject(new Error('opened while Redis is down')))
      h.once('error', () => {})
    })
    t.equal(refused, 503, `${lane.name}: a WebSocket handshake: 503`)
  }
  // Without a cookie, as while the provider is down: no session can be had now, so a 503, not a 401.
  isOutage(t, await request(`${proxy.url}/app/api`, { headers: API }), 'json', 'an API client without a cookie')
  t.equal(upstream.requests.length, seen, 'the upstream saw none of it')
  t.equal(jar.header(`${proxy.url}/app`), cookieBefore, 'the browser still holds its cookie')

  const ready = await request(`${proxy.url}/readyz`)
  t.equal(ready.status, 503, '/readyz: 503')
  t.equal(ready.headers['retry-after'], '5')
  t.strictSame(ready.json<Readiness>(), { status: 'not ready', provider: 'ok', redis: 'unreachable' }, 'saying why')
  t.equal((await request(`${proxy.url}/healthz`)).status, 200, '/healthz: 200, the process is alive')
  t.ok(
    proxy.logs.some((l) => l.msg === 'request' && l.status === 503 && JSON.stringify(l).includes('STORE_UNAVAILABLE')),
    'the 503s are in the access log with their code',
  )

  await redis.start()
  t.ok(await eventually(async () => (await request(`${proxy.url}/readyz`)).status === 200, { timeoutMs: 10_000, everyMs: 100 }), '/readyz back to 200 by itself')
  t.equal((await request(`${slow.url}/readyz`)).json<Readiness>().redis, 'ok')

  // Redis came back empty: the old cookie is no session, cleared, and the browser is sent to log in.
  const gone = await request(`${proxy.url}/app/after`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(gone.status, 302, 'the old cookie: a redirect to login')
  t.match(gone.headers.location, /\/oauth2\/start\?rd=/)
  t.ok(gone.setCookies.some((c) => /^_portcullis=;/.test(c)), 'and its cookie cleared')
  const again = await login({ proxyUrl: proxy.url, path: '/app/after', jar })
  t.equal(again.finalLocation, `${proxy.url}/app/after`, 'a fresh login completes')
  for (const lane of lanes) {
    const res = await request(`${lane.url}/app/after`, { jar, headers: API })
    t.equal(res.status, 200, `${lane.name}: signed in again`)
    t.equal(upstream.requests.at(-1)?.headers['x-auth-request-user'], 'alice')
  }
  t.equal(await sessionKeys(redis), 2, 'the new session is in Redis')
  t.strictSame(unhandled, [], 'no unhandled rejection')
})
