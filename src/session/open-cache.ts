import { hash } from 'node:crypto'
import { LRUCache } from 'lru-cache'

/**
 * Hot-path cache of opened cookie values: a given cookie value is decrypted at most once while its
 * entry lives; bounded in entries. Misses (values that did not open) are cached too, so garbage is
 * not re-decrypted. An entry lives `ttlMs` after its last use (a value in use stays).
 *
 * Keys: a SHA-256 of the value by default, so the cache never holds the value itself (the memory
 * store's ticket is the key to its entry). `byValue` is for values that end in a random tag (a JWE's
 * authentication tag) and that the entries hold anyway (the cookie store hands the sealed value to
 * clients that kept an older one): the key is the value's length and its last 32 characters, and a
 * hit counts only when the whole value is equal, so no hash of a 2 KB cookie is computed per request
 * (a SHA-256 cost 1.9% of a proxied request, a map keyed by the whole string 4%) and a value crafted
 * to share another's tail finds nothing.
 */
export class OpenCache<T> {
  /** Values that opened (or, without `byValue`, every value), by key, with the value they are for. */
  readonly #lru: LRUCache<string, { value: T | null; of: string | null }>
  /**
   * With `byValue`: values that did not open, by a SHA-256 of the value, so garbage costs a hash
   * and not its own size in memory (a client can send up to 30 KB of cookie).
   */
  readonly #misses: LRUCache<string, true> | null
  /**
   * Opens in progress, by the whole value (never by the tail key: a value sharing another's tail
   * must not wait for, and get, the other's result): concurrent requests with one new value share
   * one decrypt and one entry.
   */
  readonly #opening = new Map<string, Promise<T | null>>()
  readonly #keyOf: (value: string) => string
  readonly #byValue: boolean

  constructor(opts: { max: number; ttlMs: number; byValue?: boolean }) {
    this.#lru = new LRUCache({ max: opts.max, ttl: opts.ttlMs, updateAgeOnGet: true, ttlAutopurge: false })
    this.#misses = opts.byValue === true ? new LRUCache({ max: opts.max, ttl: opts.ttlMs, ttlAutopurge: false }) : null
    this.#keyOf = opts.byValue === true ? tailKey : sha256
    this.#byValue = opts.byValue === true
  }

  async getOrOpen(value: string, open: (value: string) => Promise<T | null>): Promise<T | null> {
    const key = this.#keyOf(value)
    const hit = this.#lookup(key, value)
    if (hit !== undefined) return hit.value
    const misses = this.#misses
    if (misses !== null && misses.get(sha256(value)) === true) return null
    let opening = this.#opening.get(value)
    if (opening === undefined) {
      opening = open(value).then(
        (opened) => {
          if (opened === null && misses !== null) misses.set(sha256(value), true)
          else this.#lru.set(key, { value: opened, of: this.#byValue ? value : null })
          this.#opening.delete(value)
          return opened
        },
        (err: unknown) => {
          this.#opening.delete(value)
          throw err
        },
      )
      this.#opening.set(value, opening)
    }
    return opening
  }

  /** What a value opened to: undefined when it is not cached (null when it did not open). */
  get(value: string): T | null | undefined {
    const hit = this.#lookup(this.#keyOf(value), value)
    if (hit !== undefined) return hit.value
    return this.#misses?.get(sha256(value)) === true ? null : undefined
  }

  /** Remember what a value opens to, without opening it (a value this process just sealed). */
  set(value: string, opened: T): void {
    this.#lru.set(this.#keyOf(value), { value: opened, of: this.#byValue ? value : null })
  }

  delete(value: string): void {
    if (this.#lookup(this.#keyOf(value), value) !== undefined) this.#lru.delete(this.#keyOf(value))
  }

  /** The entry under `key`, if it is `value`'s (with `byValue`, the whole value must match). */
  #lookup(key: string, value: string): { value: T | null } | undefined {
    const hit = this.#lru.get(key)
    if (hit === undefined || (hit.of !== null && hit.of !== value)) return undefined
    return hit
  }
}

/** The length and the last 32 characters: for a compact JWE, its tag and the end of its ciphertext. */
function tailKey(value: string): string {
  return `${value.length}:${value.slice(-32)}`
}

/** One-shot hash (Node >= 20.12): no Hash object per request on the hot path. */
function sha256(value: string): string {
  return hash('sha256', value, 'base64url')
}
