import { z } from 'zod'
import { parseDuration } from './duration.ts'

/**
 * The configuration contract as one zod schema: keys, types, defaults and a description per
 * key. `z.strictObject` everywhere so a misspelled key is an error, not a silent default. Durations are
 * strings (`30s`) in the file and milliseconds after parsing. Cross-field rules live in `validate.ts`.
 */

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text)
      if (ms === null) {
        ctx.addIssue({ code: 'custom', message: `invalid duration "${text}": use a whole number and a unit, e.g. 30s, 5m, 12h` })
        return z.NEVER
      }
      return ms
    })

const httpUrl = (what: string) =>
  z.string().refine(
    (text) => {
      try {
        const u = new URL(text)
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== ''
      } catch {
        return false
      }
    },
    { message: `${what} must be an absolute http(s) URL` },
  )

const secret = z.string().refine((s) => Buffer.byteLength(s, 'utf8') >= 32, {
  message: 'must be at least 32 bytes (generate one with: openssl rand -base64 32)',
})

/** Header names as RFC 9110 tokens. */
const headerName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a valid HTTP header name')

/** An `identity.stripHeaders` entry: a header name, or a prefix ending in `-` or `*`. */
const stripEntry = z.string().regex(/^[A-Za-z0-9!#$%&'+.^_`|~-]+\*?$/, 'must be a header name, or a prefix ending in "-" or "*" (e.g. X-Pomerium-)')

/** The hint parameters a caller of `/oauth2/start` may pass through to the provider. */
export const HINT_PARAMS = ['organization_id', 'connection_id', 'domain_hint', 'login_hint', 'provider', 'prompt'] as const

/** Asymmetric JWS algorithms we accept for ID tokens. Never `none`, never HMAC (a public key must never serve as an HMAC secret). */
export const SIGNING_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const

/** The identity headers injected by default, header → claim. */
export const DEFAULT_IDENTITY_HEADERS: Readonly<Record<string, string>> = {
  'X-Auth-Request-User': 'sub',
  'X-Auth-Request-Email': 'email',
  'X-Auth-Request-Groups': 'groups',
  'X-Auth-Request-Preferred-Username': 'preferred_username',
  'X-Forwarded-User': 'sub',
  'X-Forwarded-Email': 'email',
  'X-Forwarded-Groups': 'groups',
  'X-Forwarded-Preferred-Username': 'preferred_username',
}


/** A duration that may be left empty (`""`: none); 0 after parsing means none. */
const optionalDuration = z
  .string()
  .default('')
  .transform((text, ctx) => {
    if (text === '') return 0
    const ms = parseDuration(text)
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `invalid duration "${text}": use a whole number and a unit, e.g. 30s, 5m, 12h` })
      return z.NEVER
    }
    return ms
  })

/** A plain JSON scalar a claim is compared with. */
const claimScalar = z.union([z.string(), z.number(), z.boolean()])

/**
 * One claim matcher: `{ equals: v }`, `{ anyOf: [v, ...] }` or `{ regex: "..." }` (the whole value must
 * match); a bare scalar is `{ equals: scalar }`. An array claim matches when one of its elements does.
 */
const claimMatcher = z.preprocess(
  (v) => (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? { equals: v } : v),
  z
    .strictObject({
      equals: claimScalar.optional(),
      anyOf: z.array(claimScalar).min(1).optional(),
      regex: z
        .string()
        .min(1)
        .refine(
          (text) => {
            try {
              new RegExp(text, 'u')
              return true
            } catch {
              return false
            }
          },
          { message: 'is not a valid regular expression' },
        )
        .optional(),
    })
    .refine((m) => [m.equals, m.anyOf, m.regex].filter((x) => x !== undefined).length === 1, {
      message: 'must have exactly one of equals, anyOf or regex (or be a plain value: equals)',
    }),
)

/** An e-mail address: one `@`, something on both sides, no spaces. */
const emailAddress = z.string().regex(/^[^@\s]+@[^@\s]+$/, 'must be an e-mail address with exactly one "@"')
/**
 * A `provider.allowInsecureHttpHosts` entry: one DNS host name, matched exactly (case-insensitively).
 * No scheme, port, path, wildcard or leading dot, and no IP address: the list names the provider of a
 * local stack (a compose service or its alias), never a network range.
 */
