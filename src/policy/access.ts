import type { Config } from '../config/types.ts'

/**
 * Access rules (step 4 of the request pipeline, after authentication): who may use a route
 * (`routes[].allow`, else `access.defaultAllow`) and how recent and strong the login must be
 * (`routes[].require`). Compiled once per route; judged per request on plain claims.
 *
 * An allow rule holds when every condition it gives holds; a list condition holds when the user has
 * one of its entries; `any` holds when one of its rules does. E-mail conditions need
 * `email_verified` unless the rule (or the rule it is nested in) sets `unverifiedEmail`. A rule with
 * no condition (or no rule at all) admits every signed-in user: `openToAll` says so, for
 * `portcullis check`.
 *
 * The verdict names the rule that failed (`routes[2].allow.groups`) and says why in words a user
 * may see: never a claim value, never the list it was compared with. `explain` gives the operator
 * every condition with its result (for `portcullis explain` and `{prefix}/debug`).
 */
export type AccessConfig = Config['access']
export type AllowRuleConfig = NonNullable<AccessConfig['defaultAllow']>
export type RequirementConfig = Config['routes'][number]['require']

/** Who a request is from: a session's login, or a verified bearer token. */
export interface Subject {
  readonly sub: string
  readonly claims: Readonly<Record<string, unknown>>
  /** When the user authenticated (ms), from `auth_time`. */
  readonly authTime: number | undefined
  /** The scopes of a bearer token; undefined for a session (scopes are not checked for sessions). */
  readonly scopes?: ReadonlySet<string> | undefined
}

export type Verdict =
  | { readonly kind: 'allow' }
  /** Not allowed, whatever login: 403. `scope`: the route's required scopes were missing (bearer). */
  | { readonly kind: 'deny'; readonly rule: string; readonly reason: string; readonly scope: boolean }
  /** Allowed once the user signs in again as the route requires: `params` go on the authorize URL. */
  | { readonly kind: 'step-up'; readonly rule: string; readonly reason: string; readonly params: Readonly<Record<string, string>> }

export const ALLOW: Verdict = Object.freeze({ kind: 'allow' })

/** One condition's result, for explanations. */
export interface CheckResult {
  readonly rule: string
  readonly ok: boolean
  /** What was compared, for the operator (may hold the user's claim values and the configured lists). */
  readonly detail: string
  readonly alternatives?: readonly (readonly CheckResult[])[]
}

export interface RoutePolicy {
  /** Where the allow rule comes from: `routes[2].allow`, `access.defaultAllow`, or '' (none: everyone). */
  readonly source: string
  /** The route admits every signed-in user (no rule, or a rule without conditions). */
  readonly openToAll: boolean
  readonly requirement: RequirementConfig
  /** Scopes a bearer token must hold (all of them). */
  readonly requiredScopes: readonly string[]
  judge(subject: Subject, now: number): Verdict
  /** Every condition with its result, allow rule first, then the requirements and scopes. */
  explain(subject: Subject, now: number): readonly CheckResult[]
  /**
   * The authorize parameters of a login that starts for this route: its `loginParams`, the
   * requirements (`acr_values`, `max_age`), and `prompt=login` when the current login (if any) falls
   * short of them, so the provider asks again instead of reusing its session.
   */
  loginParams(current: Subject | null, now: number): Record<string, string>
}

interface Condition {
  readonly rule: string
  /** A user-facing sentence for a failure: no claim values. */
  readonly reason: string
  readonly open: boolean
  test(claims: Readonly<Record<string, unknown>>): boolean
  explain(claims: Readonly<Record<string, unknown>>): CheckResult
}

/** A claim by name; a name holding dots is also looked up as a path (`realm_access.roles`) when no claim has it whole. */
export function claimAt(claims: Readonly<Record<string, unknown>>, name: string): unknown {
  const whole = claims[name]
  if (whole !== undefined || !name.includes('.')) return whole
  let at: unknown = claims
  for (const part of name.split('.')) {
    if (typeof at !== 'object' || at === null || Array.isArray(at)) return undefined
    at = (at as Record<string, unknown>)[part]
  }
  return at
}

