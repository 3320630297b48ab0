/**
 * Request framing and Host trust, on raw sockets (request smuggling; RFC 9112 §6.3).
 *
 * Ambiguous message framing (both `Content-Length` and `Transfer-Encoding`, two lengths, a coding list
 * that does not end in `chunked`, obs-fold) is how a request is smuggled past a proxy: Portcullis and
 * the upstream would disagree on where the first request ends. Every such request must be refused
 * (400 or a closed connection) and nothing of it may reach the upstream.
 *
 * `Host` and `X-Forwarded-Host` from a client never shape a URL Portcullis builds: redirects and the
 * OAuth `redirect_uri` come from `server.publicUrl`.
 */
import { connect } from 'node:net'
import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { authorizeUntilCallback, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { CookieJar, request } from '../helpers/http.ts'
import type { EchoRecord } from '../helpers/upstream.ts'

interface Exchange {
  /** Status of the first response, 0 when the server closed without answering. */
  status: number
  /** Every byte the server sent. */
  text: string
}

/** Write `payload` on a fresh socket and collect everything until the server closes (or 5 s pass). */
function exchange(port: number, payload: string): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const finish = () => {
      const text = Buffer.concat(chunks).toString('latin1')
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      resolve({ status: m ? Number(m[1]) : 0, text })
    }
    // A refused request closes the connection; an accepted one is kept alive: stop waiting after 5 s.
    const timer = setTimeout(() => socket.destroy(), 5_000)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)))
    socket.on('close', () => {
      clearTimeout(timer)
      finish()
    })
    socket.write(payload, 'latin1')
  })
}

/** Build a raw request from lines; `\r\n` between header lines, a blank line, then the body as is. */
const message = (head: string[], body = ''): string => `${head.join('\r\n')}\r\n\r\n${body}`

