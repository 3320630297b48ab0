/**
 * Error pages: no heading is its page's message again. Every `new PortcullisError(CODE, message)` in
 * src/ (string literals, and constants of the same file) is rendered as its HTML page, and the
 * heading must neither equal the message nor be how the message begins. Also: the provider's
 * `error_description` is escaped on the page, and 502/504 pages of the application link to the same
 * request again while sign-in failures link to a fresh login.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import t from 'tap'
import { type ErrorCode, PortcullisError } from '../../../src/errors.ts'
import { errorResponse, STATUS, TITLES } from '../../../src/http/errors.ts'

const SRC = resolve(import.meta.dirname, '../../../src')

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

const LITERAL = String.raw`'((?:[^'\\]|\\.)*)'|\x60((?:[^\x60\\]|\\.)*)\x60`
const CONSTRUCTED = new RegExp(String.raw`new PortcullisError\(\s*'([A-Z_]+)',\s*(?:${LITERAL}|([A-Z][A-Z0-9_]+)\b)`, 'g')

/** Every (code, public message) that src/ constructs, with where. */
function constructed(): Array<{ code: ErrorCode; message: string; where: string }> {
  const out: Array<{ code: ErrorCode; message: string; where: string }> = []
  for (const file of files(SRC)) {
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(CONSTRUCTED)) {
      let message: string | undefined = m[2] ?? m[3]
      if (message === undefined && m[4] !== undefined) {
        const constant = new RegExp(String.raw`const ${m[4]}\s*=\s*(?:${LITERAL})`).exec(text)
        message = constant?.[1] ?? constant?.[2]
      }
      if (message === undefined) continue
      out.push({ code: m[1] as ErrorCode, message: message.replace(/\\'/g, "'"), where: relative(SRC, file) })
    }
  }
  return out
}

const norm = (s: string) =>
  s
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim()

t.test('no page heading is repeated as its own message', async (t) => {
  const found = constructed()
  t.ok(found.length >= 40, `found ${found.length} constructed errors`)
  t.ok(found.some((f) => f.code === 'IDP_CLIENT_AUTH'), 'the message of a constant is found too')
  for (const { code, message, where } of found) {
    t.ok(code in STATUS, `${where}: ${code} is a known code`)
    const page = errorResponse(new PortcullisError(code, message), true, 'req-1', 'http://example.test/oauth2/start').body
    const heading = /<h1>([^<]*)<\/h1>/.exec(page)?.[1] ?? ''
    const body = /<\/h1>\s*<p>([^<]*)<\/p>/.exec(page)?.[1] ?? ''
    t.equal(heading, TITLES[code].replace(/'/g, '&#39;'), `${where}: ${code}: the heading is the code's title`)
    t.not(norm(body), norm(heading), `${where}: ${code}: "${message}" is not its heading again`)
    t.notOk(norm(body).startsWith(norm(heading)), `${where}: ${code}: "${message}" does not begin with its heading "${TITLES[code]}"`)
  }
})

t.test('the checker itself catches a heading repeated as the message', async (t) => {
  const page = errorResponse(new PortcullisError('SESSION_ENDED', `${TITLES.SESSION_ENDED}. Please sign in again.`), true, 'r', '/s').body
  const heading = /<h1>([^<]*)<\/h1>/.exec(page)?.[1] ?? ''
  const body = /<\/h1>\s*<p>([^<]*)<\/p>/.exec(page)?.[1] ?? ''
  t.ok(norm(body).startsWith(norm(heading)), 'a message that begins with the title is seen')
})

t.test('retry links by code: a fresh login after a sign-in failure, the same request after an application failure', async (t) => {
  const login = 'http://example.test/oauth2/start?rd=http%3A%2F%2Fexample.test%2Fx'
  const same = '/reports?year=2024'
  const link = (code: ErrorCode, again?: string) =>
    /<a href="([^"]*)">Try again<\/a>/.exec(errorResponse(new PortcullisError(code, 'm'), true, 'r', login, again).body)?.[1]
  for (const code of ['LOGIN_DENIED', 'LOGIN_FAILED', 'IDP_REJECTED', 'IDP_CLIENT_AUTH', 'IDP_UNAVAILABLE', 'NOT_READY', 'SESSION_ENDED'] as const) {
    t.equal(link(code, same), login.replace(/'/g, '&#39;'), `${code}: a fresh login`)
  }
  for (const code of ['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT'] as const) {
    t.equal(STATUS[code] === 502 || STATUS[code] === 504, true, `${code} is a ${STATUS[code]}`)
    t.equal(link(code, same), same, `${code}: the same request again`)
    t.equal(link(code), undefined, `${code}: no link when there is no request to repeat`)
  }
  for (const code of ['NOT_FOUND', 'PATH_REJECTED', 'METHOD_NOT_ALLOWED', 'REDIRECT_REJECTED'] as const) {
    t.equal(link(code, same), undefined, `${code}: no retry link`)
  }
})

t.test("the provider's error_description: escaped on the page, \\u-escaped markup in JSON", async (t) => {
  const err = new PortcullisError('LOGIN_DENIED', 'The identity provider did not complete the sign-in.', {
    details: { error: 'access_denied', description: 'Denied <img src=x onerror=alert(1)> & "quoted"' },
  })
  const page = errorResponse(err, true, 'r', '/s').body
  t.ok(page.includes('<q>Denied &#60;img src=x onerror=alert(1)&#62; &#38; &#34;quoted&#34;</q>'), 'escaped in the page')
  t.notMatch(page, /<img/, 'never as markup')
  const json = errorResponse(err, false, 'r', '/s').body
  t.notMatch(json, /[<>&]/, 'no raw <, > or & in the JSON text')
  t.equal((JSON.parse(json) as { providerDescription: string }).providerDescription, 'Denied <img src=x onerror=alert(1)> & "quoted"', 'the value itself is intact')
})
