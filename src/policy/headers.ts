/**
 * Header hygiene: remove what a client must not send before anything reads the request — client-sent
 * copies of identity headers (ours, and those of other auth layers an app may trust), and, unless the
 * operator allows them, every header whose name contains `_`.
 *
 * Names are compared normalized — lower-case, `_` treated as `-` — because many upstream stacks
 * (CGI/WSGI/PHP `HTTP_X_AUTH_REQUEST_USER`, Rails, some nginx setups) read `X_Auth_Request_User` and
 * `X-Auth-Request-User` as the same header. A client must not be able to smuggle an identity header in
 * the underscore spelling past a strip list written with hyphens. Dropping underscore names altogether
 * is nginx's default (`underscores_in_headers off`): `X_Forwarded_For` next to our `X-Forwarded-For`
 * would be folded into one variable by those stacks, and the client's copy may win.
 *
 * @see oauth2-proxy `pkg/middleware/headers.go` (`stripNormalizedHeader`); mod_auth_openidc
 *      `oidc_scrub_request_headers`, `oidc_strip_cookies`; docs/headers.md for the default list
 */

/**
 * Identity headers of other auth layers and of apps that read a user from a header, stripped from every
 * request whether or not `identity.headers` names them: an app that trusts one of them (it was written
 * for another proxy, or the operator switched proxies) must never see a client's copy. Exact names,
 * normalized. Each line says who sets or reads them; docs/headers.md lists them for operators.
 */
export const FOREIGN_IDENTITY_HEADERS: readonly string[] = [
  // Apache (REMOTE_USER as a header), Authelia, Authentik's and many apps' "Remote-User" trust
  'remote-user',
  'remote-email',
  'remote-groups',
  'remote-name',
  // Kubernetes authenticating proxy / API aggregation, Rundeck, Jupyter and others
  'x-remote-user',
  'x-remote-group',
  'x-remote-groups',
  'x-remote-email',
  'x-remote-name',
  // generic ones forward-auth services and apps use
  'x-user',
  'x-username',
  'x-email',
  'x-user-email',
  'x-user-id',
  'x-groups',
  'x-roles',
  // oauth2-proxy (and Portcullis's defaults): every X-Auth-Request-* is a prefix below; these are the
  // X-Forwarded-* identity set
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-groups',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'gap-auth',
  'gap-signature',
  // Keycloak Gatekeeper / Louketo (X-Auth-Token is left alone: many APIs take it as a client
  // credential, as they take Authorization; add it to identity.stripHeaders where the app trusts it)
  'x-auth-userid',
  'x-auth-username',
  'x-auth-email',
  'x-auth-subject',
  'x-auth-roles',
  'x-auth-groups',
  'x-auth-audience',
  'x-auth-expiresin',
  // Kong (OpenID Connect, JWT and key-auth plugins)
  'x-userinfo',
  'x-id-token',
  'x-access-token',
  'x-authenticated-userid',
  'x-authenticated-scope',
  'x-authenticated-groups',
  'x-credential-identifier',
  'x-credential-username',
  'x-anonymous-consumer',
  // Envoy jwt_authn / Istio (payload forwarding as commonly configured)
  'x-jwt-payload',
  'x-jwt-assertion',
  // Google IAP
  'x-goog-authenticated-user-email',
  'x-goog-authenticated-user-id',
  'x-goog-iap-jwt-assertion',
  // AWS Application Load Balancer
  'x-amzn-oidc-data',
  'x-amzn-oidc-identity',
  'x-amzn-oidc-accesstoken',
  // Vouch Proxy
  'x-vouch-user',
  'x-vouch-success',
  // Tailscale serve
  'tailscale-user-login',
  'tailscale-user-name',
  'tailscale-user-profile-pic',
]

/**
 * Prefixes of identity headers, normalized: every header starting with one is stripped. Each is
 * specific to an auth layer, so nothing else an app needs starts with it.
 */
export const FOREIGN_IDENTITY_PREFIXES: readonly string[] = [
  'x-auth-request-', // oauth2-proxy and Portcullis: User, Email, Groups, Preferred-Username, Access-Token, Redirect, ...
  'x-webauth-', // Grafana's auth proxy and Gitea/Forgejo reverse-proxy login (X-WEBAUTH-USER, -EMAIL, -NAME, -ROLE)
  'x-remote-extra-', // Kubernetes authenticating proxy: extra user attributes
  'x-pomerium-', // Pomerium: X-Pomerium-Jwt-Assertion, X-Pomerium-Claim-*
  'x-authentik-', // Authentik's proxy outpost: username, groups, email, uid, jwt, meta-*
  'x-ms-client-principal', // Azure App Service / Container Apps authentication (EasyAuth)
  'x-ms-token-', // EasyAuth's token store headers (X-MS-TOKEN-AAD-ACCESS-TOKEN, ...)
  'cf-access-', // Cloudflare Access: Cf-Access-Jwt-Assertion, Cf-Access-Authenticated-User-Email
  'x-vouch-idp-', // Vouch Proxy: claims and tokens
  'x-consumer-', // Kong: the authenticated consumer (ID, Username, Custom-ID, Groups)
  'oidc-', // Apache mod_auth_openidc: OIDC_CLAIM_*, OIDC_access_token, OIDC_id_token (normalized)
  'mellon-', // Apache mod_auth_mellon: MELLON_*
  'shib-', // Shibboleth SP: Shib-Identity-Provider, Shib-Session-ID, ...
]

