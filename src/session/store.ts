import type { Session } from './model.ts'

/**
 * Where sessions live. The cookie store keeps the whole sealed session in the cookie; server-side
 * stores (memory now, Redis later) keep a ticket in the cookie and the sealed session on the
 * server. Callers see one contract (one contract test suite per implementation).
 */
export interface LoadedSession {
  readonly session: Session
  /**
   * The cookie value that holds this session now. It is the value that was loaded, unless the session
   * was written again since (the idle clock moved, a newer secret sealed it, its tokens were
   * refreshed) while the client kept sending the old value: then it is the newest value, which the
   * response must set. A server-side store's ticket never changes.
   */
  readonly value: string
  /** The session was opened with a key other than the sealing one: it should be written again. */
  readonly renew: boolean
}

/** The next state of a session, from the one loaded (a moved idle clock, refreshed tokens). */
export type SessionChange = (session: Session) => Session | Promise<Session>

export interface SessionStore {
  readonly kind: 'cookie' | 'memory'
  /**
   * Open the cookie value; null for anything that is not a live session of ours. Never throws.
   * A value that has been superseded by `update` loads as its newest state (and that state's value).
   */
  load(cookieValue: string): Promise<LoadedSession | null>
  /** Persist a new session (a login); returns the cookie value to set. */
  save(session: Session): Promise<string>
  /**
   * Write the next state of a loaded session, once: concurrent and later callers with the same
   * loaded state share the one write (and so the one seal), and later loads of every value on the
   * way to it return the new state. When the state was already superseded, the newest one is returned
   * without calling `change` (the caller checks again what it still needs). A rejection of `change`
   * reaches every caller waiting on it and is not remembered. Null: the session is gone from a
   * server-side store (cleared, evicted, expired), before or while `change` ran; it is not written
   * back.
   */
  update(from: LoadedSession, change: SessionChange): Promise<LoadedSession | null>
  /** Forget the session behind this cookie value (no-op for the cookie store). */
  clear(cookieValue: string): Promise<void>
  /** How many sessions a server-side store holds now (metrics); absent where it cannot tell (cookie). */
  size?(): Promise<number | null>
}