/** The top-level claim names a set of rules reads, so sessions keep them. */
export function claimsRead(access: AccessConfig, rules: readonly (AllowRuleConfig | undefined)[]): string[] {
  const out = new Set<string>([access.groupsClaim, access.rolesClaim, access.organizationClaim, 'email', 'email_verified', 'acr', 'amr', 'auth_time'])
  const walk = (rule: AllowRuleConfig | undefined): void => {
    if (rule === undefined) return
    for (const name of Object.keys(rule.claims ?? {})) {
      out.add(name)
      out.add(name.split('.')[0] as string)
    }
    for (const alt of rule.any ?? []) walk(alt)
  }
  for (const rule of rules) walk(rule)
  for (const n of [access.groupsClaim, access.rolesClaim, access.organizationClaim]) out.add(n.split('.')[0] as string)
  return [...out]
}

function values(v: unknown): readonly unknown[] {
  return Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]
}

function shown(v: unknown): string {
  return v === undefined ? '(absent)' : JSON.stringify(v)
}

function verifiedEmail(claims: Readonly<Record<string, unknown>>): boolean {
  const v = claims.email_verified
  return v === true || v === 'true'
}

/** The e-mail claim, lower-cased, when it has exactly one `@` with text on both sides. */
function emailOf(claims: Readonly<Record<string, unknown>>): string | null {
  const email = claims.email
  if (typeof email !== 'string') return null
  const at = email.indexOf('@')
  if (at <= 0 || at !== email.lastIndexOf('@') || at === email.length - 1) return null
  return email.toLowerCase()
}

function listCondition(rule: string, reason: string, claim: string, entries: readonly string[]): Condition {
  const set = new Set(entries)
  const test = (claims: Readonly<Record<string, unknown>>) => values(claimAt(claims, claim)).some((v) => typeof v === 'string' && set.has(v))
  return {
    rule,
    reason,
    open: false,
    test,
    explain: (claims) => ({ rule, ok: test(claims), detail: `claim ${claim} = ${shown(claimAt(claims, claim))}; allowed: ${entries.join(', ')}` }),
  }
}

function emailCondition(rule: string, entries: readonly string[], unverified: boolean, domain: boolean): Condition {
  const set = new Set(entries.map((e) => e.toLowerCase()))
  const test = (claims: Readonly<Record<string, unknown>>) => {
    const email = emailOf(claims)
    if (email === null || (!unverified && !verifiedEmail(claims))) return false
    return set.has(domain ? email.slice(email.indexOf('@') + 1) : email)
  }
  const reason = domain ? 'Your e-mail address is not in a domain this page allows' : 'Your e-mail address is not one this page allows'
  return {
    rule,
    reason: unverified ? `${reason}.` : `${reason}, or it is not verified.`,
    open: false,
    test,
    explain: (claims) => ({
      rule,
      ok: test(claims),
      detail: `email = ${shown(claims.email)}, email_verified = ${shown(claims.email_verified)}${unverified ? ' (not required)' : ''}; allowed: ${entries.join(', ')}`,
    }),
  }
}

type ClaimMatcherConfig = NonNullable<AllowRuleConfig['claims']>[string]

function matcherTest(m: ClaimMatcherConfig): (v: unknown) => boolean {
  if (m.regex !== undefined) {
    const re = new RegExp(`^(?:${m.regex})$`, 'u')
    return (v) => (typeof v === 'string' || typeof v === 'number') && re.test(String(v))
  }
  if (m.anyOf !== undefined) {
    const set = new Set<unknown>(m.anyOf)
    return (v) => set.has(v)
  }
  const want = m.equals
  return (v) => v === want
}

function claimCondition(rule: string, claim: string, matcher: ClaimMatcherConfig): Condition {
  const one = matcherTest(matcher)
  const test = (claims: Readonly<Record<string, unknown>>) => values(claimAt(claims, claim)).some(one)
  const want = matcher.regex !== undefined ? `matches /${matcher.regex}/` : matcher.anyOf !== undefined ? `one of ${JSON.stringify(matcher.anyOf)}` : `= ${JSON.stringify(matcher.equals)}`
  return {
    rule,
    reason: 'Your account does not have an attribute this page requires.',
    open: false,
    test,
    explain: (claims) => ({ rule, ok: test(claims), detail: `claim ${claim} = ${shown(claimAt(claims, claim))}; required: ${want}` }),
  }
}

