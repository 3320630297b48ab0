/**
 * Identity-header spoofing (step 1 of the pipeline: strip before inject, names compared with `_` as
 * `-`) and forwarded-header trust.
 *
 * Every header Portcullis injects is sent by the client in every spelling a backend might fold into the
 * same name (case, `_` for `-`, duplicates), on a protected route with a session, on a public route
 * without one, and as an OPTIONS preflight on a public route. The upstream must see exactly what
 * Portcullis injected, or nothing at all.
 *
 * The subtests are generated from two tables: TARGETS (which header) × SPELLINGS (how it is written).
 */
import t from 'tap'
import type { Test } from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import type { EchoRecord } from '../helpers/upstream.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../src/config/schema.ts'

const alice = DEMO_USERS[0]!

/** The test's own normalization (deliberately not imported from src): lower-case, `_` → `-`. */
const norm = (name: string): string => name.toLowerCase().replaceAll('_', '-')

/** Every header Portcullis injects with `passAccessToken` and `passAuthorizationHeader` on. */
const TARGETS: readonly string[] = [...Object.keys(DEFAULT_IDENTITY_HEADERS), 'X-Auth-Request-Access-Token', 'Authorization']
const TARGET_SET: ReadonlySet<string> = new Set(TARGETS.map(norm))

const SPOOF = 'spoofed'

/** `x-Auth_Request-USER`: first word lower, last word upper, separators alternating `-` and `_`. */
function mixed(name: string): string {
  const words = name.split('-')
  if (words.length === 1) return [...name].map((c, i) => (i % 2 === 0 ? c.toLowerCase() : c.toUpperCase())).join('')
  return words
    .map((w, i) => (i === 0 ? w.toLowerCase() : i === words.length - 1 ? w.toUpperCase() : w))
    .reduce((acc, w, i) => `${acc}${i % 2 === 1 ? '-' : '_'}${w}`)
}

const underscored = (name: string): string => name.replaceAll('-', '_')

/** A spoofed value that is still well-formed for the header it goes in. */
const spoofValue = (header: string, n: number): string => (norm(header) === 'authorization' ? `Bearer ${SPOOF}-${n}` : `${SPOOF}-${n}`)

type Spelling = readonly [label: string, pairs: (header: string) => Array<[string, string]>]

const SPELLINGS: readonly Spelling[] = [
  ['canonical case', (h) => [[h, spoofValue(h, 1)]]],
  ['lower case', (h) => [[h.toLowerCase(), spoofValue(h, 1)]]],
  ['UPPER CASE', (h) => [[h.toUpperCase(), spoofValue(h, 1)]]],
  ['underscores', (h) => [[underscored(h), spoofValue(h, 1)]]],
  ['mixed', (h) => [[mixed(h), spoofValue(h, 1)]]],
  ['repeated twice', (h) => [[h, spoofValue(h, 1)], [h, spoofValue(h, 2)]]],
  ['repeated in two spellings', (h) => [[h.toLowerCase(), spoofValue(h, 1)], [underscored(h.toUpperCase()), spoofValue(h, 2)]]],
]

/** The raw `[name, value]` pairs the upstream received whose normalized name is `header`'s. */
function occurrences(record: EchoRecord, header: string): Array<[string, string]> {
  const out: Array<[string, string]> = []
  const want = norm(header)
  for (let i = 0; i + 1 < record.rawHeaders.length; i += 2) {
    const name = record.rawHeaders[i] as string
    if (norm(name) === want) out.push([name, record.rawHeaders[i + 1] as string])
  }
  return out
}

function rawValues(record: EchoRecord): string[] {
  return record.rawHeaders.filter((_, i) => i % 2 === 1)
}

function rawNames(record: EchoRecord): string[] {
  return record.rawHeaders.filter((_, i) => i % 2 === 0)
}

function decodeJwtPayload(jwt: string): Record<string, unknown> {
  const part = jwt.split('.')[1]
  if (part === undefined) throw new Error('not a JWT')
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>
}

