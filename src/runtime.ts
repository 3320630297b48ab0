import { randomBytes } from 'node:crypto'
import { BlockList, isIP } from 'node:net'
import type { Config } from './config/types.ts'
import { type Clock, systemClock } from './clock.ts'
import { PortcullisError } from './errors.ts'
import { refreshTokens } from './oidc/refresh.ts'
import { connectProvider, type OidcClient } from './oidc/client.ts'
import { createJtiReplayCache, type LogoutReplayCache } from './oidc/logout.ts'
import { createMemoryStore } from './session/memory-store.ts'
import { createMemoryRevocations, type RevocationList } from './session/revocations.ts'
import { Refresher, type RefreshReport } from './session/refresher.ts'
import { createRedisRevocations, type RedisRevocationList, type RevocationSyncEvent } from './redis/revocations.ts'
import { createRedisLogoutReplay } from './redis/logout-replay.ts'
import { createRedisRefreshLock } from './redis/refresh-lock.ts'
import { validateRedirect } from './policy/redirects.ts'
import { createProviderConnection, type ConnectionEvents, type ProviderConnection, type RetryPolicy } from './oidc/connection.ts'
import { createKeyRing, type KeyRing } from './session/keyring.ts'
import { createCookieStore } from './session/cookie-store.ts'
import { BASE_CLAIMS, refreshedSession, type SessionLimits } from './session/model.ts'
import type { SessionStore } from './session/store.ts'
import { compileRoutes, type RouteTable } from './policy/routes.ts'
import { explainRequest, explainSettingsOf, openRouteWarning, type ExplainInput, type Explanation } from './policy/explain.ts'
import { claimsRead, compilePolicy, type RoutePolicy } from './policy/access.ts'
import { ASSERTION_BASE_CLAIMS, createAssertionSigner, loadSigningKey, type AssertionSigner } from './policy/assertion.ts'
import { createBearerVerifier, extraIssuer, type BearerVerifier, type TrustedIssuer } from './oidc/bearer.ts'
import { providerUrlAllowed } from './config/validate.ts'
import { ASYMMETRIC_ALGS } from './oidc/jwks.ts'
import { compileHeaderScreen, FOREIGN_IDENTITY_HEADERS, FOREIGN_IDENTITY_PREFIXES, type HeaderScreen } from './policy/headers.ts'
import { claimsUsed, compileIdentityHeaders, type IdentityHeaderBuilder } from './policy/identity.ts'
import { DEFAULT_IDENTITY_HEADERS } from './config/schema.ts'
import { connectRedis, redisConfigured, type RedisEvents, type RedisLink } from './redis/connection.ts'
import { createRedisStore } from './redis/store.ts'

/**
 * The immutable snapshot of everything a request needs, built from a validated config (the runtime
 * layer of docs/architecture.md). One object, swapped whole on reload; in-flight requests keep the one they started with.
 */
