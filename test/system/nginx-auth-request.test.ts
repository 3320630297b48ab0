/**
 * Forward-auth behind a real nginx (`auth_request`), in its two forms:
 * - plain nginx: `deploy/nginx/portcullis-auth.conf` as an operator copies it (only its addresses
 *   replaced): GET /oauth2/auth with X-Original-URL/-Method, identity headers and the first
 *   `Set-Cookie` copied with `auth_request_set`, `error_page 401 403` handing the refused client
 *   Portcullis's /oauth2/verify answer (302 to the login for a navigation, 401 JSON for an API client);
 * - ingress-nginx's `auth-url` + `auth-signin`, reduced to what its nginx.tmpl sends the check
 *   (X-Original-URL/-Method, a blanked X-Forwarded-Proto, X-Sent-From) and does with the answer
 *   (`auth-response-headers` copied, every refused client 302'd to `auth-signin`).
 * The app sits behind nginx, not behind Portcullis; the login goes through nginx to Portcullis's
 * /oauth2/ endpoints. Each form runs the scenario of test/helpers/front-scenario.ts with a real
 * chromium, then the session-cookie refresh through `add_header Set-Cookie`.
 *
 * Needs Debian's nginx and chromium (scripts/install-system-deps.sh). Without them this test FAILS,
 * it never skips.
 */
import t, { type Test } from 'tap'
import { deployedNginxConf, startNginx } from '../helpers/fronts.ts'
import { API_HEADERS, alice, runFrontScenario, startFrontStack, withFront, type FrontStack, absoluteStart } from '../helpers/front-scenario.ts'
import { login } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { startRedis } from '../helpers/redis.ts'
import { eventually } from '../helpers/wait.ts'

/** ingress-nginx's auth location and protected location (nginx.tmpl), for `auth-url`, `auth-signin` and these `auth-response-headers`. */
function ingressNginxConf(port: number, portcullis: number, app: number): string {
  const responseHeaders = ['X-Auth-Request-User', 'X-Auth-Request-Email', 'X-Auth-Request-Groups', 'X-Forwarded-User', 'X-Forwarded-Email', 'Remote-User']
  const copy = responseHeaders
    .map((h, i) => `      auth_request_set $authHeader${i} $upstream_http_${h.toLowerCase().replace(/-/g, '_')};\n      proxy_set_header '${h}' $authHeader${i};`)
    .join('\n')
  return `  server {
    listen 127.0.0.1:${port};
    location = /_external-auth {
      internal;
      proxy_pass http://127.0.0.1:${portcullis}/oauth2/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Proto "";
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header Host 127.0.0.1:${portcullis};
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Sent-From "nginx-ingress-controller";
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Auth-Request-Redirect $request_uri;
    }
    # the second Ingress of oauth2-proxy's documented setup: path /oauth2 to the auth service
    location /oauth2/ {
      proxy_pass http://127.0.0.1:${portcullis};
      proxy_set_header Host $http_host;
    }
    location / {
      auth_request /_external-auth;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
${copy}
      error_page 401 = @signin;
      proxy_pass http://127.0.0.1:${app};
    }
    # auth-signin: $scheme://$host/oauth2/start?rd=$escaped_request_uri (plain nginx has no
    # set_escape_uri, so the test's targets have one query parameter)
    location @signin {
      internal;
      add_header Set-Cookie $auth_cookie;
      return 302 $scheme://$http_host/oauth2/start?rd=$request_uri;
    }
  }
`
}

/** An idle-clock move re-seals the cookie during the check; it reaches the browser through `add_header Set-Cookie`. */
async function cookieRefresh(t: Test, s: FrontStack): Promise<void> {
  const { jar } = await login({ proxyUrl: s.publicUrl, path: '/reports' })
  const before = jar.get('_portcullis')
  t.ok(before, 'signed in')
  t.same((await request(`${s.publicUrl}/reports`, { jar })).setCookies, [], 'nothing re-sealed right after the login')
  s.clock.advance(61_000)
  const moved = await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })
  t.equal(moved.status, 200)
  t.equal(moved.setCookies.length, 1, 'the re-sealed cookie reaches the browser')
  t.not(jar.get('_portcullis'), before)
  const again = await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })
  t.equal(again.status, 200, 'and keeps working')
  t.equal(s.app.requests.at(-1)?.headers['x-auth-request-user'], alice.id)
}

t.test('plain nginx: deploy/nginx/portcullis-auth.conf in front of an app', async (t) => {
  const s = await startFrontStack(t)
  const conf = deployedNginxConf({ listen: s.frontPort, portcullis: s.proxyPort, app: s.app.port })
  if (!(await withFront(s, () => startNginx(t, conf, s.frontPort)))) return

  t.equal((await request(`${s.publicUrl}/oauth2/auth`)).status, 404, 'the check location is internal: clients cannot call it')
  await runFrontScenario(t, s, {
    apiRefusal: 'json',
    target: '/reports?tab=1&q=a%20b',
    signinLocation: absoluteStart(s.publicUrl, 'every query parameter kept'),
  })
  await cookieRefresh(t, s)
})

t.test('plain nginx with the Redis store: Redis down is the 503 page with Retry-After, never a 500 or the app; back: served again', async (t) => {
  const redis = await startRedis(t)
  const s = await startFrontStack(t, { session: { store: 'redis', redis: { url: redis.url } } })
  await s.proxy.runtime.redis?.whenReady()
  const conf = deployedNginxConf({ listen: s.frontPort, portcullis: s.proxyPort, app: s.app.port })
  if (!(await withFront(s, () => startNginx(t, conf, s.frontPort)))) return
  const { jar } = await login({ proxyUrl: s.publicUrl, path: '/reports' })
  t.equal((await request(`${s.publicUrl}/reports`, { jar })).status, 200, 'signed in through nginx')
  const seen = s.app.requests.length

  await redis.stop()
  const page = await request(`${s.publicUrl}/reports`, { jar, headers: { accept: 'text/html' } })
  t.equal(page.status, 503, 'a browser gets the 503, not the 500 auth_request makes of it')
  t.ok(Number(page.headers['retry-after']) >= 1, 'with Retry-After')
  t.match(page.body, /temporarily unavailable/i, "Portcullis's page")
  const api = await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })
  t.equal(api.status, 503, 'an API client gets the 503 too')
  t.equal(api.json<{ error: string }>().error, 'STORE_UNAVAILABLE', 'as JSON')
  t.equal(s.app.requests.length, seen, 'the app saw nothing while the session could not be checked')

  await redis.start()
  const back = await eventually(async () => (await request(`${s.publicUrl}/reports`, { jar, headers: API_HEADERS })).status === 401, { timeoutMs: 15_000, everyMs: 100 })
  t.ok(back, 'Redis back (empty): the old cookie is no session any more, a 401 for the API client')
})

t.test('ingress-nginx style auth-url + auth-signin in front of an app', async (t) => {
  const s = await startFrontStack(t)
  if (!(await withFront(s, () => startNginx(t, ingressNginxConf(s.frontPort, s.proxyPort, s.app.port), s.frontPort)))) return

  await runFrontScenario(t, s, {
    apiRefusal: 'signin',
    passesClientForwarding: true,
    target: '/reports?tab=1',
    signinLocation: (t, location) => t.equal(location, `${s.publicUrl}/oauth2/start?rd=/reports?tab=1`, 'auth-signin with the path as rd'),
  })
  await cookieRefresh(t, s)
})