t.test('identity headers in every spelling', async (t) => {
  const stack = await startStack(t, {
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/public' }, upstream, public: true },
        { match: { pathPrefix: '/' }, upstream },
      ],
      identity: { passAccessToken: true, passAuthorizationHeader: true },
    }),
  })
  const { proxy, upstream } = stack
  const { jar } = await login({ proxyUrl: proxy.url })

  // Baseline: what Portcullis injects for alice with no spoofing at all.
  const base = await request(`${proxy.url}/app/baseline`, { headers: { accept: 'application/json' }, jar })
  t.equal(base.status, 200, 'baseline proxied')
  const baseline = upstream.requests.at(-1) as EchoRecord
  t.equal(baseline.url, '/app/baseline')
  const accessToken = baseline.headers['x-auth-request-access-token']
  t.type(accessToken, 'string', 'access token passed upstream')
  t.equal(decodeJwtPayload(String(accessToken)).sub, alice.id, 'the access token is alice\'s')

  const claimValue: Record<string, string> = {
    sub: alice.id,
    email: alice.email,
    groups: alice.groups.join(','),
    preferred_username: alice.preferredUsername,
  }
  const expected = new Map<string, string>()
  for (const [header, claim] of Object.entries(DEFAULT_IDENTITY_HEADERS)) expected.set(norm(header), claimValue[claim] as string)
  expected.set('x-auth-request-access-token', String(accessToken))
  expected.set('authorization', `Bearer ${String(accessToken)}`)
  t.equal(expected.size, TARGETS.length, 'every target has an expected value')
  for (const header of TARGETS) {
    t.same(occurrences(baseline, header).map(([, v]) => v), [expected.get(norm(header))], `baseline ${header}`)
  }

  const protectedCase = (header: string, pairs: Array<[string, string]>) => async (t: Test) => {
    const before = upstream.requests.length
    const res = await request(`${proxy.url}/app/spoof`, { headers: [['Accept', 'application/json'], ...pairs], jar })
    t.equal(res.status, 200, 'proxied')
    t.equal(upstream.requests.length, before + 1, 'exactly one request reached the upstream')
    const seen = upstream.requests.at(-1) as EchoRecord
    const got = occurrences(seen, header)
    t.equal(got.length, 1, `exactly one ${header} reached the upstream`)
    t.equal(got[0]?.[1], expected.get(norm(header)), `${header} is the value Portcullis injected`)
    t.notOk(got[0]?.[0].includes('_'), 'and it is spelled with hyphens')
    for (const other of TARGETS) {
      t.same(occurrences(seen, other).map(([, v]) => v), [expected.get(norm(other))], `${other} intact`)
    }
    t.same(rawValues(seen).filter((v) => v.includes(SPOOF)), [], 'no spoofed value in any header')
    t.same(rawNames(seen).filter((n) => n.includes('_') && TARGET_SET.has(norm(n))), [], 'no underscore variant of an identity header')
  }

  const publicCase = (method: string, header: string, pairs: Array<[string, string]>) => async (t: Test) => {
    const before = upstream.requests.length
    const res = await request(`${proxy.url}/public/spoof`, {
      method,
      headers: [['Accept', 'application/json'], ['Origin', 'http://other.example'], ['Access-Control-Request-Method', 'GET'], ...pairs],
    })
    t.equal(res.status, 200, 'proxied without a session')
    t.equal(upstream.requests.length, before + 1, 'exactly one request reached the upstream')
    const seen = upstream.requests.at(-1) as EchoRecord
    t.equal(seen.method, method)
    t.equal(seen.url, '/public/spoof')
    t.same(rawNames(seen).filter((n) => TARGET_SET.has(norm(n))), [], 'no identity header of any spelling reached the upstream')
    t.same(rawValues(seen).filter((v) => v.includes(SPOOF)), [], 'no spoofed value in any header')
    t.same(occurrences(seen, header), [], `${header} absent`)
  }

  for (const header of TARGETS) {
    for (const [label, make] of SPELLINGS) {
      const pairs = make(header)
      const desc = pairs.map(([n]) => n).join(' + ')
      t.test(`(a) protected route, session: ${header} ${label} (${desc})`, protectedCase(header, pairs))
      t.test(`(b) public route, no session: ${header} ${label} (${desc})`, publicCase('GET', header, pairs))
      t.test(`(c) OPTIONS on a public route: ${header} ${label} (${desc})`, publicCase('OPTIONS', header, pairs))
    }
  }

  t.test('control: sent straight to the echo upstream, every spelling arrives as written', async (t) => {
    // Proves the client keeps spelling and duplicates on the wire and `occurrences` sees them, so the
    // empty results above mean Portcullis removed them.
    for (const header of TARGETS) {
      for (const [label, make] of SPELLINGS) {
        const pairs = make(header)
        await request(`${upstream.url}/control`, { headers: pairs })
        const seen = upstream.requests.at(-1) as EchoRecord
        t.same(occurrences(seen, header), pairs, `${header} ${label}`)
      }
    }
  })

  t.test('every spelling of every header in one request', async (t) => {
    const pairs = TARGETS.flatMap((h) => SPELLINGS.flatMap(([, make]) => make(h)))
    const res = await request(`${proxy.url}/app/all`, { headers: [['Accept', 'application/json'], ...pairs], jar })
    t.equal(res.status, 200)
    const seen = upstream.requests.at(-1) as EchoRecord
    for (const header of TARGETS) {
      t.same(occurrences(seen, header), [[norm(header), expected.get(norm(header))]], `${header}: exactly Portcullis' value`)
    }
    t.same(rawValues(seen).filter((v) => v.includes(SPOOF)), [], 'no spoofed value')

    const pub = await request(`${proxy.url}/public/all`, { headers: [['Accept', 'application/json'], ...pairs] })
    t.equal(pub.status, 200)
    const seenPub = upstream.requests.at(-1) as EchoRecord
    t.same(rawNames(seenPub).filter((n) => TARGET_SET.has(norm(n))), [], 'public route: none at all')
  })

  t.test('a protected route without a session: spoofed headers do not authenticate', async (t) => {
    const before = upstream.requests.length
    const res = await request(`${proxy.url}/app/spoof`, {
      headers: [['Accept', 'application/json'], ['X-Auth-Request-User', 'alice'], ['X_Forwarded_User', 'alice'], ['X-Auth-Request-Email', alice.email]],
    })
    t.equal(res.status, 401)
    t.equal(upstream.requests.length, before, 'nothing reached the upstream')
  })

  t.test('Connection: <identity header> cannot make Portcullis drop its injected header', async (t) => {
    const connectionValues = [
      'X-Auth-Request-User',
      'keep-alive, X-Auth-Request-User, x-forwarded-user',
      'x_auth_request_user, X-AUTH-REQUEST-EMAIL, X-Auth-Request-Groups, Authorization, X-Auth-Request-Access-Token',
    ]
    for (const value of connectionValues) {
      const res = await request(`${proxy.url}/app/connection`, {
        headers: [['Accept', 'application/json'], ['Connection', value], ['X-Auth-Request-User', 'mallory']],
        jar,
      })
      t.equal(res.status, 200, value)
      const seen = upstream.requests.at(-1) as EchoRecord
      for (const header of TARGETS) {
        t.same(occurrences(seen, header).map(([, v]) => v), [expected.get(norm(header))], `Connection: ${value} → ${header} still injected`)
      }
      t.notOk(rawValues(seen).some((v) => v.includes('mallory')), 'no spoofed value')
      const forwardedConnection = String(seen.headers.connection ?? '').toLowerCase()
      t.notOk(
        [...TARGET_SET].some((h) => forwardedConnection.split(',').map((s) => norm(s.trim())).includes(h)),
        'the client\'s Connection list is not forwarded (a later hop would drop the identity header)',
      )
    }
  })

  t.test('X-Forwarded-* from an untrusted client are overwritten', async (t) => {
    const res = await request(`${proxy.url}/public/fwd`, {
      headers: [
        ['Accept', 'application/json'],
        ['X-Forwarded-For', '203.0.113.7'],
        ['X-Forwarded-For', '198.51.100.1'],
        ['X-Forwarded-Host', 'evil.example'],
        ['X-Forwarded-Proto', 'https'],
      ],
    })
    t.equal(res.status, 200)
    const seen = upstream.requests.at(-1) as EchoRecord
    const publicHost = new URL(proxy.url).host
    t.same(occurrences(seen, 'X-Forwarded-For').map(([, v]) => v), ['127.0.0.1'], 'x-forwarded-for is the peer only')
    t.same(occurrences(seen, 'X-Forwarded-Host').map(([, v]) => v), [publicHost], 'x-forwarded-host is the publicUrl host')
    t.same(occurrences(seen, 'X-Forwarded-Proto').map(([, v]) => v), ['http'], 'x-forwarded-proto from publicUrl')
    t.notOk(rawValues(seen).some((v) => v.includes('evil.example') || v.includes('203.0.113.7') || v.includes('198.51.100.1')), 'no client value survives')
  })
})

