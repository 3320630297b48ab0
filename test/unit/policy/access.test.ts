/**
 * Access rules and step-up requirements (`src/policy/access.ts`), judged on plain claims: the allow
 * rule's conditions (e-mails, domains, groups, roles, organizations, claim matchers, `any`), the
 * verdicts (which rule refused, in words without claim values), the per-claims memo, step-up (acr,
 * mfa, maxAuthAge), bearer scopes, the authorize parameters of a login and the operator's
 * explanation. Every rule is built through the config schema, the way a config file reaches it.
 */
import t from 'tap'
import { authTimeOf, claimAt, claimsRead, compilePolicy, type RoutePolicy, type Subject, type Verdict } from '../../../src/policy/access.ts'
import { configSchema, routeSchema } from '../../../src/config/schema.ts'

const NOW = Date.UTC(2026, 11, 2, 12, 0, 0)

/** A route's policy from raw config (`routes[0]` unless `id` says otherwise) and a raw `access` section. */
function policy(route: Record<string, unknown>, access: Record<string, unknown> = {}, id = 'routes[0]'): RoutePolicy {
  const r = routeSchema.parse({ upstream: 'http://127.0.0.1:8080', ...route })
  const a = configSchema.shape.access.parse(access)
  return compilePolicy({ id, allow: r.allow, require: r.require, loginParams: r.loginParams, requiredScopes: r.requiredScopes }, a)
}

/** A session's subject: claims and, when given, a login time. */
function who(claims: Record<string, unknown>, authTime?: number, scopes?: string[]): Subject {
  return { sub: String(claims.sub ?? 'someone'), claims, authTime, ...(scopes === undefined ? {} : { scopes: new Set(scopes) }) }
}

const judge = (p: RoutePolicy, claims: Record<string, unknown>, authTime: number | undefined = NOW): Verdict => p.judge(who(claims, authTime), NOW)
const kind = (p: RoutePolicy, claims: Record<string, unknown>): string => judge(p, claims).kind
const ruleOf = (v: Verdict): string => (v.kind === 'allow' ? '' : v.rule)

const alice = { sub: 'alice', email: 'alice@example.com', email_verified: true, groups: ['admins', 'engineering'], roles: ['admin'], org_id: 'org_example' }
const bob = { sub: 'bob', email: 'bob@example.com', email_verified: true, groups: ['engineering'], roles: ['viewer'], org_id: 'org_example' }
const carol = { sub: 'carol', email: 'carol@partner.example', email_verified: false, groups: [], org_id: 'org_partner' }

t.test('emails: case-insensitive, exactly one @, verified unless unverifiedEmail', async (t) => {
  const p = policy({ allow: { emails: ['Ops@Example.com'] } })
  t.equal(kind(p, { email: 'ops@example.com', email_verified: true }), 'allow')
  t.equal(kind(p, { email: 'OPS@EXAMPLE.COM', email_verified: true }), 'allow', 'the claim in another case')
  t.equal(kind(p, { email: 'ops@example.com', email_verified: 'true' }), 'allow', 'email_verified as the string "true"')
  t.equal(kind(p, { email: 'ops@example.com', email_verified: false }), 'deny', 'not verified')
  t.equal(kind(p, { email: 'ops@example.com', email_verified: 'false' }), 'deny', 'the string "false"')
  t.equal(kind(p, { email: 'ops@example.com', email_verified: 1 }), 'deny', 'only true or "true" count')
  t.equal(kind(p, { email: 'ops@example.com' }), 'deny', 'email_verified absent')
  t.equal(kind(p, { email: 'other@example.com', email_verified: true }), 'deny')
  t.equal(kind(p, { email: 'ops@example.com@example.com', email_verified: true }), 'deny', 'two @ in the claim')
  t.equal(kind(p, { email: ['ops@example.com'], email_verified: true }), 'deny', 'an e-mail claim that is not a string')
  t.equal(kind(p, { email_verified: true }), 'deny', 'no e-mail')
  t.equal(kind(p, { email: ' ops@example.com', email_verified: true }), 'deny', 'compared whole, not trimmed')

  const loose = policy({ allow: { emails: ['ops@example.com'], unverifiedEmail: true } })
  t.equal(kind(loose, { email: 'ops@example.com', email_verified: false }), 'allow', 'unverifiedEmail: verification not needed')
  t.equal(kind(loose, { email: 'ops@example.com' }), 'allow')
  t.equal(kind(loose, { email: 'x@ops@example.com' }), 'deny', 'still exactly one @')
})

