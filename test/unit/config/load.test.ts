/**
 * Reading a config source (`readConfigSource`, the first step of `loadConfig`): YAML, `${VAR}`, `<key>File`, `PORTCULLIS_<SECTION>_<KEY>`
 * overrides and renamed keys. Every test passes `env` explicitly; files live under `t.testdir()`.
 */
import { join } from 'node:path'
import t from 'tap'
import { formatIssues, loadConfig } from '../../../src/config/index.ts'
import { applyRemovedKeys, readConfigSource } from '../../../src/config/load.ts'

const SECRET = 'cookie-secret-0123456789-abcdefghij'
const env = { PORTCULLIS_CLIENT_SECRET: 'client-secret-value', PORTCULLIS_COOKIE_SECRET: SECRET }

/** A valid file whose provider and session parts can be replaced. */
function yaml(parts: { provider?: string; session?: string; extra?: string } = {}): string {
  return [
    'server:',
    '  publicUrl: https://app.example.com',
    parts.provider ??
      ['provider:', '  issuer: https://yourenv.scalekit.com', '  clientId: skc_123', '  clientSecret: ${PORTCULLIS_CLIENT_SECRET}'].join('\n'),
    parts.session ?? ['session:', '  secrets:', '    - ${PORTCULLIS_COOKIE_SECRET}'].join('\n'),
    'routes:',
    '  - upstream: http://127.0.0.1:8080',
    parts.extra ?? '',
  ].join('\n')
}

function raw(text: string, environment: Record<string, string | undefined> = env, file?: string): Record<string, any> {
  const source = readConfigSource({ text, env: environment, ...(file === undefined ? {} : { file }) })
  return source.raw as Record<string, any>
}

