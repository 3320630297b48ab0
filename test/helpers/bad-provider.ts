/**
 * A tiny, deliberately misbehaving OpenID Provider on `node:http` + `jose`, for the negative protocol
 * cases a real provider (oidc-provider) will never produce: forged or mis-signed ID tokens, wrong
 * claims, a callback without (or with a wrong) RFC 9207 `iss`, broken token responses, and a discovery
 * document that names another issuer.
 *
 * It is a complete provider for one client when `defect` is `'none'` (a test proves a login succeeds
 * against it, so every negative test is meaningful): discovery, a JWKS with a freshly generated RS256
 * key, an authorize endpoint that answers at once with a 302 to the redirect URI (no login form), and
 * a token endpoint that checks client authentication (`client_secret_basic` with the RFC 6749 §2.3.1
 * form-encoding, or `client_secret_post`), the redirect URI, single use of the code, and PKCE (S256).
 * Exactly one thing goes wrong per defect; everything else stays correct.
 *
 * The token endpoint also serves the `refresh_token` grant: refresh tokens rotate (each is single use;
 * a replayed one gets `invalid_grant`), the response carries a new ID token without a nonce, and the
 * defects apply to it as well (ID-token and token-endpoint defects alike; a 5xx leaves the refresh token
 * unused, as a crashing server would). `sub-changes-on-refresh` (a {@link RefreshDefect}) makes the
 * refreshed ID token name another subject.
 *
 * `signLogoutToken()` signs arbitrary claims with the provider's key, an unknown key or none, for the
 * Back-Channel Logout cases (tests post those tokens to Portcullis themselves); the `sid` option puts a
 * per-login `sid` in the ID tokens, and `endSessionEndpoint: false` drops it from discovery.

 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose'

/** What goes wrong. `none` behaves correctly. */
export type Defect =
  | 'none'
  // ID token: signature and algorithm
  | 'alg-none' // `alg: none`, no signature
  | 'bad-signature' // RS256 with a signature that does not verify
  | 'unknown-kid' // signed by an RSA key that is not in the JWKS
  | 'hs256-with-public-key' // HS256 keyed with the PEM of the RSA public key (algorithm confusion)
  // ID token: claims
  | 'wrong-iss'
  | 'wrong-aud'
  | 'azp-mismatch' // aud has two entries (ours first), azp names the other client
  | 'nonce-mismatch'
  | 'missing-nonce'
  | 'expired-id-token' // exp half an hour ago
  | 'iat-future' // iat one hour ahead
  // Authorization response (RFC 9207)
  | 'missing-iss-param' // the callback has no `iss` while discovery advertises support
  | 'wrong-iss-param' // the callback's `iss` names another issuer
  // Token endpoint
  | 'token-500' // 500 with an HTML body (a crashing server)
  | 'token-500-json' // 500 with `{"error":"server_error"}`
  | 'token-garbage' // 200 with a non-JSON body
  | 'token-invalid-client' // 400 `{"error":"invalid_client"}`
  | 'token-missing-id-token' // a correct token response without `id_token`
  // Discovery
  | 'discovery-wrong-issuer' // the discovery document names another issuer

/**
 * Defects that only show during a refresh (kept out of {@link Defect}, whose members are the login
 * defects that the protocol-negative test enumerates).
 */
export type RefreshDefect = 'sub-changes-on-refresh' // the refreshed ID token names another `sub`

export const REFRESH_DEFECTS: readonly RefreshDefect[] = ['sub-changes-on-refresh']

/**
 * Key handling that is not a protocol error on its own (kept out of {@link Defect} too):
 * - `no-kid`: the ID token is signed with the JWKS's only key, its header without `kid` (allowed);
 * - `jwt-access-token-unknown-key`: a correct ID token, and a JWT access token signed by a key the
 *   JWKS does not publish, which every request would refuse (a login must not end in a loop).
 */
export type KeyDefect = 'no-kid' | 'jwt-access-token-unknown-key'

