import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { Route } from '../policy/routes.ts'
import type { Identity } from '../policy/identity.ts'
import type { Session } from '../session/model.ts'
import type { Runtime } from '../runtime.ts'
import type { Metrics } from '../metrics.ts'

/** What the pipeline learned about one request; read by the proxy, the routes and the access log. */
export interface RequestContext {
  readonly runtime: Runtime
  route: Route | null
  identity: Identity | null
  session: Session | null
  /** Why the request was refused or failed, for the access log line. */
  error?: unknown
  /** Extra fields for the access log line (e.g. the upstream's socket error). */
  logFields?: Record<string, unknown>
  /** Where a retry link on an error page should return to (the login's `rd`). */
  retryRd?: string
  /** Which part of Portcullis answered: a route id, `auth:start`, `ops:healthz`, ... (for the log). */
  label: string
}

/** Kind of a Fastify route, set in its `config` so the pipeline knows what it is looking at. */
export type RouteKind = 'proxy' | 'auth' | 'ops'

declare module 'fastify' {
  interface FastifyRequest {
    portcullis: RequestContext
  }
  interface FastifyContextConfig {
    kind?: RouteKind
    label?: string
    /** The route reads a request body: a client waiting for `100 Continue` is told to send it. */
    readsBody?: boolean
    /**
     * The handler carries out the pipeline's whole decision (the forward-auth check): step 1 runs
     * there, inside `decide`, so its refusals are answered as that mode answers them (401 for the check).
     */
    decides?: boolean
    /**
     * The route is answered with the pipeline's whole decision in this mode from the `onRequest`
     * hook, before any body is read (the relay check, which takes every method).
     */
    decidesEarly?: 'verify'
  }
}

/** The one mutable reference: the current runtime, swapped on reload; and the app's instruments, which outlive every runtime. */
export interface RuntimeHolder {
  current: Runtime
  readonly metrics: Metrics
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** A request's id: the client's `X-Request-ID` when it is short and plain, else a new UUID. */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}
