/**
 * The docker-compose stack of deploy/compose, without a Docker engine: the same topology as local
 * processes. The provider is the embedded test provider (in place of Keycloak) on 127.0.0.1:0, the
 * demo app is the echo upstream (in place of traefik/whoami), Redis is Debian's redis-server, the front
 * is Debian's nginx running deploy/compose/nginx/front.conf (its addresses replaced), and the two
 * Portcullis replicas are real child processes started on deploy/compose/portcullis.yaml itself, with
 * the environment the compose file gives them plus the few overrides only this test needs
 * (listen/publicUrl port, issuer, demo app and Redis URLs, the front's loopback address as trusted).
 *
 * First the files are read and held against each other, so what the test runs is what compose would:
 * the services, the config mount, the demo app's and Redis's missing host ports, the front's upstreams
 * naming the replicas, the provider's network alias equal to the issuer host, the environment the
 * config needs, the realm's client (id, secret, redirect URI) and its two users (with the test
 * provider's e-mails, passwords and groups). Then alice and bob log in through the front and reach the
 * demo app with identity headers, whichever replica answers; /admin admits alice and refuses bob.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'
import YAML from 'yaml'
import { DEMO_USERS, startTestProvider, type DemoUser } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { fillPlaceholders } from '../helpers/fronts.ts'
import { holdPorts, servedBy, startReplicas } from '../helpers/replicas.ts'
import { startRedis } from '../helpers/redis.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'

const DIR = resolve(import.meta.dirname, '../../deploy/compose')
const CONFIG_FILE = resolve(DIR, 'portcullis.yaml')
const CALLBACK = 'http://app.localtest.me:4180/oauth2/callback'

// The three files as parsed trees. Their shapes are checked by the assertions below; the casts only
// give the test names to walk them by.
type Tree = Record<string, unknown>
const compose = YAML.parse(readFileSync(resolve(DIR, 'docker-compose.yaml'), 'utf8')) as Tree
const config = YAML.parse(readFileSync(CONFIG_FILE, 'utf8')) as Tree

function obj(value: unknown): Tree {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Tree) : {}
}
function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : []
}
function str(value: unknown): string {
  return typeof value === 'string' ? value : ''
}

const services = obj(compose.services)
const portcullis = obj(services['portcullis-1'])
const front = obj(services.front)
const redisService = obj(services.redis)
const FRONT_CONF = resolve(DIR, 'nginx/front.conf')
const keycloak = obj(services.keycloak)
const demoApp = obj(services['demo-app'])
const composeEnv = Object.fromEntries(Object.entries(obj(portcullis.environment)).map(([k, v]) => [k, String(v)]))
const issuer = new URL(str(obj(config.provider).issuer) || 'http://invalid.invalid')
const publicUrl = new URL(str(obj(config.server).publicUrl) || 'http://invalid.invalid')

/** Every `${NAME}` / `${NAME:-default}` in the string values of a parsed YAML tree (comments are not values). */
function references(node: unknown): Array<{ name: string; hasDefault: boolean }> {
  if (typeof node === 'string') return [...node.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}/g)].map((m) => ({ name: m[1] as string, hasDefault: m[2] !== undefined }))
  if (Array.isArray(node)) return node.flatMap(references)
  if (typeof node === 'object' && node !== null) return Object.values(node).flatMap(references)
  return []
}

/** The realm file the keycloak service imports (its mount into /opt/keycloak/data/import). */
function realmFile(): string | undefined {
  for (const volume of list(keycloak.volumes)) {
    const [host, container] = str(volume).split(':')
    if (host && container?.startsWith('/opt/keycloak/data/import/')) return resolve(DIR, host)
  }
  return undefined
}