t.test('default identity config: token headers are stripped and never injected', async (t) => {
  const { proxy, upstream } = await startStack(t)
  const { jar } = await login({ proxyUrl: proxy.url })
  const pairs: Array<[string, string]> = [
    ['Accept', 'application/json'],
    ['X-Auth-Request-Access-Token', 'spoofed-1'],
    ['x_auth_request_access_token', 'spoofed-2'],
    ['X-Forwarded-Access-Token', 'spoofed-3'],
    ['X_FORWARDED_ACCESS_TOKEN', 'spoofed-4'],
    ['X_Auth_Request_User', 'spoofed-5'],
  ]
  const res = await request(`${proxy.url}/app/default`, { headers: pairs, jar })
  t.equal(res.status, 200)
  const seen = upstream.requests.at(-1) as EchoRecord
  t.same(occurrences(seen, 'X-Auth-Request-Access-Token'), [], 'no access token header (passAccessToken is off)')
  t.same(occurrences(seen, 'X-Forwarded-Access-Token'), [], 'no X-Forwarded-Access-Token')
  t.same(occurrences(seen, 'X-Auth-Request-User'), [['x-auth-request-user', alice.id]], 'user injected')
  t.same(rawValues(seen).filter((v) => v.includes(SPOOF)), [], 'no spoofed value')
})

