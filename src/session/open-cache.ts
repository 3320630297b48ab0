import { hash } from 'node:crypto'
import { LRUCache } from 'lru-cache'

/**
 * Hot-path cache of opened cookie values: a given cookie value is decrypted at most once while its
 * entry lives; bounded in entries. Misses (values that did not open) are cached too, so garbage is
 * not re-decrypted. An entry lives `ttlMs` after its last use (a value in use stays).
 *
 * Keys: a SHA-256 of the value by default, so the cache never holds the value itself (the memory
 * store's ticket is the key to its entry). `byValue` keys on the value as it is: the cookie store's
 * entries hold their sealed value anyway (to hand it to clients that kept an older one), and a map
 * keyed by the string compares whole strings, so no hash of a 2 KB cookie is needed per request.
 */
export class OpenCache<T> {
  /** Values that opened (or, without `byValue`, every value), by key. */
  readonly #lru: LRUCache<string, { value: T | null }>
  /**
   * With `byValue`: values that did not open, by a SHA-256 of the value, so garbage costs a hash
   * and not its own size in memory (a client can send up to 30 KB of cookie).
   */
  readonly #misses: LRUCache<string, true> | null
  /** Opens in progress: concurrent requests with one new value share one decrypt (and one entry). */
  readonly #opening = new Map<string, Promise<T | null>>()
  readonly #keyOf: (value: string) => string

  constructor(opts: { max: number; ttlMs: number; byValue?: boolean }) {
    this.#lru = new LRUCache({ max: opts.max, ttl: opts.ttlMs, updateAgeOnGet: true, ttlAutopurge: false })
    this.#misses = opts.byValue === true ? new LRUCache({ max: opts.max, ttl: opts.ttlMs, ttlAutopurge: false }) : null
    this.#keyOf = opts.byValue === true ? (value) => value : sha256
  }

  async getOrOpen(value: string, open: (value: string) => Promise<T | null>): Promise<T | null> {
    const key = this.#keyOf(value)
    const hit = this.#lru.get(key)
    if (hit !== undefined) return hit.value
    const misses = this.#misses
    if (misses !== null && misses.get(sha256(value)) === true) return null
    let opening = this.#opening.get(key)
    if (opening === undefined) {
      opening = open(value).then(
        (opened) => {
          if (opened === null && misses !== null) misses.set(sha256(value), true)
          else this.#lru.set(key, { value: opened })
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
    const hit = this.#lru.get(this.#keyOf(value))
    if (hit !== undefined) return hit.value
    return this.#misses?.get(sha256(value)) === true ? null : undefined
  }

  /** Remember what a value opens to, without opening it (a value this process just sealed). */
  set(value: string, opened: T): void {
    this.#lru.set(this.#keyOf(value), { value: opened })
  }

  delete(value: string): void {
    this.#lru.delete(this.#keyOf(value))
  }
}

/** One-shot hash (Node >= 20.12): no Hash object per request on the hot path. */
function sha256(value: string): string {
  return hash('sha256', value, 'base64url')
}
