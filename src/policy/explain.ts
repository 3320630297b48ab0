import type { Config } from '../config/types.ts'
import { authTimeOf, type CheckResult, type RoutePolicy, type Subject, type Verdict } from './access.ts'
import { hasDoubleEncoding, normalizePath, splitTarget, whyPathRejected } from './path.ts'
import { foldPath, loginUrlFor, matchPath, routeFit, type HostFit, type MatchTrace, type Route, type RouteFit, type RouteTable } from './routes.ts'

/**
 * Why a request would be answered the way it is: `portcullis explain` and `{prefix}/debug`. Plain
 * data in (the compiled route table, a few settings, a method, a URL and who is asking), plain data
 * out, following the pipeline's steps in their order (`decide` in `http/pipeline.ts`): the path
 * normalized (else 400), Portcullis's own endpoints, the method, double encoding, the route (host,
 * then the longest prefix, then the case-folding guard: `RouteTable.trace`, with every route's own
 * fit from `routeFit`), public, preflight, bearer or session, the access rules, no session.
 *
 * Which route takes the request is always `RouteTable`'s answer, never worked out here; this module
 * only says why the others did not. Headers are not part of the question: step 1 (screening) and
 * content negotiation are described as alternatives ("a browser navigation ...", "any other
 * request ..."). The session is taken as valid (not expired, not revoked); the token of `bearer` as
 * verified.
 */

/** The settings an explanation reads besides the route table. */
export interface ExplainSettings {
  readonly authPrefix: string
  readonly publicUrl: string
  readonly allowDoubleEncoding: boolean
  /** `provider.signInPage`: first logins go to `{prefix}/sign_in`. */
  readonly signInPage: boolean
}

export function explainSettingsOf(config: Config): ExplainSettings {
  return {
    authPrefix: config.server.authPrefix,
    publicUrl: config.server.publicUrl,
    allowDoubleEncoding: config.server.allowDoubleEncoding,
    signInPage: config.provider.signInPage,
  }
}

export interface ExplainInput {
  readonly routes: RouteTable
  readonly settings: ExplainSettings
  /** Default GET. */
  readonly method?: string | undefined
  /**
   * An absolute http(s) URL (its host is the Host header; its fragment is never sent), or a request
   * target as sent on the wire (`/a/%2e%2e/b?x`; the host is then `server.publicUrl`'s). The path is
   * taken as written, not as a URL parser would clean it up.
   */
  readonly url: string
  /** The signed-in user's claims (a session's, or a bearer token's with `bearer`); absent: no session. */
  readonly claims?: Readonly<Record<string, unknown>> | null | undefined
  /** When the user authenticated, in ms; default: the claims' `auth_time`. */
  readonly authTime?: number | undefined
  /** The claims are a verified bearer token's (`Authorization: Bearer`), not a session's. */
  readonly bearer?: boolean | undefined
  /** Now, in ms. */
  readonly now: number
}

/** The URL or the other input cannot be explained (not a request a client could send); `field` names the input. */
export class ExplainInputError extends Error {
  override readonly name = 'ExplainInputError'
  readonly field: 'url' | 'method' | 'claims'
  constructor(field: 'url' | 'method' | 'claims', message: string) {
    super(message)
    this.field = field
  }
}

export interface Explanation {
  readonly request: ExplainedRequest
  readonly path: ExplainedPath
  /** Every route of the table, in config order, with why it takes the request or not. */
  readonly routes: readonly RouteLine[]
  /** The route that takes the request, or null. */
  readonly route: ChosenRoute | null
  readonly decision: ExplainedDecision
}

export interface ExplainedRequest {
  readonly method: string
  readonly url: string
  /** The Host header the request is explained with. */
  readonly host: string
  readonly hostFrom: 'url' | 'publicUrl'
  /** The request target: path and query as sent. */
  readonly target: string
  readonly query: string
  /** Who is asking: null for no session. */
  readonly subject: { readonly kind: 'session' | 'bearer'; readonly sub: string; readonly authTime: number | null; readonly scopes?: readonly string[] } | null
}