t.test('framing', async (t) => {
  const { proxy, upstream } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const port = Number(new URL(proxy.url).port)
  const host = `Host: 127.0.0.1:${port}`
  // The body every attack carries: a second request, which must never reach the upstream.
  const smuggled = `GET /public/smuggled HTTP/1.1\r\n${host}\r\n\r\n`

  t.test('control: well-framed requests on raw sockets reach the upstream intact', async (t) => {
    const cl = await exchange(port, message(['POST /public/control-cl HTTP/1.1', host, 'Content-Length: 5', 'Connection: close'], 'hello'))
    t.equal(cl.status, 200)
    const seenCl = upstream.requests.find((r) => r.url === '/public/control-cl')
    t.equal(seenCl?.body, 'hello', 'Content-Length body forwarded')

    const chunked = await exchange(
      port,
      message(['POST /public/control-chunked HTTP/1.1', host, 'Transfer-Encoding: chunked', 'Connection: close'], '5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'),
    )
    t.equal(chunked.status, 200)
    t.equal(upstream.requests.find((r) => r.url === '/public/control-chunked')?.body, 'hello world', 'chunked body forwarded')

    const pipelined = await exchange(
      port,
      message(['GET /public/control-1 HTTP/1.1', host]) + message(['GET /public/control-2 HTTP/1.1', host, 'Connection: close']),
    )
    t.equal((pipelined.text.match(/HTTP\/1\.1 200/g) ?? []).length, 2, 'two pipelined requests, two answers')
    t.ok(upstream.requests.some((r) => r.url === '/public/control-2'), 'a second request on one connection does reach the upstream')
  })

  const cases: ReadonlyArray<readonly [string, string]> = [
    ['Content-Length and Transfer-Encoding: chunked', message(['POST /public/frame HTTP/1.1', host, 'Content-Length: 6', 'Transfer-Encoding: chunked'], `0\r\n\r\n${smuggled}`)],
    ['Transfer-Encoding: chunked then Content-Length', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: chunked', `Content-Length: ${smuggled.length + 5}`], `0\r\n\r\n${smuggled}`)],
    ['two different Content-Length headers', message(['POST /public/frame HTTP/1.1', host, 'Content-Length: 0', `Content-Length: ${smuggled.length}`], smuggled)],
    ['two different Content-Length values in one header', message(['POST /public/frame HTTP/1.1', host, `Content-Length: 0, ${smuggled.length}`], smuggled)],
    ['Transfer-Encoding: chunked, identity', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: chunked, identity', `Content-Length: ${smuggled.length + 5}`], `0\r\n\r\n${smuggled}`)],
    ['Transfer-Encoding: chunked + Transfer-Encoding: identity', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: chunked', 'Transfer-Encoding: identity'], `0\r\n\r\n${smuggled}`)],
    ['Transfer-Encoding: identity (only)', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: identity'], smuggled)],
    ['Transfer-Encoding: xchunked + Content-Length', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: xchunked', 'Content-Length: 5'], `0\r\n\r\n${smuggled}`)],
    ['obs-fold: Transfer-Encoding:<CRLF> chunked + Content-Length', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding:', ' chunked', 'Content-Length: 5'], `0\r\n\r\n${smuggled}`)],
    ['obs-fold: Transfer-Encoding: identity<CRLF> chunked', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: identity', ' chunked'], `0\r\n\r\n${smuggled}`)],
    ['obs-fold: X-Padding: x<CRLF> Transfer-Encoding: chunked', message(['POST /public/frame HTTP/1.1', host, 'X-Padding: x', ' Transfer-Encoding: chunked', 'Content-Length: 5'], `0\r\n\r\n${smuggled}`)],
    ['whitespace before the colon: Transfer-Encoding : chunked', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding : chunked', 'Content-Length: 5'], `0\r\n\r\n${smuggled}`)],
    ['vertical tab: Transfer-Encoding:\\vchunked', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding:\x0bchunked', 'Content-Length: 5'], `0\r\n\r\n${smuggled}`)],
    ['bare LF between headers', `POST /public/frame HTTP/1.1\r\n${host}\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${smuggled}`],
    ['Content-Length: +5', message(['POST /public/frame HTTP/1.1', host, 'Content-Length: +5'], `hello${smuggled}`)],
    ['Content-Length: -1', message(['POST /public/frame HTTP/1.1', host, 'Content-Length: -1'], smuggled)],
    ['Content-Length: 0x5', message(['POST /public/frame HTTP/1.1', host, 'Content-Length: 0x5'], `hello${smuggled}`)],
    ['chunk size with a bare LF', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: chunked'], `5\nhello\r\n0\r\n\r\n${smuggled}`)],
    ['chunk size not hex', message(['POST /public/frame HTTP/1.1', host, 'Transfer-Encoding: chunked'], `zz\r\nhello\r\n0\r\n\r\n${smuggled}`)],
  ]

  for (const [label, payload] of cases) {
    t.test(label, async (t) => {
      const before = upstream.requests.length
      const res = await exchange(port, payload)
      t.ok(res.status === 400 || res.status === 0, `answered 400 or closed (got ${res.status || 'closed'})`)
      t.equal((res.text.match(/HTTP\/1\.[01] \d{3}/g) ?? []).length <= 1, true, 'at most one response: the smuggled request was not answered')
      t.notMatch(res.text, /\bat [^\n]*\.(?:ts|js):\d+/, 'no stack trace')
      // A sentinel through a fresh connection: anything the attack let through arrived before it.
      const sentinel = await request(`${proxy.url}/public/sentinel`, { headers: { accept: 'application/json' } })
      t.equal(sentinel.status, 200, 'Portcullis keeps serving')
      const seen = upstream.requests.slice(before).map((r: EchoRecord) => r.url)
      t.same(seen, ['/public/sentinel'], 'the upstream saw neither the framed request nor the smuggled one')
    })
  }
})

t.test('Host and X-Forwarded-Host from the client never shape our URLs', async (t) => {
  const { proxy, provider } = await startStack(t)
  const spoof: Array<[string, string]> = [
    ['Host', 'evil.example'],
    ['X-Forwarded-Host', 'evil.example'],
    ['X-Forwarded-Proto', 'https'],
    ['X-Forwarded-Port', '443'],
    ['X-Original-URL', '/admin'],
    ['Forwarded', 'host=evil.example;proto=https'],
  ]
  const nav = Object.entries(NAVIGATION_HEADERS)

  const first = await request(`${proxy.url}/x?y=1`, { headers: [...nav, ...spoof] })
  t.equal(first.status, 302)
  const loc = String(first.headers.location)
  t.ok(loc.startsWith(`${proxy.url}/`), `Location starts with the publicUrl origin (${loc})`)
  const start = new URL(loc)
  t.equal(start.pathname, '/oauth2/start')
  t.equal(start.searchParams.get('rd'), '/x?y=1', 'rd is the path the client asked for, not X-Original-URL')
  t.notMatch(loc, /evil/)

  const jar = new CookieJar()
  const begin = await request(`${proxy.url}/oauth2/start?rd=${encodeURIComponent('http://evil.example/steal')}`, { headers: [...nav, ...spoof], jar })
  t.equal(begin.status, 302, 'start redirects to the provider')
  const authorize = new URL(String(begin.headers.location))
  t.equal(authorize.origin, new URL(provider.issuer).origin, 'to the provider')
  t.equal(authorize.searchParams.get('redirect_uri'), `${proxy.url}/oauth2/callback`, 'redirect_uri is built from publicUrl')
  for (const line of begin.setCookies) {
    t.notMatch(line, /domain=/i, 'no Domain attribute on the transaction cookie')
    t.notMatch(line, /evil/i)
  }

  // Finish the login: the Host header must not have made `http://evil.example/steal` a same-origin rd.
  // (The jar filed the transaction cookie under evil.example, as a browser would; re-file it for the proxy.)
  const tx = jar.all().filter((c) => c.name.startsWith('_portcullis'))
  t.equal(tx.length, 1, 'one transaction cookie')
  const loginJar = new CookieJar()
  for (const c of tx) loginJar.set(c.name, c.value, { url: proxy.url, path: '/' })
  const { callbackUrl } = await authorizeUntilCallback({ proxyUrl: proxy.url, startUrl: authorize.href, jar: loginJar })
  const cb = await request(callbackUrl, { headers: NAVIGATION_HEADERS, jar: loginJar })
  t.equal(cb.status, 302, 'login completes')
  t.ok(loginJar.get('_portcullis'), 'with a session')
  t.equal(new URL(String(cb.headers.location), proxy.url).origin, proxy.url, 'and returns to our own origin, not evil.example')
})