t.test('docker-compose.yaml runs what this test runs', async (t) => {
  t.same(Object.keys(services).sort(), ['demo-app', 'front', 'keycloak', 'portcullis-1', 'portcullis-2', 'redis'], 'six services: a front, two replicas, Redis, the provider, the app')

  t.same(portcullis.build, { context: '../..' }, "Portcullis is built from the repository's Dockerfile")
  t.same(services['portcullis-2'], portcullis, 'the second replica is the first one again (one definition)')
  t.ok(list(portcullis.volumes).includes('./portcullis.yaml:/etc/portcullis/config.yaml:ro'), 'portcullis.yaml is mounted where the image reads its config')
  t.equal(portcullis.ports, undefined, 'the replicas publish no port: the front does')
  t.same(list(front.ports), [`${publicUrl.port}:4180`], "the front publishes the publicUrl's port, to its listener's")
  t.ok(list(front.volumes).includes('./nginx/front.conf:/etc/nginx/conf.d/default.conf:ro'), 'the front runs nginx/front.conf')
  const frontConf = readFileSync(FRONT_CONF, 'utf8')
  t.match(frontConf, /^\s*listen 4180;/m, 'which listens on the published port')
  t.same(
    [...frontConf.matchAll(/^\s*server ([\w.-]+):(\d+)\b/gm)].map((m) => `${m[1]}:${m[2]}`),
    ['portcullis-1:4180', 'portcullis-2:4180'],
    "and balances over the two replicas' listeners",
  )
  t.equal(str(obj(config.server).listen), '0.0.0.0:4180', 'the listener the front goes to')
  t.equal(redisService.ports, undefined, 'Redis publishes no port')
  t.match(str(redisService.image), /^redis:[0-9.]+-alpine$/, 'Redis is a pinned image')
  t.equal(str(obj(config.session).store), 'redis', 'the replicas share sessions through Redis')
  t.equal(str(obj(obj(config.session).redis).url), '${REDIS_URL:-redis://redis:6379}', 'at the redis service (overridable for this test)')
  t.ok(Object.keys(obj(portcullis.depends_on)).includes('redis'), 'the replicas start after Redis')

  t.equal(demoApp.ports, undefined, 'the demo app has no published port: only Portcullis reaches it')
  t.equal(demoApp.expose, undefined, 'and exposes nothing either')
  t.match(str(demoApp.image), /^traefik\/whoami:v[0-9.]+$/, 'a pinned image that prints the headers it receives')

  const aliases = Object.values(obj(keycloak.networks)).flatMap((n) => list(obj(n).aliases))
  t.ok(aliases.includes(issuer.hostname), `the provider carries the network alias ${issuer.hostname}, the issuer's host`)
  t.ok(list(keycloak.ports).includes(`${issuer.port}:${issuer.port}`), "the issuer's port is published as itself: the browser uses the same URL")
  const command = list(keycloak.command).map(str)
  t.ok(command.includes(`--http-port=${issuer.port}`), 'Keycloak listens on that port')
  t.ok(command.includes(`--hostname=${issuer.origin}`), 'and names its issuer with that origin, whatever Host it is asked with')
  t.ok(command.includes('--import-realm'), 'and imports the realm file')

  // Every ${VAR} without a default in portcullis.yaml's values must be set for the container.
  const required = [...new Set(references(config).filter((r) => !r.hasDefault).map((r) => r.name))].sort()
  t.same(required, ['PORTCULLIS_CLIENT_SECRET', 'PORTCULLIS_COOKIE_SECRET'], 'the variables the config needs')
  for (const name of required) t.ok(composeEnv[name], `${name} is set in the compose file`)
  t.same(
    references(config).filter((r) => r.hasDefault).map((r) => r.name).sort(),
    ['DEMO_APP_URL', 'DEMO_APP_URL', 'REDIS_URL'],
    'the only references with a default are the demo app and Redis URLs (compose leaves them to the default)',
  )
  t.equal(composeEnv.DEMO_APP_URL, undefined, 'compose does not set DEMO_APP_URL')
  t.equal(composeEnv.REDIS_URL, undefined, 'nor REDIS_URL')

  // The routes' ${DEMO_APP_URL:-...} default names the demo-app service (whoami listens on 80).
  const upstreams = list(config.routes).map((r) => str(obj(r).upstream))
  t.same([...new Set(upstreams)], ['${DEMO_APP_URL:-http://demo-app:80}'], 'every route goes to the demo app, overridable for this test')
})

