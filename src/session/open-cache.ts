import { hash } from 'node:crypto'
import { LRUCache } from 'lru-cache'

/**
 * Hot-path cache of opened cookie values: a given cookie value is decrypted at most once while its
 * entry lives. Keyed by a SHA-256 of the value so the cache never holds a cookie a client sent;
 * bounded in entries. Misses (values that did not open) are cached too, so garbage is not
 * re-decrypted. An entry lives `ttlMs` after its last use (a value in use stays).
 */
export class OpenCache<T> {
  readonly #lru: LRUCache<string, { value: T | null }>
  /** Opens in progress: concurrent requests with one new value share one decrypt (and one entry). */
  readonly #opening = new Map<string, Promise<T | null>>()

  constructor(opts: { max: number; ttlMs: number }) {
    this.#lru = new LRUCache({ max: opts.max, ttl: opts.ttlMs, updateAgeOnGet: true, ttlAutopurge: false })
  }

  static keyOf(value: string): string {
    // One-shot hash (Node >= 20.12): no Hash object per request on the hot path.
    return hash('sha256', value, 'base64url')
  }

  async getOrOpen(value: string, open: (value: string) => Promise<T | null>): Promise<T | null> {
    const key = OpenCache.keyOf(value)
    const hit = this.#lru.get(key)
    if (hit !== undefined) return hit.value
    let opening = this.#opening.get(key)
    if (opening === undefined) {
      opening = open(value).then(
        (opened) => {
          this.#lru.set(key, { value: opened })
          this.#opening.delete(key)
          return opened
        },
        (err: unknown) => {
          this.#opening.delete(key)
          throw err
        },
      )
      this.#opening.set(key, opening)
    }
    return opening
  }

  /** What a value opened to: undefined when it is not cached (null when it did not open). */
  get(value: string): T | null | undefined {
    return this.#lru.get(OpenCache.keyOf(value))?.value
  }

  /** Remember what a value opens to, without opening it (a value this process just sealed). */
  set(value: string, opened: T): void {
    this.#lru.set(OpenCache.keyOf(value), { value: opened })
  }

  delete(value: string): void {
    this.#lru.delete(OpenCache.keyOf(value))
  }
}