const insecureHttpHost = z
  .string()
  .regex(
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
    'must be a host name such as id.localtest.me (no scheme, port, path, "*" or leading ".")',
  )
  .refine((host) => !/^[0-9.]+$/.test(host), { message: 'must be a host name, not an IP address' })

/** An e-mail domain: `example.com`, no `@`, no wildcard. */
const emailDomain = z.string().regex(/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/, 'must be a domain such as example.com (no "@", no "*")')

/**
 * Who may use a route (`routes[].allow`, `access.defaultAllow`). Every condition that is given must
 * hold; a list holds when the user has one of its entries; `any` holds when one of its rules does.
 */
interface AllowRuleShape<Matcher, Self> {
  emails?: string[] | undefined
  domains?: string[] | undefined
  unverifiedEmail?: boolean | undefined
  groups?: string[] | undefined
  roles?: string[] | undefined
  organizations?: string[] | undefined
  claims?: Record<string, Matcher> | undefined
  any?: Self[] | undefined
}
/** An allow rule as written in the file (recursive through `any`: zod needs the type spelled out). */
export interface AllowRuleInput extends AllowRuleShape<unknown, AllowRuleInput> {}
/** An allow rule after parsing (claim matchers normalized). */
export interface AllowRule extends AllowRuleShape<ClaimMatcher, AllowRule> {}
export interface ClaimMatcher {
  equals?: string | number | boolean | undefined
  anyOf?: (string | number | boolean)[] | undefined
  regex?: string | undefined
}

export const allowRule: z.ZodType<AllowRule, AllowRuleInput> = z.lazy(() =>
  z.strictObject({
    emails: z.array(emailAddress).optional().describe('E-mail addresses, compared case-insensitively'),
    domains: z.array(emailDomain).optional().describe('E-mail domains (the part after "@"); need email_verified unless unverifiedEmail'),
    unverifiedEmail: z.boolean().optional().describe('Let emails and domains match an e-mail the provider did not verify (default false; nested rules inherit it)'),
    groups: z.array(z.string().min(1)).optional(),
    roles: z.array(z.string().min(1)).optional(),
    organizations: z.array(z.string().min(1)).optional(),
    claims: z.record(z.string().min(1), claimMatcher).optional(),
    any: z.array(allowRule).min(1).optional().describe('Alternatives: one of these rules must hold'),
  }),
)

/** Step-up requirements of a route (`routes[].require`). */
const requirement = z.strictObject({
  mfa: z.boolean().default(false).describe('The login must have used a second factor (an access.mfaAmrValues entry in amr)'),
  acr: z.array(z.string().min(1)).default([]).describe('The login\'s acr must be one of these; they are sent as acr_values'),
  maxAuthAge: optionalDuration.describe('The login must be at most this old (auth_time); sent as max_age'),
})

const access = z.strictObject({
  defaultAllow: allowRule.optional().describe('The allow rule of routes that have none; unset: every signed-in user'),
  groupsClaim: z.string().min(1).default('groups'),
  rolesClaim: z.string().min(1).default('roles'),
  organizationClaim: z.string().min(1).default('org_id'),
  mfaAmrValues: z.array(z.string().min(1)).min(1).default(['mfa', 'otp', 'hwk']).describe('amr values that count as a second factor'),
  mfaAcrValues: z.array(z.string().min(1)).default([]).describe("acr_values sent when a route requires MFA (the provider's name for an MFA login, if it has one)"),
})

