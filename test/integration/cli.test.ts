import { spawn } from 'node:child_process'
import { connect, type AddressInfo } from 'node:net'
import { createServer } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { reservePort } from '../helpers/portcullis.ts'
import { startTestProvider } from '../helpers/provider.ts'
import { TEST_SECRET } from '../helpers/config.ts'
import { eventually } from '../helpers/wait.ts'

const MAIN = resolve(import.meta.dirname, '../../src/main.ts')

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolveRun({ code, stdout, stderr })
    })
  })
}

function isListening(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      r(true)
    })
    s.once('error', () => r(false))
  })
}

t.test('an invalid config names every problem, exits 2 and listens on nothing', async (t) => {
  const dir = t.testdir()
  const port = await reservePort()
  const file = join(dir, 'bad.yaml')
  writeFileSync(
    file,
    `server:\n  listen: 127.0.0.1:${port}\n  publicUrl: http://127.0.0.1:${port}\n  authPrefx: /x\nprovider:\n  clientId: abc\n  clientSecret: \${MISSING_SECRET}\n  clockSkew: 30 seconds\nsession:\n  secrets: [short]\nroutes:\n  - upstream: not-a-url\n`,
  )
  const res = await runCli(['--config', file])
  t.equal(res.code, 2)
  for (const path of ['server.authPrefx', 'provider.issuer', 'provider.clientSecret', 'provider.clockSkew', 'session.secrets[0]', 'routes[0].upstream']) {
    t.match(res.stderr, new RegExp(`config error: ${path.replace(/[[\].]/g, '\\$&')}:`), `names ${path}`)
  }
  t.match(res.stderr, /MISSING_SECRET/)
  t.equal(await isListening(port), false, 'nothing listens')
})

t.test('unknown command and missing --config for check exit 2', async (t) => {
  t.equal((await runCli(['frobnicate'])).code, 2)
  const check = await runCli(['check'])
  t.equal(check.code, 2)
  t.match(check.stderr, /needs --config/)
  const hc = await runCli(['healthcheck'])
  t.equal(hc.code, 2, 'healthcheck without a config: exit 2')
  t.match(hc.stderr, /healthcheck needs --config/)
})

