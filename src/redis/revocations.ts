import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import { parseRevocation, RevocationListeners, RevocationMirror, revocationMember, type Revocation, type RevocationList } from '../session/revocations.ts'
import type { RedisClient, RedisLink } from './connection.ts'

/**
 * Revocations every replica shares (issue #12 point 2), without a network call on the hot path.
 *
 * Redis holds them in ONE sorted set, `<prefix>revocations` (one key: one slot on a Cluster): the
 * member names the revocation (`id:…`, `sid:…`, `sub:…:<cut-off>`), the score is its expiry (now +
 * `session.maxAge`). A revocation is written with ZADD, PUBLISH on the channel of the same name and
 * a trim of expired members (ZREMRANGEBYSCORE), in one MULTI.
 *
 * Each replica answers `isRevoked` from a local {@link RevocationMirror}, fed by a SUBSCRIBE
 * connection of its own. After each (re)subscribe the whole set is loaded again: subscribe first,
 * then ZSCAN, so nothing published in between is missed. Loading merges into the mirror, it never
 * replaces it, and whatever the mirror holds that Redis lacks (Redis restarted empty, a revocation
 * made while it was unreachable) is written back and published, so a Redis that lost its data is
 * refilled by the replicas that still know. While the subscription is not live and loaded,
 * `isRevoked` throws STORE_UNAVAILABLE (503): a stale mirror never answers "not revoked". A heartbeat
 * (PING on the subscribed connection) finds a connection that died silently.
 *
 * A revocation is taken into the local mirror first, then shared; when sharing fails the call
 * rejects with STORE_UNAVAILABLE (this replica honours it at once; the others once the mirror is
 * written back, at the next load).
 */
export interface RedisRevocationOptions {
  readonly link: RedisLink
  /** How long an entry lives: `session.maxAge`. */
  readonly ttlMs: number
  readonly clock: Clock
  readonly max?: number
  /** Entries of the list this one replaces (a reload). */
  readonly seed?: Iterable<readonly [string, number]>
  /** How often the subscribed connection is pinged. */
  readonly heartbeatMs?: number
  /** How long a ping may take before the connection is taken for dead: `session.redis.commandTimeout`. */
  readonly heartbeatTimeoutMs?: number
  /** How soon a failed load is tried again. */
  readonly retryMs?: number
  /** State changes, for the log. */
  readonly onSync?: (event: RevocationSyncEvent) => void
}

export type RevocationSyncEvent =
  | { readonly state: 'synced'; readonly loaded: number; readonly restored: number }
  | { readonly state: 'lost'; readonly reason: string }

export interface RedisRevocationList extends RevocationList {
  readonly kind: 'redis'
  close(): Promise<void>
}

/** Members written back per MULTI (and per published message) after a load. */
const BATCH = 500