const server = z.strictObject({
  listen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:4180')
    .default('0.0.0.0:4180')
    .describe('Address and port to listen on'),
  publicUrl: httpUrl('server.publicUrl').describe('The URL users reach Portcullis at; the redirect_uri is built from it'),
  authPrefix: z
    .string()
    .regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, 'must start with "/" and not end with "/", e.g. /oauth2')
    .default('/oauth2')
    .describe('Path prefix of the login, callback, sign-out and check endpoints'),
  trustedProxies: z.array(z.string()).default([]).describe('CIDRs whose X-Forwarded-* headers are believed; empty = none'),
  upstreamTimeout: duration('30s').describe('How long an upstream may take to send response headers, or pause while sending the body'),
  shutdownTimeout: duration('20s').describe('On SIGTERM, how long requests in flight may take to finish before their connections are cut'),
  allowUnderscoreHeaders: z
    .boolean()
    .default(false)
    .describe('Keep client headers whose name contains "_" (dropped by default, as nginx does: CGI/PHP/WSGI read X_Forwarded_For as X-Forwarded-For)'),
  allowDoubleEncoding: z
    .boolean()
    .default(false)
    .describe('Accept paths that still hold a percent-escape after decoding (/a/%252e: refused with 400 by default)'),
  debug: z
    .boolean()
    .default(false)
    .describe('Serve {prefix}/debug?url= (the pipeline\'s explanation of that request, with the caller\'s session) to loopback peers and server.trustedProxies; others get 404'),
  workers: z
    .union([z.number().int().min(1).max(64), z.literal('auto')])
    .default(1)
    .describe('Processes serving server.listen (node:cluster); auto = one per available core. More than 1 needs session.redis'),
  tls: z
    .strictObject({
      cert: z.string().default('').describe('PEM certificate chain (or certFile); with key, the listener serves HTTPS'),
      key: z.string().default('').describe('PEM private key (or keyFile)'),
    })
    .prefault({})
    .describe('Serve HTTPS directly (deployments without a terminating ingress); re-read on SIGHUP'),
})

const endpoints = z.strictObject({
  authorization: httpUrl('provider.endpoints.authorization').optional(),
  token: httpUrl('provider.endpoints.token').optional(),
  jwks: httpUrl('provider.endpoints.jwks').optional(),
  endSession: httpUrl('provider.endpoints.endSession').optional(),
  userinfo: httpUrl('provider.endpoints.userinfo').optional(),
})

const provider = z.strictObject({
  issuer: httpUrl('provider.issuer').describe('Issuer URL; discovery at /.well-known/openid-configuration'),
  discovery: z.boolean().default(true).describe('Fetch discovery; false = use provider.endpoints only'),
  clientId: z.string().min(1).describe('OAuth client id'),
  clientSecret: z.string().min(1).describe('OAuth client secret (or clientSecretFile)'),
  scopes: z.array(z.string().min(1)).default(['openid', 'profile', 'email', 'offline_access']),
  tokenEndpointAuthMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
  idTokenSignedResponseAlg: z.enum(SIGNING_ALGS).default('RS256').describe('Algorithm the provider signs ID tokens with'),
  audience: z.string().default('').describe('Audience JWT access tokens must carry; empty = clientId'),
  accessTokenType: z
    .enum(['auto', 'jwt', 'opaque'])
    .default('auto')
    .describe('auto: verify access tokens that are JWTs; jwt: always verify; opaque: never (use expires_in)'),
  endpoints: endpoints.default({}),
  authorizeParams: z.record(z.string(), z.string()).default({}),
  hintParams: z.array(z.enum(HINT_PARAMS)).default([...HINT_PARAMS]),
  clockSkew: duration('30s'),
  timeout: duration('10s').describe('Timeout of each request to the provider'),
  allowInsecureHttp: z.boolean().default(false).describe('Allow an http:// issuer; only on loopback'),
  allowInsecureHttpHosts: z
    .array(insecureHttpHost)
    .default([])
    .describe('Host names besides loopback on which allowInsecureHttp accepts plain http (local container stacks)'),
  extraIssuers: z
    .array(
      z.preprocess(
        (v) => (typeof v === 'string' ? { issuer: v } : v),
        z.strictObject({
          issuer: httpUrl('provider.extraIssuers[].issuer'),
          jwksUri: httpUrl('provider.extraIssuers[].jwksUri').optional().describe('Its JWKS; unset: from its discovery document'),
        }),
      ),
    )
    .default([])
    .describe('More issuers whose JWT bearer tokens bearer routes accept (same audience, scope and allow rules)'),
  domainRouting: z
    .record(
      emailDomain,
      z
        .strictObject({ organization_id: z.string().min(1).optional(), connection_id: z.string().min(1).optional() })
        .refine((v) => v.organization_id !== undefined || v.connection_id !== undefined, { message: 'must set organization_id or connection_id' }),
    )
    .default({})
    .describe('E-mail domain → organization_id / connection_id sent when a login comes with that login_hint'),
  socialProviders: z
    .array(z.string().regex(/^[a-z0-9_-]{1,32}$/, 'must be a provider name such as google, microsoft or github'))
    .default([])
    .describe('Buttons on the sign-in page, each a login with provider=<name>'),
  signInPage: z.boolean().default(false).describe('Send users without a session to {prefix}/sign_in (asks for an e-mail) instead of straight to the provider'),
})

