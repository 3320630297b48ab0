import type { Metrics, DecisionResult } from '../metrics.ts'
import type { Decision } from './decision.ts'
import type { Decide } from './pipeline.ts'

/**
 * The pipeline's decisions, counted in one place for every lane (the fast lane, the Fastify path,
 * WebSocket handshakes): `decide` wrapped, so a lane cannot forget to count and nothing decides twice.
 */
export function countedDecide(decide: Decide, metrics: Metrics): Decide {
  return (rt, facts, mode) =>
    decide(rt, facts, mode).then((decision) => {
      metrics.decision(mode, decisionResult(decision))
      return decision
    })
}

/**
 * A decision as `portcullis_auth_decisions_total`'s `result`: `allow` (forwarded, or the check's 200,
 * with an identity), `public` (forwarded without one: a public route, a CORS preflight), `login` (a
 * redirect to sign in), `step_up`, `deny` (403), `unauthenticated` (401), `rejected` (400, 404) and
 * `error` (5xx: the provider or the store unavailable).
 */
export function decisionResult(d: Decision): DecisionResult {
  switch (d.kind) {
    case 'forward':
      return d.session !== null || d.bearer !== undefined ? 'allow' : 'public'
    case 'redirect':
      return 'login'
    case 'step-up':
      return 'step_up'
    case 'forbidden':
      return 'deny'
    case 'unauthenticated':
      return 'unauthenticated'
    case 'unavailable':
      return 'error'
    case 'rejected':
      return 'rejected'
  }
}
