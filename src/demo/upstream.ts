/**
 * An echo upstream: the "legacy app" behind Portcullis in `portcullis demo`, and the upstream the
 * integration tests proxy to. It answers every HTTP request with what it received (JSON for API
 * clients, an HTML page listing the identity headers for browsers), records every request so a test
 * can assert what reached it, and speaks WebSocket on any path. With `signedOutPath` (the demo), that
 * path is the page a browser lands on after signing out.
 */
import http from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import { escapeHtml, htmlPage } from './html.ts'

/** One request as the upstream saw it (WebSocket upgrades too, with an empty body). */
export interface EchoRecord {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  /** As received: original casing, duplicates kept, `[name, value, name, value, ...]`. */
  rawHeaders: string[]
  body: string
}

export interface EchoUpstream {
  /** `http://host:port`, no trailing slash. */
  url: string
  port: number
  /** Every request received, in arrival order. */
  requests: EchoRecord[]
  /** Terminate WebSocket clients, close the server and every open socket. */
  close(): Promise<void>
}

export interface EchoUpstreamOptions {
  /** Default `127.0.0.1`. */
  host?: string
  /** Default 0 (any free port). */
  port?: number
  /** Title of the HTML page. Default "Demo app behind Portcullis". */
  title?: string
  /**
   * A path that shows, to a browser, a "You are signed out" page with a link to sign in again (the
   * demo's `post_logout_redirect_uri`). Unset: every path echoes.
   */
  signedOutPath?: string
  /** Links shown on every echo page above "Sign out" (the demo's admin page). Default none. */
  links?: ReadonlyArray<{ readonly href: string; readonly text: string }>
}

/** Longest delay `/slow?ms=N` honours, so a typo cannot hang a test run. */
const MAX_SLOW_MS = 60_000


/** Identity headers as received (name lower-cased, each occurrence on its own row). */
function identityHeaders(rawHeaders: string[]): Array<[string, string]> {
  const rows: Array<[string, string]> = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] ?? '').toLowerCase()
    if (name.startsWith('x-auth-request-') || name.startsWith('x-forwarded-')) rows.push([name, rawHeaders[i + 1] ?? ''])
  }
  return rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
}

function echoPage(title: string, record: EchoRecord, links: EchoUpstreamOptions['links'] = []): string {
  const rows = identityHeaders(record.rawHeaders)
  const table = rows.length
    ? `<table>
<thead><tr><th>Header</th><th>Value</th></tr></thead>
<tbody>
${rows.map(([name, value]) => `<tr><td>${escapeHtml(name)}</td><td>${escapeHtml(value)}</td></tr>`).join('\n')}
</tbody>
</table>`
    : '<p>No identity headers arrived: this request did not come through Portcullis.</p>'
  return htmlPage(
    title,
    `body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
td{font-family:ui-monospace,monospace;word-break:break-all}`,
    `<h1>${escapeHtml(title)}</h1>
<p><code>${escapeHtml(record.method)} ${escapeHtml(record.url)}</code></p>
<h2>Identity headers received</h2>
${table}
${links.map((l) => `<p><a href="${escapeHtml(l.href)}">${escapeHtml(l.text)}</a></p>\n`).join('')}<p><a href="/oauth2/sign_out">Sign out</a></p>`,
  )
}

/** Where a signed-out browser lands: it says so and offers to sign in again (`/` is protected). */
function signedOutPage(title: string): string {
  return htmlPage(
    `Signed out - ${title}`,
    'body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}',
    `<h1>You are signed out</h1>
<p>You have signed out of ${escapeHtml(title)} and of the demo provider.</p>
<p><a href="/">Sign in again</a></p>`,
  )
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function recordOf(req: IncomingMessage, body: string): EchoRecord {
  return {
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    headers: { ...req.headers },
    rawHeaders: [...req.rawHeaders],
    body,
  }
}

/**
 * Start the echo upstream and resolve once it listens.
 *
 * - Any request: recorded, then answered with JSON `{ method, url, headers, body }`, or with an HTML
 *   page when `Accept` contains `text/html`.
 * - `/slow?ms=N`: the same answer after N ms (at most 60 s); the timer is dropped if the client goes.
 * - `/status/NNN`: the same answer with status NNN (200-599; no body for 204 and 304).
 * - WebSocket upgrade on any path: accepted; the first message is
 *   `{"type":"hello","url":...,"headers":...}` (the upgrade request), then every message is echoed back
 *   as it came (text stays text, binary stays binary).
 */
export async function startEchoUpstream(opts: EchoUpstreamOptions = {}): Promise<EchoUpstream> {
  const host = opts.host ?? '127.0.0.1'
  const title = opts.title ?? 'Demo app behind Portcullis'
  const requests: EchoRecord[] = []
  const timers = new Set<NodeJS.Timeout>()

  const answer = (req: IncomingMessage, res: ServerResponse, record: EchoRecord, status: number): void => {
    const noBody = status === 204 || status === 304 || req.method === 'HEAD'
    const accept = req.headers.accept ?? ''
    if (accept.includes('text/html')) {
      const html = echoPage(title, record, opts.links)
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) })
      res.end(noBody ? undefined : html)
      return
    }
    const json = JSON.stringify({ method: record.method, url: record.url, headers: record.headers, body: record.body })
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(json) })
    res.end(noBody ? undefined : json)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const record = recordOf(req, await readBody(req))
    requests.push(record)
    const url = new URL(record.url, 'http://upstream.invalid')

    if (opts.signedOutPath !== undefined && url.pathname === opts.signedOutPath && (req.headers.accept ?? '').includes('text/html')) {
      const html = signedOutPage(title)
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'cache-control': 'no-store' })
      res.end(req.method === 'HEAD' ? undefined : html)
      return
    }

    const statusMatch = /^\/status\/(\d{3})$/.exec(url.pathname)
    if (statusMatch) {
      const status = Number(statusMatch[1])
      if (status < 200 || status > 599) {
        res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end('status must be 200-599\n')
        return
      }
      if (status === 204 || status === 304) {
        res.writeHead(status).end()
        return
      }
      answer(req, res, record, status)
      return
    }

    if (url.pathname === '/slow') {
      const ms = Math.min(Math.max(Number(url.searchParams.get('ms')) || 0, 0), MAX_SLOW_MS)
      const timer = setTimeout(() => {
        timers.delete(timer)
        if (!res.destroyed) answer(req, res, record, 200)
      }, ms)
      timers.add(timer)
      res.on('close', () => {
        clearTimeout(timer)
        timers.delete(timer)
      })
      return
    }

    answer(req, res, record, 200)
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end()
      else res.destroy()
    })
  })

  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    requests.push(recordOf(req, ''))
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      ws.on('error', () => ws.terminate())
      ws.send(JSON.stringify({ type: 'hello', url: req.url ?? '/', headers: req.headers }))
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const urlHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host

  return {
    url: `http://${urlHost}:${port}`,
    port,
    requests,
    close() {
      for (const timer of timers) clearTimeout(timer)
      timers.clear()
      for (const client of wss.clients) client.terminate()
      return new Promise<void>((resolve, reject) => {
        wss.close()
        server.close((err) => (err ? reject(err) : resolve()))
        server.closeAllConnections()
      })
    },
  }
}