t.test("the realm defines portcullis.yaml's client and the two users", async (t) => {
  const file = realmFile()
  t.ok(file, 'the keycloak service mounts a realm file into its import directory')
  if (file === undefined) return
  const realm = JSON.parse(readFileSync(file, 'utf8')) as Tree
  t.equal(issuer.pathname, `/realms/${str(realm.realm)}`, "the issuer is that realm's")

  const clientId = str(obj(config.provider).clientId)
  const client = obj(list(realm.clients).find((c) => obj(c).clientId === clientId))
  t.equal(client.clientId, clientId, `the realm has the client ${clientId}`)
  t.equal(client.publicClient, false, 'a confidential client')
  t.equal(client.secret, composeEnv.PORTCULLIS_CLIENT_SECRET, 'its secret is the one the compose file gives Portcullis')
  t.equal(`${publicUrl.origin}/oauth2/callback`, CALLBACK, "portcullis.yaml's callback URL")
  t.same(client.redirectUris, [CALLBACK], 'is the one redirect URI registered')
  const mappers = list(client.protocolMappers).map(obj)
  const groups = mappers.find((m) => m.protocolMapper === 'oidc-group-membership-mapper')
  t.same(
    groups && obj(groups.config),
    { 'claim.name': 'groups', 'full.path': 'false', 'id.token.claim': 'true', 'access.token.claim': 'true', 'userinfo.token.claim': 'true' },
    'group names go into the ID token as "groups" (what routes[].allow.groups reads)',
  )
  const audience = mappers.find((m) => m.protocolMapper === 'oidc-audience-mapper')
  t.equal(audience && obj(audience.config)['included.client.audience'], clientId, 'access tokens carry the client id in aud (Portcullis verifies JWT access tokens)')

  const users = list(realm.users).map(obj)
  t.same(users.map((u) => u.username).sort(), ['alice', 'bob'], 'two users')
  for (const demo of DEMO_USERS.slice(0, 2)) {
    const user = users.find((u) => u.username === demo.preferredUsername) ?? {}
    t.equal(user.email, demo.email, `${demo.id}: the e-mail the test provider uses`)
    t.equal(user.emailVerified, true, `${demo.id}: verified (access.defaultAllow.domains needs it)`)
    t.same(list(user.credentials), [{ type: 'password', value: demo.password, temporary: false }], `${demo.id}: the password the README names`)
    t.equal(list(user.groups).includes('/admins'), demo.groups.includes('admins'), `${demo.id}: in admins exactly when the test user is`)
  }
})