/**
 * The normalized form of a header name: lower-case, with every `_` replaced by `-`
 * (`X_Auth_Request_User` → `x-auth-request-user`). No regex: this runs for every incoming header.
 */
export function normalizeHeaderName(name: string): string {
  const lower = name.toLowerCase()
  return lower.includes('_') ? lower.replaceAll('_', '-') : lower
}

/** What step 1 of the pipeline removes from a client's request headers. */
export interface StripRules {
  /** Names stripped in every spelling (normalized on compile). */
  readonly names: Iterable<string>
  /** Prefixes: any header whose normalized name starts with one is stripped. */
  readonly prefixes: Iterable<string>
  /** Drop every header whose name contains `_` (nginx's default). */
  readonly dropUnderscore: boolean
}

/** The compiled rules: which of a request's headers go. Built once per runtime, read-only after. */
export interface HeaderScreen {
  /** Whether a header of this name (as Node delivers it: lower-case) is removed. */
  drops(name: string): boolean
  /**
   * Delete, in place, every header the rules remove, and return the names removed (as sent, one entry
   * per deleted key). Runs before any identity header is added (strip before inject).
   */
  strip(headers: Record<string, string | string[] | undefined>): string[]
}

/**
 * Compile strip rules. A verdict per header name is remembered (bounded), so the common request —
 * the same dozen names every time — costs one map lookup per header, however many prefixes there are.
 */
export function compileHeaderScreen(rules: StripRules): HeaderScreen {
  const names = new Set<string>()
  for (const name of rules.names) names.add(normalizeHeaderName(name))
  const prefixes = [...new Set([...rules.prefixes].map(normalizeHeaderName))]
  const dropUnderscore = rules.dropUnderscore
  const verdicts = new Map<string, boolean>()
  const judge = (name: string): boolean => {
    if (dropUnderscore && name.includes('_')) return true
    const normalized = normalizeHeaderName(name)
    if (names.has(normalized)) return true
    for (const prefix of prefixes) if (normalized.startsWith(prefix)) return true
    return false
  }
  const drops = (name: string): boolean => {
    // Names are client-chosen: only short ones (every real header name) are remembered.
    if (name.length > MAX_REMEMBERED_NAME) return judge(name)
    let verdict = verdicts.get(name)
    if (verdict === undefined) {
      verdict = judge(name)
      // Names are client-chosen: the memo is bounded, and starts over when full.
      if (verdicts.size >= MAX_VERDICTS) verdicts.clear()
      verdicts.set(name, verdict)
    }
    return verdict
  }
  return {
    drops,
    strip(headers) {
      const removed: string[] = []
      for (const key in headers) {
        if (drops(key)) {
          delete headers[key]
          removed.push(key)
        }
      }
      return removed
    },
  }
}
const MAX_VERDICTS = 1024
const MAX_REMEMBERED_NAME = 64

/**
 * Remove the cookies for which `isOurs(name)` is true from a `Cookie` header value (our session and
 * transaction cookies, including chunks such as `_portcullis_1`), so that they never reach an upstream.
 *
 * The header is split on `;` and each piece trimmed; the remaining pieces are kept in order and joined
 * with `; `. Empty pieces are dropped; a piece without `=` is kept as it is (browsers treat it as a
 * nameless cookie, never one of ours). Never throws on malformed input. Returns `undefined` when no
 * cookie is left (the caller then drops the header), and the input itself when nothing was removed.
 */
export function removeCookies(
  cookieHeader: string | undefined,
  isOurs: (name: string) => boolean,
): string | undefined {
  if (cookieHeader === undefined) return undefined
  const kept: string[] = []
  let removedAny = false
  for (const piece of cookieHeader.split(';')) {
    const trimmed = piece.trim()
    if (trimmed === '') continue
    const eq = trimmed.indexOf('=')
    if (eq >= 0 && isOurs(trimmed.slice(0, eq).trim())) {
      removedAny = true
      continue
    }
    kept.push(trimmed)
  }
  if (kept.length === 0) return undefined
  return removedAny ? kept.join('; ') : cookieHeader
}
