/**
 * The sign-in page (`GET /oauth2/sign_in`) and organization routing (`provider.domainRouting`) against
 * the embedded provider over real HTTP: the page's form and links, `rd` validated as `/oauth2/start`
 * does, and the authorize request the provider records for a login whose `login_hint` is in a mapped
 * domain (explicit hints win over the mapping, `provider.authorizeParams` over both).
 */
import t from 'tap'
import type { Test } from 'tap'
import { CookieJar, request, type TestResponse } from '../helpers/http.ts'
import { NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { startStack, type Stack } from '../helpers/portcullis.ts'
import { PAGE_HEADERS } from '../../src/http/errors.ts'

const ROUTING = {
  'acme.example': { organization_id: 'org_acme' },
  'Partner.Example': { connection_id: 'conn_partner' },
}

async function signInPage(stack: Stack, query: string): Promise<{ url: string; res: TestResponse }> {
  const url = `${stack.proxy.url}/oauth2/sign_in${query}`
  return { url, res: await request(url, { headers: NAVIGATION_HEADERS }) }
}

/** The numeric character references `escapeHtml` writes, read back. */
function decodeHtml(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
}

/** Follow a redirect to the provider's authorize endpoint and return what the provider recorded. */
async function atProvider(t: Test, stack: Stack, res: TestResponse, jar: CookieJar): Promise<Record<string, string>> {
  t.equal(res.status, 302, 'start redirects')
  const location = new URL(String(res.headers.location))
  t.equal(`${location.origin}${location.pathname}`, `${stack.provider.issuer}/oauth/authorize`, 'to the provider')
  const seen = stack.provider.authorizations.length
  const page = await request(location.href, { jar, headers: NAVIGATION_HEADERS })
  t.ok(page.status === 302 || page.status === 303 || page.status === 200, `the provider takes the request (${page.status})`)
  t.equal(stack.provider.authorizations.length, seen + 1, 'the provider recorded the authorization request')
  return stack.provider.authorizations.at(-1) ?? {}
}

/** `GET /oauth2/start?<query>` with a fresh jar, up to what the provider saw. */
async function start(t: Test, stack: Stack, query: Record<string, string>): Promise<Record<string, string>> {
  const jar = new CookieJar()
  const res = await request(`${stack.proxy.url}/oauth2/start?${new URLSearchParams(query).toString()}`, { jar, headers: NAVIGATION_HEADERS })
  return atProvider(t, stack, res, jar)
}

t.test('default hintParams, two mapped domains and three social providers', async (t) => {
  const stack = await startStack(t, { overrides: { provider: { domainRouting: ROUTING, socialProviders: ['github', 'google', 'okta-x'] } } })
  const home = `${stack.proxy.url}/`

  t.test('the page: a labelled e-mail field, the rd, a submit button, security headers', async (t) => {
    const { url, res } = await signInPage(stack, '?rd=/x')
    t.equal(res.status, 200)
    t.match(res.headers['content-type'], /^text\/html; charset=utf-8$/)
    for (const [name, value] of Object.entries(PAGE_HEADERS)) t.equal(res.headers[name], value, `${name} as on the error pages`)
    t.match(res.headers['content-security-policy'], /style-src 'unsafe-inline'/, 'inline styles allowed')
    t.notMatch(res.headers['content-security-policy'], /script-src/, 'and no script')
    const html = res.body
    t.notMatch(html, /<script/i, 'no script element')
    t.notMatch(html, /\son[a-z]+=/i, 'no event handler attribute')
    t.match(html, /<html lang="en">/)
    t.match(html, /<title>Sign in<\/title>/)
    t.match(html, /<meta name="viewport"/)
    t.match(html, /<main>[\s\S]*<h1>Sign in<\/h1>[\s\S]*<\/main>/, 'a heading inside main')
    t.match(html, /<form method="get" action="\/oauth2\/start">/, 'the form goes to /oauth2/start with GET')
    t.match(html, /<label for="login_hint">E-mail address<\/label>/, 'a visible label')
    const input = /<input type="email"[^>]*>/.exec(html)?.[0] ?? ''
    for (const attr of ['id="login_hint"', 'name="login_hint"', 'autocomplete="email"', ' required']) t.match(input, attr, `the e-mail input has ${attr}`)
    t.match(html, /<button type="submit"[^>]*>Continue<\/button>/, 'a submit button')
    const form = parseForm(html, url)
    t.same(form?.fields, { login_hint: '', rd: `${stack.proxy.url}/x` }, 'the form carries login_hint and the validated rd')
    t.equal(form?.method, 'GET')
    t.equal(form?.action, `${stack.proxy.url}/oauth2/start`)
  })

  t.test('an rd off the allowlist becomes the public URL', async (t) => {
    for (const rd of ['//evil.example', 'https://evil.example/x', 'javascript:alert(1)']) {
      const { url, res } = await signInPage(stack, `?rd=${encodeURIComponent(rd)}`)
      t.equal(res.status, 200, rd)
      t.equal(parseForm(res.body, url)?.fields.rd, home, `${rd} → /`)
      t.notMatch(res.body, /evil\.example|javascript:/, `${rd} is not on the page`)
    }
    const { url, res } = await signInPage(stack, '')
    t.equal(parseForm(res.body, url)?.fields.rd, home, 'no rd → /')
    const twice = await request(`${stack.proxy.url}/oauth2/sign_in?rd=/a&rd=/b`, { headers: NAVIGATION_HEADERS })
    t.equal(twice.status, 400, 'an rd given twice is refused, as on /oauth2/start')
  })

  t.test('what the page shows of rd is escaped', async (t) => {
    const rd = `/x?q="><img>&t='`
    const { res } = await signInPage(stack, `?rd=${encodeURIComponent(rd)}`)
    t.equal(res.status, 200)
    t.notMatch(res.body, /<img/i, 'no markup from rd')
    const expected = `${stack.proxy.url}/x?q=%22%3E%3Cimg%3E&t=%27`
    const value = /<input type="hidden" name="rd" value="([^"]*)">/.exec(res.body)?.[1] ?? ''
    t.equal(value, expected.replace('&', '&#38;'), 'the validated rd, its "&" escaped')
    t.equal(decodeHtml(value), expected)
  })

  t.test('one link per social provider, to /oauth2/start with provider and rd', async (t) => {
    const { res } = await signInPage(stack, '?rd=/x')
    const links = [...res.body.matchAll(/<a class="button secondary" href="([^"]*)">([^<]*)<\/a>/g)].map((m) => ({
      href: decodeHtml(m[1] ?? ''),
      text: m[2],
    }))
    t.same(
      links.map((l) => l.text),
      ['Continue with GitHub', 'Continue with Google', 'Continue with Okta-x'],
      'friendly names, else capitalized',
    )
    const github = new URL(links[0]?.href ?? '', stack.proxy.url)
    t.equal(github.pathname, '/oauth2/start')
    t.equal(github.searchParams.get('provider'), 'github', 'the GitHub link carries provider=github')
    t.equal(github.searchParams.get('rd'), `${stack.proxy.url}/x`, 'and the rd')
    const jar = new CookieJar()
    const recorded = await atProvider(t, stack, await request(github.href, { jar, headers: NAVIGATION_HEADERS }), jar)
    t.equal(recorded.provider, 'github', 'the provider saw provider=github')
  })

  t.test('submitting the form with a mapped e-mail sends organization_id and login_hint', async (t) => {
    const { url, res } = await signInPage(stack, '?rd=/x')
    const jar = new CookieJar()
    const started = await submitForm({ url, body: res.body }, jar, { login_hint: 'someone@acme.example' })
    const recorded = await atProvider(t, stack, started, jar)
    t.equal(recorded.organization_id, 'org_acme')
    t.equal(recorded.login_hint, 'someone@acme.example')
    t.notOk('connection_id' in recorded)
  })

  t.test('GET /oauth2/start with a login_hint of a mapped domain', async (t) => {
    const org = await start(t, stack, { login_hint: 'someone@acme.example', rd: '/x' })
    t.equal(org.organization_id, 'org_acme', 'organization_id from the mapping')
    t.equal(org.login_hint, 'someone@acme.example', 'login_hint forwarded (in hintParams)')
    const upper = await start(t, stack, { login_hint: 'Someone@ACME.example', rd: '/x' })
    t.equal(upper.organization_id, 'org_acme', 'the domain is compared without case')
    const conn = await start(t, stack, { login_hint: 'x@partner.example', rd: '/x' })
    t.equal(conn.connection_id, 'conn_partner', 'connection_id from the mapping (key written in mixed case)')
    t.notOk('organization_id' in conn, 'and no organization_id')
  })

  t.test('explicit hints win over the mapping', async (t) => {
    const org = await start(t, stack, { login_hint: 'someone@acme.example', organization_id: 'org_explicit', rd: '/x' })
    t.equal(org.organization_id, 'org_explicit', 'an explicit organization_id wins')
    const conn = await start(t, stack, { login_hint: 'x@partner.example', connection_id: 'conn_explicit', rd: '/x' })
    t.equal(conn.connection_id, 'conn_explicit', 'an explicit connection_id wins')
  })

  t.test('an unmapped domain, a subdomain or no e-mail adds nothing', async (t) => {
    for (const hint of ['someone@other.example', 'someone@sub.acme.example', 'acme.example', 'a@b@acme.example']) {
      const recorded = await start(t, stack, { login_hint: hint, rd: '/x' })
      t.equal(recorded.login_hint, hint, `${hint} forwarded`)
      t.notOk('organization_id' in recorded || 'connection_id' in recorded, `${hint}: no organization or connection`)
    }
  })
})

