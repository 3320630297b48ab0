import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { PortcullisError } from '../errors.ts'
import type { Session } from '../session/model.ts'
import {
  openOutcome,
  outcomeError,
  outcomeOf,
  outcomeTtlMs,
  REFRESH_FAILURE_TTL_MS,
  REFRESH_RESULT_TTL_MS,
  refreshTokenHash,
  sealOutcome,
  type RefreshCoordinator,
  type RefreshOutcome,
} from '../session/refresher.ts'
import type { RedisLink } from './connection.ts'

/**
 * Refresh single-flight across replicas (issue #12 point 2), the `RefreshCoordinator` of
 * `session/refresher.ts`. Per OLD refresh token (its `refreshTokenHash`), two keys in one hash slot:
 *
 * - `<prefix>refresh:{hash}:lock`: `SET NX PX <lockTtl>` with a random token; released by
 *   compare-and-delete (Lua), so a holder whose lock ran out never deletes another's;
 * - `<prefix>refresh:{hash}:result`: the outcome (the refreshed session, SESSION_ENDED or the
 *   provider's error), sealed with a key derived from the old refresh token (`sealOutcome`), for as
 *   long as the local result cache keeps one (60 s; an outage 5 s).
 *
 * One script looks for a result and otherwise tries the lock, atomically: a replica never takes the
 * lock right after the holder wrote its result and left, which would refresh a second time with the
 * rotated-away token (the provider answers `invalid_grant`, and may revoke the whole grant). The
 * holder writes the result and releases the lock in one script. The others poll every `pollMs` until
 * there is a result (theirs too), or the lock is gone without one (then they try again), bounded by
 * the lock's lifetime: then IDP_UNAVAILABLE. Redis unreachable: STORE_UNAVAILABLE; the refresh is
 * never made uncoordinated.
 */
export interface RefreshLockOptions {
  readonly link: RedisLink
  /** How long the lock holds: the provider's timeout, twice (the grant, the keys to verify its ID token), and a margin. */
  readonly lockTtlMs: number
  readonly resultTtlMs?: number
  readonly failureTtlMs?: number
  /** How often a waiting replica looks again. */
  readonly pollMs?: number
}

/** A result → `[1, sealed]`; the lock taken → `[2]`; someone else holds it → `[0]`. */
const CLAIM = `
local r = redis.call('GET', KEYS[2])
if r then return {1, r} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
`

/** Write the outcome (a session replaces whatever is there; an error only where nothing is), then release a lock still ours. */
const FINISH = `
if ARGV[4] == '1' then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`

/** Release the lock if it is still ours (nothing to share). */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

export function createRedisRefreshLock(opts: RefreshLockOptions): RefreshCoordinator {
  const { link } = opts
  const resultTtlMs = opts.resultTtlMs ?? REFRESH_RESULT_TTL_MS
  const failureTtlMs = opts.failureTtlMs ?? REFRESH_FAILURE_TTL_MS
  const pollMs = opts.pollMs ?? 30
  const unavailable = (err: unknown) =>
    new PortcullisError('STORE_UNAVAILABLE', 'The session could not be renewed right now. Try again shortly.', { cause: err })

  /** Run a script, any failure of Redis as STORE_UNAVAILABLE. */
  const run = async (script: string, keys: readonly [string, string] | readonly [string], args: ReadonlyArray<string | number>): Promise<unknown> => {
    try {
      return await link.client.eval(script, keys.length, ...keys, ...args)
    } catch (err) {
      throw unavailable(err)
    }
  }

  /** Act on a shared outcome: the refreshed session, or its error. */
  const settle = (outcome: RefreshOutcome): Session => {
    if (outcome.kind === 'session') return outcome.session
    throw outcomeError(outcome)
  }

  return {
    async coordinate(session, refresh) {
      const hash = refreshTokenHash(session.refreshToken)
      const lockKey = link.key(`refresh:{${hash}}:lock`)
      const resultKey = link.key(`refresh:{${hash}}:result`)
      const token = randomBytes(16).toString('base64url')
      // Waiting is bounded by the lock's lifetime: a holder that takes longer has failed (or died, and
      // its lock runs out: then one of the waiters takes it).
      const deadline = performance.now() + opts.lockTtlMs + 2 * pollMs
      for (;;) {
        const claimed = (await run(CLAIM, [lockKey, resultKey], [token, opts.lockTtlMs])) as [number, string?]
        if (claimed[0] === 1) {
          const outcome = await openOutcome(claimed[1] as string, session)
          // A result that does not open for this session (tampered, another shape): not ours to use,
          // and never a reason to refresh again with a token that may be rotated away.
          if (outcome === null) throw new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: new Error('the shared refresh result does not open for this session') })
          return settle(outcome)
        }
        if (claimed[0] === 2) return lead(session, refresh, lockKey, resultKey, token)
        if (performance.now() > deadline) {
          throw new PortcullisError('IDP_UNAVAILABLE', 'The session could not be renewed in time. Try again shortly.', {
            cause: new Error('another instance held the refresh lock for longer than it may'),
          })
        }
        await sleep(pollMs)
      }
    },
  }

  /** This replica holds the lock: refresh, share the outcome, release. */
  async function lead(session: Session & { readonly refreshToken: string }, refresh: () => Promise<Session>, lockKey: string, resultKey: string, token: string): Promise<Session> {
    let result: { ok: true; session: Session } | { ok: false; err: unknown }
    try {
      result = { ok: true, session: await refresh() }
    } catch (err) {
      result = { ok: false, err }
    }
    const outcome = outcomeOf(result)
    try {
      if (outcome === null) await run(RELEASE, [lockKey], [token])
      else await run(FINISH, [lockKey, resultKey], [token, await sealOutcome(outcome, session.refreshToken), outcomeTtlMs(outcome, resultTtlMs, failureTtlMs), outcome.kind === 'session' ? '1' : '0'])
    } catch {
      // Redis went away during the refresh: the outcome is still this replica's to use (new tokens
      // must not be thrown away: the old refresh token may be rotated already). The lock runs out;
      // the others see STORE_UNAVAILABLE until Redis is back.
    }
    if (result.ok) return result.session
    throw result.err
  }
}
