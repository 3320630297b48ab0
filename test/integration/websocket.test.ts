/**
 * WebSocket upgrades through Portcullis: the upgrade runs the
 * same pipeline as any request (no session → refused before the upstream is contacted), and the
 * upstream handshake carries the same header rewrite as HTTP: identity injected, spoofed copies gone,
 * our cookies removed.
 */
import t from 'tap'
import WebSocket from 'ws'
import type { RawData } from 'ws'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import type { EchoRecord } from '../helpers/upstream.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../src/config/schema.ts'

const alice = DEMO_USERS[0]!
const norm = (name: string): string => name.toLowerCase().replaceAll('_', '-')
const IDENTITY = new Set(Object.keys(DEFAULT_IDENTITY_HEADERS).map(norm))

interface Hello {
  type: string
  url: string
  headers: Record<string, string | string[] | undefined>
}

interface Message {
  data: Buffer
  isBinary: boolean
}

/** A client socket plus a queue of the messages it received, so none is missed between awaits. */
interface Client {
  ws: WebSocket
  next(): Promise<Message>
}

type Outcome = { ok: true; client: Client } | { ok: false; status: number; body: string }

/** Open a WebSocket; resolve when it is open, or with the HTTP status when the handshake is refused. */
function open(url: string, headers: Record<string, string>): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 5_000 })
    const queue: Message[] = []
    const waiters: Array<(m: Message) => void> = []
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const msg = { data: Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer), isBinary }
      const waiter = waiters.shift()
      if (waiter) waiter(msg)
      else queue.push(msg)
    })
    const next = () =>
      new Promise<Message>((res, rej) => {
        const queued = queue.shift()
        if (queued) return res(queued)
        const timer = setTimeout(() => rej(new Error('no message within 5s')), 5_000)
        waiters.push((m) => {
          clearTimeout(timer)
          res(m)
        })
      })
    ws.once('open', () => resolve({ ok: true, client: { ws, next } }))
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        resolve({ ok: false, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') })
        ws.terminate()
      })
    })
    ws.once('error', (err) => reject(err))
  })
}

function closeClient(client: Client): Promise<void> {
  return new Promise((resolve) => {
    if (client.ws.readyState === WebSocket.CLOSED) return resolve()
    client.ws.once('close', () => resolve())
    client.ws.close()
  })
}

const upgrades = (requests: EchoRecord[]) => requests.filter((r) => String(r.headers.upgrade ?? '').toLowerCase() === 'websocket')