export interface ExplainedPath {
  /** The path as sent. */
  readonly raw: string
  /** Normalized (`policy/path.ts`); null when it cannot be normalized safely. */
  readonly normalized: string | null
  /** Why it cannot be normalized (a 400), else null. */
  readonly rejected: string | null
  /** Still percent-encoded after decoding (`%25xx`): a 400 unless `server.allowDoubleEncoding`. */
  readonly doubleEncoded: boolean
  /** The path routes match on: `;params` removed from every segment. */
  readonly matchPath: string | null
  /** That path folded (no case, no trailing dots or spaces): what case-insensitive routes and the guard compare. */
  readonly folded: string | null
}

export type RouteReason =
  /** This route takes the request: the longest prefix that fits. */
  | 'chosen'
  /** This route takes the request: the case-folding guard chose it over a public route with a shorter prefix. */
  | 'chosen-by-guard'
  /** It fit first, but the case-folding guard chose a longer protected route. */
  | 'guarded'
  /** It fits, but a route with a longer prefix (or the same one, earlier in the config) was chosen. */
  | 'shorter'
  /** It fits, but routes of an earlier kind (naming the host with its port, without it, host-less) had one that fits. */
  | 'tried-later'
  | 'host'
  | 'host-unusable'
  | 'prefix'
  /** The request was decided before routes were looked at (a 400, an own endpoint, a method). */
  | 'not-consulted'
  /** It fits but was not chosen, and nothing here says why: the explanation is out of step with the route table (a bug). */
  | 'unexplained'

export interface RouteLine {
  readonly id: string
  /** '' for a host-less route. */
  readonly host: string
  readonly pathPrefix: string
  readonly public: boolean
  readonly caseInsensitive: boolean
  /** It takes the request. */
  readonly chosen: boolean
  readonly reason: RouteReason
  readonly detail: string
  /** The route's own fit (null when routes were not consulted). */
  readonly fit: { readonly host: HostFit; readonly path: string; readonly prefix: string; readonly prefixMatches: boolean; readonly guardMatches: boolean } | null
}

export interface ChosenRoute {
  readonly id: string
  readonly host: string
  readonly pathPrefix: string
  readonly upstream: string
  readonly public: boolean
  /** CORS preflights are forwarded without a session. */
  readonly allowPreflight: boolean
  /** `Authorization: Bearer <JWT>` is accepted. */
  readonly bearer: boolean
  readonly caseInsensitive: boolean
  /** Where its allow rule comes from (`routes[2].allow`, `access.defaultAllow`), or '' (none). */
  readonly allowRule: string
  /** No allow rule, or one without conditions: every signed-in user is admitted. */
  readonly openToAll: boolean
  /** The authorize parameters of a first login that starts for it. */
  readonly loginParams: Readonly<Record<string, string>>
}

/** One way the request can be answered, and when. */
export interface Answer {
  /** When this answer applies ('always', 'a browser navigation ...', ...). */
  readonly when: string
  /** Sent upstream (the application answers), or answered by Portcullis with `status`. */
  readonly forward: boolean
  readonly status: number | null
  readonly detail: string
}

export type Outcome = 'rejected' | 'own-endpoint' | 'method-not-allowed' | 'no-route' | 'forward' | 'sign-in' | 'deny' | 'step-up'

export interface ExplainedDecision {
  /** The pipeline step that decides. */
  readonly step: 'path' | 'own-endpoint' | 'method' | 'route' | 'public' | 'bearer' | 'session' | 'no-session'
  readonly outcome: Outcome
  readonly summary: string
  readonly reasons: readonly string[]
  readonly answers: readonly Answer[]
  /** The route's access rules, each condition with its result (signed in only). */
  readonly conditions?: readonly CheckResult[]
  readonly verdict?: Verdict
}

/**
 * The methods the proxy takes (`PROXIED_METHODS` of `http/fast-lane.ts`; a unit test keeps the two
 * alike); any other is a 405 on every proxied path.
 */
export const PROXY_METHODS: ReadonlySet<string> = new Set(['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'])

/** Paths Portcullis answers itself outside the auth prefix (`http/ops.ts`), for GET and HEAD. */
export const OPS_PATHS: readonly string[] = ['/healthz', '/readyz']