/** `host:port` of a Redis node (Sentinel or Cluster seed). */
const redisNode = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. redis-0.redis:6379')

/**
 * `session.redis`: where replicas share state (sessions of `store: redis`; revocations, back-channel
 * jti replay cache, the refresh lock and refresh results for every store). Configured when `url`,
 * `sentinel.nodes` or `cluster.nodes` is set; exactly one of the three.
 */
const redis = z.strictObject({
  url: z
    .string()
    .default('')
    .refine((text) => text === '' || /^rediss?:\/\/[^\s]+$/.test(text), { message: 'must be a redis:// or rediss:// URL, e.g. redis://redis:6379/0' })
    .describe('Standalone Redis: redis://[user@]host:port[/db]; rediss:// for TLS'),
  sentinel: z
    .strictObject({
      masterName: z.string().default('').describe('The master set name the Sentinels watch'),
      nodes: z.array(redisNode).default([]).describe('Sentinels, host:port'),
      password: z.string().default('').describe('Password of the Sentinels themselves (or passwordFile); empty: none'),
    })
    .prefault({}),
  cluster: z
    .strictObject({ nodes: z.array(redisNode).default([]).describe('Seed nodes of a Redis Cluster, host:port') })
    .prefault({}),
  username: z.string().default('').describe('ACL user name; empty: default'),
  password: z.string().default('').describe('Password (or passwordFile); empty: none'),
  db: z.number().int().min(0).max(15).default(0).describe('Database number (standalone and Sentinel)'),
  tls: z
    .strictObject({
      enabled: z.boolean().default(false).describe('Connect with TLS (implied by rediss://)'),
      ca: z.string().default('').describe('PEM CA bundle to trust (or caFile); empty: the system roots'),
      cert: z.string().default('').describe('PEM client certificate for mutual TLS (or certFile)'),
      key: z.string().default('').describe('PEM client key (or keyFile)'),
      servername: z.string().default('').describe('SNI and certificate name to check; empty: the host connected to'),
    })
    .prefault({}),
  keyPrefix: z.string().regex(/^[A-Za-z0-9:._-]{1,64}$/, 'must be 1-64 letters, digits or ":._-"').default('portcullis:'),
  connectTimeout: duration('5s').describe('How long connecting may take'),
  commandTimeout: duration('2s').describe('How long one command may take before the request gets a 503'),
})

const session = z.strictObject({
  store: z
    .enum(['cookie', 'memory', 'redis'])
    .default('cookie')
    .describe('Session store: cookie (stateless), memory (server-side, one instance) or redis (server-side, shared by replicas)'),
  memoryMaxSessions: z.number().int().min(100).max(10_000_000).default(100_000).describe('Sessions the memory store keeps at most'),
  cookieName: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"')
    .default('_portcullis'),
  cookieDomain: z.string().default(''),
  secrets: z.array(secret).min(1, 'at least one secret is required'),
  maxAge: duration('12h'),
  idleTimeout: duration('2h'),
  refreshAhead: duration('30s'),
  loginTimeout: duration('10m').describe('How long a started login may take'),
  postLogoutRedirect: z.string().default('').describe('post_logout_redirect_uri sent to the provider at sign-out; empty = the validated rd, else publicUrl'),
  maxPendingLogins: z.number().int().min(1).max(20).default(5).describe('Login transactions kept at once (tabs)'),
  redis: redis.prefault({}),
})