t.test('the stack as local processes: alice and bob log in through portcullis.yaml', async (t) => {
  const alice = DEMO_USERS[0] as DemoUser
  const bob = DEMO_USERS[1] as DemoUser
  t.ok(alice.groups.includes('admins') && !bob.groups.includes('admins'), 'alice is an admin, bob is not')

  // Held until each server starts: the provider, the demo app and Redis bind port 0 meanwhile.
  const [frontPort, one, two] = await holdPorts(3)
  if (frontPort === undefined || one === undefined || two === undefined) throw new Error('ports')
  const proxyUrl = frontPort.url
  const clientId = str(obj(config.provider).clientId)
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret: composeEnv.PORTCULLIS_CLIENT_SECRET ?? '', redirectUris: [`${proxyUrl}/oauth2/callback`] }],
  })
  const demo = await startTestUpstream(t, { title: 'demo-app' })
  const redis = await startRedis(t)
  // front.conf as compose runs it, with the replicas' and its own addresses replaced.
  const frontBlock = fillPlaceholders(readFileSync(FRONT_CONF, 'utf8'), {
    'listen 4180;': `listen 127.0.0.1:${frontPort.port};`,
    'server portcullis-1:4180': `server 127.0.0.1:${one.port}`,
    'server portcullis-2:4180': `server 127.0.0.1:${two.port}`,
  })
  const stack = await startReplicas(t, frontPort, [one, two], { file: CONFIG_FILE }, (port) => ({
    ...composeEnv,
    PORTCULLIS_SERVER_LISTEN: `127.0.0.1:${port}`,
    PORTCULLIS_SERVER_PUBLIC_URL: proxyUrl,
    PORTCULLIS_SERVER_TRUSTED_PROXIES: '[127.0.0.1]',
    PORTCULLIS_PROVIDER_ISSUER: provider.issuer,
    DEMO_APP_URL: demo.url,
    REDIS_URL: redis.url,
  }), frontBlock)
  const proc = stack.replicas[0]
  if (proc === undefined) throw new Error('replicas')
  const ready = await eventually(
    async () => (await Promise.all(stack.replicas.map(async (r) => (await request(`${r.url}/readyz`)).status))).every((s) => s === 200),
    { timeoutMs: 15_000, everyMs: 100 },
  )
  t.ok(ready, 'both replicas connect to the provider and to Redis (/readyz 200)')
  // Portcullis flushes its log every 250 ms: wait for the line rather than expect it already.
  const warned = await eventually(
    () => proc.logs.some((l) => l.level === 40 && str(l.msg).includes('provider.allowInsecureHttpHosts (id.localtest.me)')),
    { timeoutMs: 5_000, everyMs: 50 },
  )
  t.ok(warned, 'the plain-http exception of the file is announced as a warning at start')

  const anonymous = await request(`${proxyUrl}/`, { headers: NAVIGATION_HEADERS })
  t.equal(anonymous.status, 302, 'without a session: a redirect to log in')
  const start = new URL(anonymous.headers.location ?? '/', proxyUrl)
  t.equal(`${start.origin}${start.pathname}`, `${proxyUrl}/oauth2/start`, 'through /oauth2/start')
  const toProvider = await request(start.href, { headers: NAVIGATION_HEADERS })
  t.equal(toProvider.status, 302)
  t.equal(new URL(toProvider.headers.location ?? '/', proxyUrl).origin, provider.issuer, 'to the provider the issuer override names')
  t.equal(demo.requests.length, 0, 'the demo app saw nothing')

  const signIn = async (user: DemoUser) => {
    const { jar, finalLocation } = await login({ proxyUrl, path: '/', user })
    t.equal(finalLocation, `${proxyUrl}/`, `${user.id}: back on the app after the login`)
    const page = await request(`${proxyUrl}/`, { jar, headers: { 'X-Forwarded-User': 'mallory', 'X-Auth-Request-Groups': 'admins' } })
    t.equal(page.status, 200, `${user.id}: the demo app answers`)
    const seen = demo.requests.at(-1)?.headers ?? {}
    t.equal(seen['x-forwarded-email'], user.email, `${user.id}: X-Forwarded-Email`)
    t.equal(seen['x-forwarded-preferred-username'], user.preferredUsername, `${user.id}: X-Forwarded-Preferred-Username`)
    t.equal(seen['x-forwarded-user'], user.id, `${user.id}: X-Forwarded-User is the sub, not the client's copy`)
    t.equal(seen['x-auth-request-groups'], user.groups.join(','), `${user.id}: X-Auth-Request-Groups from the ID token, not the client's copy`)
    return jar
  }

  const aliceJar = await signIn(alice)
  // No stickiness: a few more requests through the front are served by both replicas, with the one session.
  const since = stack.replicas.map((r) => r.logs.length)
  for (let i = 0; i < 6; i++) t.equal((await request(`${proxyUrl}/spread`, { jar: aliceJar })).status, 200, `alice's request ${i + 1} through the front`)
  const spread = await eventually(() => servedBy(stack.replicas, '/spread', since).every((n) => n > 0), { timeoutMs: 5_000, everyMs: 50 })
  t.ok(spread, `both replicas served alice's session (${servedBy(stack.replicas, '/spread', since).join(' + ')})`)
  const aliceAdmin = await request(`${proxyUrl}/admin/users`, { jar: aliceJar })
  t.equal(aliceAdmin.status, 200, 'alice (admins) may use /admin')
  t.equal(demo.requests.at(-1)?.url, '/admin/users', 'and the demo app serves it')

  const bobJar = await signIn(bob)
  const before = demo.requests.length
  const bobAdmin = await request(`${proxyUrl}/admin/users`, { jar: bobJar, headers: { accept: 'application/json' } })
  t.equal(bobAdmin.status, 403, 'bob (not in admins) gets a 403 on /admin')
  t.match(bobAdmin.body, /routes\[1\]\.allow\.groups/, 'naming the rule that refused him')
  t.equal(demo.requests.length, before, 'and the demo app never sees that request')
})
