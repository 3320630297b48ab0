import { createHash } from 'node:crypto'
import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import type { LogoutReplayCache } from '../oidc/logout.ts'
import type { RedisLink } from './connection.ts'

/**
 * The back-channel logout `jti` replay cache in Redis, so a logout token accepted by one replica is a
 * replay on every other (issue #12 point 2). One key per jti, `<prefix>logout-jti:<sha256(jti)>`,
 * written with `SET key 1 NX PX <until - now>`: the token was seen when the key existed. (PX, not
 * PXAT: the lifetime counts from this replica's clock, not Redis's, and any Redis version takes it.)
 * Redis unreachable: STORE_UNAVAILABLE, so the logout is answered 503 and the provider tries again;
 * it is never accepted unchecked.
 */
export function createRedisLogoutReplay(link: RedisLink, clock: Clock): LogoutReplayCache {
  const keyOf = (jti: string): string => link.key(`logout-jti:${createHash('sha256').update(jti).digest('base64url')}`)
  const unavailable = (err: unknown) => new PortcullisError('STORE_UNAVAILABLE', 'The logout could not be checked for replay. Try again shortly.', { cause: err })
  return {
    async seen(jti, untilMs) {
      let set: string | null
      try {
        set = await link.client.set(keyOf(jti), '1', 'PX', Math.max(1, Math.ceil(untilMs - clock.now())), 'NX')
      } catch (err) {
        throw unavailable(err)
      }
      return set !== 'OK'
    },
    async forget(jti) {
      try {
        await link.client.del(keyOf(jti))
      } catch (err) {
        throw unavailable(err)
      }
    },
  }
}
