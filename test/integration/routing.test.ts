/**
 * The route table end to end (step 2 of the pipeline): host, then longest path prefix on a segment
 * boundary, on the normalized path; refused paths; public routes; upstream base paths; the query string;
 * the auth prefix and ops endpoints; request ids. The attack class: skip-auth rules matched on anything
 * but the normalized path.
 *
 * Three echo upstreams (A, B, C) tell which route answered. Paths are sent on raw sockets because
 * `new URL()` (and so every ordinary client) would normalize them before Portcullis sees them.
 */
import { connect } from 'node:net'
import t from 'tap'
import type { Test } from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { startTestUpstream, type EchoRecord, type EchoUpstream } from '../helpers/upstream.ts'
import { login } from '../helpers/login.ts'
import { request, type CookieJar } from '../helpers/http.ts'

interface RawResponse {
  /** 0 when the connection closed without a response. */
  status: number
  headers: Record<string, string>
  body: string
}

/**
 * One request on a fresh socket, written byte for byte. Resolves once a whole response has arrived
 * (by `Content-Length` or chunked framing) or the server closed the connection.
 */
function raw(port: number, target: string, headers: Array<[string, string]> = []): Promise<RawResponse> {
  const lines = [`GET ${target} HTTP/1.1`, ...headers.map(([k, v]) => `${k}: ${v}`)]
  if (!headers.some(([k]) => k.toLowerCase() === 'host')) lines.push(`Host: 127.0.0.1:${port}`)
  lines.push('', '')
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const done = () => {
      socket.destroy()
      resolve(parse(Buffer.concat(chunks).toString('latin1')))
    }
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer for ${target}`)))
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      if (complete(Buffer.concat(chunks).toString('latin1'))) done()
    })
    socket.on('error', reject)
    socket.on('close', done)
    socket.write(lines.join('\r\n'), 'latin1')
  })
}

/** Has a whole response (head and body) arrived? */
function complete(text: string): boolean {
  const end = text.indexOf('\r\n\r\n')
  if (end < 0) return false
  const head = text.slice(0, end).toLowerCase()
  const length = /\r\ncontent-length: *(\d+)/.exec(head)
  if (length) return Buffer.byteLength(text.slice(end + 4), 'latin1') >= Number(length[1])
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return text.endsWith('\r\n0\r\n\r\n')
  return /^http\/1\.1 (1\d\d|204|304)/.test(head)
}

function parse(text: string): RawResponse {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  if (!m) return { status: 0, headers: {}, body: text }
  const end = text.indexOf('\r\n\r\n')
  const head = text.slice(0, end).split('\r\n').slice(1)
  const headers: Record<string, string> = {}
  for (const line of head) {
    const i = line.indexOf(':')
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  let body = text.slice(end + 4)
  if (headers['transfer-encoding'] === 'chunked') {
    let out = ''
    for (;;) {
      const nl = body.indexOf('\r\n')
      const size = parseInt(body.slice(0, nl), 16)
      if (!(size > 0)) break
      out += body.slice(nl + 2, nl + 2 + size)
      body = body.slice(nl + 2 + size + 2)
    }
    body = out
  }
  return { status: Number(m[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8') }
}

t.test('routing', async (t) => {
  const upA: EchoUpstream = await startTestUpstream(t)
  const upB: EchoUpstream = await startTestUpstream(t)
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { host: 'a.example', pathPrefix: '/' }, upstream: upA.url, public: true },
        { match: { host: 'b.example', pathPrefix: '/' }, upstream: upB.url, public: true },
        { match: { host: 'b.example', pathPrefix: '/api' }, upstream: `${upstream}/b-api`, public: true },
        { match: { host: 'based.example', pathPrefix: '/' }, upstream: `${upA.url}/base`, public: true },
        { match: { pathPrefix: '/' }, upstream },
        { match: { pathPrefix: '/api' }, upstream: upA.url, public: true },
        { match: { pathPrefix: '/api/v2' }, upstream: upB.url, public: true },
        { match: { pathPrefix: '/public' }, upstream, public: true },
      ],
    }),
  })
  const upC = stack.upstream
  const { proxy } = stack
  const port = Number(new URL(proxy.url).port)
  const ups = { A: upA, B: upB, C: upC } as const
  type Name = keyof typeof ups
  const counts = () => ({ A: upA.requests.length, B: upB.requests.length, C: upC.requests.length })

  /** Send `target` raw and assert exactly `who` received it as `seenUrl`, and nobody else anything. */
  async function expectRouted(t: Test, target: string, who: Name, seenUrl: string, headers: Array<[string, string]> = [], label = target) {
    const before = counts()
    const res = await raw(port, target, [['Accept', 'application/json'], ...headers])
    t.equal(res.status, 200, `${label}: 200`)
    const after = counts()
    for (const name of Object.keys(ups) as Name[]) {
      t.equal(after[name] - before[name], name === who ? 1 : 0, `${label}: upstream ${name} ${name === who ? 'received it' : 'untouched'}`)
    }
    t.equal((ups[who].requests.at(-1) as EchoRecord).url, seenUrl, `${label}: upstream ${who} saw ${seenUrl}`)
  }

  /** Send `target` raw and assert `status` and that no upstream received anything. */
  async function expectRefused(t: Test, target: string, status: number, headers: Array<[string, string]> = [], jar?: CookieJar) {
    const before = counts()
    const cookie = jar?.header(proxy.url)
    const res = await raw(port, target, [['Accept', 'application/json'], ...headers, ...(cookie ? [['Cookie', cookie] as [string, string]] : [])])
    t.equal(res.status, status, `${JSON.stringify(target)} → ${status}`)
    t.same(counts(), before, `${JSON.stringify(target)}: no upstream received anything`)
    return res
  }

  t.test('by host', async (t) => {
    await expectRouted(t, '/anything', 'A', '/anything', [['Host', 'a.example']])
    await expectRouted(t, '/anything', 'B', '/anything', [['Host', 'b.example']])
    await expectRouted(t, '/anything', 'A', '/anything', [['Host', 'A.Example']], 'host is matched case-insensitively')
    await expectRouted(t, '/anything', 'A', '/anything', [['Host', 'a.example:8443']], 'host with a port')
    await expectRouted(t, '/anything', 'A', '/anything', [['Host', 'a.example.']], 'host with a trailing dot')
    await expectRefused(t, '/anything', 401, [['Host', 'c.example']])
    await expectRefused(t, '/anything', 401, [['Host', 'xa.example']])
    await expectRefused(t, '/anything', 401, [['Host', 'a.example.evil']])
  })

  t.test('longest path prefix, on segment boundaries', async (t) => {
    await expectRouted(t, '/api', 'A', '/api')
    await expectRouted(t, '/api/', 'A', '/api/')
    await expectRouted(t, '/api/x', 'A', '/api/x')
    await expectRouted(t, '/api/v2', 'B', '/api/v2')
    await expectRouted(t, '/api/v2/x', 'B', '/api/v2/x')
    await expectRouted(t, '/api/v20', 'A', '/api/v20', [], '/api/v20 is /api, not /api/v2')
    // `/apix` is not under `/api`: it falls to the protected `/` route.
    await expectRefused(t, '/apix', 401)
    await expectRefused(t, '/apix/v2', 401)
    await expectRefused(t, '/API/v2', 401) // no case folding
  })

  t.test('a host-specific route beats a host-less one, even a longer one', async (t) => {
    await expectRouted(t, '/api/v2/x', 'C', '/b-api/api/v2/x', [['Host', 'b.example']])
    await expectRouted(t, '/apix', 'B', '/apix', [['Host', 'b.example']], 'b.example /apix → b.example /')
    await expectRouted(t, '/public/x', 'A', '/public/x', [['Host', 'a.example']])
  })

  t.test('matching and forwarding use the normalized path', async (t) => {
    await expectRefused(t, '/public/../admin', 401)
    await expectRefused(t, '/public/%2e%2e/admin', 401)
    await expectRefused(t, '/public/%2E%2E/admin', 401)
    await expectRefused(t, '/public/./../admin', 401)
    await expectRefused(t, '/api/../admin', 401)
    await expectRouted(t, '/%70ublic/x', 'C', '/public/x')
    await expectRouted(t, '/%70%75%62%6C%69%63/x', 'C', '/public/x')
    await expectRouted(t, '/public/./a/../x', 'C', '/public/x')
    await expectRouted(t, '//public//x', 'C', '/public/x')
    await expectRouted(t, '/api//v2', 'B', '/api/v2')
    await expectRouted(t, '/api/%76%32/x', 'B', '/api/v2/x')
    await expectRouted(t, '/api/v2/../x', 'A', '/api/x')
    await expectRouted(t, '/public/a%3ab', 'C', '/public/a%3Ab', [], 'reserved escapes are kept (upper-cased)')

    const { jar } = await login({ proxyUrl: proxy.url })
    const before = counts()
    const res = await raw(port, '/public/../admin', [['Accept', 'application/json'], ['Cookie', jar.header(proxy.url)]])
    t.equal(res.status, 200, 'with a session, /public/../admin is proxied')
    t.equal(upC.requests.length, before.C + 1)
    t.equal((upC.requests.at(-1) as EchoRecord).url, '/admin', 'the upstream receives /admin')
    t.equal((upC.requests.at(-1) as EchoRecord).headers['x-auth-request-user'], 'alice', 'as a protected request')
  })

  t.test('paths that cannot be normalized safely are refused with 400', async (t) => {
    const targets = [
      '/a%2fb',
      '/a%2Fb',
      '/public/..%2fadmin',
      '/public/%2e%2e%2fadmin',
      '/..;/admin',
      '/public/..;/admin',
      '/public/.;x/admin',
      '/public/..%3b/admin',
      '/a%00',
      '/public/%0d%0aX-Injected:%201',
      '/a%7f',
      '/a\\b',
      '/public\\..\\admin',
      '/a%5cb',
      '/%zz',
      '/a%4',
      '/a%',
      '/..',
      '/../public/x',
      '/public/%FF', // not UTF-8: reply-from cannot decode it; refused, not a 500
      '/public/%C3%28',
    ]
    for (const target of targets) {
      const res = await expectRefused(t, target, 400)
      t.notMatch(res.body, /\bat .*\.(?:ts|js):\d+/, `${target}: no stack trace`)
    }
    // Fastify answered, not the socket layer: our JSON error with a request id.
    const res = await raw(port, '/a%2fb', [['Accept', 'application/json']])
    t.match(JSON.parse(res.body), { error: 'PATH_REJECTED', requestId: String })
  })

  t.test('a public route is reached without a session while / is protected', async (t) => {
    await expectRouted(t, '/public', 'C', '/public')
    await expectRouted(t, '/public/page', 'C', '/public/page')
    const res = await expectRefused(t, '/private', 401)
    t.match(res.headers['www-authenticate'], /^Bearer/)
    await expectRefused(t, '/publicx', 401)
    await expectRefused(t, '/', 401)
  })

  t.test('upstream base path', async (t) => {
    await expectRouted(t, '/x', 'A', '/base/x', [['Host', 'based.example']])
    await expectRouted(t, '/', 'A', '/base/', [['Host', 'based.example']])
    await expectRouted(t, '/x/y?q=1', 'A', '/base/x/y?q=1', [['Host', 'based.example']])
  })

  t.test('the query string is passed unchanged', async (t) => {
    const queries = [
      '?a=1&a=2&b=%20',
      '?x=%2F..%2Fadmin&y=%zz',
      '?a=1;b=2&c',
      '?%E2%9C%93=%e2%9c%93&plus=a+b',
      '?path=/../../etc/passwd',
      '?next=../x',
      '?%ff=%FE',
      '?a=%2f&b=%5C&c=\\',
    ]
    for (const q of queries) await expectRouted(t, `/public/q${q}`, 'C', `/public/q${q}`)
    await expectRouted(t, '/public/./q?a=1&a=2&b=%20', 'C', '/public/q?a=1&a=2&b=%20', [], 'normalized path, same query')
  })

  t.test("a client's Connection: close is honoured; the upstream's hop-by-hop headers stay behind", async (t) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const closed = new Promise<string>((resolve, reject) => {
      socket.setTimeout(5_000, () => socket.destroy(new Error('the connection was kept open despite Connection: close')))
      socket.on('data', (c: Buffer) => chunks.push(c))
      socket.on('error', reject)
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    })
    socket.write(`GET /public/close HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n`)
    const text = await closed
    const res = parse(text)
    t.equal(res.status, 200)
    t.equal(res.headers.connection?.toLowerCase(), 'close', 'Connection: close answered')
    t.equal(res.headers['keep-alive'], undefined, "the upstream pool's Keep-Alive is not forwarded")

    const keep = await raw(port, '/public/keep', [['Accept', 'application/json']])
    t.equal(keep.status, 200)
    t.not(keep.headers['keep-alive'], 'timeout=5', 'no upstream Keep-Alive on a kept-alive connection either')
  })

  t.test('the auth prefix is never proxied; ops endpoints answer', async (t) => {
    for (const target of ['/oauth2/unknown', '/oauth2/unknown/deeper', '/oauth2/x/../unknown']) {
      const res = await expectRefused(t, target, 404)
      t.match(JSON.parse(res.body), { error: 'NOT_FOUND' })
    }
    const health = await request(`${proxy.url}/healthz`)
    t.equal(health.status, 200)
    t.same(health.json(), { status: 'ok' })
    const ready = await request(`${proxy.url}/readyz`)
    t.equal(ready.status, 200)
    t.match(ready.json(), { status: 'ready' })
  })

  t.test('X-Request-Id', async (t) => {
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
    const ids = (record: EchoRecord) => {
      const out: string[] = []
      for (let i = 0; i + 1 < record.rawHeaders.length; i += 2) {
        if ((record.rawHeaders[i] as string).toLowerCase() === 'x-request-id') out.push(record.rawHeaders[i + 1] as string)
      }
      return out
    }

    for (const sane of ['abc-123', 'req_1.2:3', 'x'.repeat(128), '0f8fad5b-d9cb-469f-a165-70867728950e']) {
      const res = await request(`${proxy.url}/public/id`, { headers: { accept: 'application/json', 'x-request-id': sane } })
      t.equal(res.status, 200)
      t.equal(res.headers['x-request-id'], sane, `${sane.slice(0, 20)}: echoed back`)
      t.same(ids(upC.requests.at(-1) as EchoRecord), [sane], `${sane.slice(0, 20)}: reaches the upstream`)
    }

    const insane = ['x'.repeat(300), 'x'.repeat(129), 'has space', 'a<script>', 'a,b', '']
    for (const bad of insane) {
      const res = await request(`${proxy.url}/public/id`, { headers: [['Accept', 'application/json'], ['X-Request-Id', bad]] })
      t.equal(res.status, 200)
      const given = res.headers['x-request-id'] as string
      t.not(given, bad, `${JSON.stringify(bad.slice(0, 20))}: replaced`)
      t.match(given, UUID, 'by a fresh UUID')
      t.same(ids(upC.requests.at(-1) as EchoRecord), [given], 'the upstream receives the replacement only')
    }

    const twice = await request(`${proxy.url}/public/id`, { headers: [['Accept', 'application/json'], ['X-Request-Id', 'one'], ['X-Request-Id', 'two']] })
    t.match(twice.headers['x-request-id'], UUID, 'two ids ("one, two") are not a sane id')
    t.same(ids(upC.requests.at(-1) as EchoRecord), [twice.headers['x-request-id']], 'the upstream receives one id')

    const none = await request(`${proxy.url}/public/id`, { headers: { accept: 'application/json' } })
    t.match(none.headers['x-request-id'], UUID, 'no id: one is made')

    const refused = await request(`${proxy.url}/private`, { headers: { accept: 'application/json', 'x-request-id': 'trace-401' } })
    t.equal(refused.status, 401)
    t.equal(refused.headers['x-request-id'], 'trace-401', 'on our own answers too')
    t.equal(refused.json<{ requestId: string }>().requestId, 'trace-401', 'and in the error body')
  })
})