t.test('portcullis check reports what the provider offers', async (t) => {
  const provider = await startTestProvider(t, { clients: [{ clientId: 'cli', clientSecret: 'cli-secret-long-enough', redirectUris: ['http://127.0.0.1:1/oauth2/callback'] }] })
  const dir = t.testdir()
  const write = (name: string, issuer: string) => {
    const file = join(dir, name)
    writeFileSync(
      file,
      `server:\n  publicUrl: http://127.0.0.1:1\nprovider:\n  issuer: ${issuer}\n  clientId: cli\n  clientSecret: cli-secret-long-enough\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\nroutes:\n  - upstream: http://127.0.0.1:2\n  - match: { pathPrefix: /admin }\n    upstream: http://127.0.0.1:2\n    allow: { groups: [admins] }\n  - match: { host: app.example, pathPrefix: /assets }\n    upstream: http://127.0.0.1:2\n    public: true\n  - match: { host: app.example, pathPrefix: /any }\n    upstream: http://127.0.0.1:2\n    allow: {}\n`,
    )
    return file
  }
  const noPlaceholder = (t: Test, res: { stdout: string; stderr: string }) => {
    t.notMatch(res.stdout, /\[object/, 'stdout: no [object …]')
    t.notMatch(res.stderr, /\[object/, 'stderr: no [object …]')
  }
  const ok = await runCli(['check', '--config', write('ok.yaml', provider.issuer)])
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, `authorization endpoint: ${provider.issuer}/oauth/authorize`)
  t.match(ok.stdout, `token endpoint:         ${provider.issuer}/oauth/token`)
  t.match(ok.stdout, `${provider.issuer}/keys (1 key(s)`)
  t.match(ok.stdout, `${provider.issuer}/oidc/logout`)
  t.match(ok.stdout, /RFC 9207 iss parameter: advertised/)
  t.match(ok.stdout, /RS256/)
  t.match(ok.stdout, /redirect URI to register at the provider: http:\/\/127\.0\.0\.1:1\/oauth2\/callback/)
  t.match(ok.stdout, /client authentication: ok \(the client authenticated \(client_secret_basic\)/, 'the client credentials were tested')
  t.match(ok.stdout, `url: ${provider.issuer}/oauth/token; answer: HTTP 400 invalid_grant`, 'by a code exchange the provider refused for its code only')
  t.same(
    ok.stdout.split('\n').filter((l) => l.startsWith('warning: routes[')),
    [
      'warning: routes[0] (any host /): admits every signed-in user — add routes[0].allow or access.defaultAllow',
      'warning: routes[3] (app.example /any): admits every signed-in user — routes[3].allow has no condition',
    ],
    'after the report: the protected routes without a condition; a route with a rule and a public one are not listed',
  )
  t.match(ok.stdout, /\nok\nwarning: routes\[0\]/, 'the warnings come after the report')
  t.equal(
    provider.requests.filter((r) => r.method === 'POST' && r.path === '/oauth/token' && r.grantType === 'authorization_code').length,
    1,
    'one authorization-code exchange reached the token endpoint',
  )
  noPlaceholder(t, ok)

  // Same server, another name for it: discovery names a different issuer than configured.
  const other = provider.issuer.replace('127.0.0.1', 'localhost')
  const mismatch = await runCli(['check', '--config', write('mismatch.yaml', other)])
  t.equal(mismatch.code, 1)
  t.match(mismatch.stderr, /problem: .*does not match the configuration/)
  t.match(mismatch.stderr, /the discovery document names another issuer than the configured one/)
  t.match(mismatch.stderr, `url: ${other}/.well-known/openid-configuration`, 'names the URL')
  t.match(mismatch.stderr, 'answer: HTTP 200', 'and its status')
  t.match(mismatch.stderr, `issuer: configured ${other}, the provider says ${provider.issuer}\n`, 'and both issuers')
  t.match(mismatch.stderr, 'check: provider.issuer')
  noPlaceholder(t, mismatch)

  // The right server, a wrong path: no discovery document there.
  const wrongPath = `${provider.issuer}/realms/nope`
  const notFound = await runCli(['check', '--config', write('404.yaml', wrongPath)])
  t.equal(notFound.code, 1)
  t.match(notFound.stderr, /problem: /)
  t.match(notFound.stderr, /no discovery document at the configured issuer \(HTTP 404\)/)
  t.match(notFound.stderr, `url: ${wrongPath}/.well-known/openid-configuration\n`, 'names the URL')
  t.match(notFound.stderr, 'answer: HTTP 404\n', 'and its status')
  noPlaceholder(t, notFound)

  const downUrl = `http://127.0.0.1:${await reservePort()}`
  const down = await runCli(['check', '--config', write('down.yaml', downUrl)])
  t.equal(down.code, 1)
  t.match(down.stderr, /problem: .*could not be reached/)
  t.match(down.stderr, `url: ${downUrl}/.well-known/openid-configuration\n`, 'names the URL')
  t.match(down.stderr, 'answer: no HTTP answer (ECONNREFUSED)', 'and that nothing answered')
  t.match(down.stdout, 'warning: routes[0] (any host /): admits every signed-in user', 'the open route is listed whatever the provider said')
  noPlaceholder(t, down)
})

t.test('portcullis check tests the client credentials: a wrong secret is named, with either client authentication method', async (t) => {
  const secret = 'cli-secret-long-enough'
  const provider = await startTestProvider(t, {
    clients: [
      { clientId: 'basic', clientSecret: secret, redirectUris: ['http://127.0.0.1:1/oauth2/callback'], tokenEndpointAuthMethod: 'client_secret_basic' },
      { clientId: 'post', clientSecret: secret, redirectUris: ['http://127.0.0.1:1/oauth2/callback'], tokenEndpointAuthMethod: 'client_secret_post' },
    ],
  })
  const dir = t.testdir()
  const write = (clientId: string, clientSecret: string) => {
    const file = join(dir, `${clientId}-${clientSecret.length}.yaml`)
    writeFileSync(
      file,
      `server:\n  publicUrl: http://127.0.0.1:1\nprovider:\n  issuer: ${provider.issuer}\n  clientId: ${clientId}\n  clientSecret: ${clientSecret}\n  tokenEndpointAuthMethod: client_secret_${clientId}\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\nroutes:\n  - upstream: http://127.0.0.1:2\n  - match: { pathPrefix: /admin }\n    upstream: http://127.0.0.1:2\n    allow: { groups: [admins] }\n  - match: { host: app.example, pathPrefix: /assets }\n    upstream: http://127.0.0.1:2\n    public: true\n  - match: { host: app.example, pathPrefix: /any }\n    upstream: http://127.0.0.1:2\n    allow: {}\n`,
    )
    return file
  }
  const wrong = 'a-wrong-client-secret-of-some-length'
  for (const method of ['basic', 'post']) {
    await t.test(`client_secret_${method}`, async (t) => {
      const right = await runCli(['check', '--config', write(method, secret)])
      t.equal(right.code, 0, right.stderr)
      t.match(right.stdout, `client authentication: ok (the client authenticated (client_secret_${method})`)

      const refused = await runCli(['check', '--config', write(method, wrong)])
      t.equal(refused.code, 1, 'a wrong secret fails the check')
      t.notMatch(refused.stdout, /\nok\n/, 'and is not reported ok')
      t.match(refused.stderr, /^problem: the token endpoint did not accept the client credentials\n/)
      t.match(refused.stderr, `url: ${provider.issuer}/oauth/token\n`, 'names the token endpoint')
      t.match(refused.stderr, 'answer: HTTP 401 invalid_client', 'its status and error code')
      t.match(refused.stderr, `check: provider.clientSecret and provider.tokenEndpointAuthMethod (now client_secret_${method})`, 'and the settings to look at')
      t.notOk(refused.stderr.includes(wrong) || refused.stdout.includes(wrong), 'never the secret')
      t.notMatch(refused.stderr + refused.stdout, /\[object/, 'no [object …]')
    })
  }
})

t.test('portcullis check: metadata that cannot work names its URL, status and both values', async (t) => {
  // A discovery document of our own (what no real provider would serve): ES256 only, and another without a token endpoint.
  let issuer = ''
  const docs: Record<string, (base: string) => Record<string, unknown>> = {
    '/es256': (base) => ({
      issuer: base,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      jwks_uri: `${base}/keys`,
      id_token_signing_alg_values_supported: ['ES256'],
    }),
    '/no-token': (base) => ({ issuer: base, authorization_endpoint: `${base}/authorize`, jwks_uri: `${base}/keys` }),
  }
  const server = createServer((req, res) => {
    const path = (req.url ?? '').replace('/.well-known/openid-configuration', '')
    const doc = docs[path]
    if (doc === undefined || !(req.url ?? '').endsWith('/.well-known/openid-configuration')) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc(`${issuer}${path}`)))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const dir = t.testdir()
  const write = (name: string, iss: string) => {
    const file = join(dir, name)
    writeFileSync(
      file,
      `server:\n  publicUrl: http://127.0.0.1:1\nprovider:\n  issuer: ${iss}\n  clientId: cli\n  clientSecret: cli-secret-long-enough\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\nroutes:\n  - upstream: http://127.0.0.1:2\n  - match: { pathPrefix: /admin }\n    upstream: http://127.0.0.1:2\n    allow: { groups: [admins] }\n  - match: { host: app.example, pathPrefix: /assets }\n    upstream: http://127.0.0.1:2\n    public: true\n  - match: { host: app.example, pathPrefix: /any }\n    upstream: http://127.0.0.1:2\n    allow: {}\n`,
    )
    return file
  }
  const es = await runCli(['check', '--config', write('es.yaml', `${issuer}/es256`)])
  t.equal(es.code, 1)
  t.match(es.stderr, /problem: The provider does not sign ID tokens with RS256/)
  t.match(es.stderr, `url: ${issuer}/es256/.well-known/openid-configuration\n`, 'names the URL')
  t.match(es.stderr, 'answer: HTTP 200\n', 'and its status')
  t.match(es.stderr, 'id_token_signing_alg_values_supported: configured RS256, the provider says ES256\n', 'and both values')
  t.match(es.stderr, 'check: provider.idTokenSignedResponseAlg')
  t.notMatch(es.stderr + es.stdout, /\[object/)

  const noToken = await runCli(['check', '--config', write('no-token.yaml', `${issuer}/no-token`)])
  t.equal(noToken.code, 1)
  t.match(noToken.stderr, /problem: The provider metadata has no token_endpoint/)
  t.match(noToken.stderr, `url: ${issuer}/no-token/.well-known/openid-configuration\n`, 'names the URL')
  t.match(noToken.stderr, 'check: provider.endpoints.token')
  t.notMatch(noToken.stderr + noToken.stdout, /\[object/)
})

t.test('SIGHUP reloads the config file; a broken file keeps the running config; SIGTERM exits 0', async (t) => {
  const { startTestUpstream } = await import('../helpers/upstream.ts')
  const { request } = await import('../helpers/http.ts')
  const upstream = await startTestUpstream(t)
  const port = await reservePort()
  const dir = t.testdir()
  const file = join(dir, 'config.yaml')
  const deadProvider = await reservePort()
  const write = (isPublic: string) =>
    writeFileSync(
      file,
      `server:\n  listen: 127.0.0.1:${port}\n  publicUrl: http://127.0.0.1:${port}\nprovider:\n  issuer: http://127.0.0.1:${deadProvider}\n  clientId: c\n  clientSecret: s\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\nroutes:\n  - upstream: ${upstream.url}\n    public: ${isPublic}\n`,
    )
  write('false')
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', file], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))

  t.ok(await eventually(() => out.includes('portcullis listening')), 'started')
  t.equal((await request(`http://127.0.0.1:${port}/x`, { headers: { accept: 'application/json' } })).status, 503, 'protected before the reload (503: its provider is down)')

  write('true')
  child.kill('SIGHUP')
  t.ok(await eventually(() => out.includes('configuration reloaded')), 'reloaded')
  t.equal((await request(`http://127.0.0.1:${port}/x`, { headers: { accept: 'application/json' } })).status, 200, 'public after the reload')

  writeFileSync(file, 'server: [not, a, mapping\n')
  child.kill('SIGHUP')
  t.ok(await eventually(() => out.includes('reload refused')), 'a broken file is refused')
  const refusal = out.split('\n').find((l) => l.includes('reload refused')) ?? ''
  t.match(refusal, /the running configuration was kept/, 'the log line says the running config was kept')
  t.ok(await eventually(() => err.includes('problem(s) in')), 'the problems are printed')
  t.match(err, /problem\(s\) in \S+config\.yaml; not reloaded; the running configuration was kept\./, 'stderr says the running config was kept')
  t.notMatch(err, /nothing was started/, 'not what a failed start says')
  t.equal((await request(`http://127.0.0.1:${port}/x`, { headers: { accept: 'application/json' } })).status, 200, 'the running config is kept')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM drains and exits 0')
})

/** A config for `explain`: its provider is never reachable (explain must not ask it). */
function explainConfig(dir: string, extra = ''): string {
  const file = join(dir, 'explain.yaml')
  writeFileSync(
    file,
    `server:\n  publicUrl: https://app.example.com\nprovider:\n  issuer: http://127.0.0.1:1\n  clientId: c\n  clientSecret: s\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\n` +
      `routes:\n` +
      `  - match: { pathPrefix: / }\n    upstream: http://127.0.0.1:2\n    public: true\n` +
      `  - match: { pathPrefix: /admin/ }\n    upstream: http://127.0.0.1:3\n    allow: { groups: [admins] }\n` +
      `  - match: { host: api.example.com, pathPrefix: /v1 }\n    upstream: http://127.0.0.1:4\n    bearer: true\n    requiredScopes: [read]\n` +
      extra,
  )
  return file
}

t.test('portcullis explain prints how a request is decided, and why', async (t) => {
  const file = explainConfig(t.testdir())
  const bob = await runCli(['explain', '--config', file, '--url', 'https://app.example.com/admin/x?y=1', '--claims', '{"sub":"bob","groups":["users"]}'])
  t.equal(bob.code, 0, bob.stderr)
  t.equal(bob.stderr, '')
  const text = bob.stdout
  for (const section of ['Request\n', '\nPath\n', '\nRoutes\n', '\nDecision\n']) t.match(text, section, `section ${section.trim()}`)
  t.match(text, '  GET https://app.example.com/admin/x?y=1\n')
  t.match(text, '  ✗ routes[0] * / (public) — it fits, but the longer prefix /admin/ (routes[1]) is chosen\n')
  t.match(text, '  ✓ routes[1] * /admin/ — chosen')
  t.match(text, "  ✗ routes[2] api.example.com /v1 — host: the route is for api.example.com, the request's host is app.example.com\n")
  t.match(text, 'denied (403) by routes[1].allow.groups')
  t.match(text, '  ✗ routes[1].allow.groups: claim groups = ["users"]; allowed: admins\n')

  const anonymous = await runCli(['explain', '--config', file, '--url', '/ADMIN.'])
  t.equal(anonymous.code, 0, anonymous.stderr)
  t.match(anonymous.stdout, '✓ routes[1] * /admin/ — chosen by the case-folding guard')
  t.match(anonymous.stdout, '302 — to https://app.example.com/oauth2/start?rd=%2FADMIN.')
  t.match(anonymous.stdout, 'any other request: 401')

  const refused = await runCli(['explain', '--config', file, '--url', '/public/%2e%2e/%2e%2e/admin'])
  t.equal(refused.code, 0, 'an explained refusal is still an explanation')
  t.match(refused.stdout, 'normalized:     refused: its ".." segments climb above "/"')
  t.match(refused.stdout, '400 — PATH_REJECTED')
})

t.test('portcullis explain --json prints the plain data', async (t) => {
  const file = explainConfig(t.testdir())
  const res = await runCli(['explain', '--config', file, '--url', 'https://api.example.com/v1/items', '--method', 'post', '--claims', '{"sub":"svc","scope":"read"}', '--bearer', '--json'])
  t.equal(res.code, 0, res.stderr)
  const e = JSON.parse(res.stdout) as {
    request: { method: string; host: string; subject: { kind: string; scopes: string[] } }
    route: { id: string; bearer: boolean }
    routes: Array<{ id: string; chosen: boolean; reason: string }>
    decision: { step: string; outcome: string; conditions: Array<{ rule: string; ok: boolean }> }
  }
  t.equal(e.request.method, 'POST')
  t.equal(e.request.host, 'api.example.com')
  t.strictSame(e.request.subject.scopes, ['read'])
  t.equal(e.route.id, 'routes[2]')
  t.strictSame(
    e.routes.map((l) => [l.id, l.chosen, l.reason]),
    [
      ['routes[0]', false, 'tried-later'],
      ['routes[1]', false, 'prefix'],
      ['routes[2]', true, 'chosen'],
    ],
  )
  t.equal(e.decision.step, 'bearer')
  t.equal(e.decision.outcome, 'forward')
  t.ok(e.decision.conditions.some((c) => c.rule === 'routes[2].requiredScopes' && c.ok))
})

t.test('portcullis explain: bad flags and bad configs exit 2 and say which', async (t) => {
  const dir = t.testdir()
  const file = explainConfig(dir)
  const cases: Array<[string[], RegExp]> = [
    [['explain', '--url', '/'], /portcullis explain needs --config FILE/],
    [['explain', '--config', file], /portcullis explain needs --url URL/],
    [['explain', '--config', file, '--url', '/', '--claims', '{sub:'], /^--claims: not valid JSON/],
    [['explain', '--config', file, '--url', '/', '--claims', '["admins"]'], /^--claims: must be a JSON object/],
    [['explain', '--config', file, '--url', '/', '--bearer'], /^--bearer needs --claims/],
    [['explain', '--config', file, '--url', 'app.example.com/x'], /^--url: "app\.example\.com\/x" is neither a path/],
    [['explain', '--config', file, '--url', 'https://u@app.example.com/'], /^--url: .*not a plain absolute URL/],
    [['explain', '--config', file, '--url', '/', '--method', 'G T'], /^--method: /],
    [['explain', '--config', file, '--url', '/', '--frobnicate'], /Unknown option/],
  ]
  for (const [args, err] of cases) {
    const res = await runCli(args)
    t.equal(res.code, 2, args.join(' '))
    t.match(res.stderr, err, args.join(' '))
    t.equal(res.stdout, '', 'nothing on stdout')
  }
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, `server:\n  publicUrl: https://app.example.com\n  debug: maybe\nprovider:\n  issuer: https://idp.example.com\n  clientId: c\n  clientSecret: s\nsession:\n  secrets: [short]\nroutes:\n  - upstream: http://127.0.0.1:2\n`)
  const invalid = await runCli(['explain', '--config', bad, '--url', '/'])
  t.equal(invalid.code, 2)
  t.match(invalid.stderr, /config error: server\.debug:/)
  t.match(invalid.stderr, /config error: session\.secrets\[0\]:/)
  t.match(invalid.stderr, /2 problem\(s\) in \S+bad\.yaml; nothing was started\./)
  t.match((await runCli(['--help'])).stdout, 'portcullis explain --config FILE --url URL', 'the usage names it')
})

t.test('portcullis check: routes with an allow rule, access.defaultAllow or public are not listed', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'guarded.yaml')
  writeFileSync(
    file,
    `server:\n  publicUrl: http://127.0.0.1:1\nprovider:\n  issuer: http://127.0.0.1:${await reservePort()}\n  clientId: c\n  clientSecret: s\n  allowInsecureHttp: true\nsession:\n  secrets: ["${TEST_SECRET}"]\n` +
      `access:\n  defaultAllow: { domains: [example.com] }\n` +
      `routes:\n  - upstream: http://127.0.0.1:2\n  - match: { pathPrefix: /pub }\n    upstream: http://127.0.0.1:2\n    public: true\n` +
      `  - match: { host: app.example.com, pathPrefix: /open }\n    upstream: http://127.0.0.1:2\n    allow: { any: [{ groups: [x] }, {}] }\n`,
  )
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 1, 'the provider is down: the exit code is the report\'s, not the warning\'s')
  t.strictSame(
    res.stdout.split('\n').filter((l) => l.includes('admits every signed-in user')),
    ['warning: routes[2] (app.example.com /open): admits every signed-in user — routes[2].allow has no condition'],
    'only the route whose rule has an alternative without conditions',
  )
})
