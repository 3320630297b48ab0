/**
 * Issue #8 point 4: frames are never buffered whole. Twenty WebSockets through a Portcullis process,
 * each sending one 50 MiB message (1000 MiB in all), grow its resident memory by less than a tenth of
 * what they relay: the bytes are piped with backpressure. A relay that held whole messages would grow
 * by at least the message size per connection (the old one took RSS from 142 MB to 847 MB with four
 * such connections). What does grow is socket buffers and read chunks the GC frees in its own time:
 * 36 MiB on a quiet machine, 72 MiB once with the whole suite running on two cores, so the bound is
 * the tenth, not a figure that depends on the machine's load. The upstream and the clients here hold
 * nothing either: they count bytes.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { publicOnlyConfig, startPortcullisProcess } from '../helpers/process.ts'
import { eventually } from '../helpers/wait.ts'

const MiB = 1024 * 1024
const CONNECTIONS = 20
const MESSAGE = 50 * MiB
const HEADER = 14 // 2 + 8 (64-bit length) + 4 (mask)

const accept = (key: string) => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

t.test('20 connections each sending a 50 MiB message grow RSS by less than a tenth of what they relay', async (t) => {
  // The sink: accepts every upgrade and counts what arrives.
  let received = 0
  const sink = createServer()
  sink.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept(String(req.headers['sec-websocket-key']))}\r\n\r\n`)
    socket.on('data', (chunk: Buffer) => (received += chunk.length))
    socket.on('end', () => socket.end())
    socket.on('error', () => socket.destroy())
  })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => sink.close(() => resolve())))
  const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`

  const proc = await startPortcullisProcess(
    t,
    (port) => publicOnlyConfig(port, sinkUrl, { logLevel: 'warn' }),
  )

  /** Open a WebSocket through Portcullis and send one masked binary frame of `size` bytes, streamed. */
  const send = (size: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const socket = connect(proc.port, '127.0.0.1')
      socket.on('error', reject)
      socket.once('connect', () =>
        socket.write(
          `GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomKey()}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        ),
      )
      let head = ''
      const onHandshake = (d: Buffer): void => {
        head += d.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        socket.off('data', onHandshake)
        if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(`no 101: ${head.split('\r\n')[0]}`))
        socket.resume()
        const header = Buffer.alloc(HEADER)
        header[0] = 0x82
        header[1] = 0x80 | 127
        header.writeBigUInt64BE(BigInt(size), 2)
        const chunk = Buffer.alloc(64 * 1024, 0x5a)
        let sent = 0
        const pump = (): void => {
          while (sent < size) {
            const piece = size - sent >= chunk.length ? chunk : chunk.subarray(0, size - sent)
            sent += piece.length
            if (!socket.write(piece)) return void socket.once('drain', pump)
          }
          socket.end()
          resolve()
        }
        socket.write(header)
        pump()
      }
      socket.on('data', onHandshake)
    })

  // Warm up (code paths loaded, pools made), then the baseline.
  await send(1024)
  t.ok(await eventually(() => received >= 1024 + HEADER), 'the warm-up frame arrived')
  received = 0
  await new Promise((resolve) => setTimeout(resolve, 500))
  const before = proc.rss()
  let peak = before
  const sampler = setInterval(() => (peak = Math.max(peak, proc.rss())), 50)
  t.teardown(() => clearInterval(sampler))

  await Promise.all(Array.from({ length: CONNECTIONS }, () => send(MESSAGE)))
  const total = CONNECTIONS * (MESSAGE + HEADER)
  t.ok(await eventually(() => received >= total, { timeoutMs: 60_000 }), `the upstream received all ${total} bytes (got ${received})`)
  clearInterval(sampler)
  peak = Math.max(peak, proc.rss())
  const grew = peak - before
  const bound = total / 10
  t.ok(grew < bound, `RSS grew by ${(grew / MiB).toFixed(1)} MiB (from ${(before / MiB).toFixed(0)} MiB), under ${(bound / MiB).toFixed(0)} MiB`)
  proc.child.kill('SIGTERM')
  t.equal(await proc.exited, 0, 'and it stops cleanly')
})

function randomKey(): string {
  return Buffer.from(Array.from({ length: 16 }, () => Math.floor(Math.random() * 256))).toString('base64')
}
