import { BlockList, isIP } from 'node:net'
import { z } from 'zod'
import { configSchema } from './schema.ts'
import { formatDuration } from './duration.ts'
import { tlsIssues } from './tls.ts'
import type { Config, ConfigIssue } from './types.ts'

/**
 * Validation of a loaded config tree (the last step after reading and resolving): the zod schema, then the cross-field
 * rules a per-key schema cannot express. Every issue is collected with its path (`session.secrets[0]`),
 * the list is sorted by path, and only a config without issues comes back, deep-frozen
 * (fastify `lib/initial-config-validation.js`). Nothing here touches the network or the file system.
 *
 * The small schema-walking helpers at the top are shared with `load.ts` (environment overrides and
 * `<key>File` need to know which keys exist and what type they have).
 */

/** One step of a key path: an object key or an array index. */
export type PathSegment = string | number

type AnySchema = z.core.$ZodType

const WRAPPERS = new Set(['default', 'prefault', 'optional', 'nullable', 'nonoptional', 'readonly', 'catch'])

/**
 * Strips the wrappers that do not change a key's shape (`.default()`, `.optional()`, `.describe()` clones,
 * and the input side of a `.transform()` pipe), so `duration('30s')` reads as a string and
 * `identity.default({...})` as its object.
 */
export function unwrapSchema(node: AnySchema): AnySchema {
  let current = node
  for (;;) {
    const def = current._zod.def
    if (WRAPPERS.has(def.type)) current = (def as z.core.$ZodDefaultDef).innerType
    else if (def.type === 'pipe') {
      // `z.preprocess` is a pipe from a transform into the real schema: the shape is its output's.
      const pipe = def as z.core.$ZodPipeDef
      current = pipe.in._zod.def.type === 'transform' ? pipe.out : pipe.in
    }
    else if (def.type === 'lazy') current = (def as z.core.$ZodLazyDef).getter()
    else return current
  }
}

/**
 * The schema node (wrappers included, so it can parse with its defaults) at a key path, or `undefined`
 * when the path leaves the schema. Array steps accept any index; record steps accept any key.
 */
export function schemaAt(path: readonly PathSegment[]): z.ZodType | undefined {
  let node: AnySchema = configSchema
  for (const segment of path) {
    const inner = unwrapSchema(node)
    const def = inner._zod.def
    if (def.type === 'object' && typeof segment === 'string') {
      const shape = (def as z.core.$ZodObjectDef).shape
      if (!Object.hasOwn(shape, segment)) return undefined
      node = shape[segment] as AnySchema
    } else if (def.type === 'array' && typeof segment === 'number') {
      node = (def as z.core.$ZodArrayDef).element
    } else if (def.type === 'record' && typeof segment === 'string') {
      node = (def as z.core.$ZodRecordDef).valueType
    } else {
      return undefined
    }
  }
  return node as z.ZodType
}

/** The keys of the (strict) object schema at a path, or `undefined` when there is no object there. */
export function objectKeysAt(path: readonly PathSegment[]): string[] | undefined {
  const node = schemaAt(path)
  if (node === undefined) return undefined
  const def = unwrapSchema(node)._zod.def
  return def.type === 'object' ? Object.keys((def as z.core.$ZodObjectDef).shape) : undefined
}

/** The kind of value a key holds once wrappers are stripped (`string`, `boolean`, `array`, `object`, ...). */
export function schemaKindAt(path: readonly PathSegment[]): string | undefined {
  const node = schemaAt(path)
  return node === undefined ? undefined : unwrapSchema(node)._zod.def.type
}

/**
 * Renders a key path the way operators read it: `session.secrets[0]`, `identity.headers.X-Auth-Request-User`,
 * `provider.authorizeParams["odd key"]`.
 */
