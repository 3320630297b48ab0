import { readFileSync } from 'node:fs'
import t from 'tap'
import { checkRedirect, isAllowedRedirectHost, MAX_REDIRECT_LENGTH, validateRedirect } from '../../../src/policy/redirects.ts'

const publicUrl = new URL('https://app.example.com')
const allowed: readonly string[] = Object.freeze(['.example.org', 'partner.example.net'])

interface Payload {
  readonly lineNo: number
  readonly raw: string
  readonly value: string
}

/**
 * Reads test/fixtures/open-redirects.txt. Each payload line is decoded with
 * JSON.parse('"' + line + '"') (so `\t`, `\u0000` are control characters and `\\` is a backslash);
 * lines that are `#` or start with `# ` are comments, blank lines are skipped.
 */
function readPayloads(): Payload[] {
  const text = readFileSync(new URL('../../fixtures/open-redirects.txt', import.meta.url), 'utf8')
  const payloads: Payload[] = []
  text.split('\n').forEach((line, i) => {
    if (line === '' || line === '#' || line.startsWith('# ')) return
    payloads.push({ lineNo: i + 1, raw: line, value: JSON.parse(`"${line}"`) as string })
  })
  return payloads
}

t.test('every payload in open-redirects.txt is refused', async (t) => {
  const payloads = readPayloads()
  t.ok(payloads.length >= 60, `fixture holds ${payloads.length} payloads`)
  for (const p of payloads) {
    const result = checkRedirect(p.value, publicUrl, allowed)
    const shown = result.ok ? result.href : result.reason
    t.equal(validateRedirect(p.value, publicUrl, allowed), null, `line ${p.lineNo}: ${p.raw} → ${shown}`)
  }
})

t.test('missing and empty are null', async (t) => {
  t.equal(validateRedirect(undefined, publicUrl, allowed), null)
  t.equal(validateRedirect(null, publicUrl, allowed), null)
  t.equal(validateRedirect('', publicUrl, allowed), null)
})

t.test('accepted targets', async (t) => {
  const cases: readonly (readonly [string, string])[] = [
    ['/', 'https://app.example.com/'],
    ['/reports', 'https://app.example.com/reports'],
    ['/reports?x=1', 'https://app.example.com/reports?x=1'],
    ['/reports?x=1#frag', 'https://app.example.com/reports?x=1#frag'],
    ['/a/b/?q=%2F%2Fevil.com', 'https://app.example.com/a/b/?q=%2F%2Fevil.com'],
    ['/reports?next=//evil.com', 'https://app.example.com/reports?next=//evil.com'],
    ['/my%20reports/caf%C3%A9', 'https://app.example.com/my%20reports/caf%C3%A9'],
    ['/café', 'https://app.example.com/caf%C3%A9'],
    ['/a/../b', 'https://app.example.com/b'],
    ['/#@evil.com', 'https://app.example.com/#@evil.com'],
    ['https://app.example.com', 'https://app.example.com/'],
    ['https://app.example.com/a', 'https://app.example.com/a'],
    ['https://app.example.com:443/a', 'https://app.example.com/a'],
    ['https://app.example.com#@evil.com', 'https://app.example.com/#@evil.com'],
    ['HTTPS://APP.EXAMPLE.COM/a', 'https://app.example.com/a'],
    ['https://App.Example.Com/A', 'https://app.example.com/A'],
    ['https://x.example.org/p', 'https://x.example.org/p'],
    ['https://a.b.example.org/p?q=1', 'https://a.b.example.org/p?q=1'],
    ['https://example.org/', 'https://example.org/'],
    ['https://example.org', 'https://example.org/'],
    ['https://EXAMPLE.org/', 'https://example.org/'],
    ['https://X.EXAMPLE.ORG/p', 'https://x.example.org/p'],
    ['https://partner.example.net/', 'https://partner.example.net/'],
    ['https://PARTNER.example.NET/x', 'https://partner.example.net/x'],
    ['https://partner.example.net:443/', 'https://partner.example.net/'],
  ]
  for (const [rd, expected] of cases) {
    t.equal(validateRedirect(rd, publicUrl, allowed), expected, rd)
  }
})

