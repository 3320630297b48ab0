/**
 * Issue #8 point 6: `100 Continue` only once the request is routed and authenticated. Without a
 * session the client gets its final answer at once (401 / 302 / 400), the connection is closed, and
 * the body it was about to send is never read. With a session it is told to continue, and the body
 * reaches the upstream. Both lanes.
 */
import t from 'tap'
import { connect } from 'node:net'
import { startApp, startStack, type RunningPortcullis } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'

interface Exchange {
  /** Everything the server wrote before the test sent a body (or gave up waiting). */
  first: string
  /** Everything, once the connection closed or the final answer arrived. */
  all: string
  /** The server closed the connection. */
  closed: boolean
}

/**
 * Send a request's headers with `Expect: 100-continue` and a large Content-Length; send the body
 * only if the server says 100 Continue (or never, when `body` is null).
 */
function expectContinue(lane: RunningPortcullis, head: string, body: string | null, declared = body?.length ?? 200 * 1024 * 1024): Promise<Exchange> {
  const { port } = new URL(lane.url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1')
    let all = ''
    let first: string | null = null
    let closed = false
    const finish = () => resolve({ first: first ?? all, all, closed })
    socket.on('error', reject)
    socket.on('data', (d: Buffer) => {
      all += d.toString('latin1')
      if (first === null && all.includes('\r\n\r\n')) {
        first = all
        if (all.startsWith('HTTP/1.1 100') && body !== null) socket.write(body)
      }
    })
    socket.on('end', () => {
      closed = true
      finish()
    })
    socket.write(`${head}\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: ${declared}\r\nContent-Type: text/plain\r\n\r\n`)
    setTimeout(() => {
      socket.destroy()
      finish()
    }, 3_000)
  })
}

t.test('100 Continue after authentication, in both lanes', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const slow = await startApp(t, proxy.runtime, { fastLane: false })
  const { jar } = await login({ proxyUrl: proxy.url })
  const cookie = jar.header(`${proxy.url}/`)
  for (const [name, lane] of [['fast lane', proxy], ['Fastify path', slow]] as const) {
    const before = upstream.requests.length

    const api = await expectContinue(lane, 'POST /app/upload HTTP/1.1\r\nAccept: application/json', null)
    t.match(api.first, /^HTTP\/1\.1 401 /, `${name}, no session: the final 401 at once`)
    t.notMatch(api.all, /100 Continue/, `${name}: never 100 Continue`)
    t.match(api.all, /connection: close/i, `${name}: and the connection is closed`)
    t.ok(api.closed, `${name}: closed without the 200 MB body being read`)

    const nav = await expectContinue(lane, 'GET /app/page HTTP/1.1\r\nAccept: text/html', null)
    t.match(nav.first, /^HTTP\/1\.1 302 /, `${name}, a navigation without a session: the redirect at once`)
    t.ok(nav.closed)

    const bad = await expectContinue(lane, `POST /a%2Fb HTTP/1.1\r\nCookie: ${cookie}`, null)
    t.match(bad.first, /^HTTP\/1\.1 400 /, `${name}, a bad path: 400 at once, session or not`)
    t.notMatch(bad.all, /100 Continue/)
    t.equal(upstream.requests.length, before, `${name}: the upstream saw none of them`)

    const body = 'a'.repeat(100_000)
    const ok = await expectContinue(lane, `POST /app/upload HTTP/1.1\r\nAccept: application/json\r\nCookie: ${cookie}\r\nConnection: close`, body)
    t.match(ok.first, /^HTTP\/1\.1 100 Continue\r\n/, `${name}, with a session: 100 Continue first`)
    t.match(ok.all, /HTTP\/1\.1 200 /, `${name}: then the upstream's 200`)
    t.equal(upstream.requests.at(-1)?.body.length, body.length, `${name}: and the body reached the upstream`)
    t.equal(upstream.requests.at(-1)?.headers.expect, undefined, `${name}: without the Expect header`)

    const own = await expectContinue(lane, 'POST /oauth2/backchannel-logout HTTP/1.1\r\nConnection: close', 'logout_token=x', 'logout_token=x'.length)
    t.match(own.first, /^HTTP\/1\.1 100 Continue\r\n/, `${name}: Portcullis's own routes that read a body are told to send it`)
    t.match(own.all, /HTTP\/1\.1 400 /, `${name}: and answer it`)
  }
})
