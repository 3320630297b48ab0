import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify'
import fastifyRateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit'
import type { Logger } from 'pino'
import { PortcullisError } from '../errors.ts'
import type { RedisClient, RedisLink } from '../redis/connection.ts'
import type { RuntimeHolder } from './context.ts'
import { clientAddress } from './facts.ts'

/**
 * Rate limits on the endpoints that begin and end logins (`rateLimits` in the config): at most `max`
 * requests per client address in each `window` on `{prefix}/start`, `{prefix}/callback` and
 * `{prefix}/backchannel-logout`, each with its own counter; over it, a 429 `RATE_LIMITED` error
 * page (HTML or JSON, as every error) with `Retry-After`: the seconds until the address's window frees.
 * Nothing else is limited: proxied requests, the forward-auth checks, ops.
 *
 * - The address is `clientAddress` (`http/facts.ts`): the peer, or the client a trusted proxy's
 *   `X-Forwarded-For` names; IPv6 addresses count per /64 (one host usually has a whole /64).
 * - Logins: the only place a login transaction is made is `{prefix}/start`, however the login began
 *   (a protected page's redirect, a step-up, the sign-in page, a link), so its limit counts every
 *   login begun; the redirect to it from a protected page creates nothing and is not counted.
 * - Counting: @fastify/rate-limit (`createRateLimit`) with the store below, fixed windows. With
 *   `session.redis` the counters are in Redis (one Lua script, one key per endpoint and address:
 *   standalone, Sentinel and Cluster alike), so every replica shares them; otherwise in this process.
 *   Redis unreachable: each request is counted in this process instead, with the same limits, an
 *   error logged once per outage and `stats.localFallbacks` counting; never a 500, never unlimited.
 * - Reload: the limits are read from each request's runtime, so a new config applies at once; the
 *   counters are kept (a shorter window cuts running ones to it at their next request).
 */
export type RateLimitBucket = 'start' | 'callback' | 'backchannelLogout'

export interface RateLimitStats {
  /** Requests refused with 429, by endpoint (monotonic). */
  readonly limited: Readonly<Record<RateLimitBucket, number>>
  /** Requests counted in this process because Redis did not answer (monotonic). */
  readonly localFallbacks: number
}

export interface RateLimits {
  /** The `onRequest` hook of a limited route. */
  hook(bucket: RateLimitBucket): onRequestAsyncHookHandler
  readonly stats: RateLimitStats
}

/** One hit on a counter: how many requests in the current window, and the ms until it ends. */
interface Hit {
  readonly count: number
  readonly ttlMs: number
}

/**
 * Register the rate limiter on `app` (before the routes that use `hook`). `holder` gives the Redis
 * connection and clock of the running runtime; the limits come from each request's own.
 */
export function registerRateLimits(app: FastifyInstance, holder: RuntimeHolder, logger: Logger): RateLimits {
  const stats = { limited: { start: 0, callback: 0, backchannelLogout: 0 }, localFallbacks: 0 }
  const counters = new Counters(holder, logger, stats)
  void app.register(fastifyRateLimit, {
    global: false,
    // Only `createRateLimit` is used (the plugin's per-route hooks would miss routes declared before
    // it loads, as `buildApp` declares them): the hook below answers with the error model's 429.
    store: storeOf(counters),
  })
  type Limiter = ReturnType<FastifyInstance['createRateLimit']>
  const limiters = new Map<RateLimitBucket, Limiter>()
  const limiterOf = (server: FastifyInstance, bucket: RateLimitBucket): Limiter => {
    let limiter = limiters.get(bucket)
    if (limiter === undefined) {
      limiter = server.createRateLimit({
        keyGenerator: (req) => `${bucket}:${addressKey(req)}`,
        max: (req) => req.portcullis.runtime.config.rateLimits[bucket].max,
        timeWindow: (req) => windowOf(req, bucket),
      })
      limiters.set(bucket, limiter)
    }
    return limiter
  }
  return {
    stats,
    hook(bucket) {
      return async (request) => {
        if (!request.portcullis.runtime.config.rateLimits.enabled) return
        const result = await limiterOf(request.server, bucket)(request)
        if (result.isAllowed || !result.isExceeded) return
        stats.limited[bucket]++
        request.portcullis.logFields = { ...request.portcullis.logFields, rateLimit: bucket, client: addressKey(request) }
        const seconds = Math.min(Math.max(1, Math.ceil(result.ttl / 1000)), Math.ceil(windowOf(request, bucket) / 1000))
        throw new PortcullisError('RATE_LIMITED', `Your address has sent more requests than allowed. Try again in ${seconds} second${seconds === 1 ? '' : 's'}.`, {
          details: { retryAfter: String(seconds) },
        })
      }
    },
  }
}

