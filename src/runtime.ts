import { randomBytes } from 'node:crypto'
import { BlockList, isIP } from 'node:net'
import type { Config } from './config/types.ts'
import { type Clock, systemClock } from './clock.ts'
import { PortcullisError } from './errors.ts'
import { refreshTokens } from './oidc/refresh.ts'
import { connectProvider, type OidcClient } from './oidc/client.ts'
import { createJtiReplayCache } from './oidc/logout.ts'
import { createMemoryStore } from './session/memory-store.ts'
import { createMemoryRevocations, type RevocationList } from './session/revocations.ts'
import { Refresher, type RefreshOutcome } from './session/refresher.ts'
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
  /** Sessions ended early (sign-out here, back-channel logout). */
  readonly revocations: RevocationList
  /** Single-flight token refresh with a short result cache. */
  readonly refresher: Refresher
  /** Validated `session.postLogoutRedirect`, or null when unset. */
  readonly postLogoutRedirect: string | null
  /** Record a logout token's jti; true when it was seen before (replay). */
  seenLogoutJti(jti: string, untilMs: number): boolean
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
  /** Told how each token refresh went (metrics: `createMetrics().runtimeDeps`). */
  readonly onRefresh?: (outcome: RefreshOutcome) => void
  /**
   * The runtime being replaced (reload): its revocations, and its memory store when the new config
   * keeps `store: memory`, carry over, so a reload neither signs anyone out nor revives a revoked session.
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
    { clock, ...(deps.onRefresh === undefined ? {} : { onOutcome: deps.onRefresh }) },
  )
  const previous = deps.previous
  const keepMemory =
    previous !== undefined &&
    previous.sessions.kind === 'memory' &&
    config.session.store === 'memory' &&
    previous.config.session.memoryMaxSessions === config.session.memoryMaxSessions &&
    previous.config.session.maxAge === config.session.maxAge &&
    previous.config.session.idleTimeout === config.session.idleTimeout
  const sessions = keepMemory
    ? previous.sessions
    : config.session.store === 'memory'
      ? createMemoryStore({ limits, clock, maxSessions: config.session.memoryMaxSessions })
      : createCookieStore({ ring: sessionKeys, limits, clock })
  return {
    config,
    clock,
    publicUrl,
    prefix,
    redirectUri,
    txCookiePath: `${prefix}/`,
    secureCookies: publicUrl.protocol === 'https:',
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
    revocations: previous?.revocations ?? createMemoryRevocations({ ttlMs: config.session.maxAge }),
    refresher,
    postLogoutRedirect,
    seenLogoutJti: previous?.seenLogoutJti ?? createJtiReplayCache(clock),
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
      provider.stop()
      if (redis !== null) releaseRedis(redis)
    },
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
