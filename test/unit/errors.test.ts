/**
 * Errors as operators see them: a PortcullisError's cause chain is made of Errors however the
 * library built it (a Response, a parsed body, a list of challenges, a string), so the log line never
 * holds `[object …]`; `describeValue` and `describeError` put any value in words; a Diagnosis is
 * formatted with its URL, status, compared values and the settings to check.
 */
import t from 'tap'
import { describeError, describeValue, formatDiagnosis, loggableCause, PortcullisError } from '../../src/errors.ts'
import { safeError } from '../../src/http/logging.ts'

/** Shaped like openid-client's ResponseBodyError: an OAuth `error` field and the parsed body as cause. */
class BodyError extends Error {
  readonly error: string
  constructor(error: string, cause: unknown) {
    super('server responded with an error in the response body', { cause })
    this.name = 'ResponseBodyError'
    this.error = error
  }
}

const causes: Array<[string, unknown]> = [
  ['a Response', new Response('nope', { status: 404 })],
  ['a parsed body under an Error', new BodyError('invalid_client', { error: 'invalid_client', error_description: 'client authentication failed' })],
  ['a list of challenges', [{ scheme: 'basic', parameters: { error: 'invalid_client' } }]],
  ['a comparison record', { expected: 'http://a.example/', attribute: 'issuer', body: { issuer: 'http://b.example' } }],
  ['a string', 'plain words'],
  ['a number', 42],
  ['an object with no plain fields', { nested: { deeper: { deepest: {} } } }],
  ['a Map', new Map([['a', 1]])],
]

t.test('no cause logs as [object …]', async (t) => {
  for (const [what, cause] of causes) {
    const err = new PortcullisError('IDP_REJECTED', 'The identity provider refused the request.', { cause: new Error('outer', { cause }) })
    const logged = JSON.stringify(safeError(err))
    t.notMatch(logged, /\[object/, `${what}: the log form has no [object …]`)
    t.notMatch(describeError(err).join('\n'), /\[object/, `${what}: describeError has no [object …]`)
    t.notMatch(describeValue(cause), /\[object/, `${what}: describeValue has no [object …]`)
  }
  // Control: these causes are the ones String() prints as [object …]; a plain Error whose cause is
  // one (not made loggable by PortcullisError) is described by its fields too.
  t.match(String({ error: 'x' }), /\[object Object\]/, 'control: String() of an object cause is [object Object]')
  const plain = JSON.stringify(safeError(new Error('outer', { cause: { error: 'x' } })))
  t.notMatch(plain, /\[object/, 'a plain Error with an object cause logs without [object …]')
  t.match(plain, /error/, 'and with the cause\'s field')
})

t.test('a loggable cause keeps what was known', async (t) => {
  const body = loggableCause(new BodyError('invalid_client', { error: 'invalid_client', error_description: 'client authentication failed' }))
  t.equal(body?.name, 'ResponseBodyError')
  t.match(body?.message, /\(error=invalid_client\)/)
  t.match((body?.cause as Error).message, /error="invalid_client", error_description="client authentication failed"/)
  const res = loggableCause(new Error('unexpected HTTP response status code', { cause: new Response('', { status: 404 }) }))
  t.match((res?.cause as Error).message, /^HTTP 404 from /)
  const plain = new Error('fine', { cause: new Error('inner') })
  t.equal(loggableCause(plain), plain, 'a chain of Errors is kept as it is')
  const circular: Error & { cause?: unknown } = new Error('loop')
  circular.cause = circular
  t.ok(loggableCause(circular) instanceof Error, 'a circular chain ends')
})

t.test('a diagnosis names the URL, the status, both compared values and what to check', async (t) => {
  t.equal(
    formatDiagnosis({
      problem: 'the discovery document names another issuer than the configured one',
      url: 'http://b.example/.well-known/openid-configuration',
      status: 200,
      compared: { name: 'issuer', expected: 'http://a.example', received: 'http://b.example' },
      check: 'provider.issuer',
    }),
    'the discovery document names another issuer than the configured one; url: http://b.example/.well-known/openid-configuration; answer: HTTP 200; issuer: configured http://a.example, the provider says http://b.example; check: provider.issuer',
  )
  t.equal(formatDiagnosis({ problem: 'no connection', url: 'http://x/', error: 'ECONNREFUSED' }), 'no connection; url: http://x/; answer: no HTTP answer (ECONNREFUSED)')
  t.equal(
    formatDiagnosis({ problem: 'refused', status: 401, error: 'invalid_client', description: 'bad "secret"' }),
    'refused; answer: HTTP 401 invalid_client ("bad \\"secret\\"")',
  )
})
