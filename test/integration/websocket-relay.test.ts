/**
 * WebSocket upgrades relayed the way nginx relays them (issue #8 points 4 and 5): the upstream answers
 * the upgrade first and its answer is what the client gets (101 only when it switched protocols);
 * unreachable is a 502 and too slow a 504; and an open WebSocket ends with its session, closed with
 * 1008: sign-out, back-channel logout, a revocation, the absolute lifetime and the idle timeout.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { createConnection, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { createHash } from 'node:crypto'
import WebSocket from 'ws'
import { startApp, startStack, type StackOptions } from '../helpers/portcullis.ts'
import { decide, type Decide } from '../../src/http/pipeline.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { fakeClock } from '../helpers/clock.ts'
import { PROVIDER_ROUTES } from '../helpers/provider.ts'
import { eventually, waitUntil } from '../helpers/wait.ts'

async function listen(t: Test, server: Server | ReturnType<typeof createNetServer>): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        if ('closeAllConnections' in server) server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

type Handshake = { opened: true; ws: WebSocket } | { opened: false; status: number; body: string; headers: IncomingMessage['headers'] }

function handshake(url: string, headers: Record<string, string> = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 10_000 })
    ws.once('open', () => {
      // What happens to a socket after the handshake is asserted through its close code.
      ws.on('error', () => undefined)
      resolve({ opened: true, ws })
    })
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => {
        resolve({ opened: false, status: res.statusCode ?? 0, body, headers: res.headers })
        ws.terminate()
      })
    })
    ws.once('error', reject)
  })
}

/** Resolves with the close code and reason the client receives. */
function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
}

t.test("the upstream's answer to an upgrade is relayed as it came; 101 only when it switched", async (t) => {
  // An app whose upgrade handler refuses (403 with a body) or knows no such socket (404).
  const refusing = createServer((_req, res) => res.writeHead(500).end())
  refusing.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    const status = req.url?.includes('forbidden') === true ? '403 Forbidden' : '404 Not Found'
    const body = `no socket at ${req.url ?? ''}`
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nX-App: refusing\r\n\r\n${body}`)
  })
  // An app with no WebSocket at all: Node answers its upgrade requests like any request.
  const plain = createServer((req, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end(`plain ${req.url ?? ''}`))
  const refusingUrl = await listen(t, refusing)
  const plainUrl = await listen(t, plain)
  const { proxy } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream, public: true },
        { match: { pathPrefix: '/refusing' }, upstream: refusingUrl, public: true },
        { match: { pathPrefix: '/plain' }, upstream: plainUrl, public: true },
      ],
    }),
  })
  const ws = proxy.url.replace(/^http/, 'ws')
  for (const [path, status, body] of [
    ['/refusing/forbidden', 403, 'no socket at /refusing/forbidden'],
    ['/refusing/missing', 404, 'no socket at /refusing/missing'],
    ['/plain/socket', 404, 'plain /plain/socket'],
  ] as const) {
    const got = await handshake(`${ws}${path}`)
    t.equal(got.opened, false, `${path}: never 101`)
    if (got.opened) continue
    t.equal(got.status, status, `${path}: the upstream's own status`)
    t.equal(got.body, body, `${path}: and body`)
    t.ok(got.headers['x-request-id'], `${path}: with a request id`)
    if (path.startsWith('/refusing')) t.equal(got.headers['x-app'], 'refusing', `${path}: and the app's headers`)
  }
  const line = proxy.logs.find((l) => l.msg === 'request' && l.path === '/refusing/forbidden')
  t.match(line, { status: 403, websocket: true }, 'the access line has the status the client got')
  const ok = await handshake(`${ws}/echo`)
  t.equal(ok.opened, true, 'an upstream that switches: 101')
  if (ok.opened) ok.ws.close()
})

t.test('an unreachable upstream is a 502, a slow one a 504', async (t) => {
  const dropper = createNetServer((socket) => socket.destroy())
  const silent = createNetServer((socket) => socket.resume()) // reads the request, never answers
  const downUrl = await listen(t, dropper)
  const silentUrl = await listen(t, silent)
  const { proxy } = await startStack(t, {
    runtime: { upstreamTimeoutMs: 500 },
    overrides: () => ({
      routes: [
        { match: { pathPrefix: '/down' }, upstream: downUrl, public: true },
        { match: { pathPrefix: '/' }, upstream: silentUrl, public: true },
      ],
    }),
  })
  const ws = proxy.url.replace(/^http/, 'ws')
  const down = await handshake(`${ws}/down/socket`, { accept: 'application/json' })
  t.equal(down.opened, false)
  if (!down.opened) {
    t.equal(down.status, 502)
    t.match(JSON.parse(down.body), { error: 'UPSTREAM_UNAVAILABLE' })
  }
  const slow = await handshake(`${ws}/socket`, { accept: 'application/json' })
  t.equal(slow.opened, false)
  if (!slow.opened) {
    t.equal(slow.status, 504)
    t.match(JSON.parse(slow.body), { error: 'UPSTREAM_TIMEOUT' })
  }
})

