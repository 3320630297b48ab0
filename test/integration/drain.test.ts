/**
 * Issue #8 point 7: SIGTERM drains cleanly. With load in flight, an idle keep-alive connection, a
 * browser-style preconnect (a connection that never sent a request) and an open WebSocket:
 * - the idle connections are closed at once, before the requests in flight are done;
 * - every request in flight finishes with 200, answered with `Connection: close`;
 * - the WebSocket is closed with 1001;
 * - the process exits 0 because everything closed, not because `server.shutdownTimeout` ran out
 *   (no connection had to be cut).
 */
import t from 'tap'
import { connect, type Socket } from 'node:net'
import http from 'node:http'
import WebSocket from 'ws'
import { publicOnlyConfig, startPortcullisProcess } from '../helpers/process.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { eventually } from '../helpers/wait.ts'

t.test('SIGTERM during load: in-flight requests finish, idle sockets close at once, WebSockets get 1001, exit 0', async (t) => {
  const upstream = await startTestUpstream(t)
  const proc = await startPortcullisProcess(
    t,
    (port) => publicOnlyConfig(port, upstream.url, { server: { shutdownTimeout: '60s' } }),
  )
  const events: string[] = []

  // A preconnect: a connection that never sends a request.
  const preconnect = connect(proc.port, '127.0.0.1')
  await new Promise((resolve) => preconnect.once('connect', resolve))
  preconnect.on('close', () => events.push('preconnect closed'))
  // An idle keep-alive connection: one request answered, then nothing.
  const idle = connect(proc.port, '127.0.0.1')
  await new Promise((resolve) => idle.once('connect', resolve))
  const idleAnswer = new Promise<string>((resolve) => {
    let got = ''
    idle.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (got.includes('\r\n\r\n') && got.includes('"url":"/first"')) resolve(got)
    })
  })
  idle.write('GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n')
  t.match(await idleAnswer, /^HTTP\/1\.1 200 [\s\S]*keep-alive/i, 'the idle connection was kept alive after its request')
  idle.on('close', () => events.push('idle closed'))
  // An open WebSocket.
  const ws = new WebSocket(`${proc.url.replace(/^http/, 'ws')}/socket`)
  await new Promise((resolve, reject) => {
    ws.once('message', resolve)
    ws.once('error', reject)
  })
  const wsClosed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))

  // Load: requests in flight that the upstream answers only after a while.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 })
  t.teardown(() => agent.destroy())
  const inFlight = Array.from({ length: 20 }, (_, i) =>
    new Promise<{ status: number; connection: string | undefined; error?: string }>((resolve) => {
      const req = http.get(`${proc.url}/slow?ms=1500&i=${i}`, { agent, headers: { accept: 'application/json' } }, (res) => {
        res.resume()
        res.on('end', () => {
          events.push('in-flight done')
          resolve({ status: res.statusCode ?? 0, connection: res.headers.connection })
        })
      })
      req.on('error', (err) => resolve({ status: 0, connection: undefined, error: err.message }))
    }),
  )
  t.ok(await eventually(() => upstream.requests.filter((r) => r.url.startsWith('/slow')).length === 20), 'all twenty are at the upstream')

  proc.child.kill('SIGTERM')
  const results = await Promise.all(inFlight)
  t.same(
    results.filter((r) => r.status !== 200),
    [],
    'every request in flight finished with 200',
  )
  t.same(new Set(results.map((r) => r.connection)), new Set(['close']), 'each answered with Connection: close')
  t.equal(await wsClosed, 1001, 'the WebSocket was closed with 1001 (going away)')
  const code = await proc.exited
  t.equal(code, 0, 'exit code 0')
  t.ok(await eventually(() => events.includes('idle closed') && events.includes('preconnect closed')), 'the idle connections closed')
  t.ok(events.indexOf('idle closed') < events.indexOf('in-flight done'), 'the idle keep-alive connection was closed before the load finished')
  t.ok(events.indexOf('preconnect closed') < events.indexOf('in-flight done'), 'so was the preconnect')
  t.ok(proc.logs.some((l) => l.msg === 'stopped'), 'it logged that it stopped')
  t.notOk(proc.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('were cut')), 'without cutting any connection at the bound')
  for (const s of [preconnect, idle] as Socket[]) s.destroy()
})

t.test('a request slower than server.shutdownTimeout is cut at the bound, and the exit is still clean', async (t) => {
  const upstream = await startTestUpstream(t)
  const proc = await startPortcullisProcess(
    t,
    (port) => publicOnlyConfig(port, upstream.url, { server: { shutdownTimeout: '1s' } }),
  )
  const slow = new Promise<string>((resolve) => {
    const req = http.get(`${proc.url}/slow?ms=30000`, (res) => {
      res.resume()
      res.on('end', () => resolve(`answered ${res.statusCode}`))
      res.on('error', () => resolve('cut'))
    })
    req.on('error', () => resolve('cut'))
  })
  t.ok(await eventually(() => upstream.requests.some((r) => r.url.startsWith('/slow'))), 'the slow request is at the upstream')
  proc.child.kill('SIGTERM')
  t.equal(await slow, 'cut', 'cut at the bound')
  t.equal(await proc.exited, 0, 'exit code 0')
  t.match(proc.logs.find((l) => typeof l.msg === 'string' && l.msg.includes('were cut')), { cut: 1 }, 'the cut is logged')
})
