import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A registry, or anything that renders one (the primary's sum over its workers). */
export interface MetricsSource {
  metrics(): Promise<string>
  readonly contentType: string
}

/**
 * `metrics.listen`: GET /metrics (the Prometheus text format) on a listener of its own, never on the
 * proxy's, so it is not reachable through the public address and no route or upstream can shadow it.
 * Nothing else is served there: other paths are 404, other methods 405. A plain `node:http` server:
 * a scrape every few seconds needs no framework.
 */
export interface MetricsListener {
  /** `http://host:port` as bound (port 0 becomes the port the system picked). */
  readonly url: string
  close(): Promise<void>
}

export async function listenMetrics(registry: MetricsSource, listen: string): Promise<MetricsListener> {
  const { host, port } = hostPort(listen)
  const server = createServer((req, res) => void answer(registry, req, res))
  server.keepAliveTimeout = 5_000
  server.requestTimeout = 10_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound = server.address() as AddressInfo
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address
  return {
    url: `http://${shown}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

async function answer(registry: MetricsSource, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const q = (req.url ?? '').indexOf('?')
  const path = q === -1 ? req.url : req.url?.slice(0, q)
  const plain = (status: number, text: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...extra })
    res.end(req.method === 'HEAD' ? undefined : `${text}\n`)
  }
  if (path !== '/metrics') return plain(404, 'Not found: metrics are at /metrics.')
  if (req.method !== 'GET' && req.method !== 'HEAD') return plain(405, 'Method not allowed.', { allow: 'GET, HEAD' })
  let body: string
  try {
    body = await registry.metrics()
  } catch {
    // A collector failed; never a stack trace on the wire.
    return plain(500, 'The metrics could not be collected.')
  }
  res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/** `host:port` (IPv6 in brackets) as the config writes it. */
function hostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':')
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) }
}
