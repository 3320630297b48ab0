import type { Session } from './model.ts'

/**
 * Where sessions live. The cookie store keeps the whole sealed session in the cookie; server-side
 * stores (memory, Redis) keep a ticket in the cookie and the sealed session on the server
 * (`ticket.ts`). Callers see one contract (one contract test suite per implementation).
 *
 * A store that cannot answer (Redis down or too slow) rejects with PortcullisError
 * `STORE_UNAVAILABLE` from every method: an outage is never "no session" (that would start logins
 * that cannot complete) and never a session. The cookie and memory stores always answer.
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
  readonly kind: 'cookie' | 'memory' | 'redis'
  /**
   * Open the cookie value; null for anything that is not a live session of ours. Throws only
   * `STORE_UNAVAILABLE`.
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
   * back. A store shared by replicas (Redis) writes only over the state it loaded (compare-and-set):
   * when another replica wrote the session while `change` ran, `change` is applied again to that
   * newer state (a few times at most; then the newest state is returned as superseded), so neither
   * write is lost, and a session another replica cleared stays gone.
   */
  update(from: LoadedSession, change: SessionChange): Promise<LoadedSession | null>
  /** Forget the session behind this cookie value (no-op for the cookie store). */
  clear(cookieValue: string): Promise<void>
  /**
   * Live sessions held (for the `portcullis_sessions` metric): null when the store holds none
   * server-side (the cookie store). Redis: counted from its index of session expiries, which is
   * kept best-effort beside the sessions (never read to authenticate).
   */
  size(): Promise<number | null>
}