/** A stack whose clock the test moves, with a logged-in user and an open WebSocket on a protected route. */
async function openWithSession(t: Test, opts: StackOptions = {}) {
  const clock = fakeClock()
  const stack = await startStack(t, {
    ...opts,
    runtime: { ...opts.runtime, clock },
    provider: { accessTokenTtl: 86_400, idTokenTtl: 86_400, ...opts.provider },
  })
  const { jar } = await login({ proxyUrl: stack.proxy.url })
  const cookie = jar.header(`${stack.proxy.url}/`)
  const got = await handshake(`${stack.proxy.url.replace(/^http/, 'ws')}/chat`, { cookie })
  if (!got.opened) throw new Error(`the WebSocket did not open: ${got.status}`)
  const end = closed(got.ws)
  await eventually(() => stack.proxy.app.tunnels.size === 1)
  // The echo upstream first sends a hello; it also answers a message, so the pipe is known to work.
  got.ws.send('still here?')
  await new Promise<void>((resolve) => {
    got.ws.on('message', (data) => {
      if (data.toString() === 'still here?') resolve()
    })
  })
  return { ...stack, clock, jar, cookie, ws: got.ws, end }
}

t.test('an open WebSocket ends with its session: sign-out closes it at once with 1008', async (t) => {
  const s = await openWithSession(t)
  const out = await request(`${s.proxy.url}/oauth2/sign_out`, { headers: { cookie: s.cookie } })
  t.equal(out.status, 302)
  const { code, reason } = await s.end
  t.equal(code, 1008, 'policy violation')
  t.equal(reason, 'session ended')
  t.ok(await eventually(() => s.proxy.app.tunnels.size === 0), 'both sockets ended')
})

t.test('back-channel logout closes it at once', async (t) => {
  const s = await openWithSession(t)
  const endSession = `${s.provider.issuer}${PROVIDER_ROUTES.end_session}`
  const page = await request(endSession, { headers: NAVIGATION_HEADERS, jar: s.jar })
  t.ok(parseForm(page.body, endSession), "the provider's logout confirmation")
  await submitForm({ url: endSession, body: page.body }, s.jar)
  await waitUntil(() => s.proxy.logs.some((l) => l.msg === 'request' && l.route === 'auth:backchannel' && l.status === 200), 'the logout token', 10_000)
  t.equal((await s.end).code, 1008)
})

t.test('a revocation by sid or sub closes it at once', async (t) => {
  for (const how of ['sid', 'sub'] as const) {
    const s = await openWithSession(t)
    const loaded = await s.proxy.runtime.sessions.load(s.jar.get('_portcullis') ?? '')
    const session = loaded?.session
    if (session === undefined) throw new Error('logged in')
    if (how === 'sid') await s.proxy.runtime.revocations.revokeSid(session.sid ?? '')
    else await s.proxy.runtime.revocations.revokeSubBefore(session.sub, Date.now() + 1)
    t.equal((await s.end).code, 1008, `revoked by ${how}`)
  }
})

