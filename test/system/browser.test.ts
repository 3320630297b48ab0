/**
 * End to end in a real browser: Debian's Chromium driven by playwright-core against the in-process
 * stack (embedded provider + echo upstream + Portcullis). A navigation without a session goes
 * through the provider's login form and comes back to the page it asked for, with the session cookie
 * set HttpOnly and the identity headers at the upstream.
 *
 * Needs /usr/bin/chromium (scripts/install-system-deps.sh); playwright cannot download its own
 * browser here. Without it this test FAILS, it never skips.
 */
import t, { type Test } from 'tap'
import type { Page } from 'playwright-core'
import { launchBrowser } from '../helpers/browser.ts'
import { startStack } from '../helpers/portcullis.ts'
import { DEMO_USERS } from '../helpers/provider.ts'

function launch(t: Test): ReturnType<typeof launchBrowser> {
  return launchBrowser(t)
}

/** The provider's login form is on the page: inputs named login and password. */
async function expectLoginForm(t: Test, page: Page, providerOrigin: string): Promise<void> {
  t.equal(new URL(page.url()).origin, providerOrigin, `on the provider (${page.url()})`)
  t.equal(await page.locator('input[name="login"]').count(), 1, 'login input')
  t.equal(await page.locator('input[name="password"]').count(), 1, 'password input')
}

t.test('a browser logs in through the provider and lands on the page it asked for', async (t) => {
  const { proxy, provider, upstream } = await startStack(t)
  const launched = await launch(t)
  if (!launched) return
  const { context, page } = launched
  const alice = DEMO_USERS[0]!
  const target = `${proxy.url}/dashboard?tab=1`
  const providerOrigin = new URL(provider.issuer).origin

  const first = await page.goto(target)
  t.equal(first?.status(), 200, 'the login page answers 200')
  await expectLoginForm(t, page, providerOrigin)
  t.same(
    (await context.cookies(proxy.url)).filter((c) => c.name === '_portcullis').map((c) => c.name),
    [],
    'no session cookie before the login',
  )

  await page.fill('input[name="login"]', alice.email)
  await page.fill('input[name="password"]', alice.password)
  await Promise.all([page.waitForURL(target), page.locator('form [type="submit"], form button').first().click()])
  t.equal(page.url(), target, 'back at the page first asked for, query included')

  const body = (await page.textContent('body')) ?? ''
  const html = await page.content()
  t.match(await page.title(), /.+/, 'the upstream page has a title')
  t.match(body, 'GET /dashboard?tab=1', 'the echo upstream page, for the original request')
  const headerRows: string[][] = []
  for (const row of await page.locator('table tbody tr').all()) headerRows.push((await row.locator('td').allTextContents()).map((s) => s.trim()))
  const headers = Object.fromEntries(headerRows.map(([k, v]) => [(k ?? '').toLowerCase(), v ?? '']))
  t.equal(headers['x-auth-request-user'], alice.id, 'x-auth-request-user is alice')
  t.equal(headers['x-auth-request-email'], alice.email, 'x-auth-request-email is her email')
  t.match(html, alice.email, "her email is on the page")
  // (the browser also asks for /favicon.ico on its own, so look for the page's request)
  const seen = upstream.requests.filter((r) => r.url === '/dashboard?tab=1')
  t.equal(seen.length, 1, 'the upstream got the original path and query, once')
  t.equal(seen[0]?.headers['x-auth-request-user'], alice.id, 'with the identity headers')
  t.notMatch(String(seen[0]?.headers.cookie ?? ''), /_portcullis/, 'and without our cookies')

  const cookies = await context.cookies(proxy.url)
  const session = cookies.find((c) => c.name === '_portcullis' || /^_portcullis_\d+$/.test(c.name))
  t.ok(session, `session cookie set (${cookies.map((c) => c.name).join(', ')})`)
  t.equal(session?.httpOnly, true, 'session cookie is HttpOnly')
  t.equal(session?.sameSite, 'Lax', 'session cookie is SameSite=Lax')
  t.equal(session?.secure, false, 'not Secure on a plain-http publicUrl')
  t.notOk(
    cookies.some((c) => c.name.startsWith('_portcullis_tx_')),
    'the login transaction cookie is gone',
  )

  const info = await page.goto(`${proxy.url}/oauth2/userinfo`)
  t.equal(info?.status(), 200, '/oauth2/userinfo answers 200')
  t.match(info?.headers()['content-type'] ?? '', /^application\/json/)
  const json = (await info?.json()) as Record<string, unknown>
  t.equal(json.user, alice.id)
  t.equal(json.email, alice.email)
  t.same(json.groups, alice.groups)
  t.notMatch(JSON.stringify(json), /eyJ/, 'no token in the userinfo')
})

t.test('a wrong password shows the login form again with an error, and no redirect', async (t) => {
  const { proxy, provider, upstream } = await startStack(t)
  const launched = await launch(t)
  if (!launched) return
  const { context, page } = launched
  const alice = DEMO_USERS[0]!
  const providerOrigin = new URL(provider.issuer).origin

  await page.goto(`${proxy.url}/dashboard?tab=1`)
  await expectLoginForm(t, page, providerOrigin)
  const formUrl = page.url()

  await page.fill('input[name="login"]', alice.email)
  await page.fill('input[name="password"]', 'not-alices-password')
  const [response] = await Promise.all([page.waitForNavigation(), page.locator('form [type="submit"], form button').first().click()])
  t.equal(response?.status(), 200, 'the form is answered with a page, not a redirect')
  t.equal(response?.request().redirectedFrom(), null, 'no redirect on the way')
  t.equal(new URL(page.url()).origin, providerOrigin, 'still on the provider')
  t.equal(new URL(page.url()).pathname, new URL(formUrl).pathname, 'same interaction')
  await expectLoginForm(t, page, providerOrigin)
  t.match((await page.locator('[role="alert"]').textContent()) ?? '', /Invalid email or password/, 'the error is shown')
  t.equal(await page.inputValue('input[name="login"]'), alice.email, 'the email is kept')
  t.equal(await page.inputValue('input[name="password"]'), '', 'the password is not')

  t.notOk((await context.cookies(proxy.url)).some((c) => c.name === '_portcullis'), 'no session cookie')
  t.equal(upstream.requests.length, 0, 'nothing reached the upstream')
})
