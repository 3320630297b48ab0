import t from 'tap'
import { claimText, claimsUsed, compileIdentityHeaders, headerSafe, type Identity } from '../../../src/policy/identity.ts'
import { DEFAULT_IDENTITY_HEADERS } from '../../../src/config/schema.ts'

/** What Node itself accepts as a header value: no CR/LF/NUL, nothing above U+00FF. */
function nodeAccepts(value: string): boolean {
  return /^[\t\x20-\x7e\x80-\xff]*$/.test(value) && !/[\r\n\0]/.test(value)
}

t.test('headerSafe', async (t) => {
  const cases: ReadonlyArray<readonly [string, string, string]> = [
    ['plain ASCII is unchanged', 'alice@example.com', 'alice@example.com'],
    ['non-ASCII is percent-encoded as UTF-8', 'José', 'Jos%C3%A9'],
    ['CJK', '山田', '%E5%B1%B1%E7%94%B0'],
    ['astral plane (emoji) does not throw', 'a😀b', 'a%F0%9F%98%80b'],
    ['lone surrogate becomes U+FFFD, does not throw', 'a\ud800b\udc00', 'a%EF%BF%BDb%EF%BF%BD'],
    ['CR/LF removed (no header injection)', 'alice\r\nX-Auth-Request-User: admin', 'aliceX-Auth-Request-User: admin'],
    ['lone LF removed', 'a\nb', 'ab'],
    ['NUL and other C0 controls removed', 'a\u0000b\u0007c\u001fd', 'abcd'],
    ['tab removed', 'a\tb', 'ab'],
    ['DEL removed', 'a\u007fb', 'ab'],
    ['Latin-1 supplement is encoded, not passed as a raw byte', 'ÿ', '%C3%BF'],
    ['C1 controls are encoded', '\u0085', '%C2%85'],
    ['U+2028 line separator encoded', 'a\u2028b', 'a%E2%80%A8b'],
    ['a literal percent is left alone', '100%', '100%'],
    ['printable ASCII punctuation kept', ' !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~', ' !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'],
    ['empty', '', ''],
  ]
  for (const [label, input, expected] of cases) {
    const out = headerSafe(input)
    t.equal(out, expected, label)
    t.ok(nodeAccepts(out), `${label}: Node accepts the result`)
  }
})

t.test('claimText', async (t) => {
  const cases: ReadonlyArray<readonly [string, unknown, string]> = [
    ['string', 'alice', 'alice'],
    ['number', 42, '42'],
    ['boolean', true, 'true'],
    ['array of strings is comma-joined', ['admins', 'engineering'], 'admins,engineering'],
    ['array of numbers', [1, 2], '1,2'],
    ['objects inside an array are dropped', ['a', { x: 1 }, null, 'b'], 'a,b'],
    ['empty array', [], ''],
    ['undefined', undefined, ''],
    ['null', null, ''],
    ['object', { role: 'admin' }, ''],
  ]
  for (const [label, input, expected] of cases) t.equal(claimText(input), expected, label)
})

t.test('compileIdentityHeaders with the default map', async (t) => {
  const build = compileIdentityHeaders(DEFAULT_IDENTITY_HEADERS)
  const identity: Identity = {
    sub: 'user-1',
    claims: { email: 'josé@example.com', groups: ['admins', 'engineering'], preferred_username: 'José' },
  }
  t.same(build(identity), {
    'x-auth-request-user': 'user-1',
    'x-auth-request-email': 'jos%C3%A9@example.com',
    'x-auth-request-groups': 'admins,engineering',
    'x-auth-request-preferred-username': 'Jos%C3%A9',
    'x-forwarded-user': 'user-1',
    'x-forwarded-email': 'jos%C3%A9@example.com',
    'x-forwarded-groups': 'admins,engineering',
    'x-forwarded-preferred-username': 'Jos%C3%A9',
  })
})

t.test('compileIdentityHeaders: every header present, empty when unknown', async (t) => {
  const build = compileIdentityHeaders(DEFAULT_IDENTITY_HEADERS)
  const expectedKeys = Object.keys(DEFAULT_IDENTITY_HEADERS).map((h) => h.toLowerCase()).sort()

  const missing = build({ sub: 'user-2', claims: {} })
  t.same(Object.keys(missing).sort(), expectedKeys, 'every configured header is present')
  t.equal(missing['x-auth-request-user'], 'user-2')
  t.equal(missing['x-auth-request-email'], '', 'missing claim → empty string')
  t.equal(missing['x-auth-request-groups'], '')
  t.equal(missing['x-auth-request-preferred-username'], '')

  const objects = build({ sub: 'user-3', claims: { email: { address: 'x@y' }, groups: { a: 1 }, preferred_username: null } })
  t.equal(objects['x-auth-request-email'], '', 'object claim → empty')
  t.equal(objects['x-auth-request-groups'], '', 'object groups → empty')
  t.equal(objects['x-auth-request-preferred-username'], '', 'null → empty')

  const anonymous = build(null)
  t.same(Object.keys(anonymous).sort(), expectedKeys, 'no identity: still every header')
  t.ok(Object.values(anonymous).every((v) => v === ''), 'no identity: all empty')
})

t.test('compileIdentityHeaders: values cannot inject headers', async (t) => {
  const build = compileIdentityHeaders({ 'X-User': 'sub', 'X-Name': 'name', 'X-Groups': 'groups' })
  const out = build({ sub: 'a\r\nX-Admin: true', claims: { name: 'Ünïcødé\n', groups: ['g1\r\n', 'g2'] } })
  t.same(out, { 'x-user': 'aX-Admin: true', 'x-name': '%C3%9Cn%C3%AFc%C3%B8d%C3%A9', 'x-groups': 'g1,g2' })
  for (const v of Object.values(out)) t.ok(nodeAccepts(v), `Node accepts ${JSON.stringify(v)}`)
})

t.test('compileIdentityHeaders: custom map, header names lower-cased, sub from the identity', async (t) => {
  const build = compileIdentityHeaders({ 'X-Remote-User': 'sub', 'X-Remote-Sub-Claim': 'sub', 'X-Tenant': 'org_id' })
  t.same(build({ sub: 'u', claims: { sub: 'claims-sub-is-ignored', org_id: 7 } }), { 'x-remote-user': 'u', 'x-remote-sub-claim': 'u', 'x-tenant': '7' })
})

t.test('claimsUsed lists each claim once', async (t) => {
  t.same(claimsUsed(DEFAULT_IDENTITY_HEADERS).sort(), ['email', 'groups', 'preferred_username', 'sub'])
  t.same(claimsUsed({}), [])
})
