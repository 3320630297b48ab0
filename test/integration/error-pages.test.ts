/**
 * The application's failures as pages: a 502 (upstream refused) and a 504 (upstream too slow) offer
 * "Try again" to the very request the browser made (path and query; reloading makes sense), in both
 * lanes, on public and on session routes; a form post gets no link (a link cannot repeat it); and a
 * target that would make the link leave the site (`//host/x`) gets none either.
 */
import t from 'tap'
import type { Test } from 'tap'
import { request } from '../helpers/http.ts'
import { login, NAVIGATION_HEADERS } from '../helpers/login.ts'
import { startApp, startStack, type RunningPortcullis } from '../helpers/portcullis.ts'

function tryAgain(body: string): string | undefined {
  return /<a href="([^"]*)">Try again<\/a>/.exec(body)?.[1]?.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
}

async function bothLanes(t: Test, upstreamTimeoutMs: number): Promise<{ lanes: Array<[string, RunningPortcullis]>; upstream: string }> {
  const stack = await startStack(t, {
    runtime: { upstreamTimeoutMs },
    overrides: ({ upstream }) => ({
      routes: [
        { match: { pathPrefix: '/' }, upstream },
        // The echo upstream answers `/slow?ms=N` late: public, so the 504 needs no login.
        { match: { pathPrefix: '/slow' }, upstream, public: true },
        { match: { pathPrefix: '/down' }, upstream: 'http://127.0.0.1:9', public: true },
        { match: { pathPrefix: '/private-down' }, upstream: 'http://127.0.0.1:9' },
      ],
    }),
  })
  const fastify = await startApp(t, stack.proxy.runtime, { fastLane: false, upstreamTimeoutMs })
  return { lanes: [['fast lane', stack.proxy], ['Fastify path', fastify]], upstream: stack.upstream.url }
}

t.test('502 and 504 pages link to the same request again', async (t) => {
  const { lanes } = await bothLanes(t, 300)
  for (const [lane, proxy] of lanes) {
    const cases = [
      { what: '502, public route', target: '/down/reports?year=2024&q=a%20b', status: 502, title: 'The application is not available' },
      { what: '504, public route', target: '/slow?ms=3000', status: 504, title: 'The application is taking too long' },
    ]
    for (const c of cases) {
      const res = await request(`${proxy.url}${c.target}`, { headers: NAVIGATION_HEADERS })
      t.equal(res.status, c.status, `${lane}, ${c.what}: ${c.status}`)
      t.match(res.headers['content-type'], /^text\/html/)
      t.ok(res.body.includes(`<h1>${c.title}</h1>`), `${lane}, ${c.what}: its page`)
      t.equal(tryAgain(res.body), c.target, `${lane}, ${c.what}: "Try again" repeats the request`)
      t.notMatch(res.body, /oauth2\/start/, `${lane}, ${c.what}: not a link to a new login`)
    }
    const posted = await request(`${proxy.url}/down/form`, {
      method: 'POST',
      headers: { ...NAVIGATION_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'a=1',
    })
    t.equal(posted.status, 502, `${lane}: a failed form post is a 502`)
    t.equal(tryAgain(posted.body), undefined, `${lane}: without a link (it could not repeat the post)`)

    const json = await request(`${proxy.url}/down/x`, { headers: { accept: 'application/json' } })
    t.equal(json.status, 502, `${lane}: JSON 502`)
    t.equal(json.json<{ error: string }>().error, 'UPSTREAM_UNAVAILABLE')
  }
})

t.test('on a session route too: the link is the request, not a new login', async (t) => {
  const { lanes } = await bothLanes(t, 300)
  const main = lanes[0]?.[1] as RunningPortcullis
  // Logins end on server.publicUrl (the first app); cookies are per host, not per port, so the
  // session works on the second app too.
  const { jar, finalLocation } = await login({ proxyUrl: main.url, path: '/x' })
  t.equal(finalLocation, `${main.url}/x`, 'signed in')
  for (const [lane, proxy] of lanes) {
    const res = await request(`${proxy.url}/private-down/page?id=7`, { jar, headers: NAVIGATION_HEADERS })
    t.equal(res.status, 502, `${lane}: signed in, the application is down: 502`)
    t.equal(tryAgain(res.body), '/private-down/page?id=7', `${lane}: "Try again" repeats the request`)
  }
})

t.test('a target that would make the link leave the site gets no link', async (t) => {
  const { lanes } = await bothLanes(t, 300)
  for (const [lane, proxy] of lanes) {
    const res = await request(`${proxy.url}//down/x`, { headers: NAVIGATION_HEADERS })
    t.equal(res.status, 502, `${lane}: routed as /down/x, whose upstream is down`)
    const link = tryAgain(res.body)
    // The fast lane sees the target as sent (no link); the Fastify path sees it normalized (/down/x).
    t.ok(link === undefined || link === '/down/x', `${lane}: never a protocol-relative link (got ${String(link)})`)
  }
})
