/**
 * The screenshot decoder of test/helpers/png.ts, on PNGs written here with every row filter: what
 * the system tests conclude from a screenshot's pixels is only as good as this.
 */
import t from 'tap'
import { deflateSync } from 'node:zlib'
import { decodePng, pixelAt } from '../../helpers/png.ts'

function chunk(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(body.length, 0)
  head.write(type, 4, 'latin1')
  return Buffer.concat([head, body, Buffer.alloc(4)]) // CRC not checked by the decoder
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

/** A PNG of `pixels` (rows of bytes, `channels` a pixel); row y uses filter y % 5. */
function encodePng(width: number, height: number, channels: 3 | 4, pixels: Buffer): Buffer {
  const stride = width * channels
  const raw: number[] = []
  for (let y = 0; y < height; y++) {
    const filter = y % 5
    raw.push(filter)
    for (let x = 0; x < stride; x++) {
      const at = (dx: number, dy: number): number => (x + dx >= 0 && y + dy >= 0 ? (pixels[(y + dy) * stride + x + dx] ?? 0) : 0)
      const left = at(-channels, 0)
      const up = at(0, -1)
      const upLeft = at(-channels, -1)
      const predicted = [0, left, up, (left + up) >> 1, paeth(left, up, upLeft)][filter] ?? 0
      raw.push(((pixels[y * stride + x] ?? 0) - predicted) & 0xff)
    }
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8
  ihdr[9] = channels === 4 ? 6 : 2
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    // Two IDAT chunks: the decoder must join them.
    ...((d: Buffer) => [chunk('IDAT', d.subarray(0, 7)), chunk('IDAT', d.subarray(7))])(deflateSync(Buffer.from(raw))),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

function noise(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length)
  let s = seed
  for (let i = 0; i < length; i++) {
    s = (s * 1103515245 + 12345) >>> 0
    out[i] = s >>> 24
  }
  return out
}

t.test('RGBA with every filter', async (t) => {
  const [w, h] = [7, 11]
  const pixels = noise(w * h * 4, 1)
  const image = decodePng(encodePng(w, h, 4, pixels))
  t.equal(image.width, w)
  t.equal(image.height, h)
  t.ok(image.data.equals(pixels), 'every byte back')
  t.same(pixelAt(image, 3, 10), { r: pixels[(10 * w + 3) * 4], g: pixels[(10 * w + 3) * 4 + 1], b: pixels[(10 * w + 3) * 4 + 2], a: pixels[(10 * w + 3) * 4 + 3] })
  t.same(pixelAt(image, w, 0), { r: 0, g: 0, b: 0, a: 0 }, 'outside: transparent')
})

t.test('RGB becomes RGBA with a = 255', async (t) => {
  const [w, h] = [5, 6]
  const pixels = noise(w * h * 3, 2)
  const image = decodePng(encodePng(w, h, 3, pixels))
  for (let i = 0; i < w * h; i++) {
    t.same([...image.data.subarray(i * 4, i * 4 + 4)], [pixels[i * 3], pixels[i * 3 + 1], pixels[i * 3 + 2], 255], `pixel ${i}`)
  }
})

t.test('what it cannot read, it says', async (t) => {
  t.throws(() => decodePng(Buffer.from('GIF89a')), /not a PNG/)
  const png = encodePng(2, 2, 4, noise(16, 3))
  const paletted = Buffer.from(png)
  paletted[8 + 8 + 9] = 3 // IHDR colour type: palette
  t.throws(() => decodePng(paletted), /unsupported PNG/)
})
