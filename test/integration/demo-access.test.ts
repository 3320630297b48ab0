/**
 * The demo shows access rules (`portcullis demo`): its config, validated and served the way `main.ts`
 * does, admits alice and bob (verified example.com addresses) and refuses carol (partner.example,
 * unverified) everywhere but the public signed-out page; `/admin` is for admins with a second factor:
 * bob is refused, alice signed in with her password is sent to sign in again, and gets in with her
 * one-time code.
 */
import t from 'tap'
import { ADMIN_PATH, SIGNED_OUT_PATH, startDemoStack } from '../../src/demo/index.ts'
import { validateConfig } from '../../src/config/validate.ts'
import { request } from '../helpers/http.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { reserveHeldPort, startPortcullis } from '../helpers/portcullis.ts'

t.test('who can see what in the demo', async (t) => {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const stack = await startDemoStack({ publicUrl, listen: `127.0.0.1:${port}` })
  t.teardown(() => stack.close())
  const validated = validateConfig(stack.config)
  if (!validated.ok) throw new Error(`the demo config is invalid: ${JSON.stringify(validated.issues)}`)
  const proxy = await startPortcullis(t, validated.config, { port })
  await proxy.runtime.provider.whenReady()
  const [alice, bob, carol] = stack.users
  if (alice === undefined || bob === undefined || carol === undefined) throw new Error('the demo has three users')
  t.equal(alice.otp, '123456', "alice's one-time code, as the README says")
  const get = (path: string, cookie: string) => request(`${publicUrl}${path}`, { headers: { ...NAVIGATION_HEADERS, cookie } })

  // carol signs in (a login is never refused) and is refused on the page she comes back to.
  const c = await login({ proxyUrl: publicUrl, user: carol })
  const carolCookie = c.jar.header(`${publicUrl}/`)
  const refused = await get('/', carolCookie)
  t.equal(refused.status, 403, 'carol: 403 on /')
  t.match(refused.body, 'Access denied')
  t.match(refused.body, '<code>access.defaultAllow.domains</code>')
  t.notOk(refused.body.includes(carol.email), 'her address is not on the page')
  t.equal((await get(ADMIN_PATH, carolCookie)).status, 403, 'and on /admin')
  t.equal((await get(SIGNED_OUT_PATH, carolCookie)).status, 200, 'the public page she can see')

  const b = await login({ proxyUrl: publicUrl, user: bob })
  const bobCookie = b.jar.header(`${publicUrl}/`)
  const home = await get('/', bobCookie)
  t.equal(home.status, 200, 'bob sees the app')
  t.match(home.body, `<a href="${ADMIN_PATH}">`, 'which links to the admin page')
  const notAdmin = await get(ADMIN_PATH, bobCookie)
  t.equal(notAdmin.status, 403, 'bob is not an admin')
  t.match(notAdmin.body, '<code>routes[1].allow.groups</code>')

  const a = await login({ proxyUrl: publicUrl, user: alice })
  const stepUp = await get(ADMIN_PATH, a.jar.header(`${publicUrl}/`))
  t.equal(stepUp.status, 302, 'alice with her password only: sign in again')
  t.equal(stepUp.headers.location, `${publicUrl}/oauth2/start?rd=${encodeURIComponent(ADMIN_PATH)}`)
  const again = await login({ proxyUrl: publicUrl, user: alice, jar: a.jar, startUrl: String(stepUp.headers.location), otp: alice.otp })
  t.equal(again.finalLocation, `${publicUrl}${ADMIN_PATH}`)
  const admin = await get(ADMIN_PATH, a.jar.header(`${publicUrl}/`))
  t.equal(admin.status, 200, 'with the one-time code alice sees /admin')
  t.match(admin.body, 'alice@example.com')
})
