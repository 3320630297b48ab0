import { randomBytes } from 'node:crypto'
import { open, seal } from './codec.ts'
import type { KeyRing } from './keyring.ts'
import { asSession, expiresAt, type Session, type SessionLimits } from './model.ts'
import type { LoadedSession } from './store.ts'

/**
 * The ticket of the server-side stores (memory, Redis): the cookie holds only
 * `<session id>.<per-session key>`; the store holds the session sealed (`codec.ts`) with that key
 * under the id. Neither half is enough alone: the store's contents without the cookies reveal no
 * session, and a cookie is useless once the entry is gone. One place for both stores, so they parse,
 * seal and open alike.
 */
export interface Ticket {
  readonly id: string
  readonly key: Uint8Array
}

/** `<id>.<key>`: the session id (16-64 base64url characters) and 32 bytes in base64url (43, no padding). */
const TICKET = /^([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$/

/** The ticket in a cookie value, or null for anything that is not one. */
export function parseTicket(value: string): Ticket | null {
  const m = TICKET.exec(value)
  return m === null ? null : { id: m[1] as string, key: Buffer.from(m[2] as string, 'base64url') }
}

/** A new ticket for a session: its id and a fresh random 256-bit key, and the cookie value naming both. */
export function newTicket(session: Session): { readonly ticket: Ticket; readonly value: string } {
  const key = randomBytes(32)
  return { ticket: { id: session.id, key }, value: `${session.id}.${key.toString('base64url')}` }
}

function ringOf(key: Uint8Array): KeyRing {
  const k = { kid: 't', raw: key }
  return { current: k, byId: (kid) => (kid === 't' ? k : undefined) }
}

/** The session sealed with its ticket's key: what the store keeps. */
export function sealTicket(session: Session, ticket: Ticket): Promise<string> {
  return seal(session, ringOf(ticket.key))
}

/**
 * The session a stored blob holds for this ticket: null when the key does not open it (a cookie with
 * the right id and another key), or it holds another shape or another session's id.
 */
export async function openTicket(ticket: Ticket, blob: string): Promise<Session | null> {
  const opened = await open(blob, ringOf(ticket.key))
  const session = opened === null ? null : asSession(opened.payload)
  return session !== null && session.id === ticket.id ? session : null
}

/**
 * How long a stored session is kept, in ms from `now` (at least 1): its remaining absolute
 * lifetime, set again at every write (a login, a moved idle clock, a refresh). An entry past its
 * idle timeout is refused by the load before that (`isExpired`).
 */
export function keepFor(session: Session, limits: SessionLimits, now: number): number {
  return Math.max(1, expiresAt(session, limits) - now)
}

/**
 * A server-side store's `update`, single-flight per session inside the process: while one write of
 * a session runs, later callers share it (the store contract: one write, one seal, however many ask).
 * `rewrite` does the store's own write of the loaded state's next state.
 */
export function updateOnce(
  writing: Map<string, Promise<LoadedSession | null>>,
  from: LoadedSession,
  rewrite: (ticket: Ticket) => Promise<LoadedSession | null>,
): Promise<LoadedSession | null> {
  const ticket = parseTicket(from.value)
  if (ticket === null || ticket.id !== from.session.id) throw new Error('not a ticket of this store')
  const running = writing.get(ticket.id)
  if (running !== undefined) return running
  const write = rewrite(ticket)
  writing.set(ticket.id, write)
  const settled = (): void => {
    writing.delete(ticket.id)
  }
  write.then(settled, settled)
  return write
}
