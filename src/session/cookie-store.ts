import { type KeyRing } from './keyring.ts'
import { open, seal } from './codec.ts'
import { asSession, isExpired, type Session, type SessionLimits } from './model.ts'
import { OpenCache } from './open-cache.ts'
import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import { CHUNK_SIZE } from './chunks.ts'

/**
 * Budget of a sealed session in the cookie store: three chunks (~11 KB). Browsers and Node (16 KB of
 * request headers by default) must still fit every other cookie and header beside it; a session that
 * cannot be read back would send the user to the provider forever (LANDSCAPE §2 item 1).
 */
export const MAX_COOKIE_SESSION = 3 * CHUNK_SIZE
import type { LoadedSession, SessionStore } from './store.ts'

/**
 * The stateless store (default): the sealed session is the cookie value. Opening goes through the
 * open-cache so a value is decrypted at most once per window; lifetimes are checked on every load.
 */
export function createCookieStore(deps: { ring: KeyRing; limits: SessionLimits; clock: Clock; cacheMax?: number; cacheTtlMs?: number }): SessionStore {
  const cache = new OpenCache<{ session: Session; renew: boolean }>({ max: deps.cacheMax ?? 10_000, ttlMs: deps.cacheTtlMs ?? 30_000 })
  const openValue = async (value: string) => {
    const opened = await open(value, deps.ring)
    if (opened === null) return null
    const session = asSession(opened.payload)
    return session === null ? null : { session, renew: opened.renew }
  }
  return {
    kind: 'cookie',
    async load(cookieValue: string): Promise<LoadedSession | null> {
      const loaded = await cache.getOrOpen(cookieValue, openValue)
      if (loaded === null) return null
      if (isExpired(loaded.session, deps.clock.now(), deps.limits)) return null
      return loaded
    },
    async save(session: Session) {
      const sealed = await seal(session, deps.ring)
      if (sealed.length <= MAX_COOKIE_SESSION) return sealed
      // The ID token is only needed as id_token_hint at sign-out: drop it before giving up.
      const slim = await seal({ ...session, idToken: '' }, deps.ring)
      if (slim.length <= MAX_COOKIE_SESSION) return slim
      throw new PortcullisError('SESSION_TOO_LARGE', 'The sign-in produced a session too large to keep in a cookie.')
    },
    async clear(cookieValue: string) {
      cache.delete(cookieValue)
    },
  }
}
