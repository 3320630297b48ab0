/**
 * One HTTP/1.1 request written byte for byte on a fresh `node:net` socket, for what ordinary clients
 * refuse or rewrite: two `Host` headers, header names with `_`, targets `new URL()` would normalize,
 * any method. The response is read until it is complete (by `Content-Length` or chunked framing) or
 * the server closes the connection.
 */
import { connect } from 'node:net'

export interface RawResponse {
  /** 0 when the connection closed without a response. */
  status: number
  /** Lower-cased names; every occurrence kept, in order. */
  headers: Record<string, string[]>
  body: string
  /** The response as received (head and body). */
  text: string
}

export interface RawRequest {
  method?: string
  /**
   * Sent as written, in order, duplicates kept. `Host: 127.0.0.1:<port>` is added when none is given,
   * `Connection: close` when no Connection header is.
   */
  headers?: Array<[string, string]>
  body?: string
  /** The address the connection comes from (another loopback address: 127.0.0.2). Default: the OS's choice. */
  localAddress?: string
}

export function rawRequest(port: number, target: string, opts: RawRequest = {}): Promise<RawResponse> {
  const headers = opts.headers ?? []
  const lines = [`${opts.method ?? 'GET'} ${target} HTTP/1.1`]
  if (!headers.some(([k]) => k.toLowerCase() === 'host')) lines.push(`Host: 127.0.0.1:${port}`)
  for (const [k, v] of headers) lines.push(`${k}: ${v}`)
  if (opts.body !== undefined && !headers.some(([k]) => k.toLowerCase() === 'content-length')) lines.push(`Content-Length: ${Buffer.byteLength(opts.body)}`)
  // One request per connection, unless the test sends a Connection header of its own.
  if (!headers.some(([k]) => k.toLowerCase() === 'connection')) lines.push('Connection: close')
  lines.push('', opts.body ?? '')
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) })
    const chunks: Buffer[] = []
    let settled = false
    const done = () => {
      if (settled) return
      settled = true
      socket.destroy()
      resolve(parseRaw(Buffer.concat(chunks).toString('latin1')))
    }
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer for ${target}`)))
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      if (complete(Buffer.concat(chunks).toString('latin1'))) done()
    })
    socket.on('error', (err) => {
      if (!settled) {
        settled = true
        reject(err)
      }
    })
    socket.on('close', done)
    socket.write(lines.join('\r\n'), 'latin1')
  })
}

/** Has a whole response (head and body) arrived? A 100 Continue is not one. */
function complete(text: string): boolean {
  const start = text.startsWith('HTTP/1.1 100') ? text.indexOf('\r\n\r\n') + 4 : 0
  const rest = text.slice(start)
  const end = rest.indexOf('\r\n\r\n')
  if (end < 0) return false
  const head = rest.slice(0, end).toLowerCase()
  const length = /\r\ncontent-length: *(\d+)/.exec(head)
  if (length) return Buffer.byteLength(rest.slice(end + 4), 'latin1') >= Number(length[1])
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return rest.endsWith('\r\n0\r\n\r\n')
  return /^http\/1\.1 (1\d\d|204|304)/.test(head)
}

function parseRaw(full: string): RawResponse {
  const text = full.startsWith('HTTP/1.1 100') ? full.slice(full.indexOf('\r\n\r\n') + 4) : full
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
  if (!m) return { status: 0, headers: {}, body: text, text: full }
  const end = text.indexOf('\r\n\r\n')
  const headers: Record<string, string[]> = {}
  for (const line of text.slice(0, end).split('\r\n').slice(1)) {
    const i = line.indexOf(':')
    const name = line.slice(0, i).trim().toLowerCase()
    ;(headers[name] ??= []).push(line.slice(i + 1).trim())
  }
  let body = text.slice(end + 4)
  if (headers['transfer-encoding']?.[0] === 'chunked') {
    let out = ''
    for (;;) {
      const nl = body.indexOf('\r\n')
      const size = parseInt(body.slice(0, nl), 16)
      if (!(size > 0)) break
      out += body.slice(nl + 2, nl + 2 + size)
      body = body.slice(nl + 2 + size + 2)
    }
    body = out
  }
  return { status: Number(m[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8'), text: full }
}
