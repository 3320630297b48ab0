/**
 * The demo (`portcullis demo`, `npm start` without a config) signs out to a page of its own: the
 * stack `startDemoStack` builds, its config validated and served the way `main.ts` does, a real login
 * with a demo user, the app's "Sign out" link, the provider's confirmation, and back on the demo's
 * "You are signed out" page, which offers to sign in again; following that asks for the password
 * again (the provider's session ended too).
 */
import t from 'tap'
import { startDemoStack, SIGNED_OUT_PATH } from '../../src/demo/index.ts'
import { validateConfig } from '../../src/config/validate.ts'
import { request } from '../helpers/http.ts'
import { login, NAVIGATION_HEADERS, parseForm, submitForm } from '../helpers/login.ts'
import { reserveHeldPort, startPortcullis } from '../helpers/portcullis.ts'

t.test('the demo signs out to a demo page that says so and offers to sign in again', async (t) => {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const stack = await startDemoStack({ publicUrl, listen: `127.0.0.1:${port}` })
  t.teardown(() => stack.close())
  const validated = validateConfig(stack.config)
  if (!validated.ok) throw new Error(`the demo config is invalid: ${JSON.stringify(validated.issues)}`)
  const proxy = await startPortcullis(t, validated.config, { port })
  await proxy.runtime.provider.whenReady()

  const user = stack.users[0]
  if (user === undefined) throw new Error('the demo has no users')
  const { jar, finalLocation } = await login({ proxyUrl: proxy.url, path: '/', user })
  t.equal(finalLocation, `${publicUrl}/`, 'signed in to the demo app')
  const app = await request(`${publicUrl}/`, { jar, headers: NAVIGATION_HEADERS })
  t.equal(app.status, 200)
  const signOut = /<a href="([^"]*)">Sign out<\/a>/.exec(app.body)?.[1]
  t.equal(signOut, '/oauth2/sign_out', 'the demo app links to sign-out')

  const out = await request(new URL(signOut ?? '', publicUrl).href, { jar, headers: NAVIGATION_HEADERS })
  t.equal(out.status, 302)
  const endSession = new URL(String(out.headers.location))
  t.equal(`${endSession.origin}${endSession.pathname}`, `${stack.provider.issuer}/oidc/logout`, "to the provider's end-session endpoint")
  t.equal(endSession.searchParams.get('post_logout_redirect_uri'), `${publicUrl}${SIGNED_OUT_PATH}`, 'asking to come back to the demo')

  const confirmPage = await request(endSession.href, { jar, headers: NAVIGATION_HEADERS })
  t.equal(confirmPage.status, 200, 'the provider asks to confirm')
  const confirmed = await submitForm({ url: endSession.href, body: confirmPage.body }, jar)
  t.ok(confirmed.status === 302 || confirmed.status === 303, 'and then redirects')
  const back = new URL(String(confirmed.headers.location))
  t.equal(`${back.origin}${back.pathname}`, `${publicUrl}${SIGNED_OUT_PATH}`, 'back to the demo, not a page of the provider')

  const page = await request(back.href, { jar, headers: NAVIGATION_HEADERS })
  t.equal(page.status, 200, 'the signed-out page is public')
  t.match(page.body, /<h1>You are signed out<\/h1>/, 'it says you are signed out')
  const again = /<a href="([^"]*)">Sign in again<\/a>/.exec(page.body)?.[1]
  t.equal(again, '/', 'and offers to sign in again')
  t.notOk(jar.get('_portcullis'), 'no session cookie is left')

  // Following the offer: a login, and the provider asks for the password (its session ended too).
  let url = new URL(again ?? '/', publicUrl).href
  let res = await request(url, { jar, headers: NAVIGATION_HEADERS })
  for (let i = 0; i < 10 && res.status >= 300 && res.status < 400; i++) {
    url = new URL(String(res.headers.location), url).href
    res = await request(url, { jar, headers: NAVIGATION_HEADERS })
  }
  t.equal(res.status, 200)
  t.ok(url.startsWith(`${stack.provider.issuer}/interaction/`), "on the provider's login page")
  const form = parseForm(res.body, url)
  t.ok(form !== undefined && 'login' in form.fields && 'password' in form.fields, 'which asks to sign in')

  const signedInAgain = await login({ proxyUrl: proxy.url, path: '/', user, jar })
  t.equal(signedInAgain.finalLocation, `${publicUrl}/`, 'and signing in again works')
})

t.test('to an API client the signed-out path is the plain echo (the page is for browsers)', async (t) => {
  const port = await reserveHeldPort()
  const publicUrl = `http://127.0.0.1:${port}`
  const stack = await startDemoStack({ publicUrl, listen: `127.0.0.1:${port}` })
  t.teardown(() => stack.close())
  const validated = validateConfig(stack.config)
  if (!validated.ok) throw new Error('the demo config is invalid')
  await startPortcullis(t, validated.config, { port })
  const res = await request(`${publicUrl}${SIGNED_OUT_PATH}`, { headers: { accept: 'application/json' } })
  t.equal(res.status, 200, 'public without a session')
  t.equal(res.json<{ url: string }>().url, SIGNED_OUT_PATH)
})
