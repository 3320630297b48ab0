/**
 * Issue #8 point 1: "a unit test fails if a lane decides anything itself". The lanes — the fast lane,
 * the Fastify path, the WebSocket upgrade handler, and the executor they share — carry out the
 * pipeline's decision and nothing else:
 * 1. by what they import and call: none of them reaches the route table, the session stores, the
 *    revocations, the refresher, the header strip list, content negotiation or the forward-auth rules;
 *    those are the pipeline's (src/http/pipeline.ts);
 * 2. by what they do: given a decision function that ignores the request, each lane answers exactly
 *    what it was told: a refusal for a request with a valid session, a forward for one without any.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { connect } from 'node:net'
import t from 'tap'
import { startApp, startStack } from '../../helpers/portcullis.ts'
import { login } from '../../helpers/login.ts'
import { request } from '../../helpers/http.ts'
import { answer, type Decision } from '../../../src/http/decision.ts'
import type { Decide } from '../../../src/http/pipeline.ts'
import { importsOf } from '../../helpers/imports.ts'

const HTTP = resolve(import.meta.dirname, '../../../src/http')
const LANES = ['fast-lane.ts', 'fastify-lane.ts', 'tunnel.ts', 'execute.ts']

/** Imports that would let a lane decide: the domain, and the pipeline's own helpers. */
const NOT_FOR_LANES = [/^\.\.\/policy\//, /^\.\.\/session\//, /^\.\.\/oidc\//, /^\.\/(negotiate|forward-auth|upstream-headers|cookies|credentials)\.ts$/]
/** Calls that are decisions: routing, sessions, revocations, refresh, stripping, negotiation, identity. */
const DECIDING = [
  /\.routes\.match\(/,
  /\.sessions\.(load|update|save|clear)\(/,
  /\.revocations\.(isRevoked|revoke\w*)\(/,
  /\brefresher\b/,
  /\.screen\./,
  /\bcompileHeaderScreen\(/,
  /\bisBrowserNavigation\(/,
  /\boriginalRequest\(/,
  /\bidentityHeaders\(/,
  /\bupstreamHeaders\(/,
  /\bwantsHtml\(/,
  /\.accessTokens\./,
]

t.test('no lane imports or calls what decides', async (t) => {
  for (const file of LANES) {
    const text = readFileSync(resolve(HTTP, file), 'utf8')
    for (const imp of importsOf(text)) {
      t.notOk(
        NOT_FOR_LANES.some((re) => re.test(imp.spec)),
        `${file} does not import ${imp.spec}`,
      )
    }
    const code = text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '') // comments may name what they do not do
    for (const re of DECIDING) t.notMatch(code, re, `${file} does not call ${re.source}`)
  }
  // The table above must keep meaning something: the pipeline does all of these.
  const pipeline = readFileSync(resolve(HTTP, 'pipeline.ts'), 'utf8')
  for (const re of [/\.routes\.match\(/, /\.sessions\.load\(/, /\.revocations\.isRevoked\(/, /\bisBrowserNavigation\(/, /\boriginalRequest\(/, /\bupstreamHeaders\(/]) {
    t.match(pipeline, re, `the pipeline does ${re.source}`)
  }
})

t.test('each lane carries out the decision it is given, whatever the request says', async (t) => {
  const stack = await startStack(t)
  const rt = stack.proxy.runtime
  const route = rt.routes.routes[0]
  if (route === undefined) throw new Error('the test config has a route')
  const { jar } = await login({ proxyUrl: stack.proxy.url })
  const cookie = jar.header(`${stack.proxy.url}/`)
  let mode = ''
  const refuse: Decide = async (_rt, facts, m) => {
    mode = m
    return answer('forbidden', 403, ['content-type', 'text/plain', 'x-decided', 'refuse', 'x-request-id', facts.requestId], 'decided elsewhere', { label: 'test:refuse', route: null, session: null, notes: [] })
  }
  const forward: Decide = async (_rt, facts, m): Promise<Decision> => {
    mode = m
    return {
      action: 'proxy',
      kind: 'forward',
      label: 'test:forward',
      route,
      session: null,
      sessionValue: null,
      notes: [],
      target: '/told/to',
      upstream: { 'x-decided': 'forward', accept: 'application/json' },
      respond: { 'x-request-id': facts.requestId, 'x-told': 'yes' },
    }
  }
  for (const fastLane of [true, false]) {
    const lane = fastLane ? 'fast lane' : 'Fastify path'
    const refusing = await startApp(t, rt, { decide: refuse, fastLane })
    const before = stack.upstream.requests.length
    for (const path of ['/app/page', '/oauth2/auth', '/a%20b']) {
      const res = await request(`${refusing.url}${path}`, { headers: { cookie, accept: 'application/json', 'x-request-id': 'r-1' } })
      t.equal(res.status, 403, `${lane} ${path}: a valid session, refused as decided`)
      t.equal(res.body, 'decided elsewhere')
      t.equal(res.headers['x-decided'], 'refuse')
      t.equal(mode, path === '/oauth2/auth' ? 'check' : 'proxy', `${lane} ${path}: asked in the right mode`)
    }
    t.equal(stack.upstream.requests.length, before, `${lane}: nothing reached the upstream`)
    const line = refusing.logs.find((l) => l.msg === 'request' && l.route === 'test:refuse')
    t.match(line, { status: 403, route: 'test:refuse' }, `${lane}: the access line names the decision`)

    const forwarding = await startApp(t, rt, { decide: forward, fastLane })
    const res = await request(`${forwarding.url}/no/session/here`, { headers: { accept: 'text/html' } })
    t.equal(res.status, 200, `${lane}: no session at all, forwarded as decided`)
    t.equal(res.headers['x-told'], 'yes')
    const seen = stack.upstream.requests.at(-1)
    t.equal(seen?.url, '/told/to', `${lane}: to the decided target`)
    t.equal(seen?.headers['x-decided'], 'forward', `${lane}: with the decided headers`)
    t.equal(seen?.headers['x-auth-request-user'], undefined, `${lane}: and nothing the lane added of its own`)
  }

  // The upgrade handler too.
  const refusing = await startApp(t, rt, { decide: refuse })
  const port = new URL(refusing.url).port
  const status = await new Promise<string>((resolveStatus, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(`GET /socket HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    let got = ''
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')))
    socket.on('close', () => resolveStatus(got.split('\r\n')[0] ?? ''))
    socket.on('error', reject)
  })
  t.equal(status, 'HTTP/1.1 403 Forbidden', 'an upgrade with a valid session: refused as decided')
})