t.test('websocket upgrades', async (t) => {
  const { proxy, upstream } = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/based' }, upstream: `${upstream}/base`, public: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
    }),
  })
  const wsUrl = proxy.url.replace(/^http/, 'ws')

  t.test('without a session the handshake is refused with 401', async (t) => {
    const attempts: Array<Record<string, string>> = [{}, { cookie: '_portcullis=not-a-session' }, { 'X-Auth-Request-User': 'alice', cookie: 'other=1' }]
    for (const headers of attempts) {
      const outcome = await open(`${wsUrl}/socket`, headers)
      t.equal(outcome.ok, false, `${JSON.stringify(headers)}: not opened`)
      if (!outcome.ok) {
        t.equal(outcome.status, 401, 'refused with 401')
        t.notMatch(outcome.body, /\bat .*\.(?:ts|js):\d+/, 'no stack trace')
      }
    }
    t.equal(upgrades(upstream.requests).length, 0, 'the upstream saw no upgrade')
    t.equal(upstream.requests.length, 0, 'nor any request')
  })

  t.test('with a session the upgrade is proxied with the identity, without spoofed headers or our cookies', async (t) => {
    const { jar } = await login({ proxyUrl: proxy.url })
    // Only Portcullis' cookies (the jar ignores ports, like a browser, so it also holds the provider's).
    const sessionCookie = jar
      .all()
      .filter((c) => c.name.startsWith('_portcullis'))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ')
    t.match(sessionCookie, /^_portcullis=/, 'the jar holds the session cookie')
    const outcome = await open(`${wsUrl}/socket?room=1`, {
      cookie: `a=1; ${sessionCookie}; other=2`,
      'X-Auth-Request-User': 'mallory',
      x_auth_request_email: 'mallory@evil.example',
      'X-FORWARDED-USER': 'mallory',
      X_Forwarded_Groups: 'admins-mallory',
      'X-Forwarded-For': '203.0.113.7',
    })
    t.equal(outcome.ok, true, 'opened')
    if (!outcome.ok) return
    const { client } = outcome
    t.teardown(() => closeClient(client))

    const first = await client.next()
    t.equal(first.isBinary, false)
    const hello = JSON.parse(first.data.toString('utf8')) as Hello
    t.equal(hello.type, 'hello')
    t.equal(hello.url, '/socket?room=1', 'path and query reach the upstream')
    const h = hello.headers
    t.equal(h['x-auth-request-user'], alice.id)
    t.equal(h['x-auth-request-email'], alice.email)
    t.equal(h['x-auth-request-groups'], alice.groups.join(','))
    t.equal(h['x-auth-request-preferred-username'], alice.preferredUsername)
    t.equal(h['x-forwarded-user'], alice.id)
    t.equal(h['x-forwarded-email'], alice.email)
    t.equal(h['x-forwarded-groups'], alice.groups.join(','))
    t.equal(h['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for is the peer only')
    t.equal(h['x-forwarded-host'], new URL(proxy.url).host)
    t.same(Object.keys(h).filter((k) => k.includes('_') && IDENTITY.has(norm(k))), [], 'no underscore variant of an identity header')
    t.notMatch(JSON.stringify(h), /mallory|203\.0\.113\.7/, 'no spoofed value anywhere')
    t.equal(h.cookie, 'a=1; other=2', "the app keeps its own cookies; ours are removed")
    t.notMatch(String(h.cookie ?? ''), /_portcullis/, 'no _portcullis cookie')

    const seen = upgrades(upstream.requests)
    t.equal(seen.length, 1, 'the upstream saw one upgrade')
    const rawNames = (seen[0] as EchoRecord).rawHeaders.filter((_, i) => i % 2 === 0)
    t.same(
      rawNames.filter((n) => IDENTITY.has(norm(n))).map(norm).sort(),
      [...IDENTITY].sort(),
      'each identity header exactly once on the wire',
    )

    client.ws.send('ping')
    const echo = await client.next()
    t.equal(echo.isBinary, false)
    t.equal(echo.data.toString('utf8'), 'ping', 'text echoed')
    client.ws.send(Buffer.from([0, 1, 2, 255]))
    const bin = await client.next()
    t.equal(bin.isBinary, true)
    t.same([...bin.data], [0, 1, 2, 255], 'binary echoed')
    const big = 'x'.repeat(200_000)
    client.ws.send(big)
    t.equal((await client.next()).data.toString('utf8'), big, 'a large message echoed whole')
  })

  t.test('a public route upgrades without a session and carries no identity header', async (t) => {
    const before = upgrades(upstream.requests).length
    const outcome = await open(`${wsUrl}/public/socket`, { 'X-Auth-Request-User': 'mallory', x_forwarded_user: 'mallory' })
    t.equal(outcome.ok, true, 'opened')
    if (!outcome.ok) return
    const { client } = outcome
    t.teardown(() => closeClient(client))
    const hello = JSON.parse((await client.next()).data.toString('utf8')) as Hello
    t.equal(hello.url, '/public/socket')
    t.same(Object.keys(hello.headers).filter((k) => IDENTITY.has(norm(k))), [], 'no identity header of any spelling')
    t.notMatch(JSON.stringify(hello.headers), /mallory/)
    t.equal(upgrades(upstream.requests).length, before + 1)
  })

  t.test("the upstream's base path applies to upgrades as it does to HTTP", async (t) => {
    const outcome = await open(`${wsUrl}/based/socket?q=1`, {})
    t.equal(outcome.ok, true, 'opened')
    if (!outcome.ok) return
    const { client } = outcome
    t.teardown(() => closeClient(client))
    const hello = JSON.parse((await client.next()).data.toString('utf8')) as Hello
    t.equal(hello.url, '/base/based/socket?q=1', 'upstream http://host/base → /base/based/socket')
  })

  t.test('a path that cannot be normalized is refused before the upstream', async (t) => {
    const before = upstream.requests.length
    const outcome = await open(`${wsUrl}/public/a%2fb`, {})
    t.equal(outcome.ok, false)
    if (!outcome.ok) t.equal(outcome.status, 400)
    t.equal(upstream.requests.length, before, 'the upstream saw nothing')
  })
})
