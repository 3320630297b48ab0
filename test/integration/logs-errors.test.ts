import t from 'tap'
import { startStack } from '../helpers/portcullis.ts'
import { request } from '../helpers/http.ts'
import { eventually } from '../helpers/wait.ts'


t.test('refusals are logged with the error type and code, once, and without the query string', async (t) => {
  const { proxy } = await startStack(t)
  const res = await request(`${proxy.url}/oauth2/callback?error=access_denied&state=abc&code=secret-code-value-123456789`, { headers: { accept: 'application/json' } })
  t.equal(res.status, 403)
  await eventually(() => proxy.logs.some((l) => l.path === '/oauth2/callback'))
  const lines = proxy.logs.filter((l) => l.path === '/oauth2/callback')
  t.equal(lines.length, 1, 'one line for the request')
  t.match(lines[0]?.err, { type: 'PortcullisError', code: 'LOGIN_DENIED' }, 'naming the error')
  t.notMatch(JSON.stringify(proxy.logs), /secret-code-value/, 'the callback query never reaches the logs')
  const access = proxy.logs.filter((l) => l.msg === 'request' && l.path === '/oauth2/callback')
  t.equal(access.length, 1)
  t.equal(access[0]?.status, 403)
})

t.test('logging.requests: false writes only the failed requests', async (t) => {
  const { proxy } = await startStack(t, {
    overrides: ({ upstream }) => ({
      logging: { requests: false },
      routes: [
        { match: { pathPrefix: '/' }, upstream, public: true },
        { match: { pathPrefix: '/down' }, upstream: 'http://127.0.0.1:9', public: true },
      ],
    }),
  })
  const ok = await request(`${proxy.url}/fine`, { headers: { accept: 'application/json' } })
  t.equal(ok.status, 200)
  const down = await request(`${proxy.url}/down/x`, { headers: { accept: 'application/json' } })
  t.equal(down.status, 502)
  await eventually(() => proxy.logs.some((l) => l.path === '/down/x'))
  const lines = proxy.logs.filter((l) => l.msg === 'request')
  t.same(
    lines.map((l) => [l.path, l.status]),
    [['/down/x', 502]],
    'the 200 is not logged, the 502 is',
  )
})
