import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RequestContext, RuntimeHolder } from './context.ts'
import type { Decision } from './decision.ts'
import { allowBody, execute, expectsContinue } from './execute.ts'
import { factsOf, hostCount, normalizeTarget, verifySuffix } from './facts.ts'
import { logRequest } from './logging.ts'
import { writeNotes } from './notes.ts'
import { screenRequest, type Decide, type Mode } from './pipeline.ts'
import { CLIENT_CLOSED, type UpstreamPools } from './upstream.ts'
import { PortcullisError } from '../errors.ts'

/**
 * The Fastify path: requests the fast lane hands over (`http/fast-lane.ts`): paths with a
 * percent-escape left, Portcullis's own routes, methods the proxy does not take, and everything
 * while the fast lane is off. Like the fast lane it decides nothing: a proxied request (and the
 * forward-auth check) gets the pipeline's decision (`decide`), carried out on the raw response by
 * the same `execute`. Portcullis's own routes get step 1 of the pipeline (strip) and then run their
 * handlers.
 */
export const PATH_REJECTED = Symbol('portcullis.pathRejected')

export interface FastifyLane {
  /** The root `onRequest` hook. */
  onRequest(request: FastifyRequest, reply: FastifyReply): Promise<void>
  /** Decide `request` in `mode` and carry the decision out (the forward-auth check's handler). */
  carryOut(request: FastifyRequest, reply: FastifyReply, mode: Mode): Promise<void>
}

export function createFastifyLane(opts: { readonly holder: RuntimeHolder; readonly pools: UpstreamPools; readonly decide: Decide }): FastifyLane {
  const { holder, pools } = opts

  /** Run the decision on the raw response; the access line comes from the onResponse hook. */
  function run(request: FastifyRequest, reply: FastifyReply, decision: Decision): void {
    const ctx = request.portcullis
    void reply.hijack()
    const res = reply.raw
    execute(decision, pools, request.raw, res, (outcome) => {
      if (outcome.logFields !== undefined) ctx.logFields = outcome.logFields
      if (outcome.error !== undefined) ctx.error = outcome.error
      // A response that never finishes (cut off mid-body, or the client left) gets no access line
      // from Fastify's onResponse hook, which waits for 'finish': write it here once it is closed.
      if (res.writableFinished) return
      const unfinished = (): void => {
        if (res.writableFinished) return
        if (!res.headersSent) res.statusCode = CLIENT_CLOSED
        holder.metrics.request(ctx.label, res.statusCode, reply.elapsedTime / 1000)
        logRequest(request, reply, ctx.error, ctx.logFields)
      }
      if (res.destroyed) unfinished()
      else res.once('close', unfinished)
    })
  }

  async function decideFor(request: FastifyRequest, mode: Mode): Promise<Decision> {
    const ctx = request.portcullis
    const rt = ctx.runtime
    // A target that could not be normalized was routed to a placeholder (`rewriteUrl`): the pipeline
    // decides on what the client sent.
    const rejected = (request.raw as { [PATH_REJECTED]?: boolean })[PATH_REJECTED] === true
    // The relay check judges its raw target (`originalRequest`).
    const target = mode === 'verify' ? { path: `${rt.prefix}/verify`, target: request.originalUrl } : rejected ? { path: null, target: request.originalUrl } : normalizeTarget(request.url)
    const decision = await opts.decide(rt, factsOf(request.raw, target, request.id, rt.clock.now()), mode)
    record(ctx, decision)
    if (decision.notes.length > 0) writeNotes(request.log, decision.notes)
    return decision
  }

  return {
    async onRequest(request, reply) {
      const rt = holder.current
      const config = request.routeOptions.config
      const ctx: RequestContext = { runtime: rt, route: null, identity: null, session: null, label: config.label ?? 'unknown' }
      request.portcullis = ctx
      void reply.header('x-request-id', request.id)
      if (config.kind === 'proxy') {
        // Before the body is read: a forward streams it upstream, a refusal never reads it.
        run(request, reply, await decideFor(request, 'proxy'))
        return
      }
      if (config.decidesEarly !== undefined) {
        // Only a target that is the check as sent: `/oauth2/%76erify/x` was routed here once
        // normalized, and is no check.
        if (verifySuffix(`${rt.prefix}/verify`, request.originalUrl) === null) throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
        run(request, reply, await decideFor(request, config.decidesEarly))
        return
      }
      // Portcullis's own routes and ops: step 1 of the pipeline, then their handlers. A client
      // waiting for 100 Continue is told to send its body only where a handler reads one (sign-out,
      // back-channel logout); elsewhere the answer is final and the connection closes after it.
      // The check decides in its handler (step 1 included), as the fast lane does for GET.
      if (config.decides !== true) {
        const refused = screenRequest(rt, { headers: request.raw.headers, hostCount: hostCount(request.raw.rawHeaders) })
        if (refused !== null) throw refused
      }
      if (config.readsBody === true) allowBody(request.raw, reply.raw)
      else if (expectsContinue(request.raw)) void reply.header('connection', 'close')
    },
    async carryOut(request, reply, mode) {
      run(request, reply, await decideFor(request, mode))
    },
  }
}

/** What a decision tells the request's context (for the access line and Portcullis's routes). */
function record(ctx: RequestContext, decision: Decision): void {
  ctx.label = decision.label
  ctx.route = decision.route
  ctx.session = decision.session
  ctx.identity = decision.session === null ? (decision.bearer ?? null) : { sub: decision.session.sub, claims: decision.session.claims }
  if (decision.error !== undefined) ctx.error = decision.error
}