t.test('domains: the exact domain after the one @, case-insensitive, verified unless unverifiedEmail', async (t) => {
  const p = policy({ allow: { domains: ['Example.COM'] } })
  t.equal(kind(p, alice), 'allow')
  t.equal(kind(p, { email: 'Alice@EXAMPLE.com', email_verified: true }), 'allow', 'case of the claim')
  t.equal(kind(p, { email: 'alice@sub.example.com', email_verified: true }), 'deny', 'a subdomain is another domain')
  t.equal(kind(p, { email: 'alice@badexample.com', email_verified: true }), 'deny', 'no suffix match')
  t.equal(kind(p, { email: 'alice@example.com.evil.example', email_verified: true }), 'deny', 'no prefix match')
  t.equal(kind(p, { email: 'alice@example.com@evil.example', email_verified: true }), 'deny', 'two @: neither part is taken')
  t.equal(kind(p, { email: 'evil.example@example.com@', email_verified: true }), 'deny')
  t.equal(kind(p, { email: '@example.com', email_verified: true }), 'deny', 'nothing before the @')
  t.equal(kind(p, { email: 'alice@', email_verified: true }), 'deny', 'nothing after it')
  t.equal(kind(p, { email: 'alice@example.com', email_verified: false }), 'deny', 'not verified')
  t.equal(kind(p, { email: 'alice@example.com', email_verified: 'true' }), 'allow', 'the string "true"')

  t.equal(kind(policy({ allow: { domains: ['partner.example'] } }), carol), 'deny', "carol's address is not verified")
  t.equal(kind(policy({ allow: { domains: ['partner.example'], unverifiedEmail: true } }), carol), 'allow', 'with unverifiedEmail')
  t.equal(kind(policy({ allow: { domains: ['example.com'], unverifiedEmail: true } }), carol), 'deny', 'unverifiedEmail does not widen the domains')
})

t.test('groups, roles, organizations: any of the entries; the claim a list or one string; claim names configurable', async (t) => {
  const groups = policy({ allow: { groups: ['admins', 'ops'] } })
  t.equal(kind(groups, alice), 'allow')
  t.equal(kind(groups, bob), 'deny')
  t.equal(kind(groups, carol), 'deny', 'an empty list')
  t.equal(kind(groups, { groups: 'ops' }), 'allow', 'one string')
  t.equal(kind(groups, { groups: 'admins,ops' }), 'deny', 'a string is one value, not a list to split')
  t.equal(kind(groups, { groups: ['Admins'] }), 'deny', 'case-sensitive')
  t.equal(kind(groups, { groups: [['admins']] }), 'deny', 'only string entries count')
  t.equal(kind(groups, { groups: null }), 'deny')
  t.equal(kind(groups, {}), 'deny', 'absent')

  const roles = policy({ allow: { roles: ['admin'] } })
  t.equal(kind(roles, alice), 'allow')
  t.equal(kind(roles, bob), 'deny')
  t.equal(kind(roles, { roles: 'admin' }), 'allow', 'one string')
  t.equal(ruleOf(judge(roles, bob)), 'routes[0].allow.roles')

  const orgs = policy({ allow: { organizations: ['org_example'] } })
  t.equal(kind(orgs, alice), 'allow', 'org_id one string')
  t.equal(kind(orgs, carol), 'deny')
  t.equal(kind(orgs, { org_id: ['org_other', 'org_example'] }), 'allow', 'a list')
  t.equal(ruleOf(judge(orgs, carol)), 'routes[0].allow.organizations')

  const named = policy(
    { allow: { groups: ['admins'], roles: ['admin'], organizations: ['t1'] } },
    { groupsClaim: 'memberOf', rolesClaim: 'realm_access.roles', organizationClaim: 'tenant' },
  )
  t.equal(kind(named, { memberOf: ['admins'], realm_access: { roles: ['admin'] }, tenant: 't1' }), 'allow', 'claims named in access.*Claim, a dotted path too')
  t.equal(ruleOf(judge(named, { groups: ['admins'], memberOf: [], realm_access: { roles: ['admin'] }, tenant: 't1' })), 'routes[0].allow.groups', 'the default claim name no longer counts')
  t.equal(ruleOf(judge(named, { memberOf: ['admins'], roles: ['admin'], tenant: 't1' })), 'routes[0].allow.roles')
  t.equal(ruleOf(judge(named, { memberOf: ['admins'], realm_access: { roles: ['admin'] }, org_id: 't1' })), 'routes[0].allow.organizations')
})

