/**
 * The sign-in page's template: everything interpolated is escaped (rd, the form's action, the social
 * buttons' text and links), the social list is there only when there are providers, and the buttons'
 * text uses the providers' own spelling of their names.
 */
import t from 'tap'
import { renderSignInPage } from '../../../src/http/pages.ts'
import { socialLabel } from '../../../src/http/routes/sign-in.ts'

const HOSTILE = `"><script>alert(1)</script><a href='x'>&amp;`

t.test('every interpolated value is escaped', async (t) => {
  const html = renderSignInPage({ action: `/oauth2/start${HOSTILE}`, rd: HOSTILE, social: [{ label: HOSTILE, href: HOSTILE }] })
  t.notMatch(html, /<script/i, 'no script element')
  t.notMatch(html, /<a href='x'>/, 'no markup from the values')
  t.notMatch(html, /&amp;/, 'an entity in a value is escaped too (its "&")')
  const escaped = '&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;&#60;a href=&#39;x&#39;&#62;&#38;amp;'
  t.match(html, `value="${escaped}"`, 'rd in the hidden field')
  t.match(html, `action="/oauth2/start${escaped}"`, 'the action')
  t.match(html, `href="${escaped}">${escaped}</a>`, 'a social button')
})

t.test('the social list only with providers', async (t) => {
  const none = renderSignInPage({ action: '/oauth2/start', rd: 'https://app.example/', social: [] })
  t.notMatch(none, /<ul|<a /, 'no list, no link')
  const two = renderSignInPage({
    action: '/oauth2/start',
    rd: 'https://app.example/',
    social: [
      { label: 'Continue with GitHub', href: '/oauth2/start?provider=github&rd=x' },
      { label: 'Continue with Google', href: '/oauth2/start?provider=google&rd=x' },
    ],
  })
  t.equal(two.match(/<li><a class="button secondary" href="[^"]*">Continue with [A-Za-z]+<\/a><\/li>/g)?.length, 2, 'one button each')
  t.match(two, 'href="/oauth2/start?provider=github&#38;rd=x"')
})

t.test('social button text', async (t) => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['google', 'Google'],
    ['microsoft', 'Microsoft'],
    ['github', 'GitHub'],
    ['gitlab', 'GitLab'],
    ['apple', 'Apple'],
    ['linkedin', 'LinkedIn'],
    ['salesforce', 'Salesforce'],
    ['okta', 'Okta'],
    ['my_idp-2', 'My_idp-2'],
    ['0auth', '0auth'],
    ['constructor', 'Constructor'],
    ['__proto__', '__proto__'],
  ]
  for (const [name, shown] of cases) t.equal(socialLabel(name), `Continue with ${shown}`, name)
})