t.test('X-Forwarded-For from a trusted proxy is kept and appended to', async (t) => {
  const { proxy, upstream } = await startStack(t, {
    overrides: ({ upstream }) => ({
      server: { trustedProxies: ['127.0.0.1/32'] },
      routes: [{ match: { pathPrefix: '/' }, upstream, public: true }],
    }),
  })
  const res = await request(`${proxy.url}/fwd`, {
    headers: [['Accept', 'application/json'], ['X-Forwarded-For', '203.0.113.7, 10.0.0.1'], ['X-Forwarded-Proto', 'https']],
  })
  t.equal(res.status, 200)
  const seen = upstream.requests.at(-1) as EchoRecord
  t.same(occurrences(seen, 'X-Forwarded-For').map(([, v]) => v), ['203.0.113.7, 10.0.0.1, 127.0.0.1'], 'client chain kept, peer appended')
  t.same(occurrences(seen, 'X-Forwarded-Host').map(([, v]) => v), [new URL(proxy.url).host], 'x-forwarded-host is still the publicUrl host')

  const none = await request(`${proxy.url}/fwd`, { headers: { accept: 'application/json' } })
  t.equal(none.status, 200)
  t.same(occurrences(upstream.requests.at(-1) as EchoRecord, 'X-Forwarded-For').map(([, v]) => v), ['127.0.0.1'], 'no prior chain: the peer alone')
})
