import type { Session } from './model.ts'

/**
 * Where sessions live. The cookie store keeps the whole sealed session in the cookie; server-side
 * stores (memory now, Redis later) keep a ticket in the cookie and the sealed session on the
 * server. Callers see one contract (STYLE.md §2.1, one contract test suite per implementation).
 */
export interface LoadedSession {
  readonly session: Session
  /** The cookie should be re-written (opened with an old key). */
  readonly renew: boolean
}

export interface SessionStore {
  readonly kind: 'cookie' | 'memory'
  /** Open the cookie value; null for anything that is not a live session of ours. Never throws. */
  load(cookieValue: string): Promise<LoadedSession | null>
  /**
   * Persist the session; returns the cookie value to set. `current` is the cookie value the session
   * was loaded from: a server-side store updates that entry in place and returns the same value (no
   * cookie needs rewriting); the cookie store seals a new value.
   */
  save(session: Session, current?: string): Promise<string>
  /** Forget the session behind this cookie value (no-op for the cookie store). */
  clear(cookieValue: string): Promise<void>
}
