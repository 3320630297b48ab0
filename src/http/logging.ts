import type { FastifyReply, FastifyRequest } from 'fastify'
import { pino, type Logger, type LoggerOptions } from 'pino'
import { describeValue, formatDiagnosis, PortcullisError } from '../errors.ts'

/**
 * Logging rules: one JSON line per request with the path but never the query
 * (the callback's query holds the authorization code), no headers, and errors reduced to name, code
 * and a scrubbed message — token-like strings are replaced before anything is written.
 */
const TOKENISH = /[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]{10,}){0,4}/g

export function scrub(text: string): string {
  return text.replace(TOKENISH, '[redacted]').slice(0, 500)
}

interface SafeError {
  type: string
  code?: string
  message: string
  /** What another server's answer tells the operator (URL, status, settings to check): no secrets by construction. */
  problem?: string
  cause?: SafeError
}

export function safeError(err: unknown, depth = 0): SafeError {
  // Never `[object Object]`: a Response, a parsed body or a list is described by its fields.
  if (!(err instanceof Error)) return { type: typeof err, message: scrub(describeValue(err)) }
  const out: SafeError = { type: err.name, message: scrub(err instanceof PortcullisError ? err.publicMessage : err.message) }
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string') out.code = code
  const providerError = (err as { error?: unknown }).error
  if (typeof providerError === 'string') out.message = `${out.message} (error=${scrub(providerError)})`
  // Not scrubbed: the token pattern would redact setting names such as tokenEndpointAuthMethod.
  if (err instanceof PortcullisError && err.diagnosis !== undefined) out.problem = formatDiagnosis(err.diagnosis)
  if (err.cause !== undefined && depth < 3) out.cause = safeError(err.cause, depth + 1)
  return out
}

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    base: { service: 'portcullis' },
    // pino's default epoch-milliseconds `time`: formatting an ISO date per line cost ~2% of a proxied
    // request (npm run bench -- --cpu-prof).
    redact: {
      paths: ['req.headers.cookie', 'req.headers.authorization', 'res.headers["set-cookie"]', 'headers.cookie', 'headers.authorization'],
      censor: '[redacted]',
    },
    serializers: { err: (e: unknown) => safeError(e) },
  }
}

/**
 * The access log line, written once per request when the response has been sent: the only line a
 * request writes. A refusal or failure adds its (scrubbed) error and, for upstream failures, the
 * socket-level cause; 5xx lines are written at error level.
 */
export function logRequest(request: FastifyRequest, reply: FastifyReply, error?: unknown, extra?: Readonly<Record<string, unknown>>): void {
  const ctx = request.portcullis as FastifyRequest['portcullis'] | null
  // A target that could not be normalized is logged as sent (its route was a placeholder).
  const url = ctx?.label === 'rejected' ? request.originalUrl : request.url
  const q = url.indexOf('?')
  const status = reply.statusCode
  const entry = {
    method: request.method,
    path: q === -1 ? url : url.slice(0, q),
    route: ctx?.label ?? request.routeOptions.config.label ?? 'unknown',
    status,
    durationMs: Math.round(reply.elapsedTime * 100) / 100,
    sub: ctx?.identity?.sub,
    ...(error === undefined ? {} : { err: error }),
    ...extra,
  }
  logAccess(request.log, entry)
}

/** The fields of an access line; `reqId` comes from the request's child logger, or is given. */
export interface AccessEntry {
  readonly reqId?: string
  readonly method: string
  readonly path: string
  readonly route: string
  readonly status: number
  readonly durationMs: number
  readonly sub: string | undefined
  readonly err?: unknown
  readonly [extra: string]: unknown
}

/** Write an access line: at error level for 5xx, info otherwise. */
export function logAccess(log: Pick<Logger, 'info' | 'error'>, entry: AccessEntry): void {
  if (entry.status >= 500) log.error(entry, 'request')
  else log.info(entry, 'request')
}

/** pino's internals used by `createAccessWriter` (exported as `pino.symbols`; not in its types). */
interface PinoInternals {
  [key: symbol]: unknown
}

