/**
 * Frame boundaries in a relayed WebSocket stream (src/http/frames.ts): only headers are read, and the
 * position where each frame ends is found however the stream is cut into chunks.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { CLOSE_POLICY_VIOLATION, closeFrame, FrameBoundaries } from '../../../src/http/frames.ts'

/** One frame: FIN + opcode, the length in its 7-, 16- or 64-bit form, an optional mask. */
function frame(opcode: number, payloadLength: number, masked: boolean): Buffer {
  const head: number[] = [0x80 | opcode]
  const maskBit = masked ? 0x80 : 0
  if (payloadLength < 126) head.push(maskBit | payloadLength)
  else if (payloadLength < 65536) head.push(maskBit | 126, payloadLength >> 8, payloadLength & 0xff)
  else {
    head.push(maskBit | 127)
    const len = Buffer.alloc(8)
    len.writeBigUInt64BE(BigInt(payloadLength))
    head.push(...len)
  }
  return Buffer.concat([Buffer.from(head), masked ? randomBytes(4) : Buffer.alloc(0), randomBytes(payloadLength)])
}

const SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000]

t.test('boundaries are found at every frame end, for any chunking', async (t) => {
  const frames = SIZES.flatMap((n, i) => [frame(i % 2 === 0 ? 0x2 : 0x1, n, i % 3 === 0), frame(0x9, 3, false)])
  const stream = Buffer.concat(frames)
  const ends = new Set<number>()
  let at = 0
  for (const f of frames) ends.add((at += f.length))
  for (const chunkSize of [1, 2, 3, 7, 14, 100, 4096, stream.length]) {
    const fb = new FrameBoundaries()
    const seen: number[] = []
    for (let offset = 0; offset < stream.length; offset += chunkSize) {
      const chunk = stream.subarray(offset, Math.min(stream.length, offset + chunkSize))
      // Walk the chunk boundary by boundary, the way a closing tunnel does.
      let i = 0
      while (i < chunk.length) {
        let n = fb.scan(chunk.subarray(i), true)
        // At a boundary already: step into the next frame by one byte, then look for its end.
        if (n === 0) n = fb.scan(chunk.subarray(i, i + 1), false)
        i += n
        if (fb.atBoundary) seen.push(offset + i)
      }
    }
    t.same(
      seen,
      [...ends],
      `chunks of ${chunkSize}: every frame end, and nothing else`,
    )
  }
})

t.test('scanning without stopping keeps count of where the stream is', async (t) => {
  const fb = new FrameBoundaries()
  const big = frame(0x2, 200_000, true)
  t.equal(fb.scan(big.subarray(0, 5), false), 5)
  t.notOk(fb.atBoundary, 'inside a header')
  t.equal(fb.scan(big.subarray(5, 100_000), false), 99_995)
  t.notOk(fb.atBoundary, 'inside a payload')
  t.equal(fb.scan(big.subarray(100_000), true), big.length - 100_000, 'the rest, up to the end of the frame')
  t.ok(fb.atBoundary)
  t.equal(fb.scan(frame(0x1, 10, false), true), 0, 'at a boundary, stopping consumes nothing')
})

t.test('close frames: code and reason, masked towards the server', async (t) => {
  const plain = closeFrame(CLOSE_POLICY_VIOLATION, 'session ended', false)
  t.equal(plain[0], 0x88, 'FIN + close')
  t.equal(plain[1], 2 + 'session ended'.length, 'unmasked, length')
  t.equal(plain.readUInt16BE(2), 1008)
  t.equal(plain.subarray(4).toString(), 'session ended')
  const masked = closeFrame(1001, 'bye', true)
  t.equal(masked[1], 0x80 | 5, 'mask bit and length')
  const mask = masked.subarray(2, 6)
  const payload = Buffer.from(masked.subarray(6).map((b, i) => b ^ (mask[i % 4] as number)))
  t.equal(payload.readUInt16BE(0), 1001)
  t.equal(payload.subarray(2).toString(), 'bye')
  const fb = new FrameBoundaries()
  const both = Buffer.concat([plain, masked])
  fb.scan(both.subarray(0, 1), false)
  t.equal(1 + fb.scan(both.subarray(1), true), plain.length, 'the first is one frame')
  fb.scan(both.subarray(plain.length, plain.length + 1), false)
  t.equal(1 + fb.scan(both.subarray(plain.length + 1), true), masked.length, 'and so is the second')
})