export interface Runtime {
  readonly config: Config
  readonly clock: Clock
  readonly publicUrl: URL
  readonly prefix: string
  readonly redirectUri: string
  /** `Path` attribute of login transaction cookies: the auth prefix, so they never reach upstreams. */
  readonly txCookiePath: string
  readonly secureCookies: boolean
  readonly provider: ProviderConnection
  readonly sessionKeys: KeyRing
  readonly loginKeys: KeyRing
  readonly sessions: SessionStore
  readonly limits: SessionLimits
  readonly routes: RouteTable
  /** Normalized names of every header a client must not send (identity headers, token headers). */
  /** Step 1's rules: the client headers removed before anything reads the request. */
  readonly screen: HeaderScreen
  readonly identityHeaders: IdentityHeaderBuilder
  /** Claims copied from the ID token into the session. */
  readonly keepClaims: ReadonlySet<string>
  /** The session cookie's name (chunks add `_1`, `_2`, ...): `sessionCookieName`. */
  readonly sessionCookie: string
  /** True for the names of Portcullis's own cookies (session chunks, login transactions). */
  isOwnCookie(name: string): boolean
  /**
   * Sessions ended early (sign-out here, back-channel logout): in memory, or with `session.redis`
   * shared by every replica (`redis/revocations.ts`; answered from a local mirror, never a network call).
   */
  readonly revocations: RevocationList
  /** Single-flight token refresh with a short result cache; across replicas with `session.redis`. */
  readonly refresher: Refresher
  /** Validated `session.postLogoutRedirect`, or null when unset. */
  readonly postLogoutRedirect: string | null
  /**
   * Record a logout token's jti; true when it was seen before (replay). With `session.redis` in Redis,
   * so a replay is one on every replica; rejects with STORE_UNAVAILABLE while Redis is unreachable.
   */
  seenLogoutJti(jti: string, untilMs: number): Promise<boolean>
  /** Take a recorded jti back (its logout could not be carried out; the provider's retry must pass). */
  forgetLogoutJti(jti: string): Promise<void>
  /** A new random session id. */
  newSessionId(): string
  /** The peer address is in `server.trustedProxies` (its X-Forwarded-For is kept and appended to). */
  isTrustedProxy(peer: string): boolean
  /** Bearer tokens of API clients on `bearer: true` routes. */
  readonly bearer: BearerVerifier
  /** The access rules of a forward-auth check that names no original URL: `access.defaultAllow`. */
  readonly defaultPolicy: RoutePolicy
  /** Signs `X-Portcullis-Assertion` (`identity.assertion.enabled`), else null. */
  readonly assertions: AssertionSigner | null
  /**
   * The Redis connection when `session.redis` is configured, else null: shared by sessions
   * (`store: redis`), revocations, the back-channel replay cache, the refresh lock and rate limits.
   * A reload with the same `session.redis` keeps the connection; another one connects anew.
   */
  readonly redis: RedisLink | null
  close(): void
}

export interface RuntimeDeps {
  readonly clock?: Clock
  readonly retry?: RetryPolicy
  readonly providerEvents?: ConnectionEvents
  readonly redisEvents?: RedisEvents
  /** The shared revocations went out of sync with Redis, or are in sync again (for the log). */
  readonly onRevocations?: (event: RevocationSyncEvent) => void
  /** Told how each token refresh went (metrics: `createMetrics().runtimeDeps`). */
  readonly onRefresh?: (outcome: RefreshReport) => void
  /**
   * The runtime being replaced (reload): its revocations, and its memory or Redis store when the new
   * config keeps it (`sessionStoreFor`), carry over, so a reload neither signs anyone out nor revives
   * a revoked session.
   */
  readonly previous?: Runtime
}

