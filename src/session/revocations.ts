import { LRUCache } from 'lru-cache'

/**
 * Sessions ended before their time: signed out here (by session id), or ended at the provider
 * (back-channel logout: by `sid`, or by `sub` for sessions created before the logout token). Checked on
 * every authenticated request, so a copied cookie stops working too. The in-memory list is a bounded
 * LRU whose entries live as long as a session can (`session.maxAge`); a Redis implementation that every
 * replica sees will implement the same interface.
 */
export interface RevocationList {
  revokeSession(id: string): Promise<void>
  revokeSid(sid: string): Promise<void>
  /** Every session of `sub` created before `before` (ms). */
  revokeSubBefore(sub: string, before: number): Promise<void>
  isRevoked(session: { readonly id: string; readonly sid: string | undefined; readonly sub: string; readonly createdAt: number }): Promise<boolean>
  /**
   * Be told when anything is revoked (open WebSockets end with their session at once); returns the
   * function that stops it.
   */
  subscribe(listener: () => void): () => void
}

export function createMemoryRevocations(opts: { ttlMs: number; max?: number }): RevocationList {
  // One LRU, keys prefixed by kind; the value is the cut-off time for `sub` entries (1 for the others).
  const lru = new LRUCache<string, number>({ max: opts.max ?? 100_000, ttl: opts.ttlMs })
  const listeners = new Set<() => void>()
  const revoked = (): void => {
    for (const listener of listeners) listener()
  }
  return {
    async revokeSession(id) {
      lru.set(`id:${id}`, 1)
      revoked()
    },
    async revokeSid(sid) {
      lru.set(`sid:${sid}`, 1)
      revoked()
    },
    async revokeSubBefore(sub, before) {
      const prior = lru.get(`sub:${sub}`)
      lru.set(`sub:${sub}`, prior === undefined ? before : Math.max(prior, before))
      revoked()
    },
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async isRevoked(s) {
      if (lru.size === 0) return false
      if (lru.has(`id:${s.id}`)) return true
      if (s.sid !== undefined && lru.has(`sid:${s.sid}`)) return true
      const cutoff = lru.get(`sub:${s.sub}`)
      return cutoff !== undefined && s.createdAt < cutoff
    },
  }
}
