/**
 * Forward-auth behind a real Caddy (Debian's 2.6.2, `forward_auth` with `uri /oauth2/verify` and
 * `copy_headers` of every identity header): `deploy/caddy/Caddyfile` as an operator copies it, with
 * only its environment placeholders set. The app sits behind Caddy, not behind Portcullis; the login
 * goes through Caddy to Portcullis's /oauth2/ endpoints. Runs the scenario of
 * test/helpers/front-scenario.ts with a real chromium (Portcullis answers refusals itself: a 302 to
 * the login for a navigation, a 401 JSON for an API client, a 403 for a refused user), then what
 * Caddy 2.6 does with the check's Set-Cookie and the session store the Caddyfile asks for.
 *
 * Needs Debian's caddy and chromium (scripts/install-system-deps.sh). Without them this test FAILS,
 * it never skips.
 */
import t from 'tap'
import { join } from 'node:path'
import { DEPLOY, startCaddy } from '../helpers/fronts.ts'
import { API_HEADERS, alice, runFrontScenario, startFrontStack, withFront, absoluteStart } from '../helpers/front-scenario.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'

t.test('Caddy forward_auth: deploy/caddy/Caddyfile in front of an app', async (t) => {
  // The Caddyfile's advice: Caddy drops the Set-Cookie of a 2xx check.
  const s = await startFrontStack(t, { session: { store: 'memory' } })
  const env = {
    APP_SITE: s.publicUrl,
    CADDY_BIND: '127.0.0.1',
    PORTCULLIS_UPSTREAM: `127.0.0.1:${s.proxyPort}`,
    APP_UPSTREAM: `127.0.0.1:${s.app.port}`,
  }
  if (!(await withFront(s, () => startCaddy(t, join(DEPLOY, 'caddy/Caddyfile'), env, `${s.publicUrl}/oauth2/not-here`)))) return

  await runFrontScenario(t, s, {
    apiRefusal: 'json',
    target: '/reports?tab=1&q=a%20b',
    signinLocation: absoluteStart(s.publicUrl, 'Caddy appended the query to the check; it is not read'),
  })

  // With the memory store the cookie never changes: an idle-clock move needs no Set-Cookie through Caddy.
  const { jar } = await login({ proxyUrl: s.publicUrl, path: '/reports' })
  const cookie = jar.get('_portcullis')
  s.clock.advance(61_000)
  const moved = await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })
  t.equal(moved.status, 200, 'after an idle minute')
  t.same(moved.setCookies, [], 'no cookie to pass on')
  s.clock.advance(61_000)
  t.equal((await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })).status, 200, 'and again')
  t.equal(jar.get('_portcullis'), cookie, 'the same cookie all along')
  t.equal(s.app.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
})
