/**
 * Forward-auth behind a real nginx (`auth_request`, the mechanism under ingress-nginx's `auth-url`):
 * nginx asks GET /oauth2/auth with `X-Original-URL`/`X-Original-Method` as ingress-nginx sets them,
 * copies identity headers and the first `Set-Cookie` with `auth_request_set`, and sends a refused
 * browser to /oauth2/start through `error_page 401`. The app sits behind nginx, not behind Portcullis;
 * the login itself goes through nginx to Portcullis's /oauth2/ endpoints, as in oauth2-proxy's
 * documented ingress setup.
 *
 * Needs Debian's nginx (scripts/install-system-deps.sh). Without it this test FAILS, it never skips.
 */
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { releaseHeldPort, reserveHeldPort, startPortcullis } from '../helpers/portcullis.ts'
import { configFor } from '../helpers/config.ts'
import { startTestProvider, DEMO_USERS } from '../helpers/provider.ts'
import { startTestUpstream } from '../helpers/upstream.ts'
import { fakeClock } from '../helpers/clock.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { request } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'

const NGINX = '/usr/sbin/nginx'
const alice = DEMO_USERS[0]!

function nginxConf(dir: string, port: number, portcullis: number, app: number): string {
  return `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    # ingress-nginx's auth location (nginx.tmpl), reduced to what it sends
    location = /_external-auth {
      internal;
      proxy_pass http://127.0.0.1:${portcullis}/oauth2/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Proto "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Sent-From "nginx-ingress-controller";
    }
    location /oauth2/ {
      proxy_pass http://127.0.0.1:${portcullis};
      proxy_set_header Host $http_host;
    }
    location / {
      auth_request /_external-auth;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
      auth_request_set $authUser $upstream_http_x_auth_request_user;
      auth_request_set $authEmail $upstream_http_x_auth_request_email;
      proxy_set_header X-Auth-Request-User $authUser;
      proxy_set_header X-Auth-Request-Email $authEmail;
      error_page 401 = @signin;
      proxy_pass http://127.0.0.1:${app};
    }
    location @signin {
      internal;
      add_header Set-Cookie $auth_cookie;
      return 302 /oauth2/start?rd=$request_uri;
    }
  }
}
`
}

async function startNginx(t: Test, port: number, portcullis: number, app: number): Promise<boolean> {
  if (!existsSync(NGINX)) {
    t.fail(`${NGINX} not found: run scripts/install-system-deps.sh (installs Debian's nginx) and try again`)
    return false
  }
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-nginx-'))
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, nginxConf(dir, port, portcullis, app))
  const proc = spawn(NGINX, ['-c', conf, '-p', dir, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  t.teardown(async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve))
      proc.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  })
  await eventually(
    async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode}): ${stderr} ${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''}`)
      return (await request(`http://127.0.0.1:${port}/oauth2/healthz-not-here`).catch(() => null)) !== null
    },
    { timeoutMs: 10_000 },
  )
  return true
}

t.test('ingress-nginx style auth_request in front of an app', async (t) => {
  // Held until nginx and Portcullis listen: the provider and the app bind port 0 meanwhile.
  const [nginxPort, proxyPort] = [await reserveHeldPort(), await reserveHeldPort()]
  const publicUrl = `http://127.0.0.1:${nginxPort}`
  const clientId = 'nginx-forward-auth'
  const clientSecret = 'nginx-forward-auth-secret-long-enough'
  const provider = await startTestProvider(t, {
    clients: [{ clientId, clientSecret, redirectUris: [`${publicUrl}/oauth2/callback`], tokenEndpointAuthMethod: 'client_secret_basic' }],
    allowLoopbackFetch: true,
  })
  const app = await startTestUpstream(t)
  const config = configFor({
    issuer: provider.issuer,
    clientId,
    clientSecret,
    upstream: app.url,
    publicUrl,
    overrides: {
      server: { trustedProxies: ['127.0.0.1/32'] },
      routes: [
        { match: { pathPrefix: '/' }, upstream: app.url },
        { match: { pathPrefix: '/public' }, upstream: app.url, public: true },
      ],
    },
  })
  const clock = fakeClock()
  const proxy = await startPortcullis(t, config, { port: proxyPort, clock })
  await proxy.runtime.provider.whenReady()
  await releaseHeldPort(nginxPort)
  if (!(await startNginx(t, nginxPort, proxyPort, app.port))) return

  const anon = await request(`${publicUrl}/reports?q=1`, { headers: NAVIGATION_HEADERS })
  t.equal(anon.status, 302, 'no session: nginx turns the 401 into its sign-in redirect (never a 500)')
  t.equal(anon.headers.location, `${publicUrl}/oauth2/start?rd=/reports?q=1`)
  t.equal(app.requests.length, 0, 'the app saw nothing')

  const pub = await request(`${publicUrl}/public/page`, { headers: { 'X-Auth-Request-User': 'mallory' } })
  t.equal(pub.status, 200, 'a public route passes without a session (X-Original-URL from a trusted proxy)')
  t.equal(app.requests.at(-1)?.headers['x-auth-request-user'], undefined, "nginx drops the empty header: the client's spoofed copy does not arrive")

  const { jar } = await login({ proxyUrl: publicUrl, path: '/reports' })
  const seen = app.requests.length
  const ok = await request(`${publicUrl}/reports`, { jar, headers: { 'X-Auth-Request-User': 'mallory', 'X-Auth-Request-Email': 'mallory@evil.example' } })
  t.equal(ok.status, 200, 'with a session the app answers')
  const at = app.requests[seen]
  t.equal(at?.url, '/reports')
  t.equal(at?.headers['x-auth-request-user'], alice.id, 'identity from the check, not the client')
  t.equal(at?.headers['x-auth-request-email'], alice.email)
  t.same(ok.setCookies, [], 'nothing re-sealed')

  // POST arrives at the check as GET (nginx subrequests), with the method in X-Original-Method.
  const post = await request(`${publicUrl}/reports`, { method: 'POST', jar, body: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(post.status, 200)
  t.equal(app.requests.at(-1)?.method, 'POST')
  t.equal(app.requests.at(-1)?.body, 'a=1', 'the body reaches the app, not the check')

  // An idle-clock move: the re-sealed cookie comes back through auth_request_set + add_header.
  const before = jar.get('_portcullis')
  clock.advance(61_000)
  const moved = await request(`${publicUrl}/reports`, { jar })
  t.equal(moved.status, 200)
  t.equal(moved.setCookies.length, 1, 'the re-sealed cookie reaches the browser')
  t.not(jar.get('_portcullis'), before)
  t.equal((await request(`${publicUrl}/reports`, { jar })).status, 200, 'and keeps working')

  const spoofOnly = await request(`${publicUrl}/reports`, { headers: { ...NAVIGATION_HEADERS, 'X-Auth-Request-User': alice.id } })
  t.equal(spoofOnly.status, 302, 'an identity header without a session is no session')
})