export const DEFECTS: readonly Defect[] = [
  'none',
  'alg-none',
  'bad-signature',
  'unknown-kid',
  'hs256-with-public-key',
  'wrong-iss',
  'wrong-aud',
  'azp-mismatch',
  'nonce-mismatch',
  'missing-nonce',
  'expired-id-token',
  'iat-future',
  'missing-iss-param',
  'wrong-iss-param',
  'token-500',
  'token-500-json',
  'token-garbage',
  'token-invalid-client',
  'token-missing-id-token',
  'discovery-wrong-issuer',
]

export interface BadProviderOptions {
  defect: Defect | RefreshDefect | KeyDefect
  /** The one redirect URI the client may use (Portcullis' `${publicUrl}/oauth2/callback`). */
  redirectUri: string
  clientId: string
  clientSecret: string
  /** Advertise RFC 9207 (`authorization_response_iss_parameter_supported`) and send `iss`. Default true. */
  issParameterSupported?: boolean
  /** ID-token lifetime in seconds. Default 300. */
  idTokenTtl?: number
  /** `expires_in` of the access tokens, in seconds. Default 300. */
  accessTokenTtl?: number
  /** Advertise `end_session_endpoint` in discovery. Default true; false for a provider without RP-initiated logout. */
  endSessionEndpoint?: boolean
  /** Put a `sid` claim, new for every authorization, in the ID tokens (for back-channel logout by `sid`). Default false. */
  sid?: boolean
}

/**
 * Which key signs a token made with {@link BadProvider.signLogoutToken}: the provider's published key,
 * an RSA key the JWKS does not publish (same `kid` shape), or none at all (`alg: none`).
 */
export type LogoutTokenKey = 'provider' | 'unknown' | 'none'

export interface SignLogoutTokenOptions {
  /** Default `provider`. */
  key?: LogoutTokenKey
  /** The `typ` header. Default `logout+jwt`; null leaves it out. Ignored for `none`. */
  typ?: string | null
}

/** One request the provider saw, in arrival order. */
export interface BadProviderRequest {
  method: string
  path: string
  /** The query of a GET, or the parsed form body of a POST (client secret and verifier left out). */
  params: Record<string, string>
  /** Status the provider answered with. */
  status: number
}

/** What the token endpoint handed out: tests assert none of it shows up in a response or a log. */
export interface IssuedTokens {
  access_token: string
  refresh_token: string
  id_token?: string
}

export interface BadProvider {
  /** `http://127.0.0.1:port`, no trailing slash. */
  issuer: string
  readonly defect: Defect | RefreshDefect | KeyDefect
  setDefect(defect: Defect | RefreshDefect | KeyDefect): void
  requests: BadProviderRequest[]
  /** Every authorization code handed out by the authorize endpoint. */
  codes: string[]
  /** Every token response body that carried tokens (whatever the defect did to it). */
  tokens: IssuedTokens[]
  /**
   * Sign any claims as a JWT with this provider's key (RS256, its `kid`), an unknown key, or none:
   * hand-built Back-Channel Logout tokens a real provider would never send. The claims go in as
   * given (no `iat`, `jti` or anything else is added).
   */
  signLogoutToken(claims: JWTPayload, opts?: SignLogoutTokenOptions): Promise<string>
  close(): Promise<void>
}

interface PendingCode {
  clientId: string
  redirectUri: string
  codeChallenge: string
  nonce: string | undefined
  scope: string
  sid: string | undefined
}

const ID_TOKEN_TTL = 300
const PATHS = {
  discovery: '/.well-known/openid-configuration',
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  jwks: '/keys',
  endSession: '/oidc/logout',
} as const

function token(prefix: string): string {
  return `${prefix}${randomBytes(24).toString('base64url')}`
}

function sameSecret(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest()
  const y = createHash('sha256').update(b).digest()
  return timingSafeEqual(x, y) && a.length === b.length
}

/** RFC 6749 §2.3.1: client id and secret are form-encoded before they are joined for Basic auth. */
function formDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '))
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

