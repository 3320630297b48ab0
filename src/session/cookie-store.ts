import { type KeyRing } from './keyring.ts'
import { open, seal } from './codec.ts'
import { asSession, isExpired, type Session, type SessionLimits } from './model.ts'
import { OpenCache } from './open-cache.ts'
import type { Clock } from '../clock.ts'
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
    save: (session: Session) => seal(session, deps.ring),
    async clear(cookieValue: string) {
      cache.delete(cookieValue)
    },
  }
}
