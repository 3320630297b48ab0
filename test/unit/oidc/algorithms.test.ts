import t from 'tap'
import { SIGNING_ALGS } from '../../../src/config/schema.ts'
import { ASYMMETRIC_ALGS } from '../../../src/oidc/jwks.ts'

t.test('the config allow-list and the verifier allow-list are the same asymmetric algorithms', async (t) => {
  t.same([...ASYMMETRIC_ALGS].sort(), [...SIGNING_ALGS].sort())
  for (const alg of ASYMMETRIC_ALGS) t.notMatch(alg, /^(none|HS\d+)$/i, `${alg} is asymmetric`)
})
