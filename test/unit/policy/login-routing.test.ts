import t from 'tap'
import { hintDomain, routeLogin, type DomainRouting } from '../../../src/policy/login-routing.ts'

const routing: DomainRouting = Object.freeze({
  'acme.example': Object.freeze({ organization_id: 'org_acme' }),
  'Partner.Example': Object.freeze({ connection_id: 'conn_partner' }),
  'both.example': Object.freeze({ organization_id: 'org_both', connection_id: 'conn_both' }),
})

t.test('a mapped domain adds its parameters', async (t) => {
  t.same(routeLogin('someone@acme.example', routing), { organization_id: 'org_acme' })
  t.same(routeLogin('someone@partner.example', routing), { connection_id: 'conn_partner' })
  t.same(routeLogin('x@both.example', routing), { organization_id: 'org_both', connection_id: 'conn_both' })
})

t.test('domains are compared without case, on both sides', async (t) => {
  t.same(routeLogin('Someone@ACME.Example', routing), { organization_id: 'org_acme' }, 'hint in upper case')
  t.same(routeLogin('someone@PARTNER.example', routing), { connection_id: 'conn_partner' }, 'key written in mixed case')
})

t.test('only an exact domain matches', async (t) => {
  t.same(routeLogin('someone@sub.acme.example', routing), {}, 'a subdomain is another domain')
  t.same(routeLogin('someone@acme.example.evil', routing), {}, 'a longer domain')
  t.same(routeLogin('someone@notacme.example', routing), {}, 'a domain that ends the same')
  t.same(routeLogin('someone@acme.example.', routing), {}, 'a trailing dot')
  t.same(routeLogin('someone@ acme.example', routing), {}, 'a space')
  t.same(routeLogin('someone@other.example', routing), {}, 'an unmapped domain')
  t.same(routeLogin('acme.example', routing), {}, 'a bare domain is no e-mail')
})

t.test('the hint must have exactly one "@" with something on both sides', async (t) => {
  for (const hint of ['', '@', '@acme.example', 'someone@', 'a@b@acme.example', 'someone@@acme.example', 'someone']) {
    t.equal(hintDomain(hint), undefined, JSON.stringify(hint))
    t.same(routeLogin(hint, routing), {}, `${JSON.stringify(hint)} adds nothing`)
  }
  t.equal(hintDomain('A@B.Example'), 'b.example')
})

t.test('property names of plain objects find nothing', async (t) => {
  for (const domain of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    t.same(routeLogin(`a@${domain}`, routing), {}, domain)
  }
})

t.test('no routing, and a fresh object every time', async (t) => {
  t.same(routeLogin('someone@acme.example', {}), {})
  const a = routeLogin('someone@acme.example', routing)
  a.organization_id = 'changed'
  t.same(routeLogin('someone@acme.example', routing), { organization_id: 'org_acme' }, 'the config is not shared with callers')
})