/** `scheme://authority[/path][?query][#fragment]`, the authority without userinfo, `\` or spaces. */
const ABSOLUTE = /^(https?):\/\/([^/?#@\\\s]+)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i

/** The Host header and request target a URL stands for. */
export function requestOf(url: string, publicUrl: string): { host: string; hostFrom: 'url' | 'publicUrl'; target: string } {
  if (url.startsWith('/')) return { host: new URL(publicUrl).host, hostFrom: 'publicUrl', target: url }
  const m = ABSOLUTE.exec(url)
  if (m === null) {
    throw new ExplainInputError(
      'url',
      /^https?:\/\//i.test(url)
        ? `"${url}" is not a plain absolute URL (no user name, backslash or space in the host part)`
        : `"${url}" is neither a path (starting with "/") nor an absolute http(s) URL`,
    )
  }
  const scheme = (m[1] as string).toLowerCase()
  let host = m[2] as string
  // A client leaves the scheme's default port out of its Host header.
  const port = /:(\d+)$/.exec(host)?.[1]
  if ((scheme === 'https' && port === '443') || (scheme === 'http' && port === '80')) host = host.slice(0, -(port.length + 1))
  const path = m[3] ?? '/'
  return { host, hostFrom: 'url', target: path + (m[4] ?? '') }
}

/** The scopes of a bearer token, as `oidc/bearer.ts` reads them: `scope` (space-separated) or `scp` (a list or a string). */
export function tokenScopes(claims: Readonly<Record<string, unknown>>): string[] {
  const out = new Set<string>()
  for (const value of [claims.scope, claims.scp]) {
    if (typeof value === 'string') for (const s of value.split(' ')) if (s !== '') out.add(s)
    if (Array.isArray(value)) for (const s of value) if (typeof s === 'string' && s !== '') out.add(s)
  }
  return [...out]
}

export function explainRequest(input: ExplainInput): Explanation {
  const { settings, routes } = input
  const method = (input.method ?? 'GET').toUpperCase()
  if (!/^[A-Z-]{1,32}$/.test(method)) throw new ExplainInputError('method', `"${input.method}" is not an HTTP method`)
  const { host, hostFrom, target } = requestOf(input.url, settings.publicUrl)
  const { path: raw, query } = splitTarget(target)
  const claims = input.claims ?? null
  if (input.bearer === true && claims === null) throw new ExplainInputError('claims', 'a bearer token needs its claims')
  const authTime = input.authTime ?? (claims === null ? undefined : authTimeOf(claims))
  const scopes = input.bearer === true && claims !== null ? tokenScopes(claims) : undefined
  const subject: Subject | null =
    claims === null ? null : { sub: typeof claims.sub === 'string' ? claims.sub : '', claims, authTime, ...(scopes === undefined ? {} : { scopes: new Set(scopes) }) }
  const request: ExplainedRequest = {
    method,
    url: input.url,
    host,
    hostFrom,
    target,
    query,
    subject: subject === null ? null : { kind: input.bearer === true ? 'bearer' : 'session', sub: subject.sub, authTime: authTime ?? null, ...(scopes === undefined ? {} : { scopes }) },
  }

  const normalized = normalizePath(raw)
  const doubleEncoded = normalized !== null && hasDoubleEncoding(normalized)
  const m = normalized === null ? null : matchPath(normalized)
  const path: ExplainedPath = { raw, normalized, rejected: normalized === null ? whyPathRejected(raw) : null, doubleEncoded, matchPath: m, folded: m === null ? null : foldPath(m) }
  const notConsulted = (why: string): RouteLine[] => routes.routes.map((r) => line(r, false, 'not-consulted', `not consulted: ${why}`, null))
  const settle = (decision: ExplainedDecision, lines: RouteLine[], route: ChosenRoute | null = null): Explanation => ({ request, path, routes: lines, route, decision })

  // 2. the path (the fast lane and the Fastify path both refuse it before anything else)
  if (normalized === null) {
    const why = path.rejected ?? 'it cannot be normalized safely'
    return settle(
      { step: 'path', outcome: 'rejected', summary: '400: the path cannot be normalized safely', reasons: [`${raw}: ${why}`], answers: [always(400, 'PATH_REJECTED: The request path is not valid.')] },
      notConsulted('the path is refused'),
    )
  }
  // Portcullis's own endpoints are routed by Fastify before any route of the config.
  const own = ownEndpoint(normalized, method, settings.authPrefix)
  if (own !== null) {
    return settle({ step: 'own-endpoint', outcome: 'own-endpoint', summary: `Portcullis answers ${normalized} itself`, reasons: [own], answers: [always(null, `${normalized}: Portcullis's own endpoint`, false)] }, notConsulted(`${normalized} is Portcullis's own endpoint`))
  }
  if (!PROXY_METHODS.has(method)) {
    return settle(
      { step: 'method', outcome: 'method-not-allowed', summary: `405: ${method} is not proxied`, reasons: [`only ${[...PROXY_METHODS].join(', ')} are proxied`], answers: [always(405, 'METHOD_NOT_ALLOWED: This method is not supported.')] },
      notConsulted(`${method} is not proxied`),
    )
  }
  if (doubleEncoded && !settings.allowDoubleEncoding) {
    return settle(
      {
        step: 'path',
        outcome: 'rejected',
        summary: '400: the path is encoded twice',
        reasons: [`${normalized} still holds a percent-escape once decoded (%25xx); server.allowDoubleEncoding: true would accept it`],
        answers: [always(400, 'PATH_REJECTED: The request path is encoded twice.')],
      },
      notConsulted('the path is refused'),
    )
  }

  // 2. the route
  const trace = routes.trace(host, normalized)
  const lines = routes.routes.map((r) => routeLine(r, trace, routeFit(r, host, normalized), host))
  const chosen = trace.chosen
  if (chosen === null) {
    const reasons = trace.unusableHost ? [`the Host header "${host}" is not a plain host, and some routes name hosts`] : [`no route's host and prefix fit ${host} ${normalized}`]
    return settle({ step: 'route', outcome: 'no-route', summary: '404: no route matches', reasons, answers: [always(404, 'NOT_FOUND: Nothing is served at this address.')] }, lines)
  }
  const route = chosenRoute(chosen, input.now)
  const decision = decideFor(chosen, method, target, subject, input.bearer === true, settings, input.now)
  return settle(decision, lines, route)
}

function always(status: number | null, detail: string, forward = status === null): Answer {
  return { when: 'always', forward, status, detail }
}

function ownEndpoint(path: string, method: string, prefix: string): string | null {
  if (path.startsWith(`${prefix}/`)) {
    if (path === `${prefix}/auth` && method === 'GET') return `the forward-auth check (${prefix}/auth) answers it: it judges the request named by X-Original-URL`
    return `every path under ${prefix}/ is Portcullis's own (login, callback, sign-out, userinfo, ...; anything else there is a 404); no route is consulted`
  }
  if (OPS_PATHS.includes(path) && (method === 'GET' || method === 'HEAD')) return `${path} is Portcullis's own health endpoint; no route is consulted`
  return null
}

function line(r: Route, chosen: boolean, reason: RouteReason, detail: string, fit: RouteFit | null): RouteLine {
  return { id: r.id, host: r.host, pathPrefix: r.pathPrefix, public: r.public, caseInsensitive: r.caseInsensitive, chosen, reason, detail, fit: fit === null ? null : { ...fit } }
}

const RANK: Readonly<Record<string, number>> = { exact: 0, portless: 1, any: 2 }

/** Why one route takes the request or not, given the table's answer (`trace`) and the route's own fit. */
function routeLine(r: Route, trace: MatchTrace, fit: RouteFit, host: string): RouteLine {
  const { hit, chosen } = trace
  const caseNote = r.caseInsensitive ? ' (ignoring case and trailing dots and spaces)' : ''
  if (trace.unusableHost) return line(r, false, 'host-unusable', `the Host header "${host}" is not a plain host: with routes naming hosts, none is chosen`, fit)
  if (r === chosen) {
    if (r === hit) {
      const among = trace.from === 'any' ? 'host-less routes' : `routes for ${r.host}`
      return line(r, true, 'chosen', `chosen: the longest prefix among the ${among} that fits "${fit.path}"${caseNote}`, fit)
    }
    return line(
      r,
      true,
      'chosen-by-guard',
      `chosen by the case-folding guard: "${foldPath(fit.path)}" is under ${foldPath(r.pathPrefix)} once case and trailing dots and spaces are ignored, a longer protected prefix than the public ${hit?.id ?? '?'}'s`,
      fit,
    )
  }
  if (fit.host === 'other') return line(r, false, 'host', `host: the route is for ${r.host}, the request's host is ${host}`, fit)
  if (fit.host === 'unusable') return line(r, false, 'host-unusable', `the Host header "${host}" is not a plain host`, fit)
  if (!fit.prefixMatches) {
    const guardNote = fit.guardMatches ? '; it does match ignoring case, but the case-folding guard only overrides a public match with a shorter prefix among the same routes' : ''
    return line(r, false, 'prefix', `prefix${caseNote}: "${fit.path}" is not under ${fit.prefix}${guardNote}`, fit)
  }
  // It fits: say why another was chosen.
  if (hit === null || chosen === null) return line(r, false, 'unexplained', 'it fits, but no route was chosen', fit)
  if (r === hit) return line(r, false, 'guarded', `it fits, but the case-folding guard chose ${chosen.id}: the path is under its longer protected prefix ${chosen.pathPrefix} once case and trailing dots and spaces are ignored`, fit)
  const rank = RANK[fit.host] as number
  const hitRank = RANK[trace.from ?? 'any'] as number
  if (rank > hitRank) {
    const first = trace.from === 'exact' ? `routes for ${hit.host}` : `routes for ${hit.host} (without the request's port)`
    return line(r, false, 'tried-later', `it fits, but ${first} are tried first, and ${hit.id} fits`, fit)
  }
  if (rank === hitRank && r.pathPrefix.length < hit.pathPrefix.length) return line(r, false, 'shorter', `it fits, but the longer prefix ${chosen.pathPrefix} (${chosen.id}) is chosen`, fit)
  if (rank === hitRank && r.pathPrefix.length === hit.pathPrefix.length) return line(r, false, 'shorter', `it fits, but ${hit.id}'s prefix is as long and comes first in the config`, fit)
  return line(r, false, 'unexplained', `it fits, but ${chosen.id} was chosen`, fit)
}

function chosenRoute(r: Route, now: number): ChosenRoute {
  return {
    id: r.id,
    host: r.host,
    pathPrefix: r.pathPrefix,
    upstream: r.upstreamOrigin + r.upstreamBasePath,
    public: r.public,
    allowPreflight: r.allowPreflight,
    bearer: r.bearer,
    caseInsensitive: r.caseInsensitive,
    allowRule: r.policy.source,
    openToAll: r.policy.openToAll,
    loginParams: r.public ? {} : r.policy.loginParams(null, now),
  }
}

const BROWSER = 'a browser navigation (GET or HEAD, Accept: text/html, Sec-Fetch-Mode: navigate when sent)'

/** Steps 3 to 6 of the pipeline for the chosen route. */
function decideFor(route: Route, method: string, target: string, subject: Subject | null, bearer: boolean, settings: ExplainSettings, now: number): ExplainedDecision {
  // 3. public
  if (route.public) {
    return {
      step: 'public',
      outcome: 'forward',
      summary: `forwarded as it is: ${route.id} is public`,
      reasons: [`${route.id} is public: no session is needed, no identity header is sent, and the client's Authorization is kept`],
      answers: [always(null, `forwarded to ${route.upstreamOrigin}${route.upstreamBasePath} without identity headers`)],
    }
  }
  const answers: Answer[] = []
  const reasons: string[] = []
  if (route.allowPreflight && method === 'OPTIONS') {
    answers.push({ when: 'a CORS preflight (Origin and Access-Control-Request-Method sent)', forward: true, status: null, detail: `forwarded without a session and without identity headers (${route.id}.allowPreflight)` })
  }
  const otherwise = (when: string) => (answers.length > 0 ? `otherwise, ${when}` : when)
  const rest = () => (answers.length > 0 ? 'otherwise' : 'always')
  const policy = route.policy

  // 4. a bearer token, where the route takes one
  if (bearer && subject !== null) {
    if (route.bearer) {
      const verdict = policy.judge(subject, now)
      const conditions = policy.explain(subject, now)
      reasons.push(`${route.id} takes bearer tokens: the token is verified (signature, issuer, expiry, audience ${route.audiences.join(' or ') || '(none)'}), then judged like a session, with its scopes`)
      return judged('bearer', route, verdict, conditions, reasons, answers, otherwise, rest, target, settings, true)
    }
    reasons.push(`${route.id} does not take bearer tokens (routes[].bearer is off): the Authorization header is not read, and the request counts as one without a session`)
    subject = null
  }

  // 4. the session
  if (subject !== null) {
    const verdict = policy.judge(subject, now)
    const conditions = policy.explain(subject, now)
    reasons.push(policy.source === '' ? `${route.id} has no allow rule and there is no access.defaultAllow: every signed-in user may use it` : `the allow rule is ${policy.source}`)
    return judged('session', route, verdict, conditions, reasons, answers, otherwise, rest, target, settings, false)
  }

  // 5. no session
  if (route.bearer) reasons.push(`${route.id} takes bearer tokens: a request with Authorization: Bearer <JWT> would have the token verified and judged instead (explain it with the token's claims as a bearer token)`)
  const login = loginUrl(settings, route, target, false)
  if (method === 'GET' || method === 'HEAD') answers.push({ when: otherwise(BROWSER), forward: false, status: 302, detail: `to ${login}, a login with ${formatParams(policy.loginParams(null, now))}` })
  answers.push({
    when: answers.length > 0 ? 'any other request' : rest(),
    forward: false,
    status: 401,
    detail: route.bearer ? 'UNAUTHENTICATED, with an RFC 6750 Bearer challenge' : 'UNAUTHENTICATED (JSON), WWW-Authenticate: Bearer',
  })
  reasons.push('no session: the request needs a signed-in user (while the provider is unreachable, the answer is a 503 instead)')
  return { step: 'no-session', outcome: 'sign-in', summary: 'not signed in: sign-in required', reasons, answers }
}

function judged(
  step: 'bearer' | 'session',
  route: Route,
  verdict: Verdict,
  conditions: readonly CheckResult[],
  reasons: string[],
  answers: Answer[],
  otherwise: (when: string) => string,
  rest: () => string,
  target: string,
  settings: ExplainSettings,
  bearer: boolean,
): ExplainedDecision {
  const failed = conditions.filter((c) => !c.ok).map((c) => c.rule)
  if (verdict.kind === 'allow') {
    answers.push({ when: rest(), forward: true, status: null, detail: `forwarded to ${route.upstreamOrigin}${route.upstreamBasePath} with the identity headers` })
    return { step, outcome: 'forward', summary: `allowed: forwarded to ${route.id}'s upstream with the identity headers`, reasons, answers, conditions, verdict }
  }
  if (verdict.kind === 'deny') {
    reasons.push(`${verdict.rule} fails: ${verdict.reason}`)
    if (failed.length > 1) reasons.push(`failing: ${failed.join(', ')}`)
    if (bearer) {
      answers.push({ when: rest(), forward: false, status: 403, detail: `ACCESS_DENIED, WWW-Authenticate: Bearer error="insufficient_scope" (${verdict.rule})` })
    } else {
      answers.push({ when: otherwise('a client that accepts HTML'), forward: false, status: 403, detail: `an "access denied" page naming ${verdict.rule}, with a link to sign in again as someone else` })
      answers.push({ when: 'any other request', forward: false, status: 403, detail: `ACCESS_DENIED (JSON), rule ${verdict.rule}` })
    }
    return { step, outcome: 'deny', summary: `denied (403) by ${verdict.rule}`, reasons, answers, conditions, verdict }
  }
  reasons.push(`${verdict.rule} fails: ${verdict.reason}`)
  const params = formatParams(verdict.params)
  if (!bearer) answers.push({ when: otherwise(BROWSER), forward: false, status: 302, detail: `to ${loginUrl(settings, route, target, true)}, a login again with ${params}` })
  answers.push({
    when: answers.length > 0 ? 'any other request' : rest(),
    forward: false,
    status: 401,
    detail: `STEP_UP_REQUIRED, WWW-Authenticate: Bearer error="insufficient_user_authentication"${verdict.params.acr_values === undefined ? '' : `, acr_values="${verdict.params.acr_values}"`}${verdict.params.max_age === undefined ? '' : `, max_age=${verdict.params.max_age}`}`,
  })
  return { step, outcome: 'step-up', summary: `step-up: ${verdict.rule} needs a new login (${params})`, reasons, answers, conditions, verdict }
}

function loginUrl(settings: ExplainSettings, route: Route, target: string, stepUp: boolean): string {
  return loginUrlFor(settings.publicUrl, settings.authPrefix, settings.signInPage, route, target, stepUp)
}

function formatParams(params: Readonly<Record<string, string>>): string {
  const entries = Object.entries(params)
  return entries.length === 0 ? 'no extra parameters' : entries.map(([k, v]) => `${k}=${v}`).join(' ')
}

/** The policy of a route, for `portcullis check`: the warning when it admits every signed-in user, else null. */
export function openRouteWarning(route: Pick<Route, 'id' | 'host' | 'pathPrefix' | 'public'> & { readonly policy: Pick<RoutePolicy, 'openToAll' | 'source'> }): string | null {
  if (route.public || !route.policy.openToAll) return null
  const where = `${route.id} (${route.host === '' ? 'any host' : route.host} ${route.pathPrefix})`
  const fix = route.policy.source === '' ? `add ${route.id}.allow or access.defaultAllow` : `${route.policy.source} has no condition`
  return `${where}: admits every signed-in user — ${fix}`
}

/** An explanation as the text `portcullis explain` prints. */
export function formatExplanation(e: Explanation): string {
  const out: string[] = []
  const r = e.request
  out.push('Request')
  out.push(`  ${r.method} ${r.url}`)
  out.push(`  host:   ${r.host}${r.hostFrom === 'publicUrl' ? ' (server.publicUrl\'s)' : ''}`)
  out.push(`  target: ${r.target}`)
  if (r.subject === null) out.push('  as:     no session')
  else {
    const when = r.subject.authTime === null ? 'auth_time unknown' : `auth_time ${new Date(r.subject.authTime).toISOString()}`
    out.push(`  as:     ${r.subject.kind === 'bearer' ? 'a bearer token' : 'a session'} of ${r.subject.sub === '' ? '(no sub)' : r.subject.sub}, ${when}${r.subject.scopes === undefined ? '' : `, scopes: ${r.subject.scopes.join(' ') || '(none)'}`}`)
  }
  const p = e.path
  out.push('Path')
  out.push(`  as sent:        ${p.raw}`)
  out.push(`  normalized:     ${p.normalized ?? `refused: ${p.rejected ?? 'it cannot be normalized safely'}`}`)
  if (p.normalized !== null) {
    out.push(`  double-encoded: ${p.doubleEncoded ? 'yes (%25xx: still encoded once decoded)' : 'no'}`)
    out.push(`  routes match:   ${p.matchPath}${p.matchPath !== p.normalized ? ' (;parameters removed)' : ''}`)
    if (p.folded !== p.matchPath) out.push(`  folded:         ${p.folded} (for case-insensitive routes and the case-folding guard)`)
  }
  out.push('Routes')
  for (const l of e.routes) out.push(`  ${l.chosen ? '✓' : '✗'} ${l.id} ${l.host === '' ? '*' : l.host} ${l.pathPrefix}${l.public ? ' (public)' : ''} — ${l.detail}`)
  if (e.route !== null) {
    const c = e.route
    const traits = [c.public ? 'public' : 'protected', c.bearer ? 'takes bearer tokens' : '', c.allowPreflight ? 'forwards CORS preflights' : '', c.caseInsensitive ? 'case-insensitive' : ''].filter((x) => x !== '')
    out.push('Route')
    out.push(`  ${c.id} → ${c.upstream}: ${traits.join(', ')}`)
    if (!c.public) out.push(`  allow rule: ${c.allowRule === '' ? '(none: every signed-in user)' : c.allowRule}${c.allowRule !== '' && c.openToAll ? ' (no condition: every signed-in user)' : ''}`)
  }
  const d = e.decision
  out.push('Decision')
  out.push(`  ${d.summary}`)
  for (const reason of d.reasons) out.push(`  because: ${reason}`)
  for (const c of d.conditions ?? []) formatCheck(out, c, '  ')
  if (d.verdict !== undefined && d.verdict.kind === 'step-up') out.push(`  step-up parameters: ${formatParams(d.verdict.params)}`)
  for (const a of d.answers) out.push(`  ${a.when === 'always' ? '' : `${a.when}: `}${a.forward ? 'forwarded' : a.status === null ? 'answered by Portcullis' : String(a.status)} — ${a.detail}`)
  return `${out.join('\n')}\n`
}

function formatCheck(out: string[], c: CheckResult, indent: string): void {
  out.push(`${indent}${c.ok ? '✓' : '✗'} ${c.rule}: ${c.detail}`)
  c.alternatives?.forEach((alt, i) => {
    out.push(`${indent}  alternative ${i + 1}:`)
    for (const inner of alt) formatCheck(out, inner, `${indent}    `)
  })
}
