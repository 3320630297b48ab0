/**
 * The open-cache (src/session/open-cache.ts): each value is opened once while its entry lives,
 * concurrent requests with a new value share one open, and values that do not open are remembered
 * too, in both keyings.
 */
import t from 'tap'
import { OpenCache } from '../../../src/session/open-cache.ts'

for (const byValue of [false, true]) {
  t.test(`keyed ${byValue ? 'by the value' : 'by a hash of the value'}`, async (t) => {
    const cache = new OpenCache<{ n: number }>({ max: 100, ttlMs: 60_000, byValue })
    const opened: string[] = []
    const open = async (value: string) => {
      opened.push(value)
      await new Promise((resolve) => setTimeout(resolve, 5))
      return value.startsWith('good') ? { n: opened.length } : null
    }
    const first = await Promise.all(Array.from({ length: 10 }, () => cache.getOrOpen('good-1', open)))
    t.same(opened, ['good-1'], 'ten concurrent requests with a new value: one open')
    t.equal(new Set(first).size, 1, 'and one entry for all of them')
    t.equal(await cache.getOrOpen('good-1', open), first[0], 'later: the same entry, no open')
    t.equal(await cache.getOrOpen('garbage', open), null)
    t.equal(await cache.getOrOpen('garbage', open), null)
    t.same(opened, ['good-1', 'garbage'], 'a value that did not open is not opened again')
    t.equal(cache.get('garbage'), null, 'get: known not to open')
    t.equal(cache.get('unknown'), undefined, 'get: not known')
    cache.set('good-2', { n: 99 })
    t.same(await cache.getOrOpen('good-2', open), { n: 99 }, 'set: known without an open')
    cache.delete('good-1')
    await cache.getOrOpen('good-1', open)
    t.same(opened, ['good-1', 'garbage', 'good-1'], 'after delete, opened again')
  })
}

t.test('by value: a value that shares another one\'s tail never gets its entry', async (t) => {
  const cache = new OpenCache<string>({ max: 100, ttlMs: 60_000, byValue: true })
  const tail = 'T'.repeat(40)
  const real = `real-${tail}`
  const forged = `fake-${tail}` // same length, same last 32 characters
  let release: () => void = () => undefined
  const slowOpen = (value: string) =>
    new Promise<string | null>((resolve) => {
      release = () => resolve(value.startsWith('real') ? 'the real session' : null)
    })
  const pending = cache.getOrOpen(real, slowOpen)
  const forgedWhileOpening = cache.getOrOpen(forged, async () => null)
  release()
  t.equal(await pending, 'the real session')
  t.equal(await forgedWhileOpening, null, 'while the real one is being opened: its own open, not the real result')
  t.equal(await cache.getOrOpen(forged, async () => null), null, 'once it is cached: still not the real entry')
  t.equal(cache.get(forged), null)
  t.equal(await cache.getOrOpen(real, async () => 'opened again?'), 'the real session', 'the real value keeps its entry')
})