export function createRuntime(config: Config, deps: RuntimeDeps = {}): Runtime {
  const clock = deps.clock ?? systemClock
  const publicUrl = new URL(config.server.publicUrl)
  const prefix = config.server.authPrefix
  const redirectUri = new URL(`${prefix}/callback`, publicUrl).href
  const limits: SessionLimits = { maxAge: config.session.maxAge, idleTimeout: config.session.idleTimeout }
  const sessionKeys = createKeyRing(config.session.secrets, 'session')
  const loginKeys = createKeyRing(config.session.secrets, 'login')
  // Checks that can refuse the config run before the provider connection starts: a refused config
  // (a SIGHUP reload) leaves no retry loop running.
  let postLogoutRedirect: string | null = null
  if (config.session.postLogoutRedirect !== '') {
    postLogoutRedirect = validateRedirect(config.session.postLogoutRedirect, publicUrl, config.redirects.allowedDomains)
    if (postLogoutRedirect === null) {
      throw new PortcullisError('CONFIG_INVALID', 'session.postLogoutRedirect: must be on server.publicUrl\'s origin or a redirects.allowedDomains entry')
    }
  }
  const assertions = config.identity.assertion.enabled ? assertionSigner(config, publicUrl, clock, deps.previous) : null
  const provider = createProviderConnection(config.provider, redirectUri, deps.retry, deps.providerEvents, clock)
  const redis = redisLinkFor(config, deps.previous, deps.redisEvents)
  const cookieName = config.session.cookieName
  const ownPrefix = `${cookieName}_`
  const sessionCookie = sessionCookieName(config)
  const sessionPrefix = `${sessionCookie}_`
  // Step 1: identity headers (ours, every spelling of the configured ones, other auth layers'), the
  // operator's additions, and underscore names unless allowed.
  const strip = new Set<string>([...FOREIGN_IDENTITY_HEADERS, ...Object.keys(DEFAULT_IDENTITY_HEADERS), ...Object.keys(config.identity.headers)])
  const stripPrefixes = [...FOREIGN_IDENTITY_PREFIXES]
  for (const entry of config.identity.stripHeaders) {
    if (entry.endsWith('*')) stripPrefixes.push(entry.slice(0, -1))
    else if (entry.endsWith('-') || entry.endsWith('_')) stripPrefixes.push(entry)
    else strip.add(entry)
  }
  // The assertion is Portcullis's to set: a client's copy goes on every route, public ones too.
  strip.add('X-Portcullis-Assertion')
  // With passAuthorizationHeader the client's own Authorization never reaches the app; bearer routes
  // still read it (it is replaced or dropped on the way upstream, `http/upstream-headers.ts`).
  if (config.identity.passAuthorizationHeader && !config.routes.some((r) => r.bearer)) strip.add('Authorization')
  // Bearer tokens: the provider's own issuer (its keys once connected; until then its tokens are a
  // 503, not a 401), then provider.extraIssuers, whose keys are loaded with their first token.
  const extraIssuers = config.provider.extraIssuers.map((entry) =>
    extraIssuer(entry, {
      timeoutMs: config.provider.timeout,
      clock,
      urlAllowed: (url) => providerUrlAllowed(url, config.provider),
    }),
  )
  const unconnected: TrustedIssuer = { issuer: config.provider.issuer, jwks: null }
  const bearerIssuers = (): readonly TrustedIssuer[] => {
    const own = provider.ready ? { issuer: provider.get().issuer, jwks: provider.get().jwks } : unconnected
    return extraIssuers.length === 0 ? [own] : [own, ...extraIssuers]
  }
  const keepClaims = new Set([...BASE_CLAIMS, ...claimsUsed(config.identity.headers), ...claimsRead(config.access, [config.access.defaultAllow, ...config.routes.map((r) => r.allow)])])
  const refresher = new Refresher(
    async (session) => {
      if (session.refreshToken === undefined) {
        throw new PortcullisError('SESSION_ENDED', 'Your session has ended. Please sign in again.', { cause: new Error('no refresh token') })
      }
      const tokens = await refreshTokens(provider.get(), session.refreshToken, session.sub, clock.now())
      return refreshedSession(session, tokens, keepClaims)
    },
    {
      clock,
      ...(deps.onRefresh === undefined ? {} : { onOutcome: deps.onRefresh }),
      // The lock outlives one refresh: the grant and the keys to verify its ID token, each bounded by provider.timeout.
      ...(redis === null ? {} : { coordinator: createRedisRefreshLock({ link: redis, lockTtlMs: 2 * config.provider.timeout + 1_000 }) }),
    },
  )
  const previous = deps.previous
  const revocations = revocationsFor(config, redis, previous, clock, deps.onRevocations)
  const logoutReplay: LogoutReplayCache =
    redis !== null ? createRedisLogoutReplay(redis, clock) : ((previous?.redis === null ? replayCaches.get(previous) : undefined) ?? createJtiReplayCache(clock))
  const sessions = sessionStoreFor(config, { limits, clock, sessionKeys, redis, previous })
  let closed = false
  const runtime: Runtime = {
    config,
    clock,
    publicUrl,
    prefix,
    redirectUri,
    txCookiePath: `${prefix}/`,
    // Secure when users reach an https publicUrl, and when this listener is HTTPS itself.
    secureCookies: publicUrl.protocol === 'https:' || config.server.tls.cert !== '',
    provider,
    sessionKeys,
    loginKeys,
    sessions,
    limits,
    routes: compileRouteTable(config),
    screen: compileHeaderScreen({ names: strip, prefixes: stripPrefixes, dropUnderscore: !config.server.allowUnderscoreHeaders }),
    identityHeaders: compileIdentityHeaders(config.identity.headers),
    keepClaims,
    sessionCookie,
    isOwnCookie: (name) => name === cookieName || name.startsWith(ownPrefix) || name === sessionCookie || name.startsWith(sessionPrefix),
    revocations,
    refresher,
    postLogoutRedirect,
    seenLogoutJti: (jti, untilMs) => logoutReplay.seen(jti, untilMs),
    forgetLogoutJti: (jti) => logoutReplay.forget(jti),
    newSessionId: () => randomBytes(18).toString('base64url'),
    isTrustedProxy: trustedProxyCheck(config.server.trustedProxies),
    bearer: createBearerVerifier({
      issuers: bearerIssuers,
      algorithms: ASYMMETRIC_ALGS,
      clockToleranceSec: Math.ceil(config.provider.clockSkew / 1000),
      clock,
    }),
    defaultPolicy: compilePolicy({ id: 'access', require: { mfa: false, acr: [], maxAuthAge: 0 }, loginParams: {}, requiredScopes: [] }, config.access),
    assertions,
    redis,
    close: () => {
      // Once: a second close must not release what another runtime still holds.
      if (closed) return
      closed = true
      provider.stop()
      void releaseRevocations(revocations).finally(() => {
        if (redis !== null) releaseRedis(redis)
      })
    },
  }
  replayCaches.set(runtime, logoutReplay)
  return runtime
}

