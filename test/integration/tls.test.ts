/**
 * `server.tls`: Portcullis serves HTTPS itself, a process started on a self-signed certificate made
 * in the test. A login end to end over https with the real provider (which stays plain http on
 * loopback), keep-alive, Secure cookies, the healthcheck; on SIGHUP a renewed certificate is served to
 * new connections while an open one keeps working; a broken one is refused at reload and at start.
 */
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import https from 'node:https'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { connect } from 'node:net'
import { join, resolve } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { holdPort } from '../helpers/ports.ts'
import { spawnPortcullis } from '../helpers/process.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { TEST_SECRET } from '../helpers/config.ts'
import { eventually } from '../helpers/wait.ts'
import { replaceCertificate, selfSignedCertificate, type TestCertificate } from '../helpers/tls.ts'

const MAIN = resolve(import.meta.dirname, '../../src/main.ts')

/** A GET on an agent's connection: the status, body and the TLS socket it went over. */
function getVia(agent: HttpsAgent, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; socket: TLSSocket }> {
  return new Promise((done, fail) => {
    const req = httpsRequest(url, { agent, headers }, (res) => {
      // Taken now: a keep-alive agent detaches the socket from the response once it ends.
      const socket = res.socket as TLSSocket
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), socket }))
    })
    req.on('error', fail)
    req.end()
  })
}

/** What a new TLS connection offering h2 and HTTP/1.1 is shown: the certificate's SHA-256 fingerprint, the protocol picked. */
function handshake(port: number, ca: string[]): Promise<{ fingerprint256: string; alpn: string | false }> {
  return new Promise((done, fail) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
      const seen = { fingerprint256: socket.getPeerCertificate().fingerprint256, alpn: socket.alpnProtocol ?? false }
      socket.end()
      done(seen)
    })
    socket.once('error', fail)
  })
}

async function servedFingerprint(port: number, ca: string[]): Promise<string> {
  return (await handshake(port, ca)).fingerprint256
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

function listening(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      r(true)
    })
    s.once('error', () => r(false))
  })
}

function tlsConfig(o: { port: number; issuer: string; upstream: string; cert: TestCertificate }): string {
  return `server:
  listen: 127.0.0.1:${o.port}
  publicUrl: https://127.0.0.1:${o.port}
  shutdownTimeout: 2s
  tls:
    certFile: ${o.cert.certFile}
    keyFile: ${o.cert.keyFile}
provider:
  issuer: ${o.issuer}
  clientId: tls-test
  clientSecret: tls-test-client-secret-long-enough
  allowInsecureHttp: true
session:
  secrets: ["${TEST_SECRET}"]
routes:
  - match: { pathPrefix: / }
    upstream: ${o.upstream}
`
}

async function startTls(t: Test) {
  const dir = t.testdir()
  const first = selfSignedCertificate(dir, 'first')
  const renewed = selfSignedCertificate(dir, 'renewed')
  const broken = selfSignedCertificate(dir, 'broken')
  const ca = [first.cert, renewed.cert]
  const { port, release } = await holdPort()
  const publicUrl = `https://127.0.0.1:${port}`
  const provider = await startTestProvider(t, {
    clients: [{ clientId: 'tls-test', clientSecret: 'tls-test-client-secret-long-enough', redirectUris: [`${publicUrl}/oauth2/callback`], postLogoutRedirectUris: [`${publicUrl}/`] }],
    allowLoopbackFetch: true,
  })
  const upstream = await startTestUpstream(t)
  const file = join(dir, 'portcullis.yaml')
  writeFileSync(file, tlsConfig({ port, issuer: provider.issuer, upstream: upstream.url, cert: first }))
  await release()
  const proc = await spawnPortcullis(t, { file, port, tls: { ca } })
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'provider connected')), 'the provider is connected')
  return { proc, port, file, ca, first, renewed, broken, upstream }
}

