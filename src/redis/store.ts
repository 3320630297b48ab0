import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import { expiresAt, isExpired, type Session, type SessionLimits } from '../session/model.ts'
import { OpenCache } from '../session/open-cache.ts'
import type { LoadedSession, SessionChange, SessionStore } from '../session/store.ts'
import { keepFor, newTicket, openTicket, parseTicket, sealTicket, updateOnce, type Ticket } from '../session/ticket.ts'
import type { RedisClient, RedisLink } from './connection.ts'

/**
 * `session.store: redis`: the memory store's ticket design (`session/ticket.ts`) with the sealed
 * sessions in Redis, shared by every replica. The cookie holds `<session id>.<per-session key>`;
 * Redis holds, under `{keyPrefix}s:<id>`, the session sealed with that key, with a TTL (PX) of its
 * remaining absolute lifetime set at every write. A dump of Redis alone opens nothing.
 *
 * - load: always a GET of the current blob first (so an entry cleared, expired or rewritten by any
 *   replica is seen at once); a small local cache of opened blobs spares the decrypt when the blob
 *   is the one opened before.
 * - update: single-flight per session in this process; the write is a compare-and-set (a Lua
 *   script: SET only while the key still holds the blob that was loaded), so a session cleared
 *   meanwhile on any replica is never written back, and a write another replica made meanwhile is
 *   not overwritten: `change` is applied again to that newer state (at most `CAS_ATTEMPTS` times).
 * - clear: only with the whole ticket: a cookie with the right id and another key clears nothing.
 * - Redis Cluster: every command and the script touch one key, so each session's key can live in
 *   any slot (no hash tag: sessions spread over the shards). The index of session expiries for
 *   `size()` is one sorted set `{keyPrefix}sessions` (one slot), written by separate commands beside
 *   the session's (best-effort: ZADD at a login, ZREM at a clear, expired members trimmed at each
 *   login and count), never inside the script, and never read to authenticate.
 * - Outage: every method rejects with PortcullisError STORE_UNAVAILABLE when Redis cannot answer
 *   (the connection fails commands at once while it is down and bounds each by `commandTimeout`).
 */
export interface RedisStoreDeps {
  readonly link: RedisLink
  readonly limits: SessionLimits
  readonly clock: Clock
}

/** Writes of one update tried over states other replicas wrote meanwhile, before giving up. */
export const CAS_ATTEMPTS = 3

/**
 * SET KEYS[1] to ARGV[2] with PX ARGV[3] only while it holds ARGV[1]. Returns 1 when written, 0
 * when the key is gone, else the blob it holds now (another replica wrote it).
 */