/** Start the provider on 127.0.0.1:0; it is closed when `t` ends. */
export async function startBadProvider(t: Test, opts: BadProviderOptions): Promise<BadProvider> {
  const issParameterSupported = opts.issParameterSupported ?? true
  const endSessionEndpoint = opts.endSessionEndpoint ?? true
  let defect: Defect | RefreshDefect | KeyDefect = opts.defect
  const idTokenTtl = opts.idTokenTtl ?? ID_TOKEN_TTL
  const accessTokenTtl = opts.accessTokenTtl ?? 300

  const kid = `bad-${randomBytes(6).toString('hex')}`
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }
  const publicPem = await exportSPKI(publicKey)
  // A second key for `unknown-kid`: a valid RS256 signature by a key the JWKS does not publish.
  const stranger = await generateKeyPair('RS256')
  const strangerKid = `stranger-${randomBytes(6).toString('hex')}`

  const pending = new Map<string, PendingCode>()
  /** Live refresh tokens → the grant they continue (single use: rotated on every refresh). */
  const refreshGrants = new Map<string, PendingCode>()
  const requests: BadProviderRequest[] = []
  const codes: string[] = []
  const tokens: IssuedTokens[] = []
  let issuer = ''

  const send = (res: ServerResponse, record: BadProviderRequest, status: number, body: string, type: string, headers: Record<string, string> = {}): void => {
    record.status = status
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers })
    res.end(body)
  }
  const json = (res: ServerResponse, record: BadProviderRequest, status: number, body: unknown): void =>
    send(res, record, status, JSON.stringify(body), 'application/json; charset=utf-8')

  const discovery = (): Record<string, unknown> => ({
    issuer: defect === 'discovery-wrong-issuer' ? `${issuer}/another-tenant` : issuer,
    authorization_endpoint: `${issuer}${PATHS.authorization}`,
    token_endpoint: `${issuer}${PATHS.token}`,
    jwks_uri: `${issuer}${PATHS.jwks}`,
    ...(endSessionEndpoint ? { end_session_endpoint: `${issuer}${PATHS.endSession}` } : {}),
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    subject_types_supported: ['public'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    id_token_signing_alg_values_supported: ['RS256'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nonce', 'azp', 'email', 'name'],
    authorization_response_iss_parameter_supported: issParameterSupported,
  })

  const authorize = (url: URL, res: ServerResponse, record: BadProviderRequest): void => {
    const q = url.searchParams
    const problems: string[] = []
    if (q.get('client_id') !== opts.clientId) problems.push('client_id')
    if (q.get('redirect_uri') !== opts.redirectUri) problems.push('redirect_uri')
    if (q.get('response_type') !== 'code') problems.push('response_type')
    if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) problems.push('PKCE')
    if (!(q.get('scope') ?? '').split(' ').includes('openid')) problems.push('scope')
    for (const name of new Set(q.keys())) if (q.getAll(name).length > 1) problems.push(`duplicate ${name}`)
    if (problems.length > 0) {
      // Never redirect on a bad client or redirect URI (RFC 6749 §4.1.2.1); tests see the 400.
      send(res, record, 400, `bad authorization request: ${problems.join(', ')}\n`, 'text/plain; charset=utf-8')
      return
    }
    const code = token('code_')
    codes.push(code)
    pending.set(code, {
      clientId: opts.clientId,
      redirectUri: opts.redirectUri,
      codeChallenge: q.get('code_challenge') as string,
      nonce: q.get('nonce') ?? undefined,
      scope: q.get('scope') as string,
      sid: opts.sid === true ? token('sid_') : undefined,
    })
    const target = new URL(opts.redirectUri)
    target.searchParams.set('code', code)
    const state = q.get('state')
    if (state !== null) target.searchParams.set('state', state)
    if (defect === 'wrong-iss-param') target.searchParams.set('iss', `${issuer}/another-tenant`)
    else if (issParameterSupported && defect !== 'missing-iss-param') target.searchParams.set('iss', issuer)
    send(res, record, 302, '', 'text/plain; charset=utf-8', { location: target.href })
  }

  /** The client id the request authenticated as, or null. */
  const authenticateClient = (req: IncomingMessage, form: URLSearchParams): string | null => {
    const header = req.headers.authorization
    let id: string | undefined
    let secret: string | undefined
    if (typeof header === 'string' && /^basic /i.test(header)) {
      if (form.has('client_secret')) return null // one method per request (RFC 6749 §2.3)
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      if (colon === -1) return null
      try {
        id = formDecode(decoded.slice(0, colon))
        secret = formDecode(decoded.slice(colon + 1))
      } catch {
        return null
      }
    } else {
      id = form.get('client_id') ?? undefined
      secret = form.get('client_secret') ?? undefined
    }
    if (id !== opts.clientId || secret === undefined || !sameSecret(secret, opts.clientSecret)) return null
    return id
  }

  const idTokenFor = async (grant: PendingCode, refresh = false): Promise<string> => {
    const now = Math.floor(Date.now() / 1000)
    const claims: JWTPayload & Record<string, unknown> = {
      iss: issuer,
      sub: refresh && defect === 'sub-changes-on-refresh' ? 'another-bad-provider-user' : 'bad-provider-user',
      aud: grant.clientId,
      iat: now,
      exp: now + idTokenTtl,
      auth_time: now,
      email: 'mallory@bad-provider.example',
      name: 'Mallory',
    }
    if (grant.nonce !== undefined && !refresh) claims.nonce = grant.nonce
    if (grant.sid !== undefined) claims.sid = grant.sid
    switch (defect) {
      case 'wrong-iss':
        claims.iss = `${issuer}/another-tenant`
        break
      case 'wrong-aud':
        claims.aud = 'another-client'
        break
      case 'azp-mismatch':
        claims.aud = [grant.clientId, 'another-client']
        claims.azp = 'another-client'
        break
      case 'nonce-mismatch':
        claims.nonce = `not-${grant.nonce ?? 'the-nonce'}`
        break
      case 'missing-nonce':
        delete claims.nonce
        break
      case 'expired-id-token':
        claims.iat = now - 3600
        claims.auth_time = now - 3600
        claims.exp = now - 1800
        break
      case 'iat-future':
        claims.iat = now + 3600
        claims.exp = now + 3600 + idTokenTtl
        break
      default:
        break
    }
    switch (defect) {
      case 'alg-none':
        return new UnsecuredJWT(claims).encode()
      case 'unknown-kid':
        return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: strangerKid, typ: 'JWT' }).sign(stranger.privateKey)
      case 'no-kid':
        return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'JWT' }).sign(privateKey)
      case 'hs256-with-public-key':
        return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid, typ: 'JWT' }).sign(new TextEncoder().encode(publicPem))
      case 'bad-signature': {
        const good = await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(privateKey)
        const [h, p, s] = good.split('.') as [string, string, string]
        const sig = Buffer.from(s, 'base64url')
        sig[Math.floor(sig.length / 2)] ^= 0x01
        return `${h}.${p}.${sig.toString('base64url')}`
      }
      default:
        return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(privateKey)
    }
  }

  const tokenEndpoint = async (req: IncomingMessage, res: ServerResponse, record: BadProviderRequest): Promise<void> => {
    const form = new URLSearchParams(await readBody(req))
    record.params = Object.fromEntries([...form].filter(([k]) => k !== 'client_secret' && k !== 'code_verifier'))
    if (authenticateClient(req, form) === null) {
      json(res, record, 401, { error: 'invalid_client', error_description: 'client authentication failed' })
      return
    }
    if (form.get('grant_type') === 'refresh_token') {
      await refreshGrant(form, res, record)
      return
    }
    if (form.get('grant_type') !== 'authorization_code') {
      json(res, record, 400, { error: 'unsupported_grant_type' })
      return
    }
    const code = form.get('code') ?? ''
    const grant = pending.get(code)
    pending.delete(code) // single use, whatever happens next
    const verifier = form.get('code_verifier') ?? ''
    if (
      grant === undefined ||
      grant.redirectUri !== form.get('redirect_uri') ||
      createHash('sha256').update(verifier).digest('base64url') !== grant.codeChallenge
    ) {
      json(res, record, 400, { error: 'invalid_grant', error_description: 'code, redirect_uri or code_verifier mismatch' })
      return
    }
    if (tokenEndpointFailure(res, record)) return
    await issueTokens(grant, false, res, record)
  }

  /** The token-endpoint defects; true when one answered. */
  const tokenEndpointFailure = (res: ServerResponse, record: BadProviderRequest): boolean => {
    switch (defect) {
      case 'token-500':
        send(res, record, 500, '<html><body><h1>500 Internal Server Error</h1></body></html>\n', 'text/html; charset=utf-8')
        return true
      case 'token-500-json':
        json(res, record, 500, { error: 'server_error', error_description: 'the database is on fire' })
        return true
      case 'token-invalid-client':
        json(res, record, 400, { error: 'invalid_client', error_description: 'client is disabled' })
        return true
      default:
        return false
    }
  }

  /** A token response for `grant` (a code exchange, or a refresh); records a new refresh token. */
  const issueTokens = async (grant: PendingCode, refresh: boolean, res: ServerResponse, record: BadProviderRequest): Promise<void> => {
    const now = Math.floor(Date.now() / 1000)
    const body: IssuedTokens & { token_type: string; expires_in: number; scope: string } = {
      access_token:
        defect === 'jwt-access-token-unknown-key'
          ? await new SignJWT({ iss: issuer, sub: 'bad-provider-user', aud: grant.clientId, iat: now, exp: now + accessTokenTtl, jti: token('') })
              .setProtectedHeader({ alg: 'RS256', kid: strangerKid, typ: 'at+jwt' })
              .sign(stranger.privateKey)
          : token('at_'),
      token_type: 'Bearer',
      expires_in: accessTokenTtl,
      refresh_token: token('rt_'),
      scope: grant.scope,
    }
    refreshGrants.set(body.refresh_token, { ...grant, nonce: undefined })
    if (defect !== 'token-missing-id-token') body.id_token = await idTokenFor(grant, refresh)
    tokens.push({ access_token: body.access_token, refresh_token: body.refresh_token, ...(body.id_token ? { id_token: body.id_token } : {}) })
    if (defect === 'token-garbage') {
      send(res, record, 200, `<html>tokens: ${body.access_token} ${body.id_token ?? ''}</html>\n`, 'text/html; charset=utf-8')
      return
    }
    json(res, record, 200, body)
  }

  /** grant_type=refresh_token (the client is authenticated): rotate the refresh token, issue new tokens. */
  const refreshGrant = async (form: URLSearchParams, res: ServerResponse, record: BadProviderRequest): Promise<void> => {
    const presented = form.get('refresh_token') ?? ''
    const grant = refreshGrants.get(presented)
    if (grant === undefined) {
      json(res, record, 400, { error: 'invalid_grant', error_description: 'unknown, used or revoked refresh token' })
      return
    }
    // A crashing server has not consumed the token: the client may try it again.
    if (tokenEndpointFailure(res, record)) return
    refreshGrants.delete(presented) // rotation: single use
    await issueTokens(grant, true, res, record)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', issuer)
    const record: BadProviderRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      params: Object.fromEntries(url.searchParams),
      status: 0,
    }
    requests.push(record)
    if (req.method === 'GET' && url.pathname === PATHS.discovery) return json(res, record, 200, discovery())
    if (req.method === 'GET' && url.pathname === PATHS.jwks) return json(res, record, 200, { keys: [jwk] })
    if (req.method === 'GET' && url.pathname === PATHS.authorization) return authorize(url, res, record)
    if (req.method === 'POST' && url.pathname === PATHS.token) return tokenEndpoint(req, res, record)
    if (url.pathname === PATHS.endSession) return send(res, record, 200, 'signed out\n', 'text/plain; charset=utf-8')
    return json(res, record, 404, { error: 'not_found' })
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(599, { 'content-type': 'text/plain' })
      res.end(`bad-provider crashed: ${String(err)}\n`)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  const signLogoutToken = async (claims: JWTPayload, o: SignLogoutTokenOptions = {}): Promise<string> => {
    const key = o.key ?? 'provider'
    if (key === 'none') return new UnsecuredJWT(claims).encode()
    const typ = o.typ === undefined ? 'logout+jwt' : o.typ
    const header = key === 'provider' ? { alg: 'RS256', kid } : { alg: 'RS256', kid: strangerKid }
    return new SignJWT(claims)
      .setProtectedHeader(typ === null ? header : { ...header, typ })
      .sign(key === 'provider' ? privateKey : stranger.privateKey)
  }

  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
    return closed
  }
  t.teardown(close)

  return {
    issuer,
    get defect() {
      return defect
    },
    setDefect(d: Defect | RefreshDefect | KeyDefect) {
      defect = d
    },
    requests,
    codes,
    tokens,
    signLogoutToken,
    close,
  }
}