t.test('HTTPS listener: login end to end, Secure cookies, keep-alive, healthcheck; SIGHUP serves a renewed certificate to new connections and keeps open ones', async (t) => {
  const { proc, port, file, ca, first, renewed, broken, upstream } = await startTls(t)
  t.equal(proc.url, `https://127.0.0.1:${port}`)
  // Log lines are written in batches (at least every 250 ms).
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'portcullis listening')), 'it says it listens')
  t.match(proc.logs.find((l) => l.msg === 'portcullis listening'), { tls: { fingerprint256: first.fingerprint256 } }, 'the startup line names the certificate')
  t.ok(proc.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith(`Server listening at https://127.0.0.1:${port}`)), 'Fastify\'s line says https')
  t.equal(await servedFingerprint(port, ca), first.fingerprint256, 'a new connection is shown the configured certificate')

  // The test's own requests (the login helper's) trust the two self-signed certificates.
  const globalAgent = https.globalAgent
  https.globalAgent = new HttpsAgent({ ca })
  t.teardown(() => {
    https.globalAgent.destroy()
    https.globalAgent = globalAgent
  })

  const { jar, finalLocation } = await login({ proxyUrl: proc.url, path: '/app?x=1' })
  t.equal(finalLocation, `${proc.url}/app?x=1`, 'the login ends back on the https origin')
  const sessionCookies = jar.all().filter((c) => c.name.startsWith('__Host-'))
  t.ok(sessionCookies.length > 0, 'the session cookie has the __Host- prefix')
  t.ok(sessionCookies.every((c) => c.secure), 'and is Secure')
  const page = await request(`${proc.url}/app?x=1`, { jar, headers: { accept: 'application/json' } })
  t.equal(page.status, 200, 'the proxied request is answered over https')
  const seen = upstream.requests.at(-1)
  t.equal(seen?.headers['x-auth-request-email'], 'alice@example.com', 'with the identity headers')
  t.equal(seen?.headers['x-forwarded-proto'], 'https')

  // Keep-alive: two requests on one TLS connection, opened before the reload.
  const agent = new HttpsAgent({ ca, keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const cookie = jar.header(`${proc.url}/`)
  const one = await getVia(agent, `${proc.url}/one`, { cookie, accept: 'application/json' })
  const two = await getVia(agent, `${proc.url}/two`, { cookie, accept: 'application/json' })
  t.equal(one.status, 200)
  t.equal(two.status, 200)
  t.equal(two.socket, one.socket, 'the second request reused the connection')
  t.equal((await handshake(port, ca)).alpn, 'http/1.1', 'a client offering h2 and HTTP/1.1 is given HTTP/1.1')
  t.equal(one.socket.getPeerCertificate().fingerprint256, first.fingerprint256)

  const hc = await runCli(['healthcheck', '--config', file])
  t.equal(hc.code, 0, `portcullis healthcheck works against the TLS listener ${hc.stderr}`)
  const check = await runCli(['check', '--config', file])
  t.match(check.stdout, `tls: serving HTTPS with CN=first (SHA-256 ${first.fingerprint256}), valid until `, 'portcullis check names the certificate')

  // Renewed in place, then SIGHUP.
  replaceCertificate(first, renewed)
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg === 'configuration reloaded')), 'reloaded')
  t.match(proc.logs.find((l) => l.msg === 'configuration reloaded'), { tls: { fingerprint256: renewed.fingerprint256 } }, 'the reload line names the new certificate')
  t.equal(await servedFingerprint(port, ca), renewed.fingerprint256, 'a new connection is shown the renewed certificate')
  const three = await getVia(agent, `${proc.url}/three`, { cookie, accept: 'application/json' })
  t.equal(three.status, 200, 'the connection opened before the reload keeps working')
  t.equal(three.socket, one.socket, 'on the same socket')
  t.equal(three.socket.getPeerCertificate().fingerprint256, first.fingerprint256, 'with the certificate it was made with')

  // A broken certificate: refused, the renewed one kept.
  writeFileSync(first.certFile, 'not a certificate\n')
  proc.child.kill('SIGHUP')
  t.ok(await eventually(() => proc.logs.some((l) => l.msg?.toString().startsWith('reload refused'))), 'a broken certificate is refused at reload')
  const refusal = proc.logs.find((l) => l.msg?.toString().startsWith('reload refused'))
  t.match(JSON.stringify(refusal?.problems), /server\.tls\.cert: is not a PEM certificate/, 'the log line names server.tls.cert')
  t.equal(await servedFingerprint(port, ca), renewed.fingerprint256, 'new connections still get the renewed certificate')
  // A key that is not the certificate's: refused too.
  replaceCertificate(first, renewed)
  writeFileSync(first.keyFile, broken.key)
  proc.child.kill('SIGHUP')
  t.ok(
    await eventually(() => proc.logs.filter((l) => l.msg?.toString().startsWith('reload refused')).length === 2),
    'a key of another certificate is refused at reload',
  )
  t.match(JSON.stringify(proc.logs.filter((l) => l.msg?.toString().startsWith('reload refused'))[1]?.problems), /server\.tls\.key: does not belong to server\.tls\.cert/)
  t.equal((await getVia(agent, `${proc.url}/four`, { cookie, accept: 'application/json' })).status, 200, 'and the open connection still works')

  // At SIGTERM: the idle keep-alive TLS connection, and a TCP connection that never began its
  // handshake, are closed at once by the drain (not cut at the shutdown timeout).
  const silent = connect(port, '127.0.0.1')
  await new Promise((r) => silent.once('connect', r))
  const silentClosed = new Promise<void>((r) => silent.once('close', () => r()))
  silent.on('error', () => {})
  const inFlight = getVia(agent, `${proc.url}/slow?ms=800`, { cookie, accept: 'application/json' })
  t.ok(await eventually(() => upstream.requests.some((r) => r.url.startsWith('/slow'))), 'a request is in flight')
  proc.child.kill('SIGTERM')
  const last = await inFlight
  t.equal(last.status, 200, 'the request in flight at SIGTERM is answered over its TLS connection')
  t.equal(await proc.exited, 0, 'SIGTERM drains the TLS connections and exits 0')
  await silentClosed
  t.notOk(proc.logs.some((l) => String(l.msg).includes('were cut')), 'nothing had to be cut at the shutdown timeout')
  t.ok(proc.logs.some((l) => l.msg === 'stopped'), 'stopped')
})