/**
 * The fast lane's access lines: a line with only the standard fields (no error, no extra) is built
 * here and written straight to the logger's destination, byte for byte the line pino would write
 * (its level, time and base bindings come from pino itself); anything else goes through `logAccess`.
 * pino's generic path (serializers, redaction, key iteration) cost ~4 µs per line, a sixth of a
 * forward-auth check's CPU (npm run bench -- --only=e --cpu-prof). test/unit/http/access-line.test.ts
 * holds the two forms equal.
 *
 * When the destination buffers (a SonicBoom with `minLength`, as `main.ts` sets up), lines are
 * gathered here and handed over in batches of that size: SonicBoom measures the byte length of its
 * growing buffer on every write, which flattened it each time (5.7 KB of garbage per request, the
 * largest single source on the proxied path; a heap sampling profile of `npm run bench`). Batches go
 * out when full, every 100 ms, before a line this writer sends through pino (so its own lines keep
 * their order), and at `close()`, after which lines are written one by one.
 */
export type AccessWriter = ((entry: AccessEntry) => void) & { close(): void; flush(): void }

export function createAccessWriter(logger: Logger): AccessWriter {
  const internals = logger as unknown as PinoInternals
  const stream = internals[pino.symbols.streamSym] as { write(line: string): unknown; minLength?: unknown } | undefined
  const time = internals[pino.symbols.timeSym] as (() => string) | undefined
  const chindings = internals[pino.symbols.chindingsSym]
  const info = (logger.levels as { values: Record<string, number> } | undefined)?.values.info
  // Only for a plain destination and no per-line pino features (a multistream routes lines by the
  // metadata pino records per line; a mixin, hooks, a log formatter or a message prefix would change
  // the line).
  const plain =
    stream !== undefined &&
    (stream as Record<symbol, unknown>)[pino.symbols.needsMetadataGsym] !== true &&
    internals[pino.symbols.mixinSym] === undefined &&
    // `msgPrefixSym` is exported by pino but missing from its type declarations.
    internals[(pino.symbols as unknown as Record<string, symbol>).msgPrefixSym as symbol] === undefined &&
    (internals[pino.symbols.hooksSym] as { logMethod?: unknown; streamWrite?: unknown } | undefined)?.logMethod === undefined &&
    (internals[pino.symbols.hooksSym] as { streamWrite?: unknown } | undefined)?.streamWrite === undefined &&
    (internals[pino.symbols.formattersSym] as { log?: unknown } | undefined)?.log === undefined &&
    typeof time === 'function' &&
    typeof chindings === 'string' &&
    info !== undefined
  if (!plain) return Object.assign((entry: AccessEntry) => logAccess(logger, entry), { close() {}, flush() {} })
  const out = stream as { write(line: string): unknown; minLength?: unknown }
  const batchSize = typeof out.minLength === 'number' && out.minLength > 0 ? out.minLength : 0
  let batch: string[] = []
  let batched = 0
  let open = batchSize > 0
  const flush = (): void => {
    if (batch.length === 0) return
    const lines = batch.join('')
    batch = []
    batched = 0
    out.write(lines)
  }
  const timer = open ? setInterval(flush, 100) : null
  timer?.unref()
  const head = `{"level":${info}`
  const write = (entry: AccessEntry): void => {
    if (entry.status >= 500 || entry.err !== undefined || fieldCount(entry) !== STANDARD_FIELDS || !logger.isLevelEnabled('info')) {
      flush()
      logAccess(logger, entry)
      return
    }
    const line = `${head}${(time as () => string)()}${chindings as string},"reqId":${JSON.stringify(entry.reqId)},"method":${JSON.stringify(entry.method)},"path":${JSON.stringify(entry.path)},"route":${JSON.stringify(entry.route)},"status":${entry.status},"durationMs":${entry.durationMs}${entry.sub === undefined ? '' : `,"sub":${JSON.stringify(entry.sub)}`},"msg":"request"}\n`
    if (!open) {
      out.write(line)
      return
    }
    batch.push(line)
    batched += line.length
    if (batched >= batchSize) flush()
  }
  return Object.assign(write, {
    flush,
    close() {
      open = false
      if (timer !== null) clearInterval(timer)
      flush()
    },
  })
}
/** How many fields an entry has (without the array `Object.keys` would make on every line). */
function fieldCount(entry: AccessEntry): number {
  let n = 0
  for (const _ in entry) n++
  return n
}

/** reqId, method, path, route, status, durationMs, sub (present, possibly undefined). */
const STANDARD_FIELDS = 7