t.test('claim matchers: plain value, equals, anyOf, regex (the whole value); arrays; dotted paths', async (t) => {
  const plain = policy({ allow: { claims: { department: 'engineering' } } })
  t.equal(kind(plain, { department: 'engineering' }), 'allow', 'a plain value is equals')
  t.equal(kind(plain, { department: 'Engineering' }), 'deny')
  t.equal(kind(plain, { department: ['sales', 'engineering'] }), 'allow', 'an array: one element is enough')
  t.equal(kind(plain, { department: ['sales'] }), 'deny')
  t.equal(kind(plain, {}), 'deny', 'absent')

  const typed = policy({ allow: { claims: { level: { equals: 3 }, staff: true } } })
  t.equal(kind(typed, { level: 3, staff: true }), 'allow', 'numbers and booleans')
  t.equal(kind(typed, { level: '3', staff: true }), 'deny', 'the string "3" is not 3')
  t.equal(kind(typed, { level: 3, staff: 'true' }), 'deny', 'the string "true" is not true')

  const anyOf = policy({ allow: { claims: { employee_type: { anyOf: ['staff', 'contractor'] } } } })
  t.equal(kind(anyOf, { employee_type: 'contractor' }), 'allow')
  t.equal(kind(anyOf, { employee_type: 'intern' }), 'deny')
  t.equal(kind(anyOf, { employee_type: ['intern', 'staff'] }), 'allow', 'an array: one element')

  const regex = policy({ allow: { claims: { department: { regex: 'eng' } } } })
  t.equal(kind(regex, { department: 'eng' }), 'allow')
  t.equal(kind(regex, { department: 'engineering' }), 'deny', 'eng does not match engineering: the whole value must match')
  t.equal(kind(regex, { department: 'reengineering' }), 'deny')
  t.equal(kind(regex, { department: ['sales', 'eng'] }), 'allow', 'an array: one element')
  const alternation = policy({ allow: { claims: { team: { regex: 'red|blue' } } } })
  t.equal(kind(alternation, { team: 'blue' }), 'allow')
  t.equal(kind(alternation, { team: 'redblue' }), 'deny', 'an alternation is anchored as a whole')
  t.equal(kind(alternation, { team: 'xblue' }), 'deny')
  const prefix = policy({ allow: { claims: { department: { regex: 'eng.*' } } } })
  t.equal(kind(prefix, { department: 'engineering' }), 'allow', 'a prefix says so with .*')
  const digits = policy({ allow: { claims: { level: { regex: '[0-9]+' } } } })
  t.equal(kind(digits, { level: 42 }), 'allow', 'a number is matched as its text')
  t.equal(kind(digits, { level: true }), 'deny', 'a boolean never matches a regex')
  t.equal(kind(digits, { level: { n: 1 } }), 'deny', 'an object never does')

  const dotted = policy({ allow: { claims: { 'realm_access.roles': 'admin' } } })
  t.equal(kind(dotted, { realm_access: { roles: ['user', 'admin'] } }), 'allow', 'a dotted path into nested claims')
  t.equal(kind(dotted, { realm_access: { roles: ['user'] } }), 'deny')
  t.equal(kind(dotted, { realm_access: [{ roles: ['admin'] }] }), 'deny', 'a path does not walk into arrays')
  t.equal(kind(dotted, { 'realm_access.roles': 'admin' }), 'allow', 'a claim with the whole name')
  t.equal(kind(dotted, { 'realm_access.roles': 'user', realm_access: { roles: ['admin'] } }), 'deny', 'the whole-name claim wins over the path')
  t.equal(ruleOf(judge(dotted, {})), 'routes[0].allow.claims.realm_access.roles')
})

t.test('claimAt', async (t) => {
  t.equal(claimAt({ a: { b: { c: 1 } } }, 'a.b.c'), 1)
  t.equal(claimAt({ a: { b: null } }, 'a.b.c'), undefined)
  t.equal(claimAt({ 'a.b': 2, a: { b: 3 } }, 'a.b'), 2)
  t.equal(claimAt({ a: 1 }, 'a'), 1)
  t.equal(claimAt({}, 'a'), undefined)
})