function compileRule(rule: AllowRuleConfig, path: string, access: AccessConfig, inheritedUnverified: boolean): Condition[] {
  const unverified = rule.unverifiedEmail ?? inheritedUnverified
  const out: Condition[] = []
  if (rule.emails !== undefined) out.push(emailCondition(`${path}.emails`, rule.emails, unverified, false))
  if (rule.domains !== undefined) out.push(emailCondition(`${path}.domains`, rule.domains, unverified, true))
  if (rule.groups !== undefined) out.push(listCondition(`${path}.groups`, 'Your account is not in a group this page allows.', access.groupsClaim, rule.groups))
  if (rule.roles !== undefined) out.push(listCondition(`${path}.roles`, 'Your account does not have a role this page allows.', access.rolesClaim, rule.roles))
  if (rule.organizations !== undefined) {
    out.push(listCondition(`${path}.organizations`, 'Your account is not in an organization this page allows.', access.organizationClaim, rule.organizations))
  }
  for (const [claim, matcher] of Object.entries(rule.claims ?? {})) out.push(claimCondition(`${path}.claims.${claim}`, claim, matcher))
  if (rule.any !== undefined) {
    const alternatives = rule.any.map((alt, i) => compileRule(alt, `${path}.any[${i}]`, access, unverified))
    const test = (claims: Readonly<Record<string, unknown>>) => alternatives.some((conds) => conds.every((c) => c.test(claims)))
    out.push({
      rule: `${path}.any`,
      reason: 'Your account does not meet any of the ways this page can be used.',
      open: alternatives.some((conds) => conds.every((c) => c.open)),
      test,
      explain: (claims) => {
        const results = alternatives.map((conds) => conds.map((c) => c.explain(claims)))
        return { rule: `${path}.any`, ok: test(claims), detail: `${results.filter((r) => r.every((c) => c.ok)).length} of ${results.length} alternatives hold`, alternatives: results }
      },
    })
  }
  return out
}

interface RouteInput {
  readonly id: string
  readonly allow?: AllowRuleConfig | undefined
  readonly require: RequirementConfig
  readonly loginParams: Readonly<Record<string, string>>
  readonly requiredScopes: readonly string[]
}

