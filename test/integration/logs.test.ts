/**
 * What Portcullis writes to its log: one access line per request — method, path
 * without the query, route, status, duration, request id, and the user's `sub` when there is one — and
 * never a secret: no JWT, no client secret, no cookie value (not even a slice of one), no authorization
 * code, state or nonce, no password.
 *
 * The login runs against the real provider, but the callback is requested by the test itself so the
 * code and state it carried are known.
 */
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { waitUntil } from '../helpers/wait.ts'


/** Every substring of `value` of length `n` (the whole value when shorter). */
function slices(value: string, n: number): string[] {
  if (value.length <= n) return [value]
  const out: string[] = []
  for (let i = 0; i + n <= value.length; i++) out.push(value.slice(i, i + n))
  return out
}

t.test('access log lines and what the log never contains', async (t) => {
  const stack = await startStack(t)
  const { proxy, provider, clientSecret } = stack

  // --- the login, stopped before the callback
  const { jar, callbackUrl, steps } = await authorizeUntilCallback({ proxyUrl: proxy.url, path: '/app/start?from=logs' })
  const callback = new URL(callbackUrl)
  const code = callback.searchParams.get('code') ?? ''
  const state = callback.searchParams.get('state') ?? ''
  const nonce = (provider.authorizations.at(-1) as Record<string, string>).nonce ?? ''
  t.ok(code.length >= 16 && state.length >= 16 && nonce.length >= 16, 'code, state and nonce captured')
  const txValues = jar
    .all()
    .filter((c) => c.name.startsWith('_portcullis_tx_'))
    .map((c) => c.value)
  t.equal(txValues.length, 1, 'one login transaction cookie')

  const cb = await request(callbackUrl, { headers: { ...NAVIGATION_HEADERS, 'x-request-id': 'logs-callback' }, jar })
  t.equal(cb.status, 302, 'callback completes the login')
  const sessionValues = jar
    .all()
    .filter((c) => /^_portcullis(_\d+)?$/.test(c.name))
    .map((c) => c.value)
  t.ok(sessionValues.length >= 1 && (sessionValues[0] as string).length > 40, 'session cookie set')

  // --- a proxied request, userinfo, and one without a session
  const proxied = await request(`${proxy.url}/app/page?token=query-secret-value&x=1`, {
    headers: { accept: 'application/json', 'x-request-id': 'logs-proxied' },
    jar,
  })
  t.equal(proxied.status, 200)
  const userinfo = await request(`${proxy.url}/oauth2/userinfo`, { headers: { 'x-request-id': 'logs-userinfo' }, jar })
  t.equal(userinfo.status, 200)
  const anon = await request(`${proxy.url}/app/page?token=query-secret-value`, { headers: { accept: 'application/json', 'x-request-id': 'logs-anon' } })
  t.equal(anon.status, 401)

  const toProxy = steps.filter((s) => new URL(s.url).origin === proxy.url).length + 4
  const accessLines = () => proxy.logs.filter((l) => l.msg === 'request')
  await waitUntil(() => accessLines().length >= toProxy, `${toProxy} access lines`)
  await new Promise((resolve) => setTimeout(resolve, 50)) // and no extra ones trailing

  t.test('exactly one access line per request, with the fields', async (t) => {
    const lines = accessLines()
    t.equal(lines.length, toProxy, `one line for each of the ${toProxy} requests Portcullis received`)
    const ids = lines.map((l) => l.reqId)
    t.equal(new Set(ids).size, ids.length, 'no request logged twice')
    for (const line of lines) {
      t.type(line.path, 'string')
      t.notOk(String(line.path).includes('?'), `path without a query: ${String(line.path)}`)
      t.type(line.durationMs, 'number')
      t.type(line.status, 'number')
      t.type(line.reqId, 'string')
      t.type(line.route, 'string')
    }
    const byId = (id: string) => lines.filter((l) => l.reqId === id)
    t.equal(byId('logs-proxied').length, 1)
    t.match(byId('logs-proxied')[0], { level: 30, method: 'GET', path: '/app/page', route: 'routes[0]', status: 200, durationMs: Number, reqId: 'logs-proxied', sub: 'alice' })
    t.equal(byId('logs-userinfo').length, 1)
    t.match(byId('logs-userinfo')[0], { method: 'GET', path: '/oauth2/userinfo', route: 'auth:userinfo', status: 200, durationMs: Number, sub: 'alice' })
    t.equal(byId('logs-callback').length, 1)
    t.match(byId('logs-callback')[0], { method: 'GET', path: '/oauth2/callback', route: 'auth:callback', status: 302 })
    t.equal(byId('logs-anon').length, 1)
    t.match(byId('logs-anon')[0], { method: 'GET', path: '/app/page', route: 'routes[0]', status: 401 })
    t.equal(byId('logs-anon')[0]?.sub, undefined, 'no sub without a session')
    const start = lines.find((l) => l.path === '/oauth2/start')
    t.match(start, { route: 'auth:start', status: 302 }, 'the login start is logged too')
    t.equal(start?.sub, undefined)
  })

  t.test('no secret in any log line', async (t) => {
    const text = proxy.logText
    t.ok(text.length > toProxy, 'there are log lines to check')
    const offending = (needle: string) => text.filter((line) => line.includes(needle))
    t.same(text.filter((line) => line.includes('eyJ')), [], 'no JWT (eyJ...)')
    t.same(offending(clientSecret), [], 'no client secret')
    t.same(offending(code), [], 'no authorization code')
    t.same(offending(state), [], 'no state')
    t.same(offending(nonce), [], 'no nonce')
    t.same(text.filter((line) => /password/i.test(line)), [], 'no "password"')
    t.same(offending('query-secret-value'), [], 'no query string value')
    for (const [label, values] of [
      ['session cookie', sessionValues],
      ['transaction cookie', txValues],
    ] as const) {
      const leaked = new Set<string>()
      for (const value of values) for (const s of slices(value, 20)) if (text.some((line) => line.includes(s))) leaked.add(s)
      t.same([...leaked], [], `no 20-character slice of the ${label}`)
    }
  })
})
