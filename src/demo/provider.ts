/**
 * An embedded OpenID Provider for `portcullis demo` and for the integration tests: panva's certified
 * `oidc-provider` on a plain `node:http` server, configured to look like the reference provider
 * (same endpoint paths, RS256 ID tokens, 5-minute JWT access tokens, rotating refresh tokens,
 * RP-initiated and back-channel logout) and fronted by a small login form of our own instead of the
 * library's development interactions (with a Cancel button that answers `access_denied`, as a real
 * provider does when the user backs out).
 *
 * Never used by the domain (`src/oidc`, `src/session`, `src/policy`): `src/demo/` is for `main.ts`
 * and the tests only (test/unit/architecture.test.ts holds the import table to that). Tests use a
 * real provider rather than mocks of one.
 *
 * @see https://github.com/panva/node-oidc-provider/blob/v9.x/docs/README.md
 */
import { generateKeyPair as generateKeyPairCb, randomBytes, timingSafeEqual, createHash } from 'node:crypto'
import type { JsonWebKey } from 'node:crypto'
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { escapeHtml, htmlPage } from './html.ts'

const generateKeyPair = promisify(generateKeyPairCb)

// ---------------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------------

/** A user of the demo provider. `id` becomes the `sub` claim; `email` is what the login form asks for. */
export interface DemoUser {
  id: string
  email: string
  password: string
  name: string
  preferredUsername: string
  groups: string[]
  /** Roles (the `roles` claim). Default none. */
  roles?: string[]
  /** Organization id (the `org_id` claim, as the reference provider sends it). Default none. */
  orgId?: string
  /** The `email_verified` claim. Default true. */
  emailVerified?: boolean
  /**
   * A one-time code the login form accepts as a second factor (a demo value, fixed): with it the
   * login's amr is ["pwd", "otp"] and acr {@link ACR_MFA}; without it ["pwd"] and {@link ACR_PASSWORD}.
   */
  otp?: string
}

/** The acr of a password-only login at the demo provider. */
export const ACR_PASSWORD = 'urn:portcullis:acr:pwd'
/** The acr of a login with the one-time code as well. */
export const ACR_MFA = 'urn:portcullis:acr:mfa'

/**
 * The built-in users. The passwords are demo values, not secrets.
 * alice is in two groups with the admin role and has a one-time code (MFA), bob is in one group, carol
 * in none, in another e-mail domain and organization, with an unverified e-mail (access rules).
 */
export const DEMO_USERS: DemoUser[] = [
  {
    id: 'alice',
    email: 'alice@example.com',
    password: 'alice-password',
    name: 'Alice Example',
    preferredUsername: 'alice',
    groups: ['admins', 'engineering'],
    roles: ['admin'],
    orgId: 'org_example',
    otp: '123456',
  },
  {
    id: 'bob',
    email: 'bob@example.com',
    password: 'bob-password',
    name: 'Bob Example',
    preferredUsername: 'bob',
    groups: ['engineering'],
    roles: ['viewer'],
    orgId: 'org_example',
  },
  {
    id: 'carol',
    email: 'carol@partner.example',
    password: 'carol-password',
    name: 'Carol Partner',
    preferredUsername: 'carol',
    groups: [],
    orgId: 'org_partner',
    emailVerified: false,
  },
]

/** A confidential client registered at start (the provider has no dynamic registration). */
export interface DemoClient {
  clientId: string
  clientSecret: string
  redirectUris: string[]
  postLogoutRedirectUris?: string[]
  /** OIDC Back-Channel Logout 1.0 receiver; `backchannel_logout_session_required` is set with it. */
  backchannelLogoutUri?: string
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post'
}

export interface ProviderOptions {
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string
  /** Port to listen on. Default 0 (any free port); the issuer carries the real one. */
  port?: number
  clients: DemoClient[]
  /** Default {@link DEMO_USERS}. */
  users?: DemoUser[]
  /** Access token lifetime in seconds. Default 300 (the reference provider's 5 minutes). */
  accessTokenTtl?: number
  /** ID token lifetime in seconds. Default 300. */
  idTokenTtl?: number
  /** Refresh token lifetime in seconds. Default 86400. */
  refreshTokenTtl?: number
  /** Provider session (and grant) lifetime in seconds. Default 86400. */
  sessionTtl?: number
  /**
   * Let the provider POST back-channel logout tokens to loopback addresses. oidc-provider's outgoing
   * fetch refuses special-use IP addresses (SSRF guard in `lib/helpers/fetch_request.js`); tests and
   * the local demo run everything on 127.0.0.1, so they need this. Never set it anywhere else.
   */
  allowLoopbackFetch?: boolean
  /** Receives one line per request and per provider error event. Without it the provider is silent. */
  logger?: (line: string) => void
}