export const routeSchema = z.strictObject({
  match: z
    .strictObject({
      host: z.string().default(''),
      pathPrefix: z.string().regex(/^\//, 'must start with "/"').default('/'),
      caseInsensitive: z
        .boolean()
        .default(false)
        .describe('Match the prefix case-insensitively, ignoring trailing dots and spaces in segments (for upstreams such as IIS that do the same)'),
    })
    .default({ host: '', pathPrefix: '/', caseInsensitive: false }),
  upstream: httpUrl('routes[].upstream'),
  public: z.boolean().default(false),
  passClientAuthorization: z
    .boolean()
    .default(false)
    .describe("Forward the client's own Authorization header on this (non-public) route, for apps that check credentials of their own"),
  allow: allowRule.optional().describe('Who may use this route; unset: access.defaultAllow'),
  require: requirement.prefault({}),
  loginParams: z.record(z.string().min(1), z.string()).default({}).describe('Extra authorize parameters of logins that start on this route (e.g. organization_id)'),
  bearer: z.boolean().default(false).describe('Accept Authorization: Bearer <JWT> (API clients)'),
  audience: z.string().default('').describe('Audience bearer tokens must carry; empty = resource if set, else provider.clientId'),
  requiredScopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be an OAuth scope token')).default([]),
  resource: httpUrl('routes[].resource').optional().describe('RFC 9728 resource identifier: serves its protected-resource metadata; tokens must have it in aud'),
  allowPreflight: z.boolean().default(false).describe('Forward CORS preflights (OPTIONS with Origin and Access-Control-Request-Method) without a session, and without identity'),
})

const identity = z.strictObject({
  headers: z.record(headerName, z.string().min(1)).default({ ...DEFAULT_IDENTITY_HEADERS }),
  stripHeaders: z
    .array(stripEntry)
    .default([])
    .describe('More client headers to strip on every route: names, or prefixes ending in "-" or "*" (X-Pomerium-)'),
  passAccessToken: z.boolean().default(false).describe('Send X-Auth-Request-Access-Token upstream'),
  passAuthorizationHeader: z.boolean().default(false).describe('Send Authorization: Bearer <access token> upstream'),
  assertion: z
    .strictObject({
      enabled: z.boolean().default(false).describe('Send a signed JWT of the identity upstream in X-Portcullis-Assertion'),
      signingKey: z.string().default('').describe('ES256 private key (PKCS#8 PEM or JWK JSON), or signingKeyFile; empty: a new key at each start'),
      ttl: duration('60s').describe('Lifetime of each assertion'),
    })
    .prefault({}),
})

/** One endpoint's rate limit: at most `max` requests per client address in each `window`. */
const rateLimit = (max: number) =>
  z
    .strictObject({
      max: z.number().int().min(1).max(1_000_000).default(max),
      window: duration('1m').refine((ms) => ms >= 1000, 'must be at least 1s'),
    })
    .prefault({})

export const configSchema = z.strictObject({
  server,
  provider,
  session,
  redirects: z.strictObject({ allowedDomains: z.array(z.string().min(1)).default([]) }).default({ allowedDomains: [] }),
  routes: z.array(routeSchema).min(1, 'at least one route is required'),
  identity: identity.prefault({}),
  access: access.prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      requests: z.boolean().default(true).describe('One access-log line per request (false: only failed requests, 5xx)'),
    })
    .default({ level: 'info', requests: true }),
  metrics: z
    .strictObject({
      listen: z
        .string()
        .regex(/^$|^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:9180, or "" (off)')
        .default('')
        .describe('Serve GET /metrics (Prometheus) on this address, apart from the proxy; "" = off'),
    })
    .prefault({}),
  rateLimits: z
    .strictObject({
      enabled: z.boolean().default(true).describe('Limit login starts, callbacks and back-channel logouts per client address'),
      start: rateLimit(60),
      callback: rateLimit(60),
      backchannelLogout: rateLimit(600),
    })
    .prefault({})
    .describe('Requests per client address (after server.trustedProxies) and window; over it: 429 with Retry-After. Shared through session.redis when configured'),
})

export type ConfigInput = z.input<typeof configSchema>
export type ParsedConfig = z.output<typeof configSchema>