t.test('any: one alternative is enough; nested rules inherit unverifiedEmail', async (t) => {
  const p = policy({ allow: { any: [{ groups: ['admins'] }, { domains: ['partner.example'], organizations: ['org_partner'] }] } })
  t.equal(kind(p, alice), 'allow', 'the first alternative')
  t.equal(kind(p, bob), 'deny', 'neither')
  t.equal(ruleOf(judge(p, bob)), 'routes[0].allow.any', 'a failed any is named as a whole')
  t.equal(kind(p, carol), 'deny', "the second alternative needs carol's address verified")
  t.equal(kind(p, { ...carol, email_verified: true }), 'allow', 'every condition of the alternative holds')
  t.equal(kind(p, { ...carol, email_verified: true, org_id: 'org_other' }), 'deny', 'an alternative holds only as a whole')

  const inherited = policy({ allow: { unverifiedEmail: true, any: [{ groups: ['admins'] }, { domains: ['partner.example'] }] } })
  t.equal(kind(inherited, carol), 'allow', "a nested rule inherits unverifiedEmail from the rule it is in")
  const deeper = policy({ allow: { unverifiedEmail: true, any: [{ any: [{ emails: ['carol@partner.example'] }] }] } })
  t.equal(kind(deeper, carol), 'allow', 'through more than one level')
  const overridden = policy({ allow: { unverifiedEmail: true, any: [{ unverifiedEmail: false, domains: ['partner.example'] }] } })
  t.equal(kind(overridden, carol), 'deny', 'a nested rule may ask for verification again')
  const nestedOnly = policy({ allow: { any: [{ unverifiedEmail: true, domains: ['partner.example'] }, { domains: ['example.com'] }] } })
  t.equal(kind(nestedOnly, carol), 'allow', 'unverifiedEmail on one alternative')
  t.equal(kind(nestedOnly, { email: 'x@example.com', email_verified: false }), 'deny', 'does not reach its siblings')

  const withOther = policy({ allow: { domains: ['example.com'], any: [{ groups: ['admins'] }, { roles: ['viewer'] }] } })
  t.equal(kind(withOther, alice), 'allow')
  t.equal(kind(withOther, bob), 'allow', 'roles: viewer')
  t.equal(kind(withOther, { ...bob, roles: [] }), 'deny')
  t.equal(kind(withOther, { ...alice, email: 'alice@partner.example' }), 'deny', 'the conditions beside any must hold too')
})

t.test('every condition given must hold; the first that fails is named', async (t) => {
  const p = policy({ allow: { domains: ['example.com'], groups: ['admins'], claims: { org_id: 'org_example' } } })
  t.equal(kind(p, alice), 'allow')
  t.equal(ruleOf(judge(p, bob)), 'routes[0].allow.groups')
  t.equal(ruleOf(judge(p, carol)), 'routes[0].allow.domains')
  t.equal(ruleOf(judge(p, { ...alice, org_id: 'org_other' })), 'routes[0].allow.claims.org_id')
})

t.test('defaultAllow applies to routes without allow, not to routes with their own', async (t) => {
  const access = { defaultAllow: { domains: ['example.com'] } }
  const inherits = policy({}, access)
  t.equal(inherits.source, 'access.defaultAllow')
  t.equal(kind(inherits, bob), 'allow')
  const v = judge(inherits, carol)
  t.equal(ruleOf(v), 'access.defaultAllow.domains', 'the denial names the default rule')

  const own = policy({ allow: { organizations: ['org_partner'] } }, access, 'routes[3]')
  t.equal(own.source, 'routes[3].allow')
  t.equal(kind(own, carol), 'allow', 'its own rule only: carol is in org_partner')
  t.equal(ruleOf(judge(own, bob)), 'routes[3].allow.organizations', 'and bob, whom the default admits, is not')

  const none = policy({})
  t.equal(none.source, '')
  t.equal(kind(none, carol), 'allow', 'no rule anywhere: every signed-in user')
})

t.test('openToAll: no rule, or a rule without conditions', async (t) => {
  t.equal(policy({}).openToAll, true, 'no rule at all')
  t.equal(policy({ allow: {} }).openToAll, true, 'an empty rule')
  t.equal(policy({ allow: { unverifiedEmail: true } }).openToAll, true, 'a rule with no condition, only a switch')
  t.equal(policy({}, { defaultAllow: {} }).openToAll, true, 'an empty defaultAllow')
  t.equal(policy({ allow: { any: [{ groups: ['a'] }, {}] } }).openToAll, true, 'an alternative without conditions')
  t.equal(policy({ allow: { groups: ['a'] } }).openToAll, false)
  t.equal(policy({}, { defaultAllow: { domains: ['example.com'] } }).openToAll, false, 'the default rule counts')
  t.equal(policy({ allow: { any: [{ groups: ['a'] }, { roles: ['b'] }] } }).openToAll, false)
  t.equal(policy({ allow: { groups: ['a'], any: [{}] } }).openToAll, false, 'an open any beside a condition')
  t.equal(policy({ require: { mfa: true } }).openToAll, true, 'step-up is not an allow rule: still every signed-in user')
  t.equal(kind(policy({ allow: {} }), {}), 'allow', 'an empty rule admits even a subject without claims')
})

