/**
 * The fast lane's hand-built access line (`createAccessWriter`, src/http/logging.ts) must be the line
 * pino writes for the same entry: same keys, same order, same values; and anything it does not build
 * itself (errors, extra fields, 5xx, a level above info) must go through pino.
 */
import t from 'tap'
import { Writable } from 'node:stream'
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { createAccessWriter, logAccess, loggerOptions, type AccessEntry } from '../../../src/http/logging.ts'

function capture(level = 'info') {
  const lines: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''))
      cb()
    },
  })
  const logger = pino(loggerOptions(level), sink)
  return { logger, lines }
}

/** The line without its time value (the two are written at different instants). */
const untimed = (line: string | undefined) => (line ?? '').replace(/"time":\d+/, '"time":0')

const ENTRIES: Array<[string, AccessEntry]> = [
  ['a proxied request', { reqId: 'b1f7c3e0-0000-4000-8000-000000000001', method: 'GET', path: '/app/page', route: 'route-0', status: 200, durationMs: 1.23, sub: 'alice' }],
  ['no user (public route)', { reqId: 'r-2', method: 'POST', path: '/public', route: 'public', status: 204, durationMs: 0.5, sub: undefined }],
  ['characters JSON must escape', { reqId: 'r-3', method: 'GET', path: '/a"b\\c/\u00e9\u2028', route: 'r"\\', status: 404, durationMs: 12, sub: 'sub "with" \\ and \u0001' }],
  ['the forward-auth check', { reqId: 'r-4', method: 'GET', path: '/oauth2/auth', route: 'auth:check', status: 200, durationMs: 0.07, sub: 'bob' }],
]

for (const [label, entry] of ENTRIES) {
  t.test(`${label}: the same line as pino's`, async (t) => {
    const fast = capture()
    const slow = capture()
    createAccessWriter(fast.logger)(entry)
    logAccess(slow.logger, entry)
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(fast.lines.length, 1)
    t.same(JSON.parse(untimed(fast.lines[0])), JSON.parse(untimed(slow.lines[0])), 'same fields and values (time apart)')
    t.match(JSON.parse(fast.lines[0] ?? '{}'), { time: Number }, 'with a time')
    t.same(Object.keys(JSON.parse(fast.lines[0] ?? '{}')), Object.keys(JSON.parse(slow.lines[0] ?? '{}')), 'same key order')
    if (!/[\u2028\u0001]/.test(JSON.stringify(entry))) t.equal(untimed(fast.lines[0]), untimed(slow.lines[0]), 'byte for byte')
  })
}

t.test('errors, extra fields and 5xx go through pino', async (t) => {
  const { logger, lines } = capture()
  const write = createAccessWriter(logger)
  const base = ENTRIES[0]![1]
  write({ ...base, status: 502, err: new Error('connect ECONNREFUSED'), upstreamError: 'ECONNREFUSED' })
  write({ ...base, upstreamError: 'UND_ERR_SOCKET' })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(lines.length, 2)
  t.match(JSON.parse(lines[0] ?? '{}'), { level: 50, status: 502, err: { type: 'Error' }, upstreamError: 'ECONNREFUSED', msg: 'request' })
  t.match(JSON.parse(lines[1] ?? '{}'), { level: 30, upstreamError: 'UND_ERR_SOCKET' })
})

t.test('a level above info writes no access line', async (t) => {
  const { logger, lines } = capture('warn')
  createAccessWriter(logger)(ENTRIES[0]![1])
  await new Promise((resolve) => setImmediate(resolve))
  t.same(lines, [])
})

t.test('the hand-built path is taken for a plain logger, and pino for one with per-line features', async (t) => {
  const plain = capture()
  let calls = 0
  const info = plain.logger.info.bind(plain.logger)
  plain.logger.info = ((...args: Parameters<typeof info>) => {
    calls++
    return info(...args)
  }) as typeof info
  createAccessWriter(plain.logger)(ENTRIES[0]![1])
  t.equal(calls, 0, 'pino.info not called: the line was built here')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(plain.lines.length, 1)

  const lines: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8').trim())
      cb()
    },
  })
  const mixed = pino({ ...loggerOptions('info'), mixin: () => ({ zone: 'eu' }) }, sink)
  createAccessWriter(mixed)(ENTRIES[0]![1])
  await new Promise((resolve) => setImmediate(resolve))
  t.match(JSON.parse(lines[0] ?? '{}'), { zone: 'eu', route: 'route-0' }, 'with a mixin the line goes through pino')
})

t.test('into a buffering destination: lines go out in batches, in order, and all of them at close', async (t) => {
  const file = `${t.testdir()}/access.log`
  const dest = pino.destination({ dest: file, sync: true, minLength: 4096 })
  const logger = pino(loggerOptions('info'), dest)
  const write = createAccessWriter(logger)
  const base = ENTRIES[0]![1]
  const read = () => {
    dest.flushSync()
    return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { reqId: string; status: number })
  }
  write({ ...base, reqId: 'one' })
  write({ ...base, reqId: 'two' })
  t.same(read(), [], 'held while the batch is small')
  write({ ...base, reqId: 'three', status: 503 })
  t.same(read().map((l) => l.reqId), ['one', 'two', 'three'], 'a line that goes through pino sends the batch first: order kept')
  for (let i = 0; i < 40; i++) write({ ...base, reqId: `bulk-${i}` })
  t.ok(read().length > 3, 'a full batch goes out by itself')
  write({ ...base, reqId: 'last' })
  write.close()
  const lines = read()
  t.equal(lines.at(-1)?.reqId, 'last', 'close sends the rest')
  t.equal(lines.length, 44, 'every line, once')
  write({ ...base, reqId: 'after' })
  t.equal(read().at(-1)?.reqId, 'after', 'after close, lines are written at once')
  dest.end()
})
