import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.ts'
import { open, seal } from './codec.ts'
import type { KeyRing } from './keyring.ts'
import { asSession, expiresAt, isExpired, type Session, type SessionLimits } from './model.ts'
import { OpenCache } from './open-cache.ts'
import type { LoadedSession, SessionStore } from './store.ts'

/**
 * The memory store (DESIGN.md §5): server-side, one instance. The cookie holds only a ticket
 * `<session id>.<key>`; a bounded LRU holds the session sealed with that per-session key, so the
 * process memory alone does not reveal sessions, and a cookie alone is useless once the entry is gone.
 * A refresh updates the stored session in place: the cookie need not be rewritten (forward-auth behind
 * proxies that drop `Set-Cookie` on a 200).
 */
const TICKET = /^([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$/

function ticketRing(key: Uint8Array): KeyRing {
  const k = { kid: 't', raw: key }
  return { current: k, byId: (kid) => (kid === 't' ? k : undefined) }
}

export function createMemoryStore(deps: { limits: SessionLimits; clock: Clock; maxSessions: number }): SessionStore {
  const sealed = new LRUCache<string, string>({ max: deps.maxSessions })
  const cache = new OpenCache<Session>({ max: Math.min(deps.maxSessions, 10_000), ttlMs: 30_000 })
  const parse = (value: string) => {
    const m = TICKET.exec(value)
    return m === null ? null : { id: m[1] as string, key: Buffer.from(m[2] as string, 'base64url') }
  }
  const openEntry = async (ticket: { id: string; key: Uint8Array }, blob: string): Promise<Session | null> => {
    const opened = await open(blob, ticketRing(ticket.key))
    const session = opened === null ? null : asSession(opened.payload)
    return session !== null && session.id === ticket.id ? session : null
  }
  return {
    kind: 'memory',
    async load(cookieValue: string): Promise<LoadedSession | null> {
      const ticket = parse(cookieValue)
      if (ticket === null) return null
      // The entry first, on every load: the lookup marks it used (LRU), and an evicted, expired or
      // cleared entry is gone even while an opened copy sits in the open cache. The cache key covers
      // the sealed entry, so a copy opened from an entry a save has since replaced is never served.
      const blob = sealed.get(ticket.id)
      if (blob === undefined) return null
      const session = await cache.getOrOpen(`${cookieValue}\n${blob}`, () => openEntry(ticket, blob))
      if (session === null) return null
      if (isExpired(session, deps.clock.now(), deps.limits)) return null
      return { session, renew: false }
    },
    async save(session: Session, current?: string): Promise<string> {
      const existing = current === undefined ? null : parse(current)
      const key = existing !== null && existing.id === session.id ? existing.key : randomBytes(32)
      const ttl = Math.max(1, expiresAt(session, deps.limits) - deps.clock.now())
      sealed.set(session.id, await seal(session, ticketRing(key)), { ttl })
      return `${session.id}.${Buffer.from(key).toString('base64url')}`
    },
    async clear(cookieValue: string) {
      // Only the whole ticket ends the entry: its id alone (a cookie with another key) clears nothing.
      const ticket = parse(cookieValue)
      const blob = ticket === null ? undefined : sealed.peek(ticket.id)
      if (ticket !== null && blob !== undefined && (await openEntry(ticket, blob)) !== null) sealed.delete(ticket.id)
    },
  }
}
