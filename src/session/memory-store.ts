import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { isExpired, type Session, type SessionLimits } from './model.ts'
import { OpenCache } from './open-cache.ts'
import type { LoadedSession, SessionChange, SessionStore } from './store.ts'
import { keepFor, newTicket, openTicket, parseTicket, sealTicket, updateOnce, type Ticket } from './ticket.ts'

/**
 * The memory store: server-side, one instance. The cookie holds only a ticket `<session id>.<key>`
 * (`ticket.ts`); a bounded LRU holds the session sealed with that per-session key, so the process
 * memory alone does not reveal sessions, and a cookie alone is useless once the entry is gone. An
 * update (idle clock, refresh) rewrites the stored entry in place: the cookie never needs rewriting
 * (forward-auth behind proxies that drop `Set-Cookie` on a 200).
 */

/** An opened entry: the sealed blob it was opened from, and what it holds. */
interface Opened {
  readonly blob: string
  readonly loaded: LoadedSession | null
}

export function createMemoryStore(deps: { limits: SessionLimits; clock: Clock; maxSessions: number }): SessionStore {
  const sealed = new LRUCache<string, string>({ max: deps.maxSessions })
  // Keyed by a hash of the whole ticket (id and key): a cookie with the right id but another key
  // never finds an entry opened by the real one.
  const cache = new OpenCache<Opened>({ max: Math.min(deps.maxSessions, 10_000), ttlMs: 30_000 })
  const writing = new Map<string, Promise<LoadedSession | null>>()
  const ttlOf = (session: Session): number => keepFor(session, deps.limits, deps.clock.now())
  /** The entry's current state, opened at most once per sealed blob. */
  const current = async (cookieValue: string): Promise<LoadedSession | null> => {
    const ticket = parseTicket(cookieValue)
    if (ticket === null) return null
    // The entry first, on every load: the lookup marks it used (LRU), and an evicted, expired or
    // cleared entry is gone even while an opened copy sits in the cache. A copy opened from a blob
    // that an update has since replaced is never served.
    const blob = sealed.get(ticket.id)
    if (blob === undefined) return null
    const hit = cache.get(cookieValue)
    if (hit !== undefined && hit !== null && hit.blob === blob) return hit.loaded
    const session = await openTicket(ticket, blob)
    const loaded = session === null ? null : { session, value: cookieValue, renew: false }
    cache.set(cookieValue, { blob, loaded })
    return loaded
  }
  return {
    kind: 'memory',
    async size(): Promise<number> {
      // Expired entries leave the LRU lazily: drop them first, so the count is of live sessions.
      sealed.purgeStale()
      return sealed.size
    },
    async load(cookieValue: string): Promise<LoadedSession | null> {
      const loaded = await current(cookieValue)
      if (loaded === null || isExpired(loaded.session, deps.clock.now(), deps.limits)) return null
      return loaded
    },
    async save(session: Session): Promise<string> {
      const { ticket, value } = newTicket(session)
      sealed.set(session.id, await sealTicket(session, ticket), { ttl: ttlOf(session) })
      return value
    },
    async update(from: LoadedSession, change: SessionChange): Promise<LoadedSession | null> {
      return updateOnce(writing, from, (ticket) => rewrite(ticket, from, change))
    },
    async clear(cookieValue: string) {
      // Only the whole ticket ends the entry: its id alone (a cookie with another key) clears nothing.
      const ticket = parseTicket(cookieValue)
      const blob = ticket === null ? undefined : sealed.peek(ticket.id)
      if (ticket !== null && blob !== undefined && (await openTicket(ticket, blob)) !== null) {
        sealed.delete(ticket.id)
        cache.delete(cookieValue)
      }
    },
  }

  async function rewrite(ticket: Ticket, from: LoadedSession, change: SessionChange): Promise<LoadedSession | null> {
    const now = await current(from.value)
    // Gone (cleared, evicted, expired): never written back.
    if (now === null) return null
    // Superseded already (another request wrote the entry since): the newest state, unchanged.
    if (now !== from) return now
    const before = sealed.peek(ticket.id)
    const session = await change(from.session)
    const blob = await sealTicket(session, ticket)
    // Cleared while `change` ran (a sign-out, a new login): it stays gone.
    if (sealed.peek(ticket.id) !== before) return null
    sealed.set(ticket.id, blob, { ttl: ttlOf(session) })
    const loaded = { session, value: from.value, renew: false }
    cache.set(from.value, { blob, loaded })
    return loaded
  }
}
