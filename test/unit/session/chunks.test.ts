import t from 'tap'
import { CHUNK_SIZE, MAX_CHUNKS, chunkName, join, split, staleChunks } from '../../../src/session/chunks.ts'

const BASE = '_portcullis'

function value(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.'
  let out = ''
  for (let i = 0; i < length; i++) out += alphabet[(i * 7 + (i >> 5)) % alphabet.length]
  return out
}

t.test('chunk names', async (t) => {
  t.equal(chunkName(BASE, 0), '_portcullis')
  t.equal(chunkName(BASE, 1), '_portcullis_1')
  t.equal(chunkName(BASE, 7), '_portcullis_7')
})

t.test('split then join round-trips', async (t) => {
  const cases: Array<[length: number, chunks: number]> = [
    [1, 1],
    [CHUNK_SIZE - 1, 1],
    [3800, 1],
    [3801, 2],
    [CHUNK_SIZE * 2, 2],
    [20_000, 6],
  ]
  t.equal(CHUNK_SIZE, 3800, 'the chunk size these cases are written for')
  for (const [length, count] of cases) {
    const v = value(length)
    const pieces = split(BASE, v)
    t.equal(pieces.length, count, `${length} bytes → ${count} chunk(s)`)
    t.strictSame(
      pieces.map(([n]) => n),
      Array.from({ length: count }, (_, i) => chunkName(BASE, i)),
      'named NAME, NAME_1, ...',
    )
    t.ok(pieces.every(([, p]) => p.length > 0 && p.length <= CHUNK_SIZE), 'each chunk non-empty and at most CHUNK_SIZE')
    t.equal(join(BASE, Object.fromEntries(pieces)), v, `${length} bytes joined back`)
    // Other cookies in the same request do not disturb the join.
    t.equal(join(BASE, { other: 'x', [`${BASE}_tx_abc`]: 'y', ...Object.fromEntries(pieces) }), v, 'with unrelated cookies')
  }
})

t.test('a chunk fits a browser cookie with our attributes', async (t) => {
  const attrs = '; Max-Age=43200; Domain=apps.example.internal; Path=/; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly; Secure; SameSite=Lax'
  const [name, piece] = split(BASE, value(20_000)).at(-2) as [string, string]
  t.ok(`${name}=${piece}${attrs}`.length < 4096, 'name, value and attributes under 4096 bytes')
})

t.test('join: no base cookie, no value', async (t) => {
  t.equal(join(BASE, {}), null)
  t.equal(join(BASE, { [`${BASE}_1`]: 'abc' }), null, 'NAME_1 without NAME')
  t.equal(join(BASE, { other: 'abc' }), null)
})

t.test('join: stops at the first missing chunk', async (t) => {
  t.equal(join(BASE, { [BASE]: 'a', [`${BASE}_2`]: 'c' }), 'a', 'NAME_2 without NAME_1 is not joined')
})

t.test('join refuses more than MAX_CHUNKS chunks', async (t) => {
  const cookies = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [chunkName(BASE, i), 'x']))
  t.equal(join(BASE, cookies(MAX_CHUNKS)), 'x'.repeat(MAX_CHUNKS), `${MAX_CHUNKS} chunks join`)
  t.equal(join(BASE, cookies(MAX_CHUNKS + 1)), null, `${MAX_CHUNKS + 1} chunks are refused`)
  t.equal(join(BASE, cookies(50)), null, '50 chunks are refused')
})

t.test('join refuses empty chunks', async (t) => {
  t.equal(join(BASE, { [BASE]: '' }), null, 'empty NAME')
  t.equal(join(BASE, { [BASE]: 'a', [`${BASE}_1`]: '' }), null, 'empty NAME_1')
  t.equal(join(BASE, { [BASE]: 'a', [`${BASE}_1`]: 'b', [`${BASE}_2`]: '' }), null, 'empty NAME_2')
})

t.test('join refuses oversize chunks', async (t) => {
  const big = 'x'.repeat(CHUNK_SIZE + 1)
  t.equal(join(BASE, { [BASE]: 'x'.repeat(CHUNK_SIZE) }), 'x'.repeat(CHUNK_SIZE), 'exactly CHUNK_SIZE is fine')
  t.equal(join(BASE, { [BASE]: big }), null, 'oversize NAME')
  t.equal(join(BASE, { [BASE]: 'a', [`${BASE}_1`]: big }), null, 'oversize NAME_1')
  t.equal(join(BASE, { [BASE]: 'x'.repeat(50_000) }), null, 'a 50 KB NAME')
})

t.test('join ignores undefined entries (a cookie map may hold them)', async (t) => {
  t.equal(join(BASE, { [BASE]: 'a', [`${BASE}_1`]: undefined }), 'a')
})

t.test('staleChunks: chunks a shorter value does not overwrite', async (t) => {
  const present = [
    BASE,
    `${BASE}_1`,
    `${BASE}_2`,
    `${BASE}_3`,
    `${BASE}_4`,
    `${BASE}_tx_abc`,
    `${BASE}_x`,
    `${BASE}_01`,
    `${BASE}_0`,
    `${BASE}_`,
    `${BASE}_-1`,
    `${BASE}_1.5`,
    `${BASE}_99999999999999999999`,
    `${BASE}x_5`,
    'other',
    'other_1',
  ]
  t.strictSame(staleChunks(BASE, present, 3).sort(), [`${BASE}_3`, `${BASE}_4`])
  t.strictSame(staleChunks(BASE, present, 1).sort(), [`${BASE}_1`, `${BASE}_2`, `${BASE}_3`, `${BASE}_4`])
  t.strictSame(staleChunks(BASE, present, 5), [], 'nothing left behind by a longer value')
  t.strictSame(staleChunks(BASE, present, 0).sort(), [BASE, `${BASE}_1`, `${BASE}_2`, `${BASE}_3`, `${BASE}_4`], 'keep 0: clear them all')
  t.strictSame(staleChunks(BASE, [], 1), [])
  t.strictSame(staleChunks(BASE, new Set([`${BASE}_7`, `${BASE}_8`, `${BASE}_9999`]), 1), [`${BASE}_7`], 'only indexes a value of MAX_CHUNKS chunks can have')
  const many = [BASE, ...Array.from({ length: 500 }, (_, i) => `${BASE}_${i + 1}`)]
  t.equal(staleChunks(BASE, many, 0).length, MAX_CHUNKS, '500 made-up chunks: at most MAX_CHUNKS cleared')
})

t.test('what split writes, join reads back (or split refuses it)', async (t) => {
  // split() must never write what join() cannot read back (more than MAX_CHUNKS chunks): a session set
  // at login and never read again sends the user back to the provider, every time.
  for (const length of [MAX_CHUNKS * CHUNK_SIZE, MAX_CHUNKS * CHUNK_SIZE + 1]) {
    const v = value(length)
    let pieces: Array<[string, string]> | null
    try {
      pieces = split(BASE, v)
    } catch {
      pieces = null
    }
    const ok = pieces === null || join(BASE, Object.fromEntries(pieces)) === v
    t.ok(ok, `${length} characters: joined back, or refused by split`)
    if (length > MAX_CHUNKS * CHUNK_SIZE) t.equal(pieces, null, 'too long for MAX_CHUNKS: refused')
  }
})