t.test('the idle timeout ends it on the next check', async (t) => {
  const s = await openWithSession(t, { overrides: { session: { idleTimeout: '10m', maxAge: '1h' } } })
  s.clock.advance(9 * 60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal(s.proxy.app.tunnels.size, 1, 'still open a minute before')
  s.clock.advance(60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal((await s.end).code, 1008, 'closed with 1008 at the idle timeout')
})

t.test('the absolute lifetime ends it, however active the session', async (t) => {
  const s = await openWithSession(t, { overrides: { session: { idleTimeout: '10m', maxAge: '1h' } } })
  // Requests every 9 minutes keep the session from going idle (the login cookie, kept: its newest
  // state has the moved idle clock).
  for (let minute = 9; minute <= 54; minute += 9) {
    s.clock.advance(9 * 60_000)
    t.equal((await request(`${s.proxy.url}/page`, { headers: { cookie: s.cookie, accept: 'application/json' } })).status, 200, `active at minute ${minute}`)
    await s.proxy.app.tunnels.sweep()
  }
  s.clock.advance(5 * 60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal(s.proxy.app.tunnels.size, 1, 'still open at minute 59')
  s.clock.advance(60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal((await s.end).code, 1008, 'closed with 1008 at maxAge')
})

t.test("the route's rules are held while it is open: a require.maxAuthAge passing ends it", async (t) => {
  const s = await openWithSession(t, {
    overrides: ({ upstream }) => ({
      session: { idleTimeout: '2h', maxAge: '12h' },
      routes: [{ match: { pathPrefix: '/' }, upstream, require: { maxAuthAge: '30m' } }],
    }),
  })
  s.clock.advance(28 * 60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal(s.proxy.app.tunnels.size, 1, 'still open while the login is recent enough')
  s.clock.advance(3 * 60_000)
  await s.proxy.app.tunnels.sweep()
  t.equal((await s.end).code, 1008, 'closed with 1008 once the login is older than maxAuthAge')
})

t.test('the check runs on its own timer', async (t) => {
  const s = await openWithSession(t, { runtime: { app: { tunnelCheckMs: 100 } }, overrides: { session: { idleTimeout: '10m', maxAge: '1h' } } })
  s.clock.advance(11 * 60_000)
  t.equal((await s.end).code, 1008, 'closed without anyone asking')
})

/** Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2). */
function acceptFor(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
}

t.test('a close of ours waits for the frame in flight: the client gets the whole message, then 1008', async (t) => {
  // A raw upstream: it announces a 1 MiB binary frame, sends a tenth of it, and sends the rest when told.
  let finish: (() => void) | null = null
  const raw = createServer()
  raw.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
    )
    const size = 1024 * 1024
    const header = Buffer.alloc(10)
    header[0] = 0x82
    header[1] = 127
    header.writeBigUInt64BE(BigInt(size), 2)
    const payload = Buffer.alloc(size, 7)
    socket.write(Buffer.concat([header, payload.subarray(0, size / 10)]))
    finish = () => socket.write(payload.subarray(size / 10))
    socket.on('error', () => socket.destroy())
    // An http.Server's sockets are half-open: when Portcullis ends its side, end this one too.
    socket.on('end', () => socket.end())
    socket.resume()
  })
  const rawUrl = await listen(t, raw)
  const clock = fakeClock()
  const stack = await startStack(t, {
    runtime: { clock },
    provider: { accessTokenTtl: 86_400, idTokenTtl: 86_400 },
    overrides: () => ({ routes: [{ match: { pathPrefix: '/' }, upstream: rawUrl }] }),
  })
  const { jar } = await login({ proxyUrl: stack.proxy.url })
  const got = await handshake(`${stack.proxy.url.replace(/^http/, 'ws')}/big`, { cookie: jar.header(`${stack.proxy.url}/`) })
  if (!got.opened) throw new Error('not opened')
  const messages: Buffer[] = []
  got.ws.on('message', (data) => messages.push(data as Buffer))
  const end = closed(got.ws)
  await eventually(() => finish !== null && stack.proxy.app.tunnels.size === 1)
  await new Promise((resolve) => setTimeout(resolve, 100)) // the first tenth is through
  const session = (await stack.proxy.runtime.sessions.load(jar.get('_portcullis') ?? ''))?.session
  await stack.proxy.runtime.revocations.revokeSession(session?.id ?? '')
  ;(finish as unknown as () => void)()
  const { code } = await end
  t.equal(code, 1008, 'closed by Portcullis, with a close frame the client could parse')
  t.equal(messages.length, 1, 'after the whole message')
  t.equal(messages[0]?.length, 1024 * 1024)
  t.ok(await eventually(() => stack.proxy.app.tunnels.size === 0), 'and both sockets ended')
})

/** A raw upgrade request on a socket; resolves with what the server wrote until it closed (or `waitMs`). */
function rawUpgrade(port: number, lines: string[], waitMs = 3_000): Promise<{ got: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(port, '127.0.0.1', () => socket.write(`${lines.join('\r\n')}\r\n\r\n`))
    let got = ''
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')))
    socket.on('error', reject)
    const done = () => resolve({ got, socket })
    socket.on('close', done)
    setTimeout(done, waitMs).unref()
  })
}

