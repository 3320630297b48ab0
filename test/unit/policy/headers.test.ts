import t from 'tap'
import { compileHeaderScreen, normalizeHeaderName, removeCookies } from '../../../src/policy/headers.ts'

t.test('normalizeHeaderName', async (t) => {
  const cases: readonly (readonly [string, string])[] = [
    ['X-Auth-Request-User', 'x-auth-request-user'],
    ['x-auth-request-user', 'x-auth-request-user'],
    ['X_AUTH_REQUEST_USER', 'x-auth-request-user'],
    ['x-Auth_Request-user', 'x-auth-request-user'],
    ['__x__', '--x--'],
    ['Authorization', 'authorization'],
    ['', ''],
  ]
  for (const [input, expected] of cases) t.equal(normalizeHeaderName(input), expected, input)
})

const screen = (names: string[], prefixes: string[] = [], dropUnderscore = false) => compileHeaderScreen({ names, prefixes, dropUnderscore })

t.test('compileHeaderScreen normalizes names and prefixes', async (t) => {
  const s = screen(['X-Auth-Request-User', 'x_auth_request_email'], ['X_Pomerium-'])
  for (const name of ['x-auth-request-user', 'x_auth_request_user', 'x-auth-request-email', 'x-pomerium-jwt-assertion', 'x_pomerium_claim_email']) {
    t.ok(s.drops(name), `${name} dropped`)
  }
  for (const name of ['x-auth-request-user-agent', 'x-auth-request', 'x-pomerium', 'accept', 'x-forwarded-for']) t.notOk(s.drops(name), `${name} kept`)
  t.notOk(screen([]).drops('anything'), 'empty rules drop nothing')
})

t.test('strip removes every spelling, in place', async (t) => {
  const s = screen(['X-Auth-Request-User', 'X-Auth-Request-Groups'])
  // Node lower-cases incoming names and keeps `_`: X_AUTH_REQUEST_USER arrives as x_auth_request_user.
  const headers: Record<string, string | string[] | undefined> = {
    host: 'app.example.com',
    'x-auth-request-user': 'alice',
    x_auth_request_user: 'mallory',
    'x-Auth_Request-user': 'eve',
    'x-auth-request-groups': ['admins', 'ops'],
    'x-auth-request-user-agent': 'not ours',
    'x-forwarded-for': '203.0.113.1',
    accept: 'text/html',
  }
  const removed = s.strip(headers)
  t.same(removed, ['x-auth-request-user', 'x_auth_request_user', 'x-Auth_Request-user', 'x-auth-request-groups'])
  t.same(headers, {
    host: 'app.example.com',
    'x-auth-request-user-agent': 'not ours',
    'x-forwarded-for': '203.0.113.1',
    accept: 'text/html',
  })
})

t.test('dropUnderscore removes every name with "_", whatever it is', async (t) => {
  const headers: Record<string, string | string[] | undefined> = { x_forwarded_for: '6.6.6.6', x_request_id: 'spoof', my_header: 'x', 'x-fine': 'kept' }
  t.same(screen([], [], true).strip(headers), ['x_forwarded_for', 'x_request_id', 'my_header'])
  t.same(headers, { 'x-fine': 'kept' })
  const kept: Record<string, string | string[] | undefined> = { my_header: 'x' }
  t.same(screen([], [], false).strip(kept), [], 'allowed: kept')
  t.same(kept, { my_header: 'x' })
})

t.test('strip with nothing to strip', async (t) => {
  const headers: Record<string, string | string[] | undefined> = { host: 'a', 'x-user': 'u', undef: undefined }
  t.same(screen(['x-other']).strip(headers), [])
  t.same(headers, { host: 'a', 'x-user': 'u', undef: undefined })
})

t.test('strip on a null-prototype object (like IncomingMessage.headers may be)', async (t) => {
  const headers = Object.create(null) as Record<string, string | string[] | undefined>
  headers['x_user'] = 'spoofed'
  headers['x-real'] = 'kept'
  t.same(screen(['X-User']).strip(headers), ['x_user'])
  t.same(Object.keys(headers), ['x-real'])
})

t.test('the verdict memo is bounded and stays right after it starts over', async (t) => {
  const s = screen(['x-secret'])
  let dropped = 0
  for (let i = 0; i < 5000; i++) if (s.drops(`x-n${i}`)) dropped++
  t.equal(dropped, 0, '5000 distinct names kept')
  t.ok(s.drops('x-secret'), 'still dropped after many distinct names')
  t.notOk(s.drops('x-n1'), 'still kept')
})

t.test('removeCookies', async (t) => {
  const ours = (name: string): boolean => name === '_portcullis' || /^_portcullis_\d+$/.test(name) || name.startsWith('_portcullis_tx_')
  const cases: readonly (readonly [string | undefined, string | undefined, string])[] = [
    ['_portcullis=abc; theme=dark; lang=en', 'theme=dark; lang=en', 'ours first'],
    ['theme=dark; _portcullis=abc; lang=en', 'theme=dark; lang=en', 'ours in the middle'],
    ['theme=dark; lang=en; _portcullis=abc', 'theme=dark; lang=en', 'ours last'],
    ['_portcullis=abc', undefined, 'ours only'],
    ['_portcullis=a; _portcullis_1=b; _portcullis_2=c', undefined, 'all chunks'],
    ['a=1; _portcullis_1=b; b=2; _portcullis_tx_xyz=s', 'a=1; b=2', 'chunk and transaction cookies'],
    ['  _portcullis=abc ;theme=dark;   lang=en  ;', 'theme=dark; lang=en', 'odd spacing'],
    ['_portcullis =abc; a=1', 'a=1', 'space before ='],
    ['_portcullisx=1; a=2', '_portcullisx=1; a=2', 'look-alike name not ours'],
    ['_Portcullis=1', '_Portcullis=1', 'names are case-sensitive per the predicate'],
    ['theme=dark; lang=en', 'theme=dark; lang=en', 'nothing of ours'],
    ['  odd  spacing=1 ;b=2', '  odd  spacing=1 ;b=2', 'nothing removed: returned untouched'],
    ['justaflag; _portcullis=x; a=b=c', 'justaflag; a=b=c', 'piece without = kept, = in value kept'],
    ['_portcullis; a=1', '_portcullis; a=1', 'no = : not treated as our cookie'],
    ['=novalue; _portcullis=x', '=novalue', 'empty name kept'],
    [';;;', undefined, 'only separators'],
    ['', undefined, 'empty header'],
    ['   ', undefined, 'blank header'],
    [undefined, undefined, 'missing header'],
  ]
  for (const [input, expected, name] of cases) t.equal(removeCookies(input, ours), expected, name)
})

t.test('removeCookies returns the same string when nothing is ours', async (t) => {
  const header = 'a=1;b=2'
  t.equal(removeCookies(header, () => false), header)
})
