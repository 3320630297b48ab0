import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { PortcullisError } from '../errors.ts'
import type { Route } from '../policy/routes.ts'

/**
 * The HTTP half of the proxy step, straight on undici (issue #4 point 6): one keep-alive `Pool` per
 * upstream origin, the request target sent byte for byte (normalized path + the client's query), the
 * body streamed both ways, no retries. The stock @fastify/reply-from path re-parses the destination
 * URL, copies the headers twice and re-encodes the query on every request; this does none of that.
 * WebSocket upgrades stay with @fastify/http-proxy (`http/proxy.ts`).
 */
export class UpstreamPools {
  readonly #pools = new Map<string, Pool>()
  readonly #timeoutMs: number

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  get(origin: string): Pool {
    let pool = this.#pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: 256,
        pipelining: 1,
        keepAliveTimeout: 60_000,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      })
      this.#pools.set(origin, pool)
    }
    return pool
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#pools.values()].map((p) => p.close()))
    this.#pools.clear()
  }
}

const TIMEOUT_CODES: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/** Hop-by-hop response headers (RFC 9110 §7.6.1): they describe the upstream connection, not ours. */
const HOP_BY_HOP_RESPONSE: readonly string[] = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']

/**
 * Send the request upstream and the answer back. `headers` were prepared by `upstreamHeaders`
 * (identity injected, client copies stripped, our cookies removed).
 */
export async function forward(
  pools: UpstreamPools,
  route: Route,
  request: FastifyRequest,
  reply: FastifyReply,
  headers: IncomingHttpHeaders,
): Promise<FastifyReply> {
  headers.host = route.upstreamHost
  // undici frames the body itself; a client's Transfer-Encoding would be refused by it.
  delete headers['transfer-encoding']
  const body = request.body as Readable | undefined
  let res: Dispatcher.ResponseData
  try {
    res = await pools.get(route.upstreamOrigin).request({
      method: request.method as Dispatcher.HttpMethod,
      path: route.upstreamBasePath + request.url,
      headers: headers as Record<string, string | string[]>,
      body: body ?? null,
    })
  } catch (err) {
    throw upstreamError(request, err)
  }
  const out = res.headers as IncomingHttpHeaders
  const connection = out.connection
  if (typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close') {
    for (const listed of connection.toLowerCase().split(',')) delete out[listed.trim()]
  }
  for (const name of HOP_BY_HOP_RESPONSE) delete out[name]
  // A response that carries a (re-sealed) session cookie of this user must never be stored by a
  // shared cache, whatever the app said about its body.
  if (request.portcullis.cookieWritten === true) out['cache-control'] = 'private, no-store'
  res.body.on('error', (err) => {
    // The upstream broke off while streaming the body: the status line is gone, log it and end.
    request.portcullis.logFields = { upstreamError: (err as { code?: string }).code ?? err.name }
  })
  return reply.code(res.statusCode).headers(out).send(res.body)
}

function upstreamError(request: FastifyRequest, err: unknown): PortcullisError {
  const e = err as Error & { code?: string; cause?: { code?: string } }
  const code = e.code ?? e.name
  request.portcullis.logFields = { upstreamError: code, upstreamCause: e.cause?.code ?? code }
  return TIMEOUT_CODES.has(code)
    ? new PortcullisError('UPSTREAM_TIMEOUT', 'The application did not answer in time.', { cause: err })
    : new PortcullisError('UPSTREAM_UNAVAILABLE', 'The application is not reachable right now.', { cause: err })
}