t.test('explicit refusals at the allowlist boundary', async (t) => {
  const cases: readonly (readonly [string, string])[] = [
    ['https://sub.partner.example.net/', 'host-not-allowed'], // exact entry: no subdomains
    ['https://example.org.evil.com/', 'host-not-allowed'],
    ['https://badexample.org/', 'host-not-allowed'],
    ['https://example.org./', 'host-trailing-dot'],
    ['http://x.example.org/', 'insecure-scheme'],
    ['https://xn--80a.example.org/', 'host-not-allowed'], // punycode label: exact entries only
    ['https://\u0430.example.org/', 'host-not-allowed'],
    ['https://\uff41\uff50\uff50.example.com/', 'host-idn'],
    ['https://0x7f.1/', 'host-rewritten'],
    ['https://app.example.com@evil.com', 'userinfo'],
    ['https:evil.com', 'not-path-or-http-url'],
    ['//evil.com', 'scheme-relative'],
    ['/\\evil.com', 'backslash'],
    ['/%2F%2Fevil.com', 'encoded-slash'],
    ['/\t/evil.com', 'control-or-space'],
    ['/%0a', 'encoded-control'],
    ['/.//evil.com', 'path-double-slash'],
    ['https://app.example.com//evil.com', 'path-double-slash'],
    ['https://app.example.com/%2f%2fevil.com', 'path-double-slash'],
    ['https:///evil.com', 'authority-empty'],
    ['https://app.example.com%2F@evil.com', 'userinfo'],
    ['https://%61pp.example.com/', 'authority-encoded'],
    ['/' + 'a'.repeat(MAX_REDIRECT_LENGTH), 'too-long'],
  ]
  for (const [rd, reason] of cases) {
    const result = checkRedirect(rd, publicUrl, allowed)
    t.same(result, { ok: false, reason }, JSON.stringify(rd))
  }
  t.equal(validateRedirect('/' + 'a'.repeat(MAX_REDIRECT_LENGTH - 1), publicUrl, allowed)?.length, 'https://app.example.com'.length + MAX_REDIRECT_LENGTH)
})

t.test('ports on allowlist entries', async (t) => {
  const list = ['example.com:8443', '.example.io']
  t.equal(validateRedirect('https://example.com:8443/x', publicUrl, list), 'https://example.com:8443/x')
  t.equal(validateRedirect('https://EXAMPLE.com:8443/', publicUrl, list), 'https://example.com:8443/')
  t.equal(validateRedirect('https://example.com/', publicUrl, list), null, 'entry with port: default port refused')
  t.equal(validateRedirect('https://example.com:8444/', publicUrl, list), null)
  t.equal(validateRedirect('https://a.example.io/', publicUrl, list), 'https://a.example.io/')
  t.equal(validateRedirect('https://a.example.io:8443/', publicUrl, list), null, 'entry without port: explicit port refused')
})

t.test('plain-http public URL (loopback demo)', async (t) => {
  const local = new URL('http://127.0.0.1:4180')
  t.equal(validateRedirect('/x', local, []), 'http://127.0.0.1:4180/x')
  t.equal(validateRedirect('http://127.0.0.1:4180/x', local, []), 'http://127.0.0.1:4180/x')
  t.equal(validateRedirect('http://127.0.0.1:4181/x', local, []), null)
  t.equal(validateRedirect('http://localhost:4180/x', local, []), null)
  t.equal(validateRedirect('http://2130706433:4180/x', local, []), null, 'numeric spelling of our own host')
  t.equal(validateRedirect('http://x.example.org/', local, ['.example.org']), 'http://x.example.org/')
  t.equal(validateRedirect('https://x.example.org/', local, ['.example.org']), 'https://x.example.org/')
})

t.test('IDN public URL and exact IDN entries', async (t) => {
  const idn = new URL('https://bücher.example')
  t.equal(validateRedirect('https://xn--bcher-kva.example/a', idn, []), 'https://xn--bcher-kva.example/a')
  t.equal(validateRedirect('https://bücher.example/a', idn, []), 'https://xn--bcher-kva.example/a')
  t.equal(validateRedirect('https://bücher.example/a', publicUrl, ['bücher.example']), 'https://xn--bcher-kva.example/a')
  t.equal(validateRedirect('https://bücher.example/a', publicUrl, ['.xn--bcher-kva.example']), 'https://xn--bcher-kva.example/a')
  t.equal(validateRedirect('https://www.bücher.example/a', publicUrl, ['.bücher.example']), null)
})

t.test('isAllowedRedirectHost', async (t) => {
  const list = ['.example.com', 'exact.example.net', 'ports.example.net:8443', '10.0.0.5', '[::1]:8080']
  const yes = ['example.com', 'a.example.com', 'a.b.example.com', 'A.EXAMPLE.COM', 'exact.example.net', 'ports.example.net:8443', 'ports.example.net:08443', '10.0.0.5', '[::1]:8080']
  const no = ['badexample.com', 'example.com.evil.com', 'example.com.', 'a.example.com.', '.example.com', 'a..example.com', 'a.exact.example.net', 'ports.example.net', 'example.com:8443', '10.0.0.6', '1.10.0.0.5', '[::1]', 'xn--80a.example.com', 'a b.example.com', '', 'evil.com\\.example.com']
  for (const h of yes) t.ok(isAllowedRedirectHost(h, list), `allowed: ${h}`)
  for (const h of no) t.notOk(isAllowedRedirectHost(h, list), `refused: ${JSON.stringify(h)}`)
  t.notOk(isAllowedRedirectHost('127.0.0.1', ['.0.0.1']), 'no suffix matching on IPs')
  t.notOk(isAllowedRedirectHost('example.com', []), 'empty allowlist')
})