t.test('YAML', async (t) => {
  t.test('an empty document is an empty object', async (t) => {
    for (const text of ['', '\n', '# nothing here\n', '---\n']) t.same(readConfigSource({ text, env }), { raw: {}, issues: [] }, JSON.stringify(text))
  })

  t.test('a syntax error names the line and column, not the content', async (t) => {
    const text = 'server:\n  publicUrl: https://app.example.com\n  listen: "unterminated\nprovider: { clientSecret: hunter2-hunter2\n'
    const source = readConfigSource({ file: 'portcullis.yaml', text, env })
    t.equal(source.raw, undefined)
    t.ok(source.issues.length >= 1)
    for (const issue of source.issues) {
      t.equal(issue.path, '')
      t.match(issue.message, /^YAML syntax error in portcullis\.yaml: .* at line \d+, column \d+/)
      t.notMatch(issue.message, /hunter2/, 'no excerpt of the source')
    }
  })

  t.test('an unquoted ${VAR} inside [ ] gets a hint', async (t) => {
    const source = readConfigSource({ text: 'session:\n  secrets: [${PORTCULLIS_COOKIE_SECRET}]\n', env })
    t.match(source.issues[0]?.message, /line 2, column \d+ \(hint: quote "\$\{\.\.\.\}" inside \[ \] and \{ \}/)
  })

  t.test('duplicate keys are an error', async (t) => {
    const source = readConfigSource({ text: 'server: {}\nserver: {}\n', env })
    t.match(source.issues[0]?.message, /Map keys must be unique at line 2, column 1/)
  })

  t.test('a document that is not a mapping', async (t) => {
    t.same(readConfigSource({ text: '- a\n', env }).issues, [
      { path: '', message: 'the configuration text must be a mapping of sections (server:, provider:, session:, routes:, ...), not a list' },
    ])
  })

  t.test('a file that cannot be read', async (t) => {
    const missing = join(t.testdir(), 'nope.yaml')
    t.same(readConfigSource({ file: missing, env }), { raw: undefined, issues: [{ path: '', message: `cannot read config file ${missing}: no such file (ENOENT)` }] })
    t.same(readConfigSource({ env }).issues, [{ path: '', message: 'no configuration given: pass --config FILE or set PORTCULLIS_CONFIG' }])
  })

  t.test('a file is read', async (t) => {
    const dir = t.testdir({ 'portcullis.yaml': yaml() })
    const result = loadConfig({ file: join(dir, 'portcullis.yaml'), env })
    t.equal(result.ok, true)
  })
})

t.test('${VAR} expansion', async (t) => {
  t.test('in every string value, nested and in lists, but not in keys', async (t) => {
    const tree = raw('a: ${A}\nb:\n  - x${A}y\n  - c: ${B}\n${A}: 1\n', { A: 'aa', B: 'bb' })
    t.same(tree, { a: 'aa', b: ['xaay', { c: 'bb' }], '${A}': 1 })
  })

  t.test('defaults apply when the variable is unset or empty', async (t) => {
    const tree = raw('a: ${A:-one}\nb: ${B:-two}\nc: ${C:-}\nd: ${D:-x:-y}\ne: ${A:-}', { B: '' })
    t.same(tree, { a: 'one', b: 'two', c: '', d: 'x:-y', e: '' })
  })

  t.test('$${ is a literal ${', async (t) => {
    t.same(raw('a: $${A}\nb: x$${A:-d}y${A}\nc: cost $5 {x} $A\n', { A: 'v' }), { a: '${A}', b: 'x${A:-d}yv', c: 'cost $5 {x} $A' })
  })

  t.test('an unset variable is an issue at its key, naming the variable', async (t) => {
    const source = readConfigSource({ text: yaml(), env: { PORTCULLIS_COOKIE_SECRET: SECRET } })
    t.same(source.issues, [{ path: 'provider.clientSecret', message: 'environment variable PORTCULLIS_CLIENT_SECRET is not set' }])
    const result = loadConfig({ text: yaml(), env: { PORTCULLIS_COOKIE_SECRET: SECRET } })
    t.same(result.ok ? [] : result.issues, source.issues, 'never an empty string; the schema issue at the same path is not repeated')
  })

  t.test('in a list, the issue carries the index', async (t) => {
    const source = readConfigSource({ text: 'session:\n  secrets:\n    - ${A}\n    - ${B}\n', env: { A: SECRET } })
    t.same(source.issues, [{ path: 'session.secrets[1]', message: 'environment variable B is not set' }])
  })

  t.test('a set but empty variable without default is an issue', async (t) => {
    t.same(readConfigSource({ text: 'a: ${A}\n', env: { A: '' } }).issues, [{ path: 'a', message: 'environment variable A is set but empty' }])
  })

  t.test('malformed references', async (t) => {
    t.same(readConfigSource({ text: 'a: x${A\nb: ${1A}\nc: ${A:-${B}}\n', env: { A: 'a' } }).issues, [
      { path: 'a', message: 'unterminated "${": close it with "}" or write "$${" for a literal "${"' },
      { path: 'b', message: 'invalid reference "${1A}": use ${NAME} or ${NAME:-default}' },
      { path: 'c', message: 'nested references are not supported in the default of ${A:-...}' },
    ])
  })

  t.test('a whole reference at a boolean or number key is typed', async (t) => {
    const tree = raw(
      yaml({
        extra: 'identity:\n  passAccessToken: ${PASS}\n  passAuthorizationHeader: ${NOPE:-false}\n',
        session: 'session:\n  secrets: ["${PORTCULLIS_COOKIE_SECRET}"]\n  maxPendingLogins: ${N}\n  cookieName: ${NAME}\n',
      }),
      { ...env, PASS: 'true', N: '7', NAME: '123' },
    )
    t.equal(tree.identity.passAccessToken, true)
    t.equal(tree.identity.passAuthorizationHeader, false)
    t.equal(tree.session.maxPendingLogins, 7)
    t.equal(tree.session.cookieName, '123', 'string keys stay strings')
  })
})

t.test('<key>File', async (t) => {
  t.test('reads the file, strips one trailing newline, removes the File key', async (t) => {
    const dir = t.testdir({ 'client-secret': 'from-a-file\n\n', 'crlf-secret': 'crlf-value\r\n' })
    const text = yaml({
      provider: `provider:\n  issuer: https://yourenv.scalekit.com\n  clientId: skc_123\n  clientSecretFile: ${join(dir, 'client-secret')}\n`,
    })
    const result = loadConfig({ text, env })
    t.equal(result.ok, true)
    if (result.ok) t.equal(result.config.provider.clientSecret, 'from-a-file\n', 'only one newline is stripped')
    t.notOk('clientSecretFile' in raw(text).provider)
    const crlf = raw(text.replace('client-secret', 'crlf-secret'))
    t.equal(crlf.provider.clientSecret, 'crlf-value')
  })

  t.test('relative paths are relative to the config file; ${VAR} works in the path', async (t) => {
    const dir = t.testdir({ conf: { 'portcullis.yaml': '', secrets: { client: 'relative-secret' } } })
    const file = join(dir, 'conf', 'portcullis.yaml')
    const text = yaml({
      provider: 'provider:\n  issuer: https://yourenv.scalekit.com\n  clientId: skc_123\n  clientSecretFile: ${SECRETS_DIR:-secrets}/client\n',
    })
    t.equal(raw(text, env, file).provider.clientSecret, 'relative-secret')
  })

  t.test('a missing file is an issue naming the path, never content', async (t) => {
    const missing = join(t.testdir(), 'missing-secret')
    const text = yaml({ provider: `provider:\n  issuer: https://yourenv.scalekit.com\n  clientId: skc_123\n  clientSecretFile: ${missing}\n` })
    const result = loadConfig({ text, env })
    t.same(result.ok ? [] : result.issues, [{ path: 'provider.clientSecret', message: `clientSecretFile: cannot read ${missing}: no such file (ENOENT)` }])
  })

  t.test('both <key> and <key>File is an issue', async (t) => {
    const dir = t.testdir({ s: 'x' })
    const text = yaml({ provider: `provider:\n  issuer: https://yourenv.scalekit.com\n  clientId: skc_123\n  clientSecret: a\n  clientSecretFile: ${join(dir, 's')}\n` })
    t.same(readConfigSource({ text, env }).issues, [{ path: 'provider.clientSecret', message: 'both clientSecret and clientSecretFile are set; use one' }])
  })

  t.test('a directory is not a file', async (t) => {
    const dir = t.testdir({ sub: {} })
    const text = yaml({ provider: `provider:\n  issuer: https://yourenv.scalekit.com\n  clientId: skc_123\n  clientSecretFile: ${join(dir, 'sub')}\n` })
    t.same(readConfigSource({ text, env }).issues, [{ path: 'provider.clientSecret', message: `clientSecretFile: cannot read ${join(dir, 'sub')}: is a directory (EISDIR)` }])
  })

  t.test('secretsFile: one path or a list, appended after secrets', async (t) => {
    const a = 'secret-from-file-a-0123456789abcdef'
    const b = 'secret-from-file-b-0123456789abcdef'
    const dir = t.testdir({ a: `${a}\n`, b })
    const one = raw(yaml({ session: `session:\n  secretsFile: ${join(dir, 'a')}\n` }))
    t.same(one.session, { secrets: [a] })
    const list = raw(yaml({ session: `session:\n  secrets: ["\${PORTCULLIS_COOKIE_SECRET}"]\n  secretsFile: [${join(dir, 'a')}, ${join(dir, 'b')}]\n` }))
    t.same(list.session, { secrets: [SECRET, a, b] })
    const bad = readConfigSource({ text: yaml({ session: `session:\n  secretsFile: [${join(dir, 'a')}, ${join(dir, 'c')}]\n` }), env })
    t.same(bad.issues, [{ path: 'session.secrets', message: `secretsFile: cannot read ${join(dir, 'c')}: no such file (ENOENT)` }])
  })

  t.test('works in any schema object, including list items; not for unknown keys or map data', async (t) => {
    const dir = t.testdir({ up: 'http://127.0.0.1:9999\n' })
    const tree = raw(
      yaml({ extra: `provider2: 1\n` }).replace('  - upstream: http://127.0.0.1:8080', `  - upstreamFile: ${join(dir, 'up')}`) +
        `\nidentity:\n  headers:\n    X-Secret-File: sub\n    SomeFile: sub\n`,
    )
    t.equal(tree.routes[0].upstream, 'http://127.0.0.1:9999')
    t.same(tree.identity.headers, { 'X-Secret-File': 'sub', SomeFile: 'sub' }, 'record keys are data')
    const unknown = loadConfig({ text: yaml({ extra: 'logging:\n  levlFile: /x\n' }), env })
    t.same(unknown.ok ? [] : unknown.issues, [{ path: 'logging.levlFile', message: 'unknown key (did you mean levelFile?)' }])
  })

  t.test('a non-string path is an issue', async (t) => {
    t.same(readConfigSource({ text: 'provider:\n  clientSecretFile: [a]\n', env }).issues, [
      { path: 'provider.clientSecret', message: 'clientSecretFile must be a file path' },
    ])
  })
})

t.test('PORTCULLIS_<SECTION>_<KEY> overrides', async (t) => {
  t.test('string keys keep the raw text; both spellings of the key work', async (t) => {
    const a = raw(yaml(), { ...env, PORTCULLIS_PROVIDER_CLIENT_SECRET: '12345' })
    t.equal(a.provider.clientSecret, '12345', 'not re-typed as a number')
    const b = raw(yaml(), { ...env, PORTCULLIS_PROVIDER_CLIENTSECRET: 'true' })
    t.equal(b.provider.clientSecret, 'true')
    const c = raw(yaml(), { ...env, portcullis_provider_clientsecret: 'x' })
    t.equal(c.provider.clientSecret, 'client-secret-value', 'the PORTCULLIS_ prefix is case-sensitive')
  })

  t.test('durations, lists and booleans', async (t) => {
    const result = loadConfig({
      text: yaml(),
      env: {
        ...env,
        PORTCULLIS_SESSION_MAXAGE: '5m',
        PORTCULLIS_SESSION_IDLE_TIMEOUT: '1m',
        PORTCULLIS_SERVER_TRUSTEDPROXIES: '[10.0.0.0/8, "fd00::/8"]',
        PORTCULLIS_SERVER_PUBLIC_URL: 'https://other.example.com',
        PORTCULLIS_IDENTITY_PASS_ACCESS_TOKEN: 'true',
        PORTCULLIS_SESSION_MAX_PENDING_LOGINS: '7',
        PORTCULLIS_LOGGING_LEVEL: 'debug',
        PORTCULLIS_REDIRECTS_ALLOWED_DOMAINS: '.example.com',
        PORTCULLIS_PROVIDER_AUTHORIZE_PARAMS: '{tenant: 123}',
      },
    })
    if (!result.ok) {
      t.fail(formatIssues(result.issues))
      return
    }
    const c = result.config
    t.equal(c.session.maxAge, 5 * 60_000)
    t.equal(c.session.idleTimeout, 60_000)
    t.same(c.server.trustedProxies, ['10.0.0.0/8', 'fd00::/8'])
    t.equal(c.server.publicUrl, 'https://other.example.com')
    t.equal(c.identity.passAccessToken, true)
    t.equal(c.session.maxPendingLogins, 7)
    t.equal(c.logging.level, 'debug')
    t.same(c.redirects.allowedDomains, ['.example.com'], 'a bare value for a list key is a list of one')
    t.same(c.provider.authorizeParams, { tenant: '123' }, 'map values stay strings')
  })

  t.test('an override replaces a value whose ${VAR} is unset', async (t) => {
    const result = loadConfig({ text: yaml(), env: { PORTCULLIS_COOKIE_SECRET: SECRET, PORTCULLIS_PROVIDER_CLIENT_SECRET: 'from-env' } })
    t.equal(result.ok, true)
    if (result.ok) t.equal(result.config.provider.clientSecret, 'from-env')
  })

  t.test('<KEY>_FILE sets <key>File and replaces the file\'s <key>', async (t) => {
    const dir = t.testdir({ s: 'secret-from-env-file\n' })
    const result = loadConfig({ text: yaml(), env: { ...env, PORTCULLIS_PROVIDER_CLIENT_SECRET_FILE: join(dir, 's') } })
    t.equal(result.ok, true)
    if (result.ok) t.equal(result.config.provider.clientSecret, 'secret-from-env-file')
  })

  t.test('a section missing from the file is created', async (t) => {
    t.same(raw(yaml(), { ...env, PORTCULLIS_LOGGING_LEVEL: 'warn' }).logging, { level: 'warn' })
  })

  t.test('an unknown key in a known section is an issue', async (t) => {
    const result = loadConfig({ text: yaml(), env: { ...env, PORTCULLIS_SESSION_SECRETZ: 'x', PORTCULLIS_SERVER_NOPE_NOPE: 'x' } })
    t.same(result.ok ? [] : result.issues, [
      { path: 'server', message: 'environment variable PORTCULLIS_SERVER_NOPE_NOPE does not match any key of server' },
      { path: 'session', message: 'environment variable PORTCULLIS_SESSION_SECRETZ does not match any key of session (did you mean PORTCULLIS_SESSION_SECRETS?)' },
    ])
  })

  t.test("Kubernetes service links of a Service named portcullis-<section> are not overrides", async (t) => {
    const links = {
      PORTCULLIS_METRICS_SERVICE_HOST: '10.0.0.7',
      PORTCULLIS_METRICS_SERVICE_PORT: '9180',
      PORTCULLIS_METRICS_SERVICE_PORT_HTTP_METRICS: '9180',
      PORTCULLIS_METRICS_PORT: 'tcp://10.0.0.7:9180',
      PORTCULLIS_METRICS_PORT_9180_TCP: 'tcp://10.0.0.7:9180',
      PORTCULLIS_METRICS_PORT_9180_TCP_PROTO: 'tcp',
      PORTCULLIS_METRICS_PORT_9180_TCP_PORT: '9180',
      PORTCULLIS_METRICS_PORT_9180_TCP_ADDR: '10.0.0.7',
      PORTCULLIS_SESSION_SERVICE_HOST: '10.0.0.8',
    }
    const result = loadConfig({ text: yaml(), env: { ...env, ...links } })
    t.equal(result.ok, true, result.ok ? 'loads' : JSON.stringify(result.issues))
    const bad = loadConfig({ text: yaml(), env: { ...env, ...links, PORTCULLIS_METRICS_PORTS: 'x' } })
    t.same(bad.ok ? [] : bad.issues.map((i) => i.path), ['metrics'], 'a near miss is still an issue')
  })

  t.test('variables whose second segment is not a section are not overrides', async (t) => {
    const source = readConfigSource({ text: yaml(), env: { ...env, PORTCULLIS_CONFIG: '/etc/p.yaml', PORTCULLIS_CLIENT_ID: 'x', PORTCULLIS_FOO_BAR: 'y', PORTCULLIS_: 'z' } })
    t.same(source.issues, [])
  })

  t.test('a variable used by ${...} is not reported as an unknown override', async (t) => {
    const text = yaml({ session: 'session:\n  secrets:\n    - ${PORTCULLIS_SESSION_SECRET_NEW}\n    - ${PORTCULLIS_SESSION_SECRET_OLD}\n' })
    const result = loadConfig({ text, env: { ...env, PORTCULLIS_SESSION_SECRET_NEW: SECRET, PORTCULLIS_SESSION_SECRET_OLD: `${SECRET}-old` } })
    t.equal(result.ok, true)
    if (result.ok) t.same(result.config.session.secrets, [SECRET, `${SECRET}-old`])
  })

  t.test('routes cannot be overridden', async (t) => {
    t.same(readConfigSource({ text: yaml(), env: { ...env, PORTCULLIS_ROUTES_UPSTREAM: 'http://x' } }).issues, [
      { path: 'routes', message: 'environment variable PORTCULLIS_ROUTES_UPSTREAM: routes cannot be set from the environment' },
    ])
  })

  t.test('two spellings of one key is an issue', async (t) => {
    t.same(readConfigSource({ text: yaml(), env: { ...env, PORTCULLIS_PROVIDER_CLIENTSECRET: 'a', PORTCULLIS_PROVIDER_CLIENT_SECRET: 'b' } }).issues, [
      { path: 'provider.clientSecret', message: 'set by both environment variables PORTCULLIS_PROVIDER_CLIENTSECRET and PORTCULLIS_PROVIDER_CLIENT_SECRET; keep one' },
    ])
  })

  t.test('a value that is not YAML is an issue that does not echo the value', async (t) => {
    const source = readConfigSource({ text: yaml(), env: { ...env, PORTCULLIS_SERVER_TRUSTED_PROXIES: '[10.0.0.0/8, "unclosed' } })
    t.same(source.issues, [{ path: 'server.trustedProxies', message: 'environment variable PORTCULLIS_SERVER_TRUSTED_PROXIES is not a valid YAML value' }])
  })

  t.test('a type mismatch is reported by the schema at the key', async (t) => {
    const result = loadConfig({ text: yaml(), env: { ...env, PORTCULLIS_PROVIDER_DISCOVERY: 'maybe' } })
    t.same(result.ok ? [] : result.issues, [{ path: 'provider.discovery', message: 'must be true or false (got a string)' }])
  })
})

t.test('renamed keys', async (t) => {
  const tree = { session: { cookieSecret: 'x', maxAge: '1h' }, routes: [{ allow: 1 }, { upstream: 'u' }] }
  const issues = applyRemovedKeys(tree, { 'session.cookieSecret': 'session.secrets', 'routes[].allow': 'routes[].policy', 'server.nope': 'server.yes' })
  t.same(issues, [
    { path: 'session.cookieSecret', message: 'renamed to session.secrets' },
    { path: 'routes[0].allow', message: 'renamed to routes[].policy' },
  ])
  t.same(tree, { session: { maxAge: '1h' }, routes: [{}, { upstream: 'u' }] }, 'removed, so the schema does not also call them unknown')
  t.same(applyRemovedKeys({ a: 1 }), [], 'the built-in table starts empty')
})
