/**
 * Just enough PNG decoding to look at a browser's screenshot: 8-bit RGB or RGBA, not interlaced (what
 * Chromium writes), with Node's zlib. Chunks are read without checking their CRCs; the five row
 * filters (none, sub, up, average, Paeth) are undone as the PNG specification describes.
 */
import { inflateSync } from 'node:zlib'

export interface Rgba {
  readonly r: number
  readonly g: number
  readonly b: number
  readonly a: number
}

export interface DecodedImage {
  readonly width: number
  readonly height: number
  /** RGBA, 4 bytes a pixel, rows top to bottom (RGB images get a = 255). */
  readonly data: Buffer
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

export function decodePng(png: Buffer): DecodedImage {
  if (png.length < 8 || !png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG')
  let width = 0
  let height = 0
  let channels = 0
  const idat: Buffer[] = []
  for (let at = 8; at + 8 <= png.length; ) {
    const length = png.readUInt32BE(at)
    const type = png.toString('latin1', at + 4, at + 8)
    const body = png.subarray(at + 8, at + 8 + length)
    at += 12 + length
    if (type === 'IHDR') {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      const [depth, colour, , , interlace] = [body[8], body[9], body[10], body[11], body[12]]
      if (depth !== 8 || (colour !== 2 && colour !== 6) || interlace !== 0) {
        throw new Error(`unsupported PNG: bit depth ${depth}, colour type ${colour}, interlace ${interlace}`)
      }
      channels = colour === 6 ? 4 : 3
    } else if (type === 'IDAT') {
      idat.push(body)
    } else if (type === 'IEND') {
      break
    }
  }
  if (channels === 0) throw new Error('PNG without IHDR')
  const raw = inflateSync(Buffer.concat(idat))
  const stride = width * channels
  if (raw.length !== height * (stride + 1)) throw new Error(`PNG data is ${raw.length} bytes, expected ${height * (stride + 1)}`)
  const rows = Buffer.alloc(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]
    const src = y * (stride + 1) + 1
    const out = y * stride
    for (let x = 0; x < stride; x++) {
      const value = raw[src + x] ?? 0
      const left = x >= channels ? (rows[out + x - channels] ?? 0) : 0
      const up = y > 0 ? (rows[out - stride + x] ?? 0) : 0
      const upLeft = y > 0 && x >= channels ? (rows[out - stride + x - channels] ?? 0) : 0
      const predicted =
        filter === 0 ? 0 : filter === 1 ? left : filter === 2 ? up : filter === 3 ? (left + up) >> 1 : filter === 4 ? paeth(left, up, upLeft) : NaN
      if (Number.isNaN(predicted)) throw new Error(`PNG row ${y} has filter type ${filter}`)
      rows[out + x] = (value + predicted) & 0xff
    }
  }
  if (channels === 4) return { width, height, data: rows }
  const data = Buffer.alloc(width * height * 4)
  for (let i = 0, j = 0; i < rows.length; i += 3, j += 4) {
    data[j] = rows[i] ?? 0
    data[j + 1] = rows[i + 1] ?? 0
    data[j + 2] = rows[i + 2] ?? 0
    data[j + 3] = 255
  }
  return { width, height, data }
}

/** The pixel at (x, y); outside the image it is transparent black. */
export function pixelAt(image: DecodedImage, x: number, y: number): Rgba {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) return { r: 0, g: 0, b: 0, a: 0 }
  const i = (y * image.width + x) * 4
  return { r: image.data[i] ?? 0, g: image.data[i + 1] ?? 0, b: image.data[i + 2] ?? 0, a: image.data[i + 3] ?? 0 }
}