export function formatPath(path: readonly PathSegment[]): string {
  let out = ''
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`
    else if (/^[A-Za-z0-9_-]+$/.test(segment)) out += out === '' ? segment : `.${segment}`
    else out += `[${JSON.stringify(segment)}]`
  }
  return out
}

/** Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), case-insensitive. */
function editDistance(a: string, b: string): number {
  const s = a.toLowerCase()
  const t = b.toLowerCase()
  const d: number[][] = Array.from({ length: s.length + 1 }, (_, i) => Array.from({ length: t.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= s.length; i++) {
    for (let j = 1; j <= t.length; j++) {
      const row = d[i] as number[]
      const prev = d[i - 1] as number[]
      const cost = s[i - 1] === t[j - 1] ? 0 : 1
      let best = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost)
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) best = Math.min(best, ((d[i - 2] as number[])[j - 2] as number) + 1)
      row[j] = best
    }
  }
  return (d[s.length] as number[])[t.length] as number
}

/** The closest candidate within edit distance 2, for "did you mean ...?" hints. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate)
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return best
}

/** Orders issues by path, segment by segment: array indexes as numbers (`routes[2]` before `routes[10]`), keys
 * case-insensitively. */
export function compareIssues(a: ConfigIssue, b: ConfigIssue): number {
  const split = (p: string): string[] => p.split(/[.[\]]+/).filter((s) => s !== '')
  const pa = split(a.path)
  const pb = split(b.path)
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i] as string
    const y = pb[i] as string
    if (x === y) continue
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y)
    const xl = x.toLowerCase()
    const yl = y.toLowerCase()
    if (xl !== yl) return xl < yl ? -1 : 1
    return x < y ? -1 : 1
  }
  return pa.length - pb.length
}

/** Sorts by path (stable, so issues at one path keep their order) and drops exact duplicates. */
export function sortIssues(issues: readonly ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>()
  const unique = issues.filter((issue) => {
    const key = `${issue.path}\u0000${issue.message}`
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
  return unique.sort(compareIssues)
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** The raw value at a path, or `undefined`. */
function rawAt(raw: unknown, path: readonly PathSegment[]): unknown {
  let current = raw
  for (const segment of path) {
    if (typeof segment === 'number') {
      if (!Array.isArray(current)) return undefined
      current = current[segment]
    } else {
      if (!isPlainObject(current) || !Object.hasOwn(current, segment)) return undefined
      current = current[segment]
    }
  }
  return current
}

function describeValue(value: unknown): string {
  if (value === null) return 'nothing (an empty value)'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  if (typeof value === 'boolean') return `${value}`
  if (typeof value === 'string') return 'a string'
  return `a ${typeof value}`
}

const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
}

/** A duration key is one whose schema turns the text `1s` into the number 1000 (`duration()` in schema.ts). */
function isDuration(path: readonly PathSegment[]): boolean {
  const node = schemaAt(path)
  return node !== undefined && node.safeParse('1s').data === 1000
}

/** zod's own default texts start like this; texts written in schema.ts are kept as they are. */
const ZOD_DEFAULT_TEXT = /^(Invalid input|Invalid option|Too small|Too big|Invalid string|Invalid key|Invalid element|Invalid)\b/

function rewriteMessage(issue: z.core.$ZodIssue, raw: unknown): string {
  const value = rawAt(raw, issue.path as PathSegment[])
  switch (issue.code) {
    case 'invalid_type':
      if (value === undefined) return 'is required'
      if (isDuration(issue.path as PathSegment[])) return `must be a duration such as 30s, 5m or 12h (got ${describeValue(value)})`
      return `must be ${EXPECTED[issue.expected] ?? issue.expected} (got ${describeValue(value)})`
    case 'invalid_value':
      return issue.values.length === 1
        ? `must be ${String(issue.values[0])}`
        : `must be one of: ${issue.values.map(String).join(', ')}`
    case 'too_small':
      if (!ZOD_DEFAULT_TEXT.test(issue.message)) return issue.message
      if (issue.origin === 'string') return Number(issue.minimum) <= 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters`
      if (issue.origin === 'array') return Number(issue.minimum) <= 1 ? 'must not be empty' : `must have at least ${issue.minimum} entries`
      return `must be ${issue.inclusive === false ? 'greater than' : 'at least'} ${issue.minimum}`
    case 'too_big':
      if (!ZOD_DEFAULT_TEXT.test(issue.message)) return issue.message
      if (issue.origin === 'string') return `must be at most ${issue.maximum} characters`
      if (issue.origin === 'array') return `must have at most ${issue.maximum} entries`
      return `must be ${issue.inclusive === false ? 'less than' : 'at most'} ${issue.maximum}`
    case 'invalid_key': {
      const inner = issue.issues[0]
      return `invalid key: ${inner === undefined ? issue.message : inner.message}`
    }
    case 'custom': {
      // schema.ts phrases URL errors with a subject ("server.publicUrl must be ..."); the path already says it.
      const generic = formatPath(issue.path.map((s) => (typeof s === 'number' ? -1 : String(s)))).replaceAll('[-1]', '[]')
      return issue.message.startsWith(`${generic} `) ? issue.message.slice(generic.length + 1) : issue.message
    }
    default:
      return issue.message
  }
}