/** The replay cache behind each runtime's `seenLogoutJti`: a reload that stays without Redis keeps the memory one. */
const replayCaches = new WeakMap<Runtime, LogoutReplayCache>()

/** How many runtimes hold each Redis-backed revocation list (a reload hands it on); closed when none does. */
const revocationHolders = new WeakMap<RevocationList, number>()

/**
 * The revocations of a new runtime. A reload keeps the running list when it stays the same kind
 * (memory, or Redis on the same connection); otherwise the new list starts with what the old one
 * knew (and, for Redis, writes it back), so a reload neither signs anyone out nor revives a revoked
 * session.
 */
function revocationsFor(config: Config, redis: RedisLink | null, previous: Runtime | undefined, clock: Clock, onSync: ((event: RevocationSyncEvent) => void) | undefined): RevocationList {
  const prior = previous?.revocations
  let list: RevocationList
  if (prior !== undefined && (redis === null ? prior.kind === 'memory' : prior.kind === 'redis' && previous?.redis === redis)) list = prior
  else if (redis === null) list = createMemoryRevocations({ ttlMs: config.session.maxAge, ...(prior === undefined ? {} : { seed: prior.entries() }) })
  else {
    list = createRedisRevocations({
      link: redis,
      ttlMs: config.session.maxAge,
      clock,
      heartbeatTimeoutMs: config.session.redis.commandTimeout,
      ...(prior === undefined ? {} : { seed: prior.entries() }),
      ...(onSync === undefined ? {} : { onSync }),
    })
  }
  revocationHolders.set(list, (revocationHolders.get(list) ?? 0) + 1)
  return list
}

async function releaseRevocations(list: RevocationList): Promise<void> {
  const left = (revocationHolders.get(list) ?? 1) - 1
  revocationHolders.set(list, left)
  if (left <= 0 && list.kind === 'redis') await (list as RedisRevocationList).close()
}

/**
 * The session store of a new runtime. A reload keeps the running one when it can: the memory store
 * (its sessions live only there) while `store: memory`, its bound and the lifetimes stay; the Redis
 * store while `store: redis`, the connection is kept (same `session.redis`) and the lifetimes stay
 * (its sessions are in Redis either way: a new store on the same connection only starts with an
 * empty local cache).
 */
function sessionStoreFor(
  config: Config,
  deps: { limits: SessionLimits; clock: Clock; sessionKeys: KeyRing; redis: RedisLink | null; previous: Runtime | undefined },
): SessionStore {
  const { limits, clock, previous } = deps
  const sameLimits = previous !== undefined && previous.config.session.maxAge === config.session.maxAge && previous.config.session.idleTimeout === config.session.idleTimeout
  switch (config.session.store) {
    case 'memory':
      if (sameLimits && previous.sessions.kind === 'memory' && previous.config.session.memoryMaxSessions === config.session.memoryMaxSessions) return previous.sessions
      return createMemoryStore({ limits, clock, maxSessions: config.session.memoryMaxSessions })
    case 'redis':
      // Config validation requires session.redis with store: redis.
      if (deps.redis === null) throw new PortcullisError('CONFIG_INVALID', 'session.store: redis needs session.redis (url, sentinel.nodes or cluster.nodes)')
      if (sameLimits && previous.sessions.kind === 'redis' && previous.redis === deps.redis) return previous.sessions
      return createRedisStore({ link: deps.redis, limits, clock })
    case 'cookie':
      return createCookieStore({ ring: deps.sessionKeys, limits, clock })
  }
}

