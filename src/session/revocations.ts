import { LRUCache } from 'lru-cache'
import { type Clock, systemClock } from '../clock.ts'

/**
 * Sessions ended before their time: signed out here (by session id), or ended at the provider
 * (back-channel logout: by `sid`, or by `sub` for sessions created before the logout token). Checked on
 * every authenticated request, so a copied cookie stops working too. Two implementations: the
 * in-memory list here (one instance), and the Redis-backed one of `redis/revocations.ts` that every
 * replica shares; both answer `isRevoked` from the same local {@link RevocationMirror}, so the hot path
 * never makes a network call.
 */
export interface RevocationList {
  readonly kind: 'memory' | 'redis'
  /**
   * `isRevoked` can answer now. Always true in memory; for Redis, true while the subscription to the
   * other replicas' revocations is live and the mirror was loaded after it started.
   */
  readonly ready: boolean
  /** Rejects with STORE_UNAVAILABLE when the revocation could not be shared (it is kept here all the same). */
  revokeSession(id: string): Promise<void>
  revokeSid(sid: string): Promise<void>
  /** Every session of `sub` created before `before` (ms). */
  revokeSubBefore(sub: string, before: number): Promise<void>
  /** Throws STORE_UNAVAILABLE while the list cannot know (`ready` is false): never "not revoked" from stale data. */
  isRevoked(session: { readonly id: string; readonly sid: string | undefined; readonly sub: string; readonly createdAt: number }): Promise<boolean>
  /**
   * Be told when anything is revoked (open WebSockets end with their session at once), here or, with
   * Redis, on another replica; returns the function that stops it.
   */
  subscribe(listener: () => void): () => void
  /** What the list holds, as members and their expiry (ms): a reload hands them to the next list. */
  entries(): Array<readonly [member: string, expiresAt: number]>
}

/**
 * One revocation as a string (the member of the Redis sorted set): `id:<session id>`, `sid:<sid>`,
 * `sub:<sub>:<cut-off ms>` (the cut-off last: a `sub` may hold `:`).
 */
export type Revocation = { readonly kind: 'id' | 'sid'; readonly value: string } | { readonly kind: 'sub'; readonly value: string; readonly before: number }

export function revocationMember(r: Revocation): string {
  return r.kind === 'sub' ? `sub:${r.value}:${r.before}` : `${r.kind}:${r.value}`
}

/** The revocation a member names, or null for anything that is not one. */
export function parseRevocation(member: string): Revocation | null {
  if (member.startsWith('id:') && member.length > 3) return { kind: 'id', value: member.slice(3) }
  if (member.startsWith('sid:') && member.length > 4) return { kind: 'sid', value: member.slice(4) }
  if (member.startsWith('sub:')) {
    const at = member.lastIndexOf(':')
    const before = Number(member.slice(at + 1))
    const value = member.slice(4, at)
    if (at > 4 && value !== '' && /^\d{1,16}$/.test(member.slice(at + 1)) && Number.isSafeInteger(before)) return { kind: 'sub', value, before }
  }
  return null
}

/**
 * The revocations one process knows, in a bounded LRU whose entries live until their expiry (as long
 * as a revoked session could still live). Adding is a merge: an entry already known is kept (a `sub`
 * keeps its latest cut-off), so loading a list from elsewhere never removes anything.
 */
export class RevocationMirror {
  // Keyed by kind (`id:`, `sid:`, `sub:` + value); the value holds the expiry and, for `sub`, the cut-off.
  readonly #lru: LRUCache<string, { readonly expiresAt: number; readonly before: number }>
  readonly #clock: Clock

  constructor(opts: { max?: number; clock?: Clock } = {}) {
    this.#clock = opts.clock ?? systemClock
    // With an injected clock, TTLs run on it (as lru-cache's `perf`, no cached "now"); else on
    // lru-cache's own `performance.now()`.
    this.#lru =
      opts.clock === undefined
        ? new LRUCache({ max: opts.max ?? 100_000, ttl: 1 })
        : new LRUCache({ max: opts.max ?? 100_000, ttl: 1, perf: { now: () => this.#clock.now() }, ttlResolution: 0 })
  }

  get size(): number {
    return this.#lru.size
  }

  /** Merge one revocation; true when it is news (not known, or a later `sub` cut-off). Expired ones are ignored. */
  add(r: Revocation, expiresAt: number): boolean {
    const ttl = expiresAt - this.#clock.now()
    if (ttl <= 0) return false
    const key = `${r.kind}:${r.value}`
    const before = r.kind === 'sub' ? r.before : 0
    const prior = this.#lru.get(key)
    if (prior !== undefined && prior.before >= before && prior.expiresAt >= expiresAt) return false
    const next = prior === undefined ? { expiresAt, before } : { expiresAt: Math.max(prior.expiresAt, expiresAt), before: Math.max(prior.before, before) }
    this.#lru.set(key, next, { ttl: next.expiresAt - this.#clock.now() })
    return prior === undefined || next.before > prior.before
  }

  has(s: { readonly id: string; readonly sid: string | undefined; readonly sub: string; readonly createdAt: number }): boolean {
    if (this.#lru.size === 0) return false
    if (this.#lru.has(`id:${s.id}`)) return true
    if (s.sid !== undefined && this.#lru.has(`sid:${s.sid}`)) return true
    const sub = this.#lru.get(`sub:${s.sub}`)
    return sub !== undefined && s.createdAt < sub.before
  }

  /** Every live entry as a member and its expiry, oldest use first. */
  entries(): Array<readonly [string, number]> {
    const out: Array<readonly [string, number]> = []
    for (const key of this.#lru.rkeys()) {
      const v = this.#lru.peek(key)
      if (v !== undefined) out.push([key.startsWith('sub:') ? `${key}:${v.before}` : key, v.expiresAt])
    }
    return out
  }
}

/** Listeners told of revocations; a throwing listener does not stop the others. */
export class RevocationListeners {
  readonly #listeners = new Set<() => void>()
  add(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }
  notify(): void {
    for (const listener of this.#listeners) {
      try {
        listener()
      } catch {
        // A listener's own failure is its business (the tunnels' sweep catches its errors).
      }
    }
  }
}

/**
 * The in-memory list: one instance. `seed`: the entries of the list it replaces (a reload).
 */
export function createMemoryRevocations(opts: { ttlMs: number; max?: number; clock?: Clock; seed?: Iterable<readonly [string, number]> }): RevocationList {
  const clock = opts.clock ?? systemClock
  const mirror = new RevocationMirror({ max: opts.max, ...(opts.clock === undefined ? {} : { clock: opts.clock }) })
  for (const [member, expiresAt] of opts.seed ?? []) {
    const r = parseRevocation(member)
    if (r !== null) mirror.add(r, expiresAt)
  }
  const listeners = new RevocationListeners()
  const revoke = async (r: Revocation): Promise<void> => {
    mirror.add(r, clock.now() + opts.ttlMs)
    listeners.notify()
  }
  return {
    kind: 'memory',
    ready: true,
    revokeSession: (id) => revoke({ kind: 'id', value: id }),
    revokeSid: (sid) => revoke({ kind: 'sid', value: sid }),
    revokeSubBefore: (sub, before) => revoke({ kind: 'sub', value: sub, before }),
    subscribe: (listener) => listeners.add(listener),
    async isRevoked(s) {
      return mirror.has(s)
    },
    entries: () => mirror.entries(),
  }
}
