import { type KeyRing } from './keyring.ts'
import { open, seal } from './codec.ts'
import { asSession, isExpired, type Session, type SessionLimits } from './model.ts'
import { OpenCache } from './open-cache.ts'
import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import { CHUNK_SIZE } from './chunks.ts'
import type { LoadedSession, SessionChange, SessionStore } from './store.ts'

/**
 * Budget of a sealed session in the cookie store: three chunks (~11 KB). Browsers and Node (16 KB of
 * request headers by default) must still fit every other cookie and header beside it; a session that
 * cannot be read back would send the user to the provider forever.
 */
export const MAX_COOKIE_SESSION = 3 * CHUNK_SIZE

/**
 * One opened cookie value, and what superseded it: a write of the next state (`update`) links the
 * value it came from to the new one, so a client that keeps sending the old value (a forward-auth
 * controller that drops `Set-Cookie`, an API script, the parallel requests of one page) is served the
 * newest state without another decrypt or seal, and gets the newest value set on each response.
 */
interface Entry {
  readonly loaded: LoadedSession
  /** The state written after this one (set once). */
  next: Entry | null
  /** The write of the next state, while it runs. */
  pending: Promise<Entry> | null
}

/** Longest chain of successors followed on a load (each is shortened to its end as it is followed). */
const MAX_HOPS = 32

/**
 * The stateless store (default): the sealed session is the cookie value. Opening goes through the
 * open-cache, so a value is decrypted once while it is in use; lifetimes are checked on every load.
 * Moving the idle clock or re-sealing with a newer secret costs one seal per value and window
 * (`update`), shared by every request that carries that value.
 */
export function createCookieStore(deps: { ring: KeyRing; limits: SessionLimits; clock: Clock; cacheMax?: number; cacheTtlMs?: number }): SessionStore {
  // An entry lives as long as its value is used, and at least as long as an idle session would: a
  // client that keeps an old value keeps finding its successor.
  const ttlMs = deps.cacheTtlMs ?? Math.min(deps.limits.idleTimeout, deps.limits.maxAge)
  const cache = new OpenCache<Entry>({ max: deps.cacheMax ?? 10_000, ttlMs, byValue: true })
  const entries = new WeakMap<LoadedSession, Entry>()
  const entry = (loaded: LoadedSession): Entry => {
    const e: Entry = { loaded, next: null, pending: null }
    entries.set(loaded, e)
    return e
  }
  const openValue = async (value: string): Promise<Entry | null> => {
    const opened = await open(value, deps.ring)
    if (opened === null) return null
    const session = asSession(opened.payload)
    return session === null ? null : entry({ session, value, renew: opened.renew })
  }
  /** The sealed value, and the session as sealed (without its ID token when that did not fit). */
  const sealSession = async (session: Session): Promise<LoadedSession> => {
    const sealed = await seal(session, deps.ring)
    if (sealed.length <= MAX_COOKIE_SESSION) return { session, value: sealed, renew: false }
    // The ID token is only needed as id_token_hint at sign-out: drop it before giving up.
    const slimmer = { ...session, idToken: '' }
    const slim = await seal(slimmer, deps.ring)
    if (slim.length <= MAX_COOKIE_SESSION) return { session: slimmer, value: slim, renew: false }
    throw new PortcullisError('SESSION_TOO_LARGE', 'The sign-in produced a session too large to keep in a cookie.')
  }
  return {
    kind: 'cookie',
    async load(cookieValue: string): Promise<LoadedSession | null> {
      const found = await cache.getOrOpen(cookieValue, openValue)
      if (found === null) return null
      const loaded = newest(found).loaded
      return isExpired(loaded.session, deps.clock.now(), deps.limits) ? null : loaded
    },
    async save(session: Session): Promise<string> {
      // A new login's cookie is about to be used: known opened already.
      const sealed = await sealSession(session)
      cache.set(sealed.value, entry(sealed))
      return sealed.value
    },
    async update(from: LoadedSession, change: SessionChange): Promise<LoadedSession | null> {
      const e = entries.get(from) ?? entry(from)
      if (e.next !== null) return newest(e).loaded
      let pending = e.pending
      if (pending === null) {
        pending = (async () => {
          const sealed = await sealSession(await change(e.loaded.session))
          const next = entry(sealed)
          cache.set(sealed.value, next)
          e.next = next
          return next
        })()
        e.pending = pending
        const settled = (): void => {
          e.pending = null
        }
        pending.then(settled, settled)
      }
      return (await pending).loaded
    },
    async clear(cookieValue: string) {
      cache.delete(cookieValue)
    },
    // Sessions live in the browsers' cookies: the server holds none to count.
    size: async () => null,
  }
}

/** The end of an entry's chain of successors; the entry is linked straight to it for next time. */
function newest(e: Entry): Entry {
  let n = e
  for (let i = 0; n.next !== null && i < MAX_HOPS; i++) n = n.next
  if (e.next !== null && e.next !== n) e.next = n
  return n
}
