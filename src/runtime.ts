import type { Config } from './config/types.ts'
import { type Clock, systemClock } from './clock.ts'
import { createProviderConnection, type ConnectionEvents, type ProviderConnection, type RetryPolicy } from './oidc/connection.ts'
import { createKeyRing, type KeyRing } from './session/keyring.ts'
import { createCookieStore } from './session/cookie-store.ts'
import { BASE_CLAIMS, type SessionLimits } from './session/model.ts'
import type { SessionStore } from './session/store.ts'
import { compileRoutes, type RouteTable } from './policy/routes.ts'
import { buildStripSet } from './policy/headers.ts'
import { claimsUsed, compileIdentityHeaders, type IdentityHeaderBuilder } from './policy/identity.ts'
import { DEFAULT_IDENTITY_HEADERS } from './config/schema.ts'

/**
 * The immutable snapshot of everything a request needs, built from a validated config (DESIGN.md §8
 * layer 3). One object, swapped whole on reload; in-flight requests keep the one they started with.
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
  readonly stripSet: ReadonlySet<string>
  readonly identityHeaders: IdentityHeaderBuilder
  /** Claims copied from the ID token into the session. */
  readonly keepClaims: ReadonlySet<string>
  /** True for the names of Portcullis's own cookies (session chunks, login transactions). */
  isOwnCookie(name: string): boolean
  close(): void
}

export interface RuntimeDeps {
  readonly clock?: Clock
  readonly retry?: RetryPolicy
  readonly providerEvents?: ConnectionEvents
}

export function createRuntime(config: Config, deps: RuntimeDeps = {}): Runtime {
  const clock = deps.clock ?? systemClock
  const publicUrl = new URL(config.server.publicUrl)
  const prefix = config.server.authPrefix
  const redirectUri = new URL(`${prefix}/callback`, publicUrl).href
  const limits: SessionLimits = { maxAge: config.session.maxAge, idleTimeout: config.session.idleTimeout }
  const sessionKeys = createKeyRing(config.session.secrets, 'session')
  const loginKeys = createKeyRing(config.session.secrets, 'login')
  const provider = createProviderConnection(config.provider, redirectUri, deps.retry, deps.providerEvents)
  const cookieName = config.session.cookieName
  const ownPrefix = `${cookieName}_`
  const strip = new Set<string>([
    ...Object.keys(DEFAULT_IDENTITY_HEADERS),
    ...Object.keys(config.identity.headers),
    'X-Auth-Request-Access-Token',
    'X-Forwarded-Access-Token',
  ])
  if (config.identity.passAuthorizationHeader) strip.add('Authorization')
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
    sessions: createCookieStore({ ring: sessionKeys, limits, clock }),
    limits,
    routes: compileRoutes(config.routes),
    stripSet: buildStripSet(strip),
    identityHeaders: compileIdentityHeaders(config.identity.headers),
    keepClaims: new Set([...BASE_CLAIMS, ...claimsUsed(config.identity.headers)]),
    isOwnCookie: (name) => name === cookieName || name.startsWith(ownPrefix),
    close: () => provider.stop(),
  }
}