t.test('login_hint not forwarded, organization_id fixed in authorizeParams', async (t) => {
  const stack = await startStack(t, {
    overrides: {
      provider: {
        domainRouting: { ...ROUTING, 'beta.example': { organization_id: 'org_beta', connection_id: 'conn_beta' } },
        hintParams: ['connection_id'],
        authorizeParams: { organization_id: 'org_fixed' },
      },
    },
  })

  t.test('the mapping reads login_hint even when it is not forwarded', async (t) => {
    const conn = await start(t, stack, { login_hint: 'x@partner.example', rd: '/x' })
    t.equal(conn.connection_id, 'conn_partner', 'connection_id from the mapping')
    t.notOk('login_hint' in conn, 'login_hint is not in hintParams: not forwarded')
  })

  t.test('authorizeParams win over the mapping, explicit hints over the mapping', async (t) => {
    const org = await start(t, stack, { login_hint: 'someone@acme.example', rd: '/x' })
    t.equal(org.organization_id, 'org_fixed', 'the static organization_id wins over the mapped one')
    const both = await start(t, stack, { login_hint: 'x@beta.example', connection_id: 'conn_explicit', organization_id: 'org_query', rd: '/x' })
    t.equal(both.organization_id, 'org_fixed', 'organization_id: static (not in hintParams, so the query is ignored)')
    t.equal(both.connection_id, 'conn_explicit', 'connection_id: the explicit hint')
  })

  t.test('a login_hint that is no valid hint value is not read', async (t) => {
    const recorded = await start(t, stack, { login_hint: 'x\r\n@partner.example', rd: '/x' })
    t.notOk('connection_id' in recorded, 'no mapping from a value with control characters')
    const twice = await request(`${stack.proxy.url}/oauth2/start?rd=/&login_hint=a@acme.example&login_hint=b@partner.example`, {
      headers: { accept: 'application/json' },
    })
    t.equal(twice.status, 400, 'a login_hint given twice is refused')
  })

  t.test('no social providers: no buttons', async (t) => {
    const { res } = await signInPage(stack, '?rd=/x')
    t.equal(res.status, 200)
    t.notMatch(res.body, /Continue with|<a /, 'no provider links')
  })
})
