/**
 * The docker-compose stack of deploy/compose, without a Docker engine: the same topology as local
 * processes. The provider is the embedded test provider (in place of Keycloak) on 127.0.0.1:0, the
 * demo app is the echo upstream (in place of traefik/whoami), and Portcullis is a real child process
 * started on deploy/compose/portcullis.yaml itself, with the environment the compose file gives it
 * plus the few overrides only this test needs (listen/publicUrl port, issuer, demo app URL).
 *
 * First the files are read and held against each other, so what the test runs is what compose would:
 * the services, the config mount, the demo app's missing host port, the provider's network alias equal
 * to the issuer host, the environment the config needs, the realm's client (id, secret, redirect URI)
 * and its two users (with the test provider's e-mails, passwords and groups). Then alice and bob log
 * in over HTTP and reach the demo app with identity headers; /admin admits alice and refuses bob.
 */
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'
import YAML from 'yaml'
import { DEMO_USERS, startTestProvider, type DemoUser } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { holdPort } from '../helpers/ports.ts'
import { spawnPortcullis } from '../helpers/process.ts'
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
const portcullis = obj(services.portcullis)
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
  t.same(Object.keys(services).sort(), ['demo-app', 'keycloak', 'portcullis'], 'three services (no Redis yet)')

  t.same(portcullis.build, { context: '../..' }, "Portcullis is built from the repository's Dockerfile")
  t.ok(list(portcullis.volumes).includes('./portcullis.yaml:/etc/portcullis/config.yaml:ro'), 'portcullis.yaml is mounted where the image reads its config')
  t.same(list(portcullis.ports), [`${publicUrl.port}:4180`], "the publicUrl's port is published, to the listener's")
  t.equal(str(obj(config.server).listen), '0.0.0.0:4180', 'the listener the published port goes to')

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
    references(config).filter((r) => r.hasDefault).map((r) => r.name),
    ['DEMO_APP_URL', 'DEMO_APP_URL'],
    'the only reference with a default is the demo app URL (compose leaves it to the default)',
  )
  t.equal(composeEnv.DEMO_APP_URL, undefined, 'compose does not set it')

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

  // Held until Portcullis starts: the provider and the demo app bind port 0 meanwhile.
  const { port, release } = await holdPort()
  const proxyUrl = `http://127.0.0.1:${port}`
  const clientId = str(obj(config.provider).clientId)
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret: composeEnv.PORTCULLIS_CLIENT_SECRET ?? '', redirectUris: [`${proxyUrl}/oauth2/callback`] }],
  })
  const demo = await startTestUpstream(t, { title: 'demo-app' })
  await release()
  const proc = await spawnPortcullis(t, {
    file: CONFIG_FILE,
    port,
    env: {
      ...composeEnv,
      PORTCULLIS_SERVER_LISTEN: `127.0.0.1:${port}`,
      PORTCULLIS_SERVER_PUBLIC_URL: proxyUrl,
      PORTCULLIS_PROVIDER_ISSUER: provider.issuer,
      DEMO_APP_URL: demo.url,
    },
  })
  const ready = await eventually(async () => (await request(`${proxyUrl}/readyz`)).status === 200, { timeoutMs: 15_000, everyMs: 100 })
  t.ok(ready, 'Portcullis connects to the provider (/readyz 200)')
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
