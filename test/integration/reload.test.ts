/**
 * SIGHUP in a Portcullis process with a real provider: new access rules (`routes[].allow`,
 * `access.defaultAllow`) and identity headers (`identity.headers`) are in force on the next request,
 * also on a keep-alive connection opened before the signal; a request in flight finishes; a config
 * that is invalid, or that changes a setting only a restart can, is refused with a log line that
 * says why, and the running rules stay. (A file that is not YAML at all: test/integration/cli.test.ts.)
 */
import { writeFileSync } from 'node:fs'
import { Agent, request as httpRequest } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { holdPort } from '../helpers/ports.ts'
import { spawnPortcullis } from '../helpers/process.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { login } from '../helpers/login.ts'
import { TEST_SECRET } from '../helpers/config.ts'
import { eventually } from '../helpers/wait.ts'

/** A GET on an agent's connection: the status, the echo's view of the request, the socket used. */
function getVia(agent: Agent, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; socket: Socket }> {
  return new Promise((done, fail) => {
    const req = httpRequest(url, { agent, headers: { accept: 'application/json', ...headers } }, (res) => {
      // Taken now: a keep-alive agent detaches the socket from the response once it ends.
      const socket = res.socket
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), socket }))
    })
    req.on('error', fail)
    req.end()
  })
}

interface Rules {
  aAllow: string
  defaultAllow: string
  headers: string
  authPrefix?: string
  upstream?: string
}

t.test('SIGHUP swaps access rules and identity headers without dropping connections; invalid or restart-only changes are refused and the old config kept', async (t) => {
  const { port, release } = await holdPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const provider = await startTestProvider(t, {
    clients: [{ clientId: 'reload-test', clientSecret: 'reload-test-client-secret-long-enough', redirectUris: [`${publicUrl}/oauth2/callback`] }],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  const file = join(t.testdir(), 'portcullis.yaml')
  const write = (r: Rules) =>
    writeFileSync(
      file,
      `server:
  listen: 127.0.0.1:${port}
  publicUrl: ${publicUrl}
  shutdownTimeout: 2s
  authPrefix: ${r.authPrefix ?? '/oauth2'}
provider:
  issuer: ${provider.issuer}
  clientId: reload-test
  clientSecret: reload-test-client-secret-long-enough
  allowInsecureHttp: true
session:
  secrets: ["${TEST_SECRET}"]
access:
  defaultAllow: ${r.defaultAllow}
identity:
  headers: ${r.headers}
routes:
  - match: { pathPrefix: / }
    upstream: ${r.upstream ?? upstream.url}
    allow: { domains: [example.com] }
  - match: { pathPrefix: /a }
    upstream: ${upstream.url}
    allow: ${r.aAllow}
  - match: { pathPrefix: /b }
    upstream: ${upstream.url}
`,
    )
  const before: Rules = { aAllow: '{ emails: [alice@example.com] }', defaultAllow: '{ domains: [example.com] }', headers: '{ X-Auth-Request-Email: email }' }
  const after: Rules = { aAllow: '{ emails: [bob@example.com] }', defaultAllow: '{ emails: [bob@example.com] }', headers: '{ X-Auth-Request-User: sub }' }
  write(before)
  await release()
  const proc = await spawnPortcullis(t, { file, port })
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'provider connected')), 'the provider is connected')
  const { jar } = await login({ proxyUrl: proc.url })
  const cookie = jar.header(`${proc.url}/`)
  const seen = () => upstream.requests.at(-1)?.headers ?? {}

  // One keep-alive connection, opened before the reload.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const a1 = await getVia(agent, `${proc.url}/a`, { cookie })
  t.equal(a1.status, 200, 'routes[].allow admits alice before the reload')
  t.equal((await getVia(agent, `${proc.url}/b`, { cookie })).status, 200, 'access.defaultAllow admits alice before the reload')
  const root1 = await getVia(agent, `${proc.url}/`, { cookie })
  t.equal(root1.status, 200)
  t.equal(seen()['x-auth-request-email'], 'alice@example.com', 'identity.headers before the reload')
  t.equal(seen()['x-auth-request-user'], undefined)
  t.equal(root1.socket, a1.socket, 'all on one connection')

  // A request in flight across the reload, on a connection of its own.
  const slowAgent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => slowAgent.destroy())
  const inFlight = getVia(slowAgent, `${proc.url}/slow?ms=2500`, { cookie })
  t.ok(await eventually(() => upstream.requests.some((r) => r.url.startsWith('/slow'))), 'a request is in flight')

  write(after)
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'configuration reloaded')), 'reloaded')
  const a2 = await getVia(agent, `${proc.url}/a`, { cookie })
  t.equal(a2.socket, a1.socket, 'the connection opened before the reload is still the one in use')
  t.equal(a2.status, 403, 'the new routes[].allow refuses alice on it')
  t.equal((await getVia(agent, `${proc.url}/b`, { cookie })).status, 403, 'the new access.defaultAllow refuses alice')
  const root2 = await getVia(agent, `${proc.url}/`, { cookie })
  t.equal(root2.status, 200, 'the session survived the reload')
  t.equal(seen()['x-auth-request-user'], 'alice', 'the new identity.headers are sent')
  t.equal(seen()['x-auth-request-email'], undefined, 'the old ones are not')
  t.equal(root2.socket, a1.socket)
  const slow = await inFlight
  t.equal(slow.status, 200, 'the request in flight during the reload was answered')

  const refusals = () => proc.logs.filter((l) => String(l.msg).startsWith('reload refused'))
  // Invalid: refused, naming the problem; the running rules stay.
  write({ ...before, upstream: 'not-a-url' })
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => refusals().length === 1), 'an invalid config is refused')
  t.match(refusals()[0], { problems: [/^routes\[0\]\.upstream: /], msg: /the running configuration was kept/ }, 'the log line names the problem')
  t.equal((await getVia(agent, `${proc.url}/a`, { cookie })).status, 403, 'the running rules are kept')
  t.equal((await getVia(agent, `${proc.url}/`, { cookie })).status, 200)
  t.equal(seen()['x-auth-request-user'], 'alice', 'and the running identity headers')

  // A setting only a restart can change: refused, naming it.
  write({ ...before, authPrefix: '/auth' })
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => refusals().length === 2), 'a restart-only change is refused')
  t.match(refusals()[1], { changed: ['server.authPrefix'], msg: /need a restart/ })
  t.equal((await getVia(agent, `${proc.url}/a`, { cookie })).status, 403, 'the running rules are kept')
  t.equal((await getVia(agent, `${proc.url}/oauth2/userinfo`, { cookie })).status, 200, 'and the running auth prefix')

  // A valid file again: reloads.
  write(before)
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.filter((l) => l.msg === 'configuration reloaded').length === 2), 'a valid file reloads again')
  t.equal((await getVia(agent, `${proc.url}/a`, { cookie })).status, 200, 'alice is admitted again')
  t.equal((await getVia(agent, `${proc.url}/a`, { cookie })).socket, a1.socket, 'still on the first connection')

  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0)
})