/**
 * Maps zod issues to `ConfigIssue`s. An unknown key becomes its own issue at `parent.key` with a
 * "did you mean" hint drawn from the parent's keys (and their `<key>File` forms).
 */
export function mapZodIssues(issues: readonly z.core.$ZodIssue[], raw: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = []
  for (const issue of issues) {
    const path = issue.path.filter((s): s is PathSegment => typeof s !== 'symbol')
    if (issue.code === 'unrecognized_keys') {
      const known = objectKeysAt(path) ?? []
      const candidates = [...known, ...known.map((k) => `${k}File`)]
      for (const key of issue.keys) {
        const hint = suggest(key, candidates)
        out.push({ path: formatPath([...path, key]), message: hint === undefined ? 'unknown key' : `unknown key (did you mean ${hint}?)` })
      }
      continue
    }
    out.push({ path: formatPath(path), message: rewriteMessage(issue, raw) })
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// Cross-field rules. Each value is parsed on its own with its own schema (defaults included), so a rule
// runs whenever the values it needs are valid, even if some other part of the file is not.

const S = configSchema.shape
const SERVER = S.server.shape
const PROVIDER = S.provider.shape
const SESSION = S.session.shape
const ROUTE = S.routes.element.shape
const IDENTITY = S.identity.unwrap().shape
const EXTRA_ISSUER = PROVIDER.extraIssuers.unwrap().element

function parsed<T extends z.ZodType>(schema: T, value: unknown): z.output<T> | undefined {
  const result = schema.safeParse(value)
  return result.success ? result.data : undefined
}

/** Parameters Portcullis sets on the authorization request itself (RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 7636, JAR). */
export const PROTOCOL_PARAMS: readonly string[] = [
  'response_type',
  'client_id',
  'redirect_uri',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'response_mode',
  'request',
  'request_uri',
]

/** Header names an identity header must not take: hop-by-hop (RFC 9110 §7.6.1) or owned by the proxy. */
export const RESERVED_HEADERS: readonly string[] = [
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'proxy-authorization',
  'proxy-authenticate',
  'host',
  'content-length',
  'cookie',
  // set by Portcullis itself on every proxied request
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
  'x-auth-request-access-token',
]

/** Longest `session.refreshAhead` we accept: access tokens commonly live five minutes. */
const MAX_REFRESH_AHEAD_MS = 5 * 60_000

/** `localhost`, `127.0.0.0/8` and `[::1]`: the hosts an http:// provider may live on (tests, demo). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase()
  if (host === 'localhost' || host === '[::1]') return true
  return isIP(host) === 4 && host.startsWith('127.')
}

/** Is `hostname` (a URL's, lower-cased by the URL parser) one of `provider.allowInsecureHttpHosts`? Exact match only. */
export function isInsecureHttpHost(hostname: string, hosts: readonly string[]): boolean {
  const host = hostname.toLowerCase()
  return hosts.some((h) => h.toLowerCase() === host)
}

/**
 * May Portcullis fetch this URL from the provider side (an extra issuer's discovery, its JWKS)? https
 * always; plain http only with `provider.allowInsecureHttp`, on loopback or a listed host.
 */
export function providerUrlAllowed(url: URL, provider: { readonly allowInsecureHttp: boolean; readonly allowInsecureHttpHosts: readonly string[] }): boolean {
  if (url.protocol === 'https:') return true
  if (url.protocol !== 'http:' || !provider.allowInsecureHttp) return false
  return isLoopbackHost(url.hostname) || isInsecureHttpHost(url.hostname, provider.allowInsecureHttpHosts)
}

/** A single IPv4/IPv6 address or a CIDR, as `node:net` `BlockList` accepts it. */
export function isAddressOrCidr(entry: string): boolean {
  const slash = entry.indexOf('/')
  const address = slash < 0 ? entry : entry.slice(0, slash)
  const version = isIP(address)
  if (version === 0) return false
  const family = version === 4 ? 'ipv4' : 'ipv6'
  try {
    if (slash < 0) {
      new BlockList().addAddress(address, family)
    } else {
      const bits = entry.slice(slash + 1)
      if (!/^\d{1,3}$/.test(bits)) return false
      new BlockList().addSubnet(address, Number(bits), family)
    }
    return true
  } catch {
    return false
  }
}

function checkProvider(raw: unknown, issues: ConfigIssue[]): void {
  const allowInsecure = parsed(PROVIDER.allowInsecureHttp, rawAt(raw, ['provider', 'allowInsecureHttp'])) === true
  const insecureHosts = parsed(PROVIDER.allowInsecureHttpHosts, rawAt(raw, ['provider', 'allowInsecureHttpHosts'])) ?? []
  if (insecureHosts.length > 0 && !allowInsecure) {
    issues.push({
      path: 'provider.allowInsecureHttpHosts',
      message: 'needs provider.allowInsecureHttp: true (the list only widens where that switch applies; it does not turn it on)',
    })
  }

  const checkUrl = (path: PathSegment[], text: string | undefined): void => {
    if (text === undefined) return
    const url = new URL(text)
    if (url.protocol !== 'http:') return
    const listed = isInsecureHttpHost(url.hostname, insecureHosts)
    if (!isLoopbackHost(url.hostname) && !listed) {
      const allowed = insecureHosts.length === 0 ? 'only allows localhost, 127.0.0.0/8 and [::1]' : 'only allows localhost, 127.0.0.0/8, [::1] and provider.allowInsecureHttpHosts'
      issues.push({
        path: formatPath(path),
        message: `plain http is refused for ${url.hostname}: use https (provider.allowInsecureHttp ${allowed})`,
      })
    } else if (!allowInsecure) {
      const message = listed
        ? `plain http to ${url.hostname} (listed in provider.allowInsecureHttpHosts) needs provider.allowInsecureHttp: true`
        : 'plain http needs provider.allowInsecureHttp: true (loopback only: tests and the demo)'
      issues.push({ path: formatPath(path), message })
    }
  }

  const issuer = parsed(PROVIDER.issuer, rawAt(raw, ['provider', 'issuer']))
  checkUrl(['provider', 'issuer'], issuer)
  // Extra issuers of bearer tokens: the same http rule as the provider's (their keys are fetched the
  // same way), each listed once and never the provider's own.
  const extra = rawAt(raw, ['provider', 'extraIssuers'])
  if (Array.isArray(extra)) {
    const seen = new Map<string, number>()
    extra.forEach((entry: unknown, i) => {
      const value = parsed(EXTRA_ISSUER, entry)
      if (value === undefined) return // the schema reports it
      const at: PathSegment[] = typeof entry === 'string' ? ['provider', 'extraIssuers', i] : ['provider', 'extraIssuers', i, 'issuer']
      checkUrl(at, value.issuer)
      checkUrl(['provider', 'extraIssuers', i, 'jwksUri'], value.jwksUri)
      const first = seen.get(value.issuer)
      if (value.issuer === issuer) issues.push({ path: formatPath(at), message: "is provider.issuer: the provider's own tokens are accepted without it" })
      else if (first !== undefined) issues.push({ path: formatPath(at), message: `is listed twice (also provider.extraIssuers[${first}])` })
      else seen.set(value.issuer, i)
    })
  }
  const endpointShape = PROVIDER.endpoints.unwrap().shape
  const endpointNames = Object.keys(endpointShape) as (keyof typeof endpointShape)[]
  for (const name of endpointNames) {
    checkUrl(['provider', 'endpoints', name], parsed(endpointShape[name], rawAt(raw, ['provider', 'endpoints', name])))
  }

  const discovery = parsed(PROVIDER.discovery, rawAt(raw, ['provider', 'discovery']))
  if (discovery === false) {
    for (const name of ['authorization', 'token', 'jwks'] as const) {
      if (rawAt(raw, ['provider', 'endpoints', name]) === undefined) {
        issues.push({ path: formatPath(['provider', 'endpoints', name]), message: 'is required when provider.discovery is false' })
      }
    }
  }

  const scopes = parsed(PROVIDER.scopes, rawAt(raw, ['provider', 'scopes']))
  if (scopes !== undefined && !scopes.includes('openid')) {
    issues.push({ path: 'provider.scopes', message: 'must include openid (without it the provider sends no ID token)' })
  }

  const social = rawAt(raw, ['provider', 'socialProviders'])
  if (Array.isArray(social) && social.length > 0) {
    const hints = parsed(PROVIDER.hintParams, rawAt(raw, ['provider', 'hintParams'])) ?? []
    if (!hints.includes('provider')) {
      issues.push({ path: 'provider.socialProviders', message: 'needs "provider" in provider.hintParams: without it the buttons start a plain login' })
    }
  }

  const params = rawAt(raw, ['provider', 'authorizeParams'])
  if (isPlainObject(params)) {
    const hints = parsed(PROVIDER.hintParams, rawAt(raw, ['provider', 'hintParams'])) ?? []
    for (const name of Object.keys(params)) {
      const lower = name.toLowerCase()
      const path = formatPath(['provider', 'authorizeParams', name])
      if (PROTOCOL_PARAMS.includes(lower)) {
        issues.push({ path, message: `${name} is a protocol parameter that Portcullis sets itself; it cannot be a fixed authorize parameter` })
      } else if (hints.some((h) => h.toLowerCase() === lower)) {
        issues.push({ path, message: `${name} is also listed in provider.hintParams; keep it in one of the two` })
      }
    }
  }
}

function checkServerAndCookies(raw: unknown, issues: ConfigIssue[]): void {
  const publicUrlText = parsed(SERVER.publicUrl, rawAt(raw, ['server', 'publicUrl']))
  let publicHost: string | undefined
  if (publicUrlText !== undefined) {
    const url = new URL(publicUrlText)
    const problems: string[] = []
    if (url.pathname !== '/' && url.pathname !== '') problems.push(`a path (${url.pathname})`)
    if (url.search !== '' || publicUrlText.includes('?')) problems.push('a query')
    if (url.hash !== '' || publicUrlText.includes('#')) problems.push('a fragment')
    if (url.username !== '' || url.password !== '') problems.push('user info')
    if (problems.length > 0) {
      issues.push({ path: 'server.publicUrl', message: `must be an origin like ${url.origin}, without ${problems.join(', ')}` })
    }
    publicHost = url.hostname.toLowerCase()
  }

  const cookieDomain = parsed(SESSION.cookieDomain, rawAt(raw, ['session', 'cookieDomain']))
  if (cookieDomain !== undefined && cookieDomain !== '' && publicHost !== undefined) {
    const domain = cookieDomain.toLowerCase().replace(/^\./, '')
    const suffixOk = publicHost === domain || publicHost.endsWith(`.${domain}`)
    if (!suffixOk) {
      issues.push({ path: 'session.cookieDomain', message: `must be ${publicHost} or a parent domain of it (the host of server.publicUrl)` })
    } else if (!domain.includes('.') && domain !== publicHost) {
      issues.push({ path: 'session.cookieDomain', message: `${domain} is a top-level domain; browsers refuse cookies for it` })
    }
  }

  const proxies = rawAt(raw, ['server', 'trustedProxies'])
  if (Array.isArray(proxies)) {
    proxies.forEach((entry, i) => {
      if (typeof entry === 'string' && !isAddressOrCidr(entry)) {
        issues.push({ path: formatPath(['server', 'trustedProxies', i]), message: `"${entry}" is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.168.1.10, fd00::/8)` })
      }
    })
  }
}

function checkSessionTimes(raw: unknown, issues: ConfigIssue[]): void {
  const maxAge = parsed(SESSION.maxAge, rawAt(raw, ['session', 'maxAge']))
  const idle = parsed(SESSION.idleTimeout, rawAt(raw, ['session', 'idleTimeout']))
  const ahead = parsed(SESSION.refreshAhead, rawAt(raw, ['session', 'refreshAhead']))
  if (maxAge !== undefined && idle !== undefined && idle > maxAge) {
    issues.push({ path: 'session.idleTimeout', message: `must not be longer than session.maxAge (${formatDuration(idle)} > ${formatDuration(maxAge)})` })
  }
  if (ahead !== undefined && ahead >= MAX_REFRESH_AHEAD_MS) {
    issues.push({ path: 'session.refreshAhead', message: `must be shorter than 5m (got ${formatDuration(ahead)}); access tokens often live only 5 minutes` })
  }
}

function checkRoutes(raw: unknown, issues: ConfigIssue[]): void {
  const routes = rawAt(raw, ['routes'])
  if (!Array.isArray(routes)) return
  const seen = new Map<string, number>()
  routes.forEach((route: unknown, i) => {
    const match = parsed(ROUTE.match, rawAt(route, ['match']))
    if (match !== undefined) {
      const key = `${match.host.toLowerCase()} ${match.pathPrefix}`
      const first = seen.get(key)
      if (first === undefined) seen.set(key, i)
      else {
        issues.push({
          path: formatPath(['routes', i, 'match']),
          message: `same host ("${match.host}") and pathPrefix ("${match.pathPrefix}") as routes[${first}]`,
        })
      }
    }
    const upstream = parsed(ROUTE.upstream, rawAt(route, ['upstream']))
    if (upstream !== undefined && (upstream.includes('?') || upstream.includes('#'))) {
      issues.push({ path: formatPath(['routes', i, 'upstream']), message: 'must not have a query or a fragment' })
    }
    // RFC 9728 / RFC 8707: a resource identifier has no query or fragment (its bearer-only and
    // audience rules are in checkRouteAccess).
    const resource = parsed(ROUTE.resource, rawAt(route, ['resource']))
    if (resource !== undefined && (resource.includes('#') || resource.includes('?'))) {
      issues.push({ path: formatPath(['routes', i, 'resource']), message: 'must not have a query or a fragment (RFC 9728 §1.2, RFC 8707 §2)' })
    }
    checkRouteAccess(route, i, issues)
  })
}

/** Authorize parameters a route's step-up sets itself (`require.acr`/`mfa` → acr_values, `maxAuthAge` → max_age, a step-up → prompt). */
const STEP_UP_PARAMS: readonly string[] = ['acr_values', 'max_age', 'prompt']

/**
 * A route's access keys that only mean something together with others: loginParams that would
 * override the protocol or the step-up, bearer-only keys without `bearer`, `audience` beside
 * `resource` (the resource is the audience), and access rules on a public route (nobody signs in there).
 */
function checkRouteAccess(route: unknown, i: number, issues: ConfigIssue[]): void {
  const params = rawAt(route, ['loginParams'])
  if (isPlainObject(params)) {
    for (const name of Object.keys(params)) {
      const lower = name.toLowerCase()
      const path = formatPath(['routes', i, 'loginParams', name])
      if (PROTOCOL_PARAMS.includes(lower)) {
        issues.push({ path, message: `${name} is a protocol parameter that Portcullis sets itself; it cannot be a login parameter` })
      } else if (STEP_UP_PARAMS.includes(lower)) {
        issues.push({ path, message: `${name} is set from the route's require (acr_values, max_age) and by a step-up (prompt); use routes[${i}].require instead` })
      }
    }
  }
  const bearer = parsed(ROUTE.bearer, rawAt(route, ['bearer'])) === true
  const audience = rawAt(route, ['audience'])
  const scopes = rawAt(route, ['requiredScopes'])
  const resource = rawAt(route, ['resource'])
  if (!bearer) {
    const given: Array<[string, boolean]> = [
      ['audience', typeof audience === 'string' && audience !== ''],
      ['requiredScopes', Array.isArray(scopes) && scopes.length > 0],
      ['resource', resource !== undefined],
    ]
    for (const [key, set] of given) {
      if (set) issues.push({ path: formatPath(['routes', i, key]), message: 'applies to bearer tokens only; set bearer: true on this route, or remove it' })
    }
  } else if (typeof audience === 'string' && audience !== '' && resource !== undefined) {
    issues.push({ path: formatPath(['routes', i, 'audience']), message: `set either audience or resource, not both (tokens must carry routes[${i}].resource in aud)` })
  }
  if (parsed(ROUTE.public, rawAt(route, ['public'])) === true) {
    for (const key of ['allow', 'require'] as const) {
      if (rawAt(route, [key]) !== undefined) {
        issues.push({ path: formatPath(['routes', i, key]), message: `has no effect on a public route (nobody signs in there); remove public: true or routes[${i}].${key}` })
      }
    }
  }
}

function checkIdentityHeaders(raw: unknown, issues: ConfigIssue[]): void {
  const headers = rawAt(raw, ['identity', 'headers'])
  if (!isPlainObject(headers)) return
  const seen = new Map<string, string>()
  for (const name of Object.keys(headers)) {
    if (parsed(IDENTITY.headers.unwrap().keyType, name) === undefined) continue // the schema reports it
    const normalized = name.toLowerCase().replaceAll('_', '-') // rule 10: "_" ≡ "-"
    const path = formatPath(['identity', 'headers', name])
    if (RESERVED_HEADERS.includes(normalized)) {
      issues.push({ path, message: `${name} is a hop-by-hop or reserved header; choose another name` })
    } else if (normalized === 'authorization') {
      issues.push({ path, message: 'Authorization cannot be an identity header; use identity.passAuthorizationHeader' })
    }
    const other = seen.get(normalized)
    if (other !== undefined) issues.push({ path, message: `is the same header as ${other} (names compare case-insensitively, "_" as "-")` })
    else seen.set(normalized, name)
  }
  const strip = rawAt(raw, ['identity', 'stripHeaders'])
  if (!Array.isArray(strip)) return
  strip.forEach((entry: unknown, i) => {
    if (typeof entry !== 'string') return // the schema reports it
    const normalized = entry.toLowerCase().replaceAll('_', '-')
    const prefix = normalized.endsWith('*') ? normalized.slice(0, -1) : normalized.endsWith('-') ? normalized : null
    const hit = prefix === null ? (NEEDED_HEADERS.includes(normalized) ? normalized : undefined) : NEEDED_HEADERS.find((h) => h.startsWith(prefix))
    if (hit !== undefined) {
      issues.push({ path: formatPath(['identity', 'stripHeaders', i]), message: `would strip ${hit}, which every request needs; name the headers to strip more narrowly` })
    }
  })
}

/** Request headers identity.stripHeaders may not remove: requests cannot be routed or authenticated without them. */
const NEEDED_HEADERS: readonly string[] = ['host', 'cookie', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'upgrade', 'accept']

/** The cross-field rules of the configuration contract, over a raw (possibly partly invalid) tree. */
export function crossFieldIssues(raw: unknown): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  checkProvider(raw, issues)
  checkServerAndCookies(raw, issues)
  checkSessionTimes(raw, issues)
  checkRoutes(raw, issues)
  checkIdentityHeaders(raw, issues)
  checkScaleOut(raw, issues)
  return issues
}

/** Which of `session.redis`'s three ways to reach Redis a raw tree sets. */
export function redisModes(redis: { readonly url: string; readonly sentinel: { readonly nodes: readonly string[] }; readonly cluster: { readonly nodes: readonly string[] } }): ('url' | 'sentinel' | 'cluster')[] {
  const modes: ('url' | 'sentinel' | 'cluster')[] = []
  if (redis.url !== '') modes.push('url')
  if (redis.sentinel.nodes.length > 0) modes.push('sentinel')
  if (redis.cluster.nodes.length > 0) modes.push('cluster')
  return modes
}

/** Redis, TLS listener, workers and metrics: the settings that only make sense together. */
function checkScaleOut(raw: unknown, issues: ConfigIssue[]): void {
  const store = parsed(SESSION.store, rawAt(raw, ['session', 'store']))
  const redis = parsed(SESSION.redis, rawAt(raw, ['session', 'redis']))
  let redisConfigured: boolean | undefined
  if (redis !== undefined) {
    const modes = redisModes(redis)
    redisConfigured = modes.length > 0
    if (modes.length > 1) {
      issues.push({ path: 'session.redis', message: `set one of url, sentinel.nodes or cluster.nodes, not ${modes.join(' and ')}` })
    }
    if (modes.includes('sentinel') && redis.sentinel.masterName === '') {
      issues.push({ path: 'session.redis.sentinel.masterName', message: 'is required with sentinel.nodes (the master set name the Sentinels watch)' })
    }
    if ((redis.tls.cert === '') !== (redis.tls.key === '')) {
      issues.push({ path: `session.redis.tls.${redis.tls.cert === '' ? 'cert' : 'key'}`, message: 'client certificate and key go together: set both (certFile, keyFile) or neither' })
    }
    if (store === 'redis' && !redisConfigured) {
      issues.push({ path: 'session.redis.url', message: 'is required with session.store: redis (or sentinel.nodes, or cluster.nodes)' })
    }
  }
  const tls = parsed(SERVER.tls, rawAt(raw, ['server', 'tls']))
  if (tls !== undefined && (tls.cert === '') !== (tls.key === '')) {
    issues.push({ path: `server.tls.${tls.cert === '' ? 'cert' : 'key'}`, message: 'an HTTPS listener needs both a certificate and its key (certFile, keyFile)' })
  } else if (tls !== undefined && tls.cert !== '') {
    issues.push(...tlsIssues(tls.cert, tls.key))
  }
  const workers = parsed(SERVER.workers, rawAt(raw, ['server', 'workers']))
  if (workers !== undefined && workers !== 1) {
    if (store === 'memory') {
      issues.push({ path: 'server.workers', message: 'more than one worker cannot share session.store: memory (each process has its own); use redis, or cookie with session.redis' })
    } else if (redisConfigured === false) {
      issues.push({
        path: 'server.workers',
        message: 'more than one worker needs session.redis: workers share revocations, the back-channel replay cache and the refresh lock through it, as replicas do',
      })
    }
  }
  const metricsListen = parsed(S.metrics.unwrap().shape.listen, rawAt(raw, ['metrics', 'listen']))
  const listen = parsed(SERVER.listen, rawAt(raw, ['server', 'listen']))
  // Port 0 (a port the system picks, as tests use) gives each listener its own.
  if (metricsListen !== undefined && metricsListen !== '' && metricsListen === listen && !metricsListen.endsWith(':0')) {
    issues.push({ path: 'metrics.listen', message: 'must be another address than server.listen (metrics are served apart from the proxy)' })
  }
}

/** `Object.freeze` all the way down, so no layer can change the config after start (rule 7). */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/**
 * Validates a loaded config tree: the schema, then the cross-field rules (which run on whatever parts
 * are valid, so every problem is listed at once). Issues come back sorted by path; a valid config comes
 * back deep-frozen.
 */
export function validateConfig(raw: unknown): { ok: true; config: Config } | { ok: false; issues: ConfigIssue[] } {
  const result = configSchema.safeParse(raw)
  const issues = [...(result.success ? [] : mapZodIssues(result.error.issues, raw)), ...crossFieldIssues(raw)]
  if (!result.success || issues.length > 0) return { ok: false, issues: sortIssues(issues) }
  return { ok: true, config: deepFreeze(result.data) as Config }
}