/** How many runtimes hold each Redis connection (a reload hands it on); closed when none does. */
const redisHolders = new WeakMap<RedisLink, number>()

function redisLinkFor(config: Config, previous: Runtime | undefined, events: RedisEvents | undefined): RedisLink | null {
  if (!redisConfigured(config.session.redis)) return null
  const kept = previous?.redis ?? null
  const link = kept !== null && JSON.stringify(previous?.config.session.redis) === JSON.stringify(config.session.redis) ? kept : connectRedis(config.session.redis, events)
  redisHolders.set(link, (redisHolders.get(link) ?? 0) + 1)
  return link
}

function releaseRedis(link: RedisLink): void {
  const left = (redisHolders.get(link) ?? 1) - 1
  redisHolders.set(link, left)
  if (left <= 0) void link.close()
}

/**
 * The session cookie's name: `session.cookieName`, with the `__Host-` prefix when the public URL is
 * https and no `session.cookieDomain` is set. Browsers then accept the cookie only with Secure, Path=/
 * and no Domain, so a sibling subdomain (or a plain-http page on the same host) cannot set one of that
 * name to toss or fix a user's session.
 */
export function sessionCookieName(config: Config): string {
  const name = config.session.cookieName
  const https = new URL(config.server.publicUrl).protocol === 'https:'
  if (!https || config.session.cookieDomain !== '' || name.startsWith('__Host-') || name.startsWith('__Secure-')) return name
  return `__Host-${name}`
}

/**
 * `identity.assertion`'s signer. A reload that leaves `signingKey` as it was keeps the key (a
 * generated one too: it changes at each start, not at each reload), so upstreams' cached JWKS stay good.
 */
function assertionSigner(config: Config, publicUrl: URL, clock: Clock, previous: Runtime | undefined): AssertionSigner {
  const settings = config.identity.assertion
  const kept = previous?.assertions ?? null
  const key = kept !== null && previous?.config.identity.assertion.signingKey === settings.signingKey ? kept.key : loadSigningKey(settings.signingKey)
  return createAssertionSigner({
    key,
    issuer: publicUrl.origin,
    ttlMs: settings.ttl,
    claims: [...claimsUsed(config.identity.headers), ...ASSERTION_BASE_CLAIMS],
    clock,
  })
}

function trustedProxyCheck(entries: readonly string[]): (peer: string) => boolean {
  if (entries.length === 0) return () => false
  const list = new BlockList()
  for (const entry of entries) {
    const [addr, bits] = entry.split('/') as [string, string | undefined]
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(addr, type)
    else list.addSubnet(addr, Number(bits), type)
  }
  return (peer) => {
    if (peer === '') return false
    const addr = peer.startsWith('::ffff:') ? peer.slice(7) : peer
    return list.check(addr, isIP(addr) === 6 ? 'ipv6' : 'ipv4')
  }
}

/** The route table of a validated config (access rules compiled; bearer audiences default to the client id). */
export function compileRouteTable(config: Config): RouteTable {
  return compileRoutes(config.routes, config.access, config.provider.clientId)
}

export { ExplainInputError, formatExplanation, type Explanation } from './policy/explain.ts'

/**
 * `portcullis explain`: the explanation of one request under a validated config, from its route
 * table alone (no provider, no runtime). `{prefix}/debug` explains with the running runtime's table.
 */
export function explainWithConfig(config: Config, request: Omit<ExplainInput, 'routes' | 'settings'>): Explanation {
  return explainRequest({ ...request, routes: compileRouteTable(config), settings: explainSettingsOf(config) })
}

/** `portcullis check`: one warning per non-public route that admits every signed-in user. */
export function openRouteWarnings(config: Config): string[] {
  return compileRouteTable(config)
    .routes.map(openRouteWarning)
    .filter((w): w is string => w !== null)
}

/** `portcullis check`: connect to the provider once (discovery + JWKS) for a validated config. */
export function probeProvider(config: Config): Promise<OidcClient> {
  return connectProvider(config.provider, new URL(`${config.server.authPrefix}/callback`, config.server.publicUrl).href)
}