t.test('a denial names its rule and says why without any claim value or configured value', async (t) => {
  const secretValues = ['carol@partner.example', 'partner.example', 'org_partner', 'hidden-group-7', 'hidden-role-7', 'org_hidden_7', 'hidden-dept', 'x@hidden.example', 'hidden.example', 'hid+den']
  const p = (allow: Record<string, unknown>) => policy({ allow }, {}, 'routes[0]')
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ emails: ['x@hidden.example'] }, 'routes[0].allow.emails'],
    [{ domains: ['hidden.example'] }, 'routes[0].allow.domains'],
    [{ groups: ['hidden-group-7'] }, 'routes[0].allow.groups'],
    [{ roles: ['hidden-role-7'] }, 'routes[0].allow.roles'],
    [{ organizations: ['org_hidden_7'] }, 'routes[0].allow.organizations'],
    [{ claims: { department: 'hidden-dept' } }, 'routes[0].allow.claims.department'],
    [{ claims: { department: { regex: 'hid+den' } } }, 'routes[0].allow.claims.department'],
    [{ claims: { department: { anyOf: ['hidden-dept'] } } }, 'routes[0].allow.claims.department'],
    [{ any: [{ groups: ['hidden-group-7'] }, { domains: ['hidden.example'] }] }, 'routes[0].allow.any'],
  ]
  const subject = { ...carol, groups: ['partner-group'], department: 'partner-dept' }
  for (const [allow, rule] of cases) {
    const v = judge(p(allow), subject)
    t.equal(v.kind, 'deny', `${rule} denies`)
    if (v.kind !== 'deny') continue
    t.equal(v.rule, rule)
    t.equal(v.scope, false)
    t.ok(v.reason.length > 10, `${rule}: a reason in words`)
    const text = JSON.stringify(v)
    for (const value of [...secretValues, 'partner-group', 'partner-dept', 'carol']) {
      t.notOk(text.includes(value), `${rule}: the verdict does not contain ${value}`)
    }
  }
  const one = p({ domains: ['hidden.example'] })
  const denial = judge(one, subject)
  t.equal(judge(one, { ...subject }), denial, 'one frozen verdict per condition, whoever it refuses')
  t.ok(Object.isFrozen(denial))
})

t.test('the memo: one verdict per claims object, and different claims are judged again', async (t) => {
  const p = policy({ allow: { groups: ['admins'] } })
  const aliceClaims = { ...alice }
  const first = judge(p, aliceClaims)
  t.equal(first.kind, 'allow')
  t.equal(judge(p, aliceClaims), first, 'the same claims object: the same verdict')
  const bobClaims = { ...bob }
  const denied = judge(p, bobClaims)
  t.equal(denied.kind, 'deny', 'another claims object is judged on its own')
  t.equal(judge(p, bobClaims), denied, 'and remembered')
  t.equal(judge(p, aliceClaims).kind, 'allow', "alice's verdict is not overwritten by bob's")
  t.equal(judge(p, { ...bob, groups: ['admins'] }).kind, 'allow', 'a new claims object with other values: judged again')
  t.equal(judge(p, { ...alice, groups: ['engineering'] }).kind, 'deny')

  const other = policy({ allow: { groups: ['engineering'] } })
  t.equal(judge(other, bobClaims).kind, 'allow', 'each policy has its own memo: bob is allowed here')
  t.equal(judge(p, bobClaims).kind, 'deny', 'and still denied there')

  // The memo holds the allow rule only: the requirements depend on the time and are judged each time.
  const fresh = policy({ allow: { groups: ['admins'] }, require: { maxAuthAge: '5m' } })
  const claims = { ...alice }
  const loginAt = NOW - 60_000
  t.equal(fresh.judge(who(claims, loginAt), NOW).kind, 'allow')
  t.equal(fresh.judge(who(claims, loginAt), NOW + 10 * 60_000).kind, 'step-up', 'the same claims later: too old now')
  t.equal(fresh.judge(who(claims, loginAt), NOW).kind, 'allow', 'and not remembered as a step-up')
})