t.test('only WebSocket upgrades: h2c and other protocols are refused before the upstream', async (t) => {
  const { proxy, upstream } = await startStack(t, { overrides: ({ upstream }) => ({ routes: [{ match: { pathPrefix: '/' }, upstream, public: true }] }) })
  const port = Number(new URL(proxy.url).port)
  const before = upstream.requests.length
  for (const [what, extra] of [
    ['h2c', ['Upgrade: h2c', 'Connection: Upgrade, HTTP2-Settings', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']],
    ['websocket without a key', ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13']],
    ['a made-up protocol', ['Upgrade: tunnel/1.0', 'Connection: Upgrade']],
  ] as const) {
    const { got, socket } = await rawUpgrade(port, ['GET /x HTTP/1.1', 'Host: 127.0.0.1', ...extra])
    socket.destroy()
    t.match(got, /^HTTP\/1\.1 400 /, `${what}: 400`)
  }
  t.equal(upstream.requests.length, before, 'the upstream was never asked')
})

t.test('a 101 that is not a WebSocket answer to this handshake is never piped', async (t) => {
  const liar = createServer()
  liar.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => socket.destroy())
    socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: not-the-right-key\r\n\r\n')
  })
  const liarUrl = await listen(t, liar)
  const { proxy } = await startStack(t, { overrides: () => ({ routes: [{ match: { pathPrefix: '/' }, upstream: liarUrl, public: true }] }) })
  const got = await handshake(`${proxy.url.replace(/^http/, 'ws')}/socket`, { accept: 'application/json' })
  t.equal(got.opened, false)
  if (!got.opened) t.equal(got.status, 502, 'a wrong accept key: 502, not a tunnel')
  t.equal(proxy.app.tunnels.size, 0)
})

t.test('a client that half-closes ends the tunnel and the upstream connection', async (t) => {
  let upstreamEnded = false
  const sink = createServer()
  sink.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(String(req.headers['sec-websocket-key']))}\r\n\r\n`)
    socket.on('end', () => {
      upstreamEnded = true
      socket.end()
    })
    socket.on('error', () => socket.destroy())
    socket.resume()
  })
  const sinkUrl = await listen(t, sink)
  const { proxy } = await startStack(t, { overrides: () => ({ routes: [{ match: { pathPrefix: '/' }, upstream: sinkUrl, public: true }] }) })
  const port = Number(new URL(proxy.url).port)
  const socket = createConnection(port, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  await new Promise((resolve) => socket.once('data', resolve))
  t.ok(await eventually(() => proxy.app.tunnels.size === 1), 'open')
  socket.end() // a FIN, no close frame (a client that went away)
  t.ok(await eventually(() => upstreamEnded), 'the upstream saw the end')
  t.ok(await eventually(() => proxy.app.tunnels.size === 0), 'and the tunnel is gone')
})

t.test('a client that leaves while its handshake is decided: the upstream is never asked', async (t) => {
  const stack = await startStack(t, { overrides: ({ upstream }) => ({ routes: [{ match: { pathPrefix: '/' }, upstream, public: true }] }) })
  const slowDecide: Decide = async (rt, facts, mode) => {
    await new Promise((resolve) => setTimeout(resolve, 300))
    return decide(rt, facts, mode)
  }
  const slow = await startApp(t, stack.proxy.runtime, { decide: slowDecide })
  const before = stack.upstream.requests.length
  const socket = createConnection(Number(new URL(slow.url).port), '127.0.0.1', () => {
    socket.write('GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    setTimeout(() => socket.resetAndDestroy(), 50)
  })
  socket.on('error', () => undefined)
  t.ok(await eventually(() => slow.logs.some((l) => l.msg === 'request' && l.status === 499)), 'logged as a client that left')
  t.equal(stack.upstream.requests.length, before, 'no upstream handshake')
  t.equal(slow.app.tunnels.size, 0, 'no tunnel')
})

t.test('a handshake under way when the drain begins is closed with 1001 once it opens', async (t) => {
  let answer: (() => void) | null = null
  const late = createServer()
  late.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => socket.destroy())
    socket.on('end', () => socket.end())
    socket.resume()
    answer = () => socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(String(req.headers['sec-websocket-key']))}\r\n\r\n`)
  })
  const lateUrl = await listen(t, late)
  const stack = await startStack(t, { overrides: () => ({ routes: [{ match: { pathPrefix: '/' }, upstream: lateUrl, public: true }] }) })
  const opening = handshake(`${stack.proxy.url.replace(/^http/, 'ws')}/s`)
  await eventually(() => answer !== null)
  const drained = stack.proxy.app.drain(10_000)
  ;(answer as unknown as () => void)()
  const got = await opening
  t.equal(got.opened, true, 'the handshake completes')
  if (got.opened) t.equal((await closed(got.ws)).code, 1001, 'and is closed as the drain goes on')
  t.same(await drained, { cut: 0 }, 'the drain ends without cutting anything')
})