const CAS_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if current == false then return 0 end
return current
`
const CAS_COMMAND = 'portcullisSessionCas'

/** The client with the script defined on it (ioredis adds a method per `defineCommand`, untyped). */
type ScriptedClient = RedisClient & {
  [CAS_COMMAND](key: string, expected: string, next: string, px: number): Promise<number | string>
}

/** An opened entry: the sealed blob it was opened from, and what it holds. */
interface Opened {
  readonly blob: string
  readonly loaded: LoadedSession | null
}

const UNAVAILABLE = 'The session store cannot be reached right now. Try again in a moment.'

/** A failed command as the one error an outage is: the client's message kept for the log, nothing else of it. */
function unavailable(err: unknown): PortcullisError {
  const cause = err instanceof Error ? Object.assign(new Error(err.message), { name: err.name }) : new Error(String(err))
  return new PortcullisError('STORE_UNAVAILABLE', UNAVAILABLE, { cause })
}

async function command<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (err) {
    throw unavailable(err)
  }
}

const ignore = (): void => {
  // The index is best-effort: a lost ZADD/ZREM only skews the count until the member's expiry.
}

export function createRedisStore(deps: RedisStoreDeps): SessionStore {
  const { link, limits, clock } = deps
  link.client.defineCommand(CAS_COMMAND, { numberOfKeys: 1, lua: CAS_SCRIPT })
  const client = link.client as ScriptedClient
  const keyOf = (id: string): string => link.key(`s:${id}`)
  const index = link.key('sessions')
  // Keyed by a hash of the whole ticket (id and key): a cookie with the right id and another key
  // never finds what the real one opened. An entry serves only while Redis holds the same blob.
  const cache = new OpenCache<Opened>({ max: 10_000, ttlMs: 30_000 })
  /** The blob each loaded state was opened from: what an update compares against. */
  const blobs = new WeakMap<LoadedSession, string>()
  const writing = new Map<string, Promise<LoadedSession | null>>()

  const remember = (value: string, blob: string, loaded: LoadedSession | null): void => {
    cache.set(value, { blob, loaded })
    if (loaded !== null) blobs.set(loaded, blob)
  }
  /** What a blob holds for this ticket, opened at most once per blob. */
  const opened = async (ticket: Ticket, value: string, blob: string): Promise<LoadedSession | null> => {
    const hit = cache.get(value)
    if (hit !== undefined && hit !== null && hit.blob === blob) return hit.loaded
    const session = await openTicket(ticket, blob)
    const loaded = session === null ? null : { session, value, renew: false }
    remember(value, blob, loaded)
    return loaded
  }
  /** The session's state in Redis now (a GET every time), with the blob it was opened from. */
  const current = async (ticket: Ticket, value: string): Promise<Opened | null> => {
    const blob = await command(() => client.get(keyOf(ticket.id)))
    if (blob === null) {
      cache.delete(value)
      return null
    }
    return { blob, loaded: await opened(ticket, value, blob) }
  }
  const trim = (): void => {
    client.zremrangebyscore(index, '-inf', clock.now()).catch(ignore)
  }

  async function rewrite(ticket: Ticket, from: LoadedSession, change: SessionChange): Promise<LoadedSession | null> {
    const now = await current(ticket, from.value)
    // Gone (cleared, expired): never written back.
    if (now === null || now.loaded === null) return null
    // Superseded already (this or another replica wrote the session since it was loaded): the
    // newest state, unchanged; the caller looks again at what it still needs.
    if (blobs.get(from) !== now.blob) return now.loaded
    let base: LoadedSession = now.loaded
    let expected = now.blob
    for (let attempt = 1; ; attempt++) {
      const session = await change(base.session)
      const blob = await sealTicket(session, ticket)
      const result = await command(() => client[CAS_COMMAND](keyOf(ticket.id), expected, blob, keepFor(session, limits, clock.now())))
      if (result === 1) {
        const loaded = { session, value: from.value, renew: false }
        remember(from.value, blob, loaded)
        return loaded
      }
      // Cleared meanwhile (a sign-out or a new login, on any replica): it stays gone.
      if (typeof result !== 'string') {
        cache.delete(from.value)
        return null
      }
      // Another replica wrote the session while `change` ran: its state is the one to build on.
      const newer = await opened(ticket, from.value, result)
      if (newer === null || isExpired(newer.session, clock.now(), limits)) return null
      if (attempt >= CAS_ATTEMPTS) return newer
      base = newer
      expected = result
    }
  }

  return {
    kind: 'redis',
    async load(cookieValue: string): Promise<LoadedSession | null> {
      const ticket = parseTicket(cookieValue)
      if (ticket === null) return null
      const loaded = (await current(ticket, cookieValue))?.loaded ?? null
      if (loaded === null || isExpired(loaded.session, clock.now(), limits)) return null
      return loaded
    },
    async save(session: Session): Promise<string> {
      const { ticket, value } = newTicket(session)
      const blob = await sealTicket(session, ticket)
      const write = client.set(keyOf(session.id), blob, 'PX', keepFor(session, limits, clock.now()))
      // Issued in the same tick: one round trip with the SET (auto-pipelining), on the index's node.
      client.zadd(index, expiresAt(session, limits), session.id).catch(ignore)
      trim()
      await command(() => write)
      remember(value, blob, { session, value, renew: false })
      return value
    },
    async update(from: LoadedSession, change: SessionChange): Promise<LoadedSession | null> {
      return updateOnce(writing, from, (ticket) => rewrite(ticket, from, change))
    },
    async clear(cookieValue: string): Promise<void> {
      // Only the whole ticket ends the session: its id alone (a cookie with another key) clears nothing.
      const ticket = parseTicket(cookieValue)
      if (ticket === null) return
      const blob = await command(() => client.get(keyOf(ticket.id)))
      if (blob === null || (await openTicket(ticket, blob)) === null) return
      await command(() => client.del(keyOf(ticket.id)))
      client.zrem(index, ticket.id).catch(ignore)
      cache.delete(cookieValue)
    },
    async size(): Promise<number | null> {
      const now = clock.now()
      trim()
      return command(() => client.zcount(index, `(${now}`, '+inf'))
    },
  }
}