t.test('a bad certificate or key at startup is a config error naming server.tls.cert or server.tls.key: exit 2, nothing listens', async (t) => {
  const dir = t.testdir()
  const other = selfSignedCertificate(dir, 'other')
  const { port, release } = await holdPort()
  await release()
  const cases: Array<{ name: string; spoil: (c: TestCertificate) => TestCertificate; expected: RegExp }> = [
    {
      name: 'garbage certificate',
      spoil: (c) => (writeFileSync(c.certFile, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), c),
      expected: /config error: server\.tls\.cert: is not a PEM certificate/,
    },
    { name: 'garbage key', spoil: (c) => (writeFileSync(c.keyFile, 'not-a-key-at-all'), c), expected: /config error: server\.tls\.key: is not a PEM private key/ },
    {
      name: 'the key of another certificate',
      spoil: (c) => (writeFileSync(c.keyFile, other.key), c),
      expected: /config error: server\.tls\.key: does not belong to server\.tls\.cert \(its certificate is CN=good/,
    },
    { name: 'a key file that does not exist', spoil: (c) => ({ ...c, keyFile: join(dir, 'absent.pem') }), expected: /config error: server\.tls\.key: keyFile: cannot read .*absent\.pem: no such file/ },
  ]
  for (const { name, spoil, expected } of cases) {
    await t.test(name, async (t) => {
      const sub = t.testdir()
      const cert = spoil(selfSignedCertificate(sub, 'good'))
      const file = join(sub, 'portcullis.yaml')
      writeFileSync(file, tlsConfig({ port, issuer: 'http://127.0.0.1:1', upstream: 'http://127.0.0.1:2', cert }))
      const res = await runCli(['--config', file])
      t.equal(res.code, 2, 'exit 2')
      t.match(res.stderr, expected)
      t.match(res.stderr, /nothing was started/)
      const keyBody = other.key.split('\n')[1] ?? 'unset'
      t.notOk(res.stderr.includes('not-a-key-at-all') || res.stderr.includes('AAAA') || res.stderr.includes(keyBody), 'no key material is printed')
      t.equal(await listening(port), false, 'nothing listens')
    })
  }
})
