import { hash } from 'node:crypto'
import { LRUCache } from 'lru-cache'

/**
 * Hot-path cache of opened cookie values (DESIGN.md §10): a given cookie value is decrypted at most
 * once per `ttl`. Keyed by a SHA-256 of the value so the cache never holds the cookie itself; bounded
 * in entries. Misses (values that did not open) are cached too, so garbage is not re-decrypted.
 */
export class OpenCache<T> {
  readonly #lru: LRUCache<string, { value: T | null }>

  constructor(opts: { max: number; ttlMs: number }) {
    this.#lru = new LRUCache({ max: opts.max, ttl: opts.ttlMs, ttlAutopurge: false })
  }

  static keyOf(value: string): string {
    // One-shot hash (Node >= 20.12): no Hash object per request on the hot path.
    return hash('sha256', value, 'base64url')
  }

  async getOrOpen(value: string, open: (value: string) => Promise<T | null>): Promise<T | null> {
    const key = OpenCache.keyOf(value)
    const hit = this.#lru.get(key)
    if (hit !== undefined) return hit.value
    const opened = await open(value)
    this.#lru.set(key, { value: opened })
    return opened
  }

  delete(value: string): void {
    this.#lru.delete(OpenCache.keyOf(value))
  }
}
