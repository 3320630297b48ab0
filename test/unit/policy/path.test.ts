import t from 'tap'
import { MAX_PATH_LENGTH, normalizePath, splitTarget } from '../../../src/policy/path.ts'

// input → expected normalized path, or null when the path must be refused (400).
const cases: readonly (readonly [string, string | null])[] = [
  // unchanged
  ['/', '/'],
  ['/plain/path', '/plain/path'],
  ['/A/B', '/A/B'],
  ['/a/b/', '/a/b/'],
  ['/a;jsessionid=1/b', '/a;jsessionid=1/b'],
  ['/a/.well-known/x', '/a/.well-known/x'],
  ['/a/...', '/a/...'],
  ['/a/..b/c', '/a/..b/c'],
  ['/caf\u00e9', '/caf\u00e9'],
  ['/a/%20b', '/a/%20b'],
  // dot segments
  ['/a/./b', '/a/b'],
  ['/a/../b', '/b'],
  ['/a/b/../../c', '/c'],
  ['/a/b/..', '/a/'],
  ['/a/b/.', '/a/b/'],
  ['/a/..', '/'],
  ['/.', '/'],
  ['/./', '/'],
  ['/..', null],
  ['/../x', null],
  ['/a/../../x', null],
  ['/%2e%2e/x', null],
  ['/%2E%2E/x', null],
  ['/.%2e/x', null],
  ['/a/%2e%2e/b', '/b'],
  ['/a/%2e/b', '/a/b'],
  ['/public/%2e%2e/admin', '/admin'],
  // duplicate slashes
  ['/a//b', '/a/b'],
  ['//a', '/a'],
  ['//', '/'],
  ['/a///b//', '/a/b/'],
  ['/a//../b', '/b'],
  // percent-decoding of unreserved only, upper-case hex otherwise
  ['/%41', '/A'],
  ['/%7e', '/~'],
  ['/%7E%2d%5f%2E', '/~-_.'],
  ['/%61dmin', '/admin'],
  ['/%3a', '/%3A'],
  ['/a%3bb', '/a%3Bb'],
  ['/%25', '/%25'],
  ['/%252e%252e/admin', '/%252e%252e/admin'],
  ['/%c3%a9', '/%C3%A9'],
  ['/%23', '/%23'],
  ['/a%3fb', '/a%3Fb'],
  // invalid escapes
  ['/%zz', null],
  ['/%', null],
  ['/%4', null],
  ['/a%', null],
  ['/%g1', null],
  // encoded slash and backslash, controls
  ['/a%2Fb', null],
  ['/a%2fb', null],
  ['/a%5cb', null],
  ['/a%5Cb', null],
  ['/a\\b', null],
  ['/a%00', null],
  ['/a%0a', null],
  ['/a%0D%0A', null],
  ['/a%1f', null],
  ['/a%7f', null],
  ['/a\u0000', null],
  ['/a\tb', null],
  ['/a\nb', null],
  ['/a\u007fb', null],
  ['/a b', null],
  ['/a#b', null],
  ['/admin#/../public', null],
  // Tomcat-style path parameters on dot segments
  ['/..;/admin', null],
  ['/public/..;/admin', null],
  ['/public/..;x=1/admin', null],
  ['/public/.;/admin', null],
  ['/public/%2e%2e;/admin', null],
  ['/public/..%3b/admin', null],
  ['/public/..%3B/admin', null],
  // not an origin-form path
  ['', null],
  ['*', null],
  ['a/b', null],
  ['http://evil.com/a', null],
  ['%2f', null],
]

t.test('normalizePath table', async (t) => {
  t.ok(cases.length >= 40)
  for (const [input, expected] of cases) {
    t.equal(normalizePath(input), expected, JSON.stringify(input))
  }
})

t.test('fast path returns the very same string', async (t) => {
  for (const p of ['/plain/path', '/a/b/', '/a;b=c', '/x-y_z~1.2']) {
    t.equal(normalizePath(p), p, p)
  }
})

t.test('length limit', async (t) => {
  const atLimit = '/' + 'a'.repeat(MAX_PATH_LENGTH - 1)
  t.equal(normalizePath(atLimit), atLimit)
  t.equal(normalizePath(atLimit + 'a'), null)
  t.equal(normalizePath('/%41' + 'a'.repeat(MAX_PATH_LENGTH)), null)
})

t.test('normalization is idempotent', async (t) => {
  for (const [input, expected] of cases) {
    if (expected !== null) t.equal(normalizePath(expected), expected, JSON.stringify(input))
  }
})

t.test('splitTarget', async (t) => {
  t.same(splitTarget('/a/b'), { path: '/a/b', query: '' })
  t.same(splitTarget('/a/b?x=1'), { path: '/a/b', query: '?x=1' })
  t.same(splitTarget('/a?b?c'), { path: '/a', query: '?b?c' })
  t.same(splitTarget('/a?'), { path: '/a', query: '?' })
  t.same(splitTarget('?x'), { path: '', query: '?x' })
  t.same(splitTarget('/public?/../admin'), { path: '/public', query: '?/../admin' })
})