t.test('step-up: acr', async (t) => {
  const p = policy({ require: { acr: ['urn:acr:mfa', 'urn:acr:hwk'] } })
  const v = judge(p, { acr: 'urn:acr:pwd' })
  t.equal(v.kind, 'step-up')
  if (v.kind !== 'step-up') return
  t.equal(v.rule, 'routes[0].require.acr')
  t.same(v.params, { acr_values: 'urn:acr:mfa urn:acr:hwk', prompt: 'login' })
  t.ok(Object.isFrozen(v.params))
  t.equal(kind(p, {}), 'step-up', 'no acr')
  t.equal(kind(p, { acr: ['urn:acr:mfa'] }), 'step-up', 'acr is one string, not a list')
  t.equal(kind(p, { acr: 'urn:acr:hwk' }), 'allow', 'any of the values')
})

t.test('step-up: mfa (access.mfaAmrValues), with access.mfaAcrValues requested', async (t) => {
  const p = policy({ require: { mfa: true } })
  const v = judge(p, { amr: ['pwd'] })
  t.equal(v.kind, 'step-up')
  if (v.kind === 'step-up') {
    t.equal(v.rule, 'routes[0].require.mfa')
    t.same(v.params, { prompt: 'login' }, 'no acr_values without access.mfaAcrValues')
  }
  for (const amr of [['pwd', 'otp'], ['mfa'], ['hwk', 'pwd'], 'otp']) t.equal(kind(p, { amr }), 'allow', `amr ${JSON.stringify(amr)}`)
  t.equal(kind(p, {}), 'step-up', 'no amr')
  t.equal(kind(p, { amr: ['pwd', 'sms'] }), 'step-up', 'sms is not in the default list')

  const custom = policy({ require: { mfa: true } }, { mfaAmrValues: ['sms', 'hwk'], mfaAcrValues: ['urn:okta:loa:2fa:any'] })
  t.equal(kind(custom, { amr: ['pwd', 'sms'] }), 'allow', 'the configured list')
  t.equal(kind(custom, { amr: ['pwd', 'otp'] }), 'step-up', 'otp is not in it')
  const cv = judge(custom, { amr: ['pwd'] })
  t.same(cv.kind === 'step-up' ? cv.params : null, { acr_values: 'urn:okta:loa:2fa:any', prompt: 'login' })

  const both = policy({ require: { mfa: true, acr: ['urn:okta:loa:2fa:any', 'urn:x'] } }, { mfaAcrValues: ['urn:okta:loa:2fa:any'] })
  const bv = judge(both, { acr: 'urn:okta:loa:1fa', amr: ['pwd'] })
  t.equal(ruleOf(bv), 'routes[0].require.acr', 'acr is judged first')
  t.same(bv.kind === 'step-up' ? bv.params.acr_values : null, 'urn:okta:loa:2fa:any urn:x', 'acr_values once each')
  t.equal(ruleOf(judge(both, { acr: 'urn:x', amr: ['pwd'] })), 'routes[0].require.mfa', 'then mfa')
  t.equal(kind(both, { acr: 'urn:x', amr: ['otp'] }), 'allow')
})

t.test('step-up: maxAuthAge (a missing auth_time is a step-up)', async (t) => {
  const p = policy({ require: { maxAuthAge: '5m' } })
  const at = (ms: number | undefined) => p.judge(who({}, ms), NOW)
  t.equal(at(NOW - 60_000).kind, 'allow')
  t.equal(at(NOW - 300_000).kind, 'allow', 'exactly maxAuthAge old')
  const old = at(NOW - 300_001)
  t.equal(old.kind, 'step-up')
  if (old.kind === 'step-up') {
    t.equal(old.rule, 'routes[0].require.maxAuthAge')
    t.same(old.params, { max_age: '300', prompt: 'login' }, 'max_age in seconds')
  }
  t.equal(at(undefined).kind, 'step-up', 'no auth_time: the age is unknown')
  t.equal(policy({}).judge(who({}, undefined), NOW).kind, 'allow', 'without the requirement auth_time is not needed')
  const odd = policy({ require: { maxAuthAge: '90s' } }).judge(who({}, undefined), NOW)
  t.equal(odd.kind === 'step-up' ? odd.params.max_age : null, '90')
})