export function createRedisRevocations(opts: RedisRevocationOptions): RedisRevocationList {
  const { link, clock } = opts
  const key = link.key('revocations')
  const channel = key
  const heartbeatMs = opts.heartbeatMs ?? 1_000
  const heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? 2_000
  const retryMs = opts.retryMs ?? 250
  const mirror = new RevocationMirror({ max: opts.max, clock })
  for (const [member, expiresAt] of opts.seed ?? []) {
    const r = parseRevocation(member)
    if (r !== null) mirror.add(r, expiresAt)
  }
  const listeners = new RevocationListeners()

  let live = false
  let closed = false
  /** Bumped whenever the subscription is (re)made or lost: a load of an older one is dropped. */
  let generation = 0
  let syncing = false
  let syncAgain = false
  let retry: NodeJS.Timeout | null = null

  const lose = (reason: string): void => {
    generation++
    if (!live) return
    live = false
    opts.onSync?.({ state: 'lost', reason })
  }

  /** Take in a published message (`message`). */
  const take = (message: string): boolean => {
    let news = false
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return false
    }
    if (!Array.isArray(parsed)) return false
    for (const item of parsed as unknown[]) {
      if (!Array.isArray(item) || typeof item[0] !== 'number' || typeof item[1] !== 'string') continue
      const r = parseRevocation(item[1])
      if (r !== null && mirror.add(r, item[0])) news = true
    }
    return news
  }

  const sub: RedisClient = link.duplicate()
  sub.on('message', (from: string, message: string) => {
    if (from === channel && take(message)) listeners.notify()
  })
  sub.on('ready', () => {
    generation++
    requestSync()
  })
  sub.on('close', () => lose('the subscription to revocations was cut'))
  sub.connect().catch(() => {
    // Reconnecting goes on (retryStrategy); the main connection reports the failure.
  })

  /** Subscribe, load, merge, write back; `live` once all of it is done for this subscription. */
  async function sync(gen: number): Promise<void> {
    await sub.subscribe(channel)
    if (gen !== generation) return
    const now = clock.now()
    const inRedis = new Set<string>()
    let news = false
    let cursor = '0'
    do {
      const [next, items] = await link.client.zscan(key, cursor, 'COUNT', 1000)
      cursor = next
      for (let i = 0; i + 1 < items.length; i += 2) {
        const member = items[i] as string
        const expiresAt = Number(items[i + 1])
        inRedis.add(member)
        const r = parseRevocation(member)
        if (r !== null && expiresAt > now && mirror.add(r, expiresAt)) news = true
      }
    } while (cursor !== '0')
    // What this replica knows and Redis does not: written back, and published for the others.
    const missing = mirror.entries().filter(([member, expiresAt]) => !inRedis.has(member) && expiresAt > now)
    for (let i = 0; i < missing.length; i += BATCH) {
      const batch = missing.slice(i, i + BATCH)
      const scored = batch.flatMap(([member, expiresAt]) => [expiresAt, member])
      await exec(link.client.multi().zadd(key, ...scored).publish(channel, message(batch)).zremrangebyscore(key, '-inf', now))
    }
    if (gen !== generation || closed) return
    if (!live) {
      live = true
      opts.onSync?.({ state: 'synced', loaded: inRedis.size, restored: missing.length })
    }
    if (news) listeners.notify()
  }

  /** Run a load now, or once the one under way ends; a failed one is tried again while subscribed. */
  function requestSync(): void {
    if (closed) return
    if (syncing) {
      syncAgain = true
      return
    }
    syncing = true
    syncAgain = false
    const gen = generation
    sync(gen).then(
      () => {
        syncing = false
        if (syncAgain) requestSync()
      },
      () => {
        syncing = false
        if (syncAgain) return requestSync()
        if (closed || retry !== null || sub.status !== 'ready') return
        retry = setTimeout(() => {
          retry = null
          requestSync()
        }, retryMs)
        retry.unref()
      },
    )
  }

  const heartbeat = setInterval(() => {
    if (!live || sub.status !== 'ready') return
    const gen = generation
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no answer to PING')), heartbeatTimeoutMs)
      timer.unref()
    })
    Promise.race([sub.ping(), timeout]).then(
      () => clearTimeout(timer),
      () => {
        clearTimeout(timer)
        if (gen !== generation || closed) return
        lose('the subscription to revocations stopped answering')
        // Reconnect: the next 'ready' subscribes and loads again.
        sub.disconnect(true)
      },
    )
  }, heartbeatMs)
  heartbeat.unref()

  const revoke = async (r: Revocation): Promise<void> => {
    const expiresAt = clock.now() + opts.ttlMs
    const member = revocationMember(r)
    mirror.add(r, expiresAt)
    listeners.notify()
    try {
      await exec(
        link.client
          .multi()
          .zadd(key, expiresAt, member)
          .publish(channel, message([[member, expiresAt]]))
          .zremrangebyscore(key, '-inf', clock.now()),
      )
    } catch (err) {
      // Kept here; written back with the next load (when Redis answers again).
      if (live) requestSync()
      throw new PortcullisError('STORE_UNAVAILABLE', 'The sign-out could not be shared with the other instances. Try again shortly.', { cause: err })
    }
  }

  return {
    kind: 'redis',
    get ready() {
      return live && !closed
    },
    revokeSession: (id) => revoke({ kind: 'id', value: id }),
    revokeSid: (sid) => revoke({ kind: 'sid', value: sid }),
    revokeSubBefore: (sub, before) => revoke({ kind: 'sub', value: sub, before }),
    subscribe: (listener) => listeners.add(listener),
    async isRevoked(s) {
      if (!live) throw new PortcullisError('STORE_UNAVAILABLE', 'Signed-in requests cannot be checked right now. Try again shortly.', { cause: new Error('revocations are not in sync with Redis') })
      return mirror.has(s)
    },
    entries: () => mirror.entries(),
    async close() {
      closed = true
      live = false
      generation++
      clearInterval(heartbeat)
      if (retry !== null) clearTimeout(retry)
      try {
        await sub.quit()
      } catch {
        sub.disconnect()
      }
    },
  }
}

/** A published message: the revocations as `[[expiresAt, member], …]` (JSON: a member may hold any character). */
function message(entries: ReadonlyArray<readonly [member: string, expiresAt: number]>): string {
  return JSON.stringify(entries.map(([member, expiresAt]) => [expiresAt, member]))
}

/** Run a MULTI; any command's error (or a discarded transaction) is a rejection. */
async function exec(multi: ReturnType<RedisClient['multi']>): Promise<void> {
  const results = await multi.exec()
  if (results === null) throw new Error('the transaction was discarded')
  for (const [err] of results) if (err !== null) throw err
}
