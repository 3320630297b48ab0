import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Decision } from './decision.ts'
import { writeError } from './errors.ts'
import { relay, type RelayOutcome, type UpstreamPools } from './upstream.ts'

/**
 * Carry out a decision on Node's raw request and response: the one way both lanes answer, so the
 * fast lane and the Fastify path write the same bytes. `proxy` relays upstream (`http/upstream.ts`)
 * with the decision's headers; `answer` writes the decision's status, headers and body. Nothing
 * here decides: a test runs both lanes against a decision given from outside.
 *
 * `Expect: 100-continue` (`expectsContinue`): `100 Continue` is sent only for a request that is
 * forwarded, once it was routed and authenticated; any other answer is final, is sent at once, and
 * the connection is closed after it without reading the body.
 *
 * `done` is called once, when the exchange is over (an upstream failure before its answer was
 * answered here with the error page).
 */
export function execute(decision: Decision, pools: UpstreamPools, req: IncomingMessage, res: ServerResponse, done: (outcome: RelayOutcome) => void): void {
  if (decision.action === 'answer') {
    if (expectsContinue(req)) res.shouldKeepAlive = false
    res.writeHead(decision.status, decision.headers as string[])
    res.end(decision.body)
    done(ANSWERED)
    return
  }
  if (expectsContinue(req)) res.writeContinue()
  const own = decision.respond
  relay(pools, { route: decision.route, method: req.method ?? 'GET', url: decision.target, headers: decision.upstream }, req, res, own, (outcome) => {
    if (outcome.error !== undefined) writeError(res, outcome.error, req.headers, own['x-request-id'] as string, own)
    done(outcome)
  })
}

const ANSWERED: RelayOutcome = { responded: true }

const EXPECTS_CONTINUE = Symbol('portcullis.expectsContinue')

/** Mark a request that Node handed to `checkContinue`: it waits for `100 Continue` before its body. */
export function markExpectsContinue(req: IncomingMessage): void {
  ;(req as IncomingMessage & { [EXPECTS_CONTINUE]?: boolean })[EXPECTS_CONTINUE] = true
}

/** The request waits for `100 Continue`, which nobody has sent yet. */
export function expectsContinue(req: IncomingMessage): boolean {
  return (req as IncomingMessage & { [EXPECTS_CONTINUE]?: boolean })[EXPECTS_CONTINUE] === true
}

/** Send `100 Continue` for a request that waits for it (Portcullis's own routes, which read bodies). */
export function allowBody(req: IncomingMessage, res: ServerResponse): void {
  if (!expectsContinue(req)) return
  ;(req as IncomingMessage & { [EXPECTS_CONTINUE]?: boolean })[EXPECTS_CONTINUE] = false
  res.writeContinue()
}
