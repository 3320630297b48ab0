/**
 * When the application behind Portcullis fails (step 6 of the pipeline, the forward): a closed port is
 * a 502, a slow answer past `upstreamTimeoutMs` a 504, both as our own error page (HTML for a browser
 * navigation, JSON otherwise) with a request id and no internals; an error status the application
 * itself sends is its answer and is passed through. Portcullis keeps serving after each.
 */
import t from 'tap'
import type { Test as Tap } from 'tap'
import { reservePort, startStack } from '../helpers/portcullis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request, type TestResponse } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'

/** What must never be in a body we render: stack frames, file paths, error class names, socket codes. */
function assertNoInternals(t: Tap, res: TestResponse, label: string): void {
  t.notMatch(res.body, /\bat [^\n]*\.(?:ts|js|mjs|cjs):\d+/, `${label}: no stack frame`)
  t.notMatch(res.body, /\/work\/|node_modules|node:internal/, `${label}: no file path`)
  t.notMatch(res.body, /ECONNREFUSED|UND_ERR|FST_REPLY_FROM|TypeError|Error:/, `${label}: no internal error name or code`)
  t.notMatch(res.body, /127\.0\.0\.1:\d+/, `${label}: no upstream address`)
}

t.test('upstream down: 502, logged, and Portcullis keeps serving', async (t) => {
  const closedPort = await reservePort()
  const { proxy, upstream } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/down' }, upstream: `http://127.0.0.1:${closedPort}` },
        { match: { pathPrefix: '/public-down' }, upstream: `http://127.0.0.1:${closedPort}`, public: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const { jar } = await login({ proxyUrl: proxy.url })

  const html = await request(`${proxy.url}/down/page`, { headers: { ...NAVIGATION_HEADERS, 'x-request-id': 'down-html' }, jar })
  t.equal(html.status, 502, 'navigation with a session: 502')
  t.match(html.headers['content-type'], /^text\/html/, 'an HTML page')
  t.match(html.body, /<html/i)
  t.match(html.body, /down-html/, 'the page shows the request id')
  t.equal(html.headers['cache-control'], 'no-store')
  assertNoInternals(t, html, 'HTML 502')

  const json = await request(`${proxy.url}/down/api`, { headers: { accept: 'application/json', 'x-request-id': 'down-json' }, jar })
  t.equal(json.status, 502, 'API call with a session: 502')
  t.match(json.headers['content-type'], /^application\/json/)
  t.match(json.json(), { error: 'UPSTREAM_UNAVAILABLE', requestId: 'down-json', message: String })
  assertNoInternals(t, json, 'JSON 502')

  const post = await request(`${proxy.url}/down/form`, { method: 'POST', headers: { accept: 'text/html', 'content-type': 'text/plain' }, body: 'x=1', jar })
  t.equal(post.status, 502, 'a POST: 502 too')
  assertNoInternals(t, post, 'POST 502')

  const anon = await request(`${proxy.url}/public-down/x`, { headers: { accept: '*/*' } })
  t.equal(anon.status, 502, 'public route, no session: 502')
  t.match(anon.json(), { error: 'UPSTREAM_UNAVAILABLE' }, 'JSON for a non-navigation')
  assertNoInternals(t, anon, 'public 502')

  // One line per request: the access line carries the error and the upstream's socket error. It is
  // written once the response has been sent, so it may trail the client's read by a moment.
  const failedLines = () => proxy.logs.filter((l) => l.msg === 'request' && l.status === 502)
  await eventually(() => failedLines().length >= 4, { timeoutMs: 2_000 })
  const failed = failedLines()
  t.equal(failed.length, 4, 'one access line per failed request')
  for (const line of failed) {
    t.equal(line.level, 50, 'logged at error level')
    t.equal(line.upstreamCause, 'ECONNREFUSED', 'with the socket error code')
    t.match(line.err, { type: 'PortcullisError', code: 'UPSTREAM_UNAVAILABLE' }, 'and the error')
  }
  t.match(failed.find((l) => l.reqId === 'down-json'), { route: 'routes[0]' }, 'with the request id and route')
  const forRequest = proxy.logs.filter((l) => l.reqId === 'down-json')
  t.equal(forRequest.filter((l) => l.msg === 'request').length, 1, 'exactly one access line for that request')
  // Whatever else was logged for it goes through the same serializer: no stack traces.
  t.notMatch(JSON.stringify(forRequest), /"stack"|\bat [^"]+\.(js|ts):\d+/, 'no stack traces')

  const ok = await request(`${proxy.url}/still-here`, { headers: { accept: 'application/json' }, jar })
  t.equal(ok.status, 200, 'other routes keep working')
  t.equal(upstream.requests.at(-1)?.url, '/still-here')
  const again = await request(`${proxy.url}/down/again`, { headers: { accept: 'application/json' }, jar })
  t.equal(again.status, 502, 'and the down route keeps answering 502')
  const health = await request(`${proxy.url}/healthz`)
  t.equal(health.status, 200, 'healthz unaffected')
})

t.test('upstream slow: 504 after upstreamTimeoutMs', async (t) => {
  const { proxy, upstream } = await startStack(t, { runtime: { upstreamTimeoutMs: 500 } })
  const { jar } = await login({ proxyUrl: proxy.url })

  const json = await request(`${proxy.url}/slow?ms=3000`, { headers: { accept: 'application/json', 'x-request-id': 'slow-json' }, jar })
  t.equal(json.status, 504)
  t.match(json.json(), { error: 'UPSTREAM_TIMEOUT', requestId: 'slow-json' })
  assertNoInternals(t, json, 'JSON 504')

  const html = await request(`${proxy.url}/slow?ms=3000`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(html.status, 504)
  t.match(html.headers['content-type'], /^text\/html/)
  assertNoInternals(t, html, 'HTML 504')

  const line = proxy.logs.find((l) => l.msg === 'request' && l.reqId === 'slow-json')
  t.ok(line, 'the timeout is logged')
  t.equal(line?.status, 504)
  t.match(line?.err, { code: 'UPSTREAM_TIMEOUT' }, 'with the error')

  const fast = await request(`${proxy.url}/slow?ms=10`, { headers: { accept: 'application/json' }, jar })
  t.equal(fast.status, 200, 'a fast enough answer still goes through')
  t.equal(upstream.requests.at(-1)?.url, '/slow?ms=10')
})

t.test("an error status from the application is the application's answer", async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  for (const status of [503, 500, 502, 504, 404, 401, 403]) {
    const res = await request(`${proxy.url}/status/${status}`, { headers: { accept: 'application/json' }, jar })
    t.equal(res.status, status, `${status} passed through`)
    t.match(res.json(), { url: `/status/${status}` }, "the body is the application's")
    t.notMatch(res.body, /UPSTREAM_UNAVAILABLE|UPSTREAM_TIMEOUT/, 'not our error page')
    t.equal(res.headers['retry-after'], undefined, 'no Retry-After of ours added')
  }
  const nav = await request(`${proxy.url}/status/503`, { headers: NAVIGATION_HEADERS, jar })
  t.equal(nav.status, 503)
  t.match(nav.body, /Demo app behind Portcullis/, "a navigation gets the application's own HTML")
  t.equal(upstream.requests.length, 8, 'each reached the upstream once (no retries)')
  t.notOk(proxy.logs.some((l) => l.upstreamError !== undefined || l.err !== undefined), 'not logged as an upstream failure')
})