/** One request seen by the provider's server, in arrival order. */
export interface ProviderRequestRecord {
  method: string
  path: string
  /** `grant_type` of a token endpoint request (filled in once the provider has parsed the body). */
  grantType?: string
}

export interface RunningProvider {
  /** `http://host:port`, no trailing slash; discovery is at `${issuer}/.well-known/openid-configuration`. */
  issuer: string
  port: number
  /** The oidc-provider instance, for tests that need to reach into it (events, models). */
  provider: OidcProvider
  /** Every request the server saw. */
  requests: ProviderRequestRecord[]
  /** The full query of every `GET /oauth/authorize` (and the form of every POST), so tests can see hint params arrive. */
  authorizations: Array<Record<string, string>>
  /** Generate a new RSA key and publish it first in the JWKS (so it signs from now on); older keys stay for verification. */
  rotateSigningKey(): Promise<void>
  /** Close the server and every open socket. */
  close(): Promise<void>
}

/** The reference provider's endpoint paths, the ones `portcullis demo` and the tests see. */
export const PROVIDER_ROUTES = {
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  jwks: '/keys',
  end_session: '/oidc/logout',
  userinfo: '/userinfo',
} as const

/** Resource indicator every access token is issued for, so access tokens are JWTs (`typ: at+jwt`). */
export const DEMO_RESOURCE = 'urn:portcullis:test'

/**
 * Scopes an access token for a resource named by an http(s) URL (RFC 8707 `resource=`, an API or an
 * MCP server behind a bearer route) may carry: those of them the request asks for.
 */
export const DEMO_API_SCOPES: readonly string[] = ['mcp:tools', 'mcp:resources', 'api:read', 'api:write']

// ---------------------------------------------------------------------------------------------------
// The subset of oidc-provider's API this file uses. The package ships no type declarations and
// @types/oidc-provider is not installed, so the shapes are written out here from the v9 sources.
// ---------------------------------------------------------------------------------------------------

interface OidcGrant {
  readonly jti: string
  readonly accountId: string
  readonly clientId: string
  addOIDCScope(scope: string | string[] | Set<string>): void
  addOIDCClaims(claims: string[] | Set<string>): void
  addResourceScope(resource: string, scope: string | string[] | Set<string>): void
  getOIDCScopeEncountered(): string
  getOIDCClaimsEncountered(): string[]
  getResourceScopeEncountered(resource: string): string
  save(): Promise<string>
}

interface OidcGrantModel {
  new (init: { accountId: string; clientId: string }): OidcGrant
  find(id: string): Promise<OidcGrant | undefined>
}

/** What `provider.interactionDetails()` returns (lib/models/interaction.js). */
export interface OidcInteraction {
  readonly uid: string
  readonly prompt: {
    name: string
    reasons: string[]
    details: {
      missingOIDCScope?: string[]
      missingOIDCClaims?: string[]
      missingResourceScopes?: Record<string, string[]>
      login_hint?: string
    }
  }
  readonly params: Record<string, unknown>
  readonly session?: { accountId?: string; uid?: string }
  readonly grantId?: string
  readonly returnTo: string
}

/** What `provider.interactionFinished()` accepts. */
export interface OidcInteractionResult {
  login?: { accountId: string; amr?: string[]; acr?: string; remember?: boolean }
  consent?: { grantId: string }
  error?: string
  error_description?: string
}

/** The OIDC part of a request context (lib/helpers/oidc_context.js). */
interface OidcContext {
  readonly provider: OidcProvider
  readonly route?: string
  readonly body?: Record<string, unknown>
  readonly client?: { readonly clientId: string; readonly redirectUris: string[] }
  readonly account?: { readonly accountId: string }
  readonly session?: { readonly accountId?: string; grantIdFor(clientId: string): string | undefined }
  readonly result?: { consent?: { grantId?: string } }
  readonly requestParamOIDCScopes: Set<string>
  readonly requestParamScopes: Set<string>
  readonly requestParamClaims: Set<string>
  readonly resourceServers: Record<string, { readonly scopes: Set<string> }>
}