t.test('authTimeOf', async (t) => {
  t.equal(authTimeOf({ auth_time: 1_700_000_000 }), 1_700_000_000_000)
  t.equal(authTimeOf({ auth_time: '1700000000' }), undefined, 'a string is not a time')
  t.equal(authTimeOf({ auth_time: Number.NaN }), undefined)
  t.equal(authTimeOf({}), undefined)
})

t.test('an allow rule that refuses comes before step-up; scopes too', async (t) => {
  const p = policy({ allow: { groups: ['admins'] }, require: { mfa: true, maxAuthAge: '5m' }, bearer: true, requiredScopes: ['api:read'] })
  t.equal(ruleOf(p.judge(who({ ...bob, amr: ['pwd'] }, undefined), NOW)), 'routes[0].allow.groups', 'denied, not sent to log in again for nothing')
  t.equal(judge(p, { ...bob, amr: ['pwd'] }).kind, 'deny')
  const token = p.judge(who({ ...alice, amr: ['pwd'] }, undefined, ['openid']), NOW)
  t.equal(ruleOf(token), 'routes[0].requiredScopes', 'a token without the scopes: denied before step-up')
  t.equal(token.kind === 'deny' && token.scope, true, 'as a scope denial')
  t.equal(ruleOf(p.judge(who({ ...alice, amr: ['pwd'] }, NOW, ['api:read']), NOW)), 'routes[0].require.mfa', 'allowed and scoped: then step-up')
  t.equal(p.judge(who({ ...alice, amr: ['otp'] }, NOW, ['api:read', 'x']), NOW).kind, 'allow')
})

t.test('requiredScopes are checked for subjects with scopes (bearer tokens) only', async (t) => {
  const p = policy({ bearer: true, requiredScopes: ['mcp:tools', 'mcp:read'] })
  t.same(p.requiredScopes, ['mcp:tools', 'mcp:read'])
  t.equal(p.judge(who(bob), NOW).kind, 'allow', 'a session has no scopes to check')
  t.equal(p.judge(who(bob, NOW, ['mcp:tools']), NOW).kind, 'deny', 'every scope is needed')
  t.equal(p.judge(who(bob, NOW, []), NOW).kind, 'deny', 'no scope at all')
  t.equal(p.judge(who(bob, NOW, ['mcp:read', 'mcp:tools', 'openid']), NOW).kind, 'allow')
  const denied = p.judge(who(bob, NOW, ['mcp:tools']), NOW)
  t.notOk(JSON.stringify(denied).includes('mcp:'), 'the denial names no scope')
  t.equal(policy({ bearer: true }).judge(who(bob, NOW, []), NOW).kind, 'allow', 'no required scopes')
})

t.test('loginParams: the requirements always, prompt=login only when the current login falls short', async (t) => {
  const p = policy({ require: { mfa: true, maxAuthAge: '10m' }, loginParams: { organization_id: 'org_example' } }, { mfaAcrValues: ['urn:acr:mfa'] })
  const base = { organization_id: 'org_example', acr_values: 'urn:acr:mfa', max_age: '600' }
  t.same(p.loginParams(null, NOW), base, 'no session: the requirements, no prompt')
  t.same(p.loginParams(who({ amr: ['otp'] }, NOW - 60_000), NOW), base, 'a session that meets them: no prompt')
  t.same(p.loginParams(who({ amr: ['pwd'] }, NOW - 60_000), NOW), { ...base, prompt: 'login' }, 'a password-only session: prompt=login')
  t.same(p.loginParams(who({ amr: ['otp'] }, NOW - 11 * 60_000), NOW), { ...base, prompt: 'login' }, 'a session too old: prompt=login')
  t.same(p.loginParams(who({ amr: ['otp'] }, undefined), NOW), { ...base, prompt: 'login' }, 'no auth_time: prompt=login')
  const first = p.loginParams(null, NOW)
  first.x = 'y'
  t.same(p.loginParams(null, NOW), base, 'each call gets its own object')

  const plain = policy({ loginParams: { connection_id: 'conn_1' } })
  t.same(plain.loginParams(null, NOW), { connection_id: 'conn_1' })
  t.same(plain.loginParams(who({}, undefined), NOW), { connection_id: 'conn_1' }, 'no requirements: never a prompt')
  t.same(policy({}).loginParams(who(carol), NOW), {}, 'nothing at all')
  const denied = policy({ allow: { groups: ['admins'] }, require: { acr: ['urn:acr:mfa'] } })
  t.same(denied.loginParams(who({ ...bob, acr: 'urn:acr:mfa' }), NOW), { acr_values: 'urn:acr:mfa' }, 'the allow rule does not decide the prompt: logging in again cannot change it')
})