/** The counter key's address: `clientAddress`, IPv4-mapped IPv6 as IPv4, IPv6 per /64. */
function addressKey(request: FastifyRequest): string {
  const rt = request.portcullis.runtime
  const address = clientAddress(request.raw.headers, request.raw.socket.remoteAddress ?? '', rt.isTrustedProxy)
  return address === '' ? 'unknown' : fastifyRateLimit.normalizeIP(address, 64)
}

/** The window in ms, at least a second (a shorter one would make `Retry-After` 0). */
function windowOf(request: FastifyRequest, bucket: RateLimitBucket): number {
  return Math.max(1000, request.portcullis.runtime.config.rateLimits[bucket].window)
}

/** The store interface of @fastify/rate-limit over `counters` (one store for every endpoint: the key names it). */
function storeOf(counters: Counters): new () => FastifyRateLimitStore {
  return class PortcullisRateLimitStore implements FastifyRateLimitStore {
    incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, timeWindow: number): void {
      counters.hit(key, timeWindow).then(
        (hit) => callback(null, { current: hit.count, ttl: hit.ttlMs }),
        (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
      )
    }
    child(): FastifyRateLimitStore {
      return this
    }
  }
}

/**
 * The counters: in Redis when the running runtime has `session.redis`, else (and while Redis does
 * not answer) in this process. Never rejects.
 */
class Counters {
  readonly #holder: RuntimeHolder
  readonly #logger: Logger
  readonly #stats: { localFallbacks: number }
  readonly #local = new LocalCounters()
  /** Redis failed and has not answered since (one error line per outage). */
  #redisDown = false

  constructor(holder: RuntimeHolder, logger: Logger, stats: { localFallbacks: number }) {
    this.#holder = holder
    this.#logger = logger
    this.#stats = stats
  }

  async hit(key: string, windowMs: number): Promise<Hit> {
    const rt = this.#holder.current
    const link = rt.redis
    if (link !== null) {
      if (link.ready) {
        try {
          const hit = await redisHit(link, key, windowMs)
          if (this.#redisDown) {
            this.#redisDown = false
            this.#logger.info('rate limits: counting in Redis again')
          }
          return hit
        } catch (err) {
          this.#down(err)
        }
      } else {
        this.#down(new Error('not connected'))
      }
      this.#stats.localFallbacks++
    }
    return this.#local.hit(key, windowMs, rt.clock.now())
  }

  #down(err: unknown): void {
    if (this.#redisDown) return
    this.#redisDown = true
    this.#logger.error({ err }, 'rate limits: Redis did not answer; counting in this process until it does (the limits then hold per replica)')
  }
}

/**
 * One hit in Redis: INCR, and the window set on a new key (or cut to a shorter window after a
 * reload); returns the count and the ms left. One key, so it runs on a Cluster as on one server.
 */
const HIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
local window = tonumber(ARGV[1])
if ttl < 0 or ttl > window then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {count, ttl}
`
const HIT_COMMAND = 'portcullisRateLimitHit'

/** A client with the script defined on it (ioredis `defineCommand`: EVALSHA, EVAL when the server lacks it). */
type WithHit = RedisClient & { [HIT_COMMAND]?: (key: string, windowMs: number) => Promise<[number, number]> }

async function redisHit(link: RedisLink, key: string, windowMs: number): Promise<Hit> {
  const client = link.client as WithHit
  if (typeof client[HIT_COMMAND] !== 'function') client.defineCommand(HIT_COMMAND, { numberOfKeys: 1, lua: HIT_SCRIPT })
  const [count, ttlMs] = await (client[HIT_COMMAND] as NonNullable<WithHit[typeof HIT_COMMAND]>)(link.key(`ratelimit:${key}`), windowMs)
  return { count: Number(count), ttlMs: Number(ttlMs) }
}

/** Counters in this process, bounded: past `MAX_KEYS` addresses, ended windows go first, then the oldest. */
class LocalCounters {
  readonly #windows = new Map<string, { count: number; endsAt: number }>()

  hit(key: string, windowMs: number, now: number): Hit {
    let entry = this.#windows.get(key)
    if (entry !== undefined && entry.endsAt <= now) {
      this.#windows.delete(key)
      entry = undefined
    }
    if (entry === undefined) {
      if (this.#windows.size >= MAX_KEYS) this.#evict(now)
      entry = { count: 0, endsAt: now + windowMs }
      this.#windows.set(key, entry)
    } else if (entry.endsAt - now > windowMs) {
      entry.endsAt = now + windowMs
    }
    entry.count++
    return { count: entry.count, ttlMs: entry.endsAt - now }
  }

  #evict(now: number): void {
    for (const [key, entry] of this.#windows) if (entry.endsAt <= now) this.#windows.delete(key)
    // Still full: the oldest windows (insertion order) make room for a tenth.
    for (const key of this.#windows.keys()) {
      if (this.#windows.size < MAX_KEYS * 0.9) break
      this.#windows.delete(key)
    }
  }
}
const MAX_KEYS = 100_000