/** The Koa context oidc-provider hands to middleware and configuration functions. */
interface ProviderContext {
  readonly req: IncomingMessage
  readonly method: string
  readonly path: string
  readonly host: string
  readonly oidc?: OidcContext
  type: string
  body: unknown
}

type ProviderMiddleware = (ctx: ProviderContext, next: () => Promise<void>) => Promise<void>

/** The oidc-provider `Provider` instance (a Koa application). */
export interface OidcProvider {
  readonly issuer: string
  /** Koa's "trust X-Forwarded-*" switch. */
  proxy: boolean
  readonly Grant: OidcGrantModel
  callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void>
  use(middleware: ProviderMiddleware): OidcProvider
  on(event: string, listener: (...args: unknown[]) => void): OidcProvider
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<OidcInteraction>
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: OidcInteractionResult,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>
}

interface OidcProviderModules {
  Provider: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider
  /** lib/helpers/initialize_keystore.js: (re)builds the signing keystore and the published JWKS. */
  initializeKeystore: (this: OidcProvider, jwks: { keys: JsonWebKey[] }) => void
}

let modules: Promise<OidcProviderModules> | undefined

/**
 * Load oidc-provider once.
 *
 * The package's entry point (`lib/index.js`) prints "Unsupported runtime. Use Node.js v22.x LTS" when
 * `process.release.lts` is older than Jod, i.e. on the Node 20 this project supports (package.json `engines`).
 * That check is the entry point's only code besides re-exports, so we import the `Provider` class
 * from `lib/provider.js` directly and skip it without touching `process`. The package has no
 * `exports` map, so the subpath is importable; the keystore initializer is reached the same way for
 * {@link RunningProvider.rotateSigningKey} (the public API cannot change keys after construction).
 * The specifiers live in variables so TypeScript does not go looking for declarations the package
 * does not ship; the results are typed by the interfaces above.
 */
function loadOidcProvider(): Promise<OidcProviderModules> {
  modules ??= (async () => {
    const providerModule: string = 'oidc-provider/lib/provider.js'
    const keystoreModule: string = 'oidc-provider/lib/helpers/initialize_keystore.js'
    const [providerExports, keystoreExports] = (await Promise.all([import(providerModule), import(keystoreModule)])) as [
      { Provider: OidcProviderModules['Provider'] },
      { default: OidcProviderModules['initializeKeystore'] },
    ]
    return { Provider: providerExports.Provider, initializeKeystore: keystoreExports.default }
  })()
  return modules
}

// ---------------------------------------------------------------------------------------------------
// Keys and storage
// ---------------------------------------------------------------------------------------------------

/** A fresh RS256 signing key as a private JWK with a random `kid` (never the built-in 'keystore-CHANGE-ME'). */
async function newSigningKey(): Promise<JsonWebKey> {
  const { privateKey } = await generateKeyPair('rsa', { modulusLength: 2048 })
  const jwk = privateKey.export({ format: 'jwk' })
  return { ...jwk, kid: randomBytes(12).toString('base64url'), alg: 'RS256', use: 'sig' }
}

type StoredPayload = Record<string, unknown> & { consumed?: number; grantId?: string; uid?: string; userCode?: string }

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
])

/**
 * A per-provider in-memory adapter. oidc-provider's own MemoryAdapter prints a "development-only"
 * warning and shares one module-level store between every provider in the process; this one is
 * quiet and dies with its provider. Same contract as lib/adapters/memory_adapter.js.
 */