t.test('explain: every condition with its result and what was compared', async (t) => {
  const p = policy(
    {
      allow: { domains: ['example.com'], groups: ['admins'], claims: { department: { regex: 'eng.*' } }, any: [{ roles: ['admin'] }, { organizations: ['org_x'] }] },
      require: { acr: ['urn:acr:mfa'], mfa: true, maxAuthAge: '5m' },
      bearer: true,
      requiredScopes: ['api:read'],
    },
    {},
    'routes[2]',
  )
  const subject = who({ ...bob, department: 'engineering', acr: 'urn:acr:pwd', amr: ['pwd'] }, NOW - 400_000)
  const out = p.explain(subject, NOW)
  t.same(
    out.map((c) => [c.rule, c.ok]),
    [
      ['routes[2].allow.domains', true],
      ['routes[2].allow.groups', false],
      ['routes[2].allow.claims.department', true],
      ['routes[2].allow.any', false],
      ['routes[2].requiredScopes', true],
      ['routes[2].require.acr', false],
      ['routes[2].require.mfa', false],
      ['routes[2].require.maxAuthAge', false],
    ],
    'every condition, allow rule first, then scopes and requirements, each with its result',
  )
  const detail = (rule: string) => out.find((c) => c.rule === rule)?.detail ?? ''
  t.match(detail('routes[2].allow.domains'), 'bob@example.com', 'the operator sees the values compared')
  t.match(detail('routes[2].allow.domains'), 'example.com')
  t.match(detail('routes[2].allow.groups'), /engineering.*admins/)
  t.match(detail('routes[2].allow.claims.department'), /engineering.*eng\.\*/)
  t.match(detail('routes[2].requiredScopes'), 'a session')
  t.match(detail('routes[2].require.acr'), 'urn:acr:pwd')
  t.match(detail('routes[2].require.mfa'), '"pwd"')
  t.match(detail('routes[2].require.maxAuthAge'), /400s.*300s/)
  const any = out.find((c) => c.rule === 'routes[2].allow.any')
  t.match(any?.detail, '0 of 2')
  t.same(
    any?.alternatives?.map((alt) => alt.map((c) => [c.rule, c.ok])),
    [[['routes[2].allow.any[0].roles', false]], [['routes[2].allow.any[1].organizations', false]]],
    'the alternatives, each with its conditions',
  )

  const token = p.explain(who({ ...alice, department: 'eng', acr: 'urn:acr:mfa', amr: ['otp'] }, NOW, ['openid']), NOW)
  t.same(token.filter((c) => !c.ok).map((c) => c.rule), ['routes[2].requiredScopes'], 'only the scopes fail for alice with a token lacking them')
  t.match(token.find((c) => c.rule === 'routes[2].requiredScopes')?.detail, /openid.*api:read/)
  t.match(p.explain(who({}, undefined), NOW).find((c) => c.rule === 'routes[2].require.maxAuthAge')?.detail, 'no auth_time')

  t.same(policy({}).explain(who(carol), NOW), [{ rule: 'allow', ok: true, detail: 'no condition: every signed-in user' }], 'no rule at all')
  t.same(policy({}, { defaultAllow: {} }).explain(who(carol), NOW).map((c) => c.rule), ['access.defaultAllow'], 'an empty default rule is named')
  t.same(policy({}, { defaultAllow: { domains: ['example.com'] } }).explain(who(carol), NOW).map((c) => [c.rule, c.ok]), [['access.defaultAllow.domains', false]])
  t.match(policy({ allow: { emails: ['a@b.example'], unverifiedEmail: true } }).explain(who(carol), NOW)[0]?.detail, 'not required', 'says when verification is not required')
})

t.test('claimsRead: the claims the rules read are kept in sessions', async (t) => {
  const access = configSchema.shape.access.parse({ groupsClaim: 'realm_access.groups' })
  const r = routeSchema.parse({ upstream: 'http://127.0.0.1:1', allow: { claims: { 'ext.department': 'x' }, any: [{ claims: { team: 'y' } }] } })
  const names = claimsRead(access, [r.allow, undefined])
  for (const name of ['realm_access', 'roles', 'org_id', 'email', 'email_verified', 'acr', 'amr', 'auth_time', 'ext', 'team']) t.ok(names.includes(name), name)
})