export function compilePolicy(route: RouteInput, access: AccessConfig): RoutePolicy {
  const rule = route.allow ?? access.defaultAllow
  const source = route.allow !== undefined ? `${route.id}.allow` : access.defaultAllow !== undefined ? 'access.defaultAllow' : ''
  const conditions = rule === undefined ? [] : compileRule(rule, source, access, false)
  const openToAll = conditions.every((c) => c.open)
  const req = route.require
  const mfaAmr = new Set(access.mfaAmrValues)
  const acrSet = new Set(req.acr)
  const hasMfa = (claims: Readonly<Record<string, unknown>>) => values(claims.amr).some((v) => typeof v === 'string' && mfaAmr.has(v))
  const hasAcr = (claims: Readonly<Record<string, unknown>>) => typeof claims.acr === 'string' && acrSet.has(claims.acr)
  const freshEnough = (s: Subject, now: number) => s.authTime !== undefined && now - s.authTime <= req.maxAuthAge

  // The requirements' authorize parameters: the same for every login of this route.
  const base: Record<string, string> = { ...route.loginParams }
  const acrValues = [...req.acr, ...(req.mfa ? access.mfaAcrValues : [])]
  if (acrValues.length > 0) base.acr_values = [...new Set(acrValues)].join(' ')
  if (req.maxAuthAge > 0) base.max_age = String(Math.floor(req.maxAuthAge / 1000))
  const stepUp = (rule: string, reason: string): Verdict => Object.freeze({ kind: 'step-up', rule, reason, params: Object.freeze({ ...base, prompt: 'login' }) })
  const needMfa = stepUp(`${route.id}.require.mfa`, 'This page requires a sign-in with a second factor.')
  const needAcr = stepUp(`${route.id}.require.acr`, 'This page requires a stronger sign-in.')
  const needFresh = stepUp(`${route.id}.require.maxAuthAge`, 'This page requires a recent sign-in.')
  const scopeDenied: Verdict = Object.freeze({
    kind: 'deny',
    rule: `${route.id}.requiredScopes`,
    reason: 'The token does not carry the scopes this API requires.',
    scope: true,
  })
  const denials = new Map<Condition, Verdict>()
  for (const c of conditions) denials.set(c, Object.freeze({ kind: 'deny', rule: c.rule, reason: c.reason, scope: false }))

  // The allow rule reads only claims: its verdict is kept per claims object (a session's claims are
  // shared by every request with its cookie, a bearer token's by every request with the token).
  const memo = new WeakMap<object, Verdict>()
  const allowVerdict = (claims: Readonly<Record<string, unknown>>): Verdict => {
    let v = memo.get(claims)
    if (v === undefined) {
      v = ALLOW
      for (const c of conditions) {
        if (!c.test(claims)) {
          v = denials.get(c) as Verdict
          break
        }
      }
      memo.set(claims, v)
    }
    return v
  }
  const requirementVerdict = (s: Subject, now: number): Verdict => {
    if (req.acr.length > 0 && !hasAcr(s.claims)) return needAcr
    if (req.mfa && !hasMfa(s.claims)) return needMfa
    if (req.maxAuthAge > 0 && !freshEnough(s, now)) return needFresh
    return ALLOW
  }
  const scopesHeld = (s: Subject) => s.scopes === undefined || route.requiredScopes.every((x) => (s.scopes as ReadonlySet<string>).has(x))

  return {
    source,
    openToAll,
    requirement: req,
    requiredScopes: route.requiredScopes,
    judge(subject, now) {
      if (conditions.length > 0) {
        const v = allowVerdict(subject.claims)
        if (v !== ALLOW) return v
      }
      if (!scopesHeld(subject)) return scopeDenied
      return requirementVerdict(subject, now)
    },
    explain(subject, now) {
      const out: CheckResult[] = conditions.map((c) => c.explain(subject.claims))
      if (conditions.length === 0) out.push({ rule: source === '' ? 'allow' : source, ok: true, detail: 'no condition: every signed-in user' })
      if (route.requiredScopes.length > 0) {
        out.push({
          rule: `${route.id}.requiredScopes`,
          ok: scopesHeld(subject),
          detail: subject.scopes === undefined ? 'a session (scopes are checked for bearer tokens only)' : `token scopes: ${[...subject.scopes].join(' ') || '(none)'}; required: ${route.requiredScopes.join(' ')}`,
        })
      }
      if (req.acr.length > 0) out.push({ rule: `${route.id}.require.acr`, ok: hasAcr(subject.claims), detail: `acr = ${shown(subject.claims.acr)}; required one of: ${req.acr.join(', ')}` })
      if (req.mfa) out.push({ rule: `${route.id}.require.mfa`, ok: hasMfa(subject.claims), detail: `amr = ${shown(subject.claims.amr)}; second factors: ${access.mfaAmrValues.join(', ')}` })
      if (req.maxAuthAge > 0) {
        const age = subject.authTime === undefined ? 'unknown (no auth_time)' : `${Math.round((now - subject.authTime) / 1000)}s`
        out.push({ rule: `${route.id}.require.maxAuthAge`, ok: freshEnough(subject, now), detail: `login age ${age}; at most ${Math.floor(req.maxAuthAge / 1000)}s` })
      }
      return out
    },
    loginParams(current, now) {
      if (current !== null && requirementVerdict(current, now) !== ALLOW) return { ...base, prompt: 'login' }
      return { ...base }
    },
  }
}

/** A session's or token's login time in ms, from its `auth_time` claim (seconds). */
export function authTimeOf(claims: Readonly<Record<string, unknown>>): number | undefined {
  const t = claims.auth_time
  return typeof t === 'number' && Number.isFinite(t) ? t * 1000 : undefined
}