function memoryAdapterFactory(): (model: string) => object {
  const entries = new Map<string, { payload: StoredPayload; expiresAt: number }>()
  const index = new Map<string, string>() // sessionUid:<uid> / userCode:<code> → id
  const grants = new Map<string, Set<string>>() // grantId → keys of the tokens issued under it

  const live = (key: string): StoredPayload | undefined => {
    const entry = entries.get(key)
    if (!entry) return undefined
    if (entry.expiresAt <= Date.now()) {
      entries.delete(key)
      return undefined
    }
    return entry.payload
  }

  return (model: string) => {
    const keyFor = (id: string): string => `${model}:${id}`
    return {
      async upsert(id: string, payload: StoredPayload, expiresIn?: number): Promise<void> {
        const key = keyFor(id)
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Number.POSITIVE_INFINITY
        entries.set(key, { payload, expiresAt })
        if (model === 'Session' && typeof payload.uid === 'string') index.set(`sessionUid:${payload.uid}`, id)
        if (typeof payload.userCode === 'string') index.set(`userCode:${payload.userCode}`, id)
        if (GRANTABLE.has(model) && typeof payload.grantId === 'string') {
          let members = grants.get(payload.grantId)
          if (!members) grants.set(payload.grantId, (members = new Set()))
          members.add(key)
        }
      },
      async find(id: string): Promise<StoredPayload | undefined> {
        return live(keyFor(id))
      },
      async findByUid(uid: string): Promise<StoredPayload | undefined> {
        const id = index.get(`sessionUid:${uid}`)
        return id === undefined ? undefined : live(keyFor(id))
      },
      async findByUserCode(userCode: string): Promise<StoredPayload | undefined> {
        const id = index.get(`userCode:${userCode}`)
        return id === undefined ? undefined : live(keyFor(id))
      },
      async consume(id: string): Promise<void> {
        const payload = live(keyFor(id))
        if (payload) payload.consumed = Math.floor(Date.now() / 1000)
      },
      async destroy(id: string): Promise<void> {
        const key = keyFor(id)
        const payload = live(key)
        entries.delete(key)
        if (payload?.grantId) grants.get(payload.grantId)?.delete(key)
      },
      async revokeByGrantId(grantId: string): Promise<void> {
        for (const key of grants.get(grantId) ?? []) entries.delete(key)
        grants.delete(grantId)
      },
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------------

const PAGE_STYLE = `body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b00020}`

function page(title: string, body: string): string {
  return htmlPage(title, PAGE_STYLE, body)
}

function loginPage(opts: { uid: string; clientId: string; login: string; error?: string }): string {
  const error = opts.error ? `<p class="error" role="alert">${escapeHtml(opts.error)}</p>\n` : ''
  return page(
    'Sign in - Portcullis demo provider',
    `<h1>Sign in</h1>
<p>to continue to <strong>${escapeHtml(opts.clientId)}</strong></p>
${error}<form method="post" action="/interaction/${encodeURIComponent(opts.uid)}">
<label for="login">Email</label>
<input id="login" name="login" type="text" autocomplete="username" autofocus value="${escapeHtml(opts.login)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<label for="otp">One-time code (if you have one)</label>
<input id="otp" name="otp" type="text" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${encodeURIComponent(opts.uid)}/abort">
<button type="submit">Cancel</button>
</form>`,
  )
}

// ---------------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------------

/** Constant-time string comparison (hashing first so unequal lengths take the same path). */
function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return timingSafeEqual(ha, hb)
}

function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        reject(new Error('request body too large'))
        req.destroy()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

/** Make sure `grant` covers everything the authorization request asks for; true when it changed. */
function coverRequest(grant: OidcGrant, oidc: OidcContext): boolean {
  let changed = false
  const scopes = new Set(grant.getOIDCScopeEncountered().split(' '))
  const missingScopes = [...oidc.requestParamOIDCScopes].filter((s) => !scopes.has(s))
  if (missingScopes.length) {
    grant.addOIDCScope(missingScopes)
    changed = true
  }
  const claims = new Set(grant.getOIDCClaimsEncountered())
  const missingClaims = [...oidc.requestParamClaims].filter((c) => !claims.has(c))
  if (missingClaims.length) {
    grant.addOIDCClaims(missingClaims)
    changed = true
  }
  for (const [indicator, server] of Object.entries(oidc.resourceServers)) {
    const granted = new Set(grant.getResourceScopeEncountered(indicator).split(' '))
    const missing = [...oidc.requestParamScopes].filter((s) => server.scopes.has(s) && !granted.has(s))
    if (missing.length) {
      grant.addResourceScope(indicator, missing)
      changed = true
    }
  }
  return changed
}

function errorText(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { error?: unknown; error_description?: unknown; message?: unknown }
    if (typeof e.error === 'string') {
      return typeof e.error_description === 'string' ? `${e.error}: ${e.error_description}` : e.error
    }
    if (typeof e.message === 'string') return e.message
  }
  return String(err)
}

/**
 * Start the demo provider on `host:port` and resolve once it listens.
 *
 * Consent is granted automatically: every registered client is first-party here, so the grant for
 * the signed-in user is created (or widened) in `loadExistingGrant` with exactly the scopes, claims
 * and resource scopes the request asks for — the oidc-provider recipe "skip consent for first-party
 * clients". A `prompt=consent` request still reaches the interaction endpoint, which then grants and
 * finishes without showing anything.
 */
export async function startProvider(opts: ProviderOptions): Promise<RunningProvider> {
  const { Provider, initializeKeystore } = await loadOidcProvider()
  const host = opts.host ?? '127.0.0.1'
  const users = opts.users ?? DEMO_USERS
  const accessTokenTtl = opts.accessTokenTtl ?? 300
  const idTokenTtl = opts.idTokenTtl ?? 300
  const refreshTokenTtl = opts.refreshTokenTtl ?? 86400
  const sessionTtl = opts.sessionTtl ?? 86400
  const log = opts.logger ?? ((): void => {})

  const usersById = new Map(users.map((u) => [u.id, u]))
  const findUser = (login: string): DemoUser | undefined => {
    const wanted = login.trim().toLowerCase()
    return users.find((u) => u.email.toLowerCase() === wanted || u.preferredUsername.toLowerCase() === wanted)
  }
  const userClaims = (u: DemoUser): Record<string, unknown> => ({
    sub: u.id,
    email: u.email,
    email_verified: u.emailVerified ?? true,
    name: u.name,
    preferred_username: u.preferredUsername,
    groups: [...u.groups],
    ...(u.roles === undefined ? {} : { roles: [...u.roles] }),
    ...(u.orgId === undefined ? {} : { org_id: u.orgId }),
  })

  // The server must listen before the provider exists (with port 0 the issuer carries the port it
  // got), so requests that arrive meanwhile wait here until the handler is attached, instead of
  // hanging forever (a relying party retrying discovery would otherwise time out).
  const server = http.createServer()
  let handle: ((req: IncomingMessage, res: ServerResponse) => void) | null = null
  const early: Array<[IncomingMessage, ServerResponse]> = []
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (handle === null) early.push([req, res])
    else handle(req, res)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const issuer = `http://${hostForUrl(host)}:${port}`

  let keys: JsonWebKey[] = [await newSigningKey()]

  const configuration: Record<string, unknown> = {
    routes: { ...PROVIDER_ROUTES },
    jwks: { keys },
    adapter: memoryAdapterFactory(),
    clients: opts.clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      redirect_uris: c.redirectUris,
      post_logout_redirect_uris: c.postLogoutRedirectUris ?? [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: c.tokenEndpointAuthMethod ?? 'client_secret_basic',
      // auth_time in every ID token, as the reference provider sends it (maxAuthAge needs it).
      require_auth_time: true,
      ...(c.backchannelLogoutUri
        ? { backchannel_logout_uri: c.backchannelLogoutUri, backchannel_logout_session_required: true }
        : {}),
    })),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: {
      // acr and amr in every ID token, as the reference provider sends them (the step-up checks read
      // them). oidc-provider puts them in only when asked for (acr_values, the claims parameter) unless
      // a scope lists them.
      openid: ['sub', 'acr', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups', 'roles', 'org_id'],
    },
    acrValues: [ACR_PASSWORD, ACR_MFA],
    // Put the scope-granted claims into the ID token itself, as the reference provider does.
    conformIdTokenClaims: false,
    extraParams: ['organization_id', 'connection_id', 'domain_hint', 'login_hint', 'provider'],
    pkce: { required: () => true },
    issueRefreshToken: async () => true,
    rotateRefreshToken: true,
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: idTokenTtl,
      RefreshToken: refreshTokenTtl,
      Session: sessionTtl,
      Grant: sessionTtl,
      Interaction: 600,
    },
    async findAccount(_ctx: unknown, sub: string) {
      const user = usersById.get(sub)
      if (!user) return undefined
      return { accountId: user.id, claims: async () => userClaims(user) }
    },
    // Identity claims in the JWT access token too, so the bearer path sees the same identity.
    async extraTokenClaims(_ctx: unknown, token: { kind?: string; accountId?: string }) {
      if (token.kind !== 'AccessToken' || !token.accountId) return undefined
      const user = usersById.get(token.accountId)
      if (!user) return undefined
      const { sub: _sub, ...claims } = userClaims(user)
      return claims
    },
    async loadExistingGrant(ctx: ProviderContext) {
      const oidc = ctx.oidc
      const accountId = oidc?.account?.accountId ?? oidc?.session?.accountId
      const clientId = oidc?.client?.clientId
      if (!oidc || !accountId || !clientId) return undefined
      const grantId = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(clientId)
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined
      if (grant && (grant.accountId !== accountId || grant.clientId !== clientId)) grant = undefined
      const isNew = !grant
      grant ??= new oidc.provider.Grant({ accountId, clientId })
      if (coverRequest(grant, oidc) || isNew) await grant.save()
      return grant
    },
    interactions: { url: async (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    clientBasedCORS(_ctx: unknown, origin: string, client: { redirectUris: string[] }) {
      return client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin)
    },
    async renderError(ctx: ProviderContext, out: Record<string, string>) {
      ctx.type = 'html'
      ctx.body = page(
        'Sign-in error - Portcullis demo provider',
        `<h1>Something went wrong</h1>\n${Object.entries(out)
          .map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(String(v))}</p>`)
          .join('\n')}`,
      )
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // One plain form with the submit button inside it, so an HTTP client and a browser post the same thing.
        async logoutSource(ctx: ProviderContext, form: string) {
          const withButton = form.replace(
            '</form>',
            '<button type="submit" name="logout" value="yes">Yes, sign me out</button></form>',
          )
          ctx.type = 'html'
          ctx.body = page('Sign out - Portcullis demo provider', `<h1>Sign out of ${escapeHtml(ctx.host)}?</h1>\n${withButton}`)
        },
        async postLogoutSuccessSource(ctx: ProviderContext) {
          ctx.type = 'html'
          ctx.body = page('Signed out - Portcullis demo provider', '<h1>You are signed out</h1>')
        },
      },
      backchannelLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => DEMO_RESOURCE,
        useGrantedResource: async () => true,
        // The default resource: tokens for the client itself (aud = client id). A resource named by an
        // http(s) URL: tokens for that resource (aud = the URL), with the API scopes asked for.
        getResourceServerInfo: async (_ctx: unknown, indicator: string, client: { clientId: string }) => {
          const api = indicator !== DEMO_RESOURCE && /^https?:\/\//i.test(indicator)
          return {
            scope: api ? DEMO_API_SCOPES.join(' ') : 'openid offline_access',
            audience: api ? indicator : client.clientId,
            accessTokenFormat: 'jwt',
            accessTokenTTL: accessTokenTtl,
            jwt: { sign: { alg: 'RS256' } },
          }
        },
      },
    },
    ...(opts.allowLoopbackFetch
      ? {
          // Drop the SSRF-guarding dispatcher oidc-provider passes, so logout tokens reach 127.0.0.1.
          fetch: (url: string | URL, { dispatcher: _dispatcher, ...init }: RequestInit & { dispatcher?: unknown }) =>
            fetch(url, init),
        }
      : {}),
  }

  const provider = new Provider(issuer, configuration)
  provider.proxy = false

  const requests: ProviderRequestRecord[] = []
  const authorizations: Array<Record<string, string>> = []
  const recordOf = new WeakMap<IncomingMessage, ProviderRequestRecord>()

  // Runs before oidc-provider's router; after it, the parsed body tells the grant type.
  provider.use(async (ctx, next) => {
    try {
      await next()
    } finally {
      const record = recordOf.get(ctx.req)
      if (record && ctx.method === 'POST' && ctx.path === PROVIDER_ROUTES.token) {
        const grantType = ctx.oidc?.body?.grant_type
        if (typeof grantType === 'string') record.grantType = grantType
      }
      if (ctx.method === 'POST' && ctx.path === PROVIDER_ROUTES.authorization) {
        const body = ctx.oidc?.body ?? {}
        authorizations.push(
          Object.fromEntries(Object.entries(body).filter((e): e is [string, string] => typeof e[1] === 'string')),
        )
      }
    }
  })

  // A listener on 'error' also stops Koa's default onerror from printing to stderr.
  provider.on('error', (err) => log(`provider error: ${errorText(err)}`))
  for (const event of [
    'server_error',
    'authorization.error',
    'grant.error',
    'end_session.error',
    'userinfo.error',
    'backchannel.error',
  ]) {
    provider.on(event, (_ctx, err) => log(`${event}: ${errorText(err)}`))
  }
  provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
    const clientId = (client as { clientId?: string } | undefined)?.clientId
    log(`backchannel.success: client=${String(clientId)} sub=${String(accountId)} sid=${String(sid)}`)
  })

  const handleInteraction = async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    const details = await provider.interactionDetails(req, res)
    const clientId = typeof details.params.client_id === 'string' ? details.params.client_id : ''

    if (path === `/interaction/${encodeURIComponent(details.uid)}/abort`) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST' }).end()
        return
      }
      // The user cancelled: the client gets error=access_denied at its callback, as from a real provider.
      log(`login cancelled (client ${clientId})`)
      await provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'The user cancelled the sign-in.' },
        { mergeWithLastSubmission: false },
      )
      return
    }

    if (details.prompt.name === 'consent') {
      // Reached only when the request itself says prompt=consent: grant what is asked and move on.
      const accountId = details.session?.accountId
      if (!accountId) throw new Error('consent without a signed-in user')
      let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined
      grant ??= new provider.Grant({ accountId, clientId })
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details
      if (missingOIDCScope?.length) grant.addOIDCScope(missingOIDCScope)
      if (missingOIDCClaims?.length) grant.addOIDCClaims(missingOIDCClaims)
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes)
      }
      const grantId = await grant.save()
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true })
      return
    }

    if (details.prompt.name !== 'login') {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(`unsupported prompt ${details.prompt.name}`)
      return
    }

    const hint = typeof details.params.login_hint === 'string' ? details.params.login_hint : ''
    const send = (html: string): void => {
      res
        .writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
        .end(html)
    }

    if (req.method === 'GET' || req.method === 'HEAD') {
      send(loginPage({ uid: details.uid, clientId, login: hint }))
      return
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'GET, POST' }).end()
      return
    }

    const form = new URLSearchParams(await readBody(req))
    const login = form.get('login') ?? ''
    const password = form.get('password') ?? ''
    const user = findUser(login)
    // Compare even when the user is unknown, so both failures take the same time.
    const ok = sameSecret(password, user?.password ?? randomBytes(16).toString('hex')) && user !== undefined
    if (!ok || !user) {
      log(`login failed for ${JSON.stringify(login)}`)
      send(loginPage({ uid: details.uid, clientId, login, error: 'Invalid email or password.' }))
      return
    }
    // A second factor: the user's one-time code, when given. A wrong one fails the login.
    const otp = form.get('otp') ?? ''
    if (otp !== '' && !(user.otp !== undefined && sameSecret(otp, user.otp))) {
      log(`one-time code refused for ${user.id}`)
      send(loginPage({ uid: details.uid, clientId, login, error: 'Invalid one-time code.' }))
      return
    }
    const mfa = otp !== ''
    log(`login ok: ${user.id}${mfa ? ' (with one-time code)' : ''}`)
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.id, amr: mfa ? ['pwd', 'otp'] : ['pwd'], acr: mfa ? ACR_MFA : ACR_PASSWORD } },
      { mergeWithLastSubmission: false },
    )
  }

  const oidcCallback = provider.callback()
  handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', issuer)
    const record: ProviderRequestRecord = { method: req.method ?? 'GET', path: url.pathname }
    requests.push(record)
    recordOf.set(req, record)
    if (opts.logger) res.on('finish', () => log(`${record.method} ${record.path} -> ${res.statusCode}`))

    if (url.pathname === PROVIDER_ROUTES.authorization && req.method === 'GET') {
      authorizations.push(Object.fromEntries(url.searchParams))
    }

    if (url.pathname.startsWith('/interaction/')) {
      handleInteraction(req, res, url.pathname).catch((err: unknown) => {
        log(`interaction error: ${errorText(err)}`)
        if (res.headersSent) {
          res.destroy()
          return
        }
        const status = (err as { statusCode?: unknown } | null)?.statusCode
        res
          .writeHead(typeof status === 'number' && status >= 400 && status < 600 ? status : 500, {
            'content-type': 'text/html; charset=utf-8',
          })
          .end(page('Sign-in error - Portcullis demo provider', `<h1>Sign-in error</h1>\n<p>${escapeHtml(errorText(err))}</p>`))
      })
      return
    }
    void oidcCallback(req, res)
  }
  for (const [req, res] of early.splice(0)) handle(req, res)

  return {
    issuer,
    port,
    provider,
    requests,
    authorizations,
    async rotateSigningKey() {
      keys = [await newSigningKey(), ...keys]
      initializeKeystore.call(provider, { keys })
    },
    close() {
      // Closing twice (a test stops the provider to simulate an outage, then its teardown) is fine.
      if (!server.listening) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()))
        server.closeAllConnections()
      })
    },
  }
}
