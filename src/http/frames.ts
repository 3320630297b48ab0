import { randomBytes } from 'node:crypto'

/**
 * Where WebSocket frames begin and end in a byte stream (RFC 6455 §5.2), so that Portcullis can end
 * a relayed WebSocket with a close frame of its own (its session ended, or the process is draining)
 * without cutting a frame in two. Only frame headers are read (2 to 14 bytes each); payloads are
 * counted, never parsed, unmasked or held. Control frames may come between the fragments of a
 * message (§5.4), so any frame boundary is a place to put a close frame.
 */
export class FrameBoundaries {
  /** Payload bytes of the current frame still to come. */
  #remaining = 0
  readonly #header = Buffer.alloc(14)
  /** Header bytes of the next frame seen so far (0: not inside a header). */
  #have = 0
  /** The header's full length once its second byte is known. */
  #want = 2

  /** The bytes scanned so far end exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.#remaining === 0 && this.#have === 0
  }

  /**
   * Account for `chunk`, and return how many of its bytes were scanned: all of them, unless `stop`
   * asks to stop at the first frame boundary inside it (then the bytes up to that boundary; 0 when the
   * chunk starts at one).
   */
  scan(chunk: Uint8Array, stop: boolean): number {
    if (stop && this.atBoundary) return 0
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, n - i)
        i += take
        this.#remaining -= take
        if (this.#remaining === 0 && stop) return i
        continue
      }
      this.#header[this.#have++] = chunk[i++] as number
      if (this.#have === 2) {
        const len7 = (this.#header[1] as number) & 0x7f
        const masked = ((this.#header[1] as number) & 0x80) !== 0
        this.#want = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0)
      }
      if (this.#have >= 2 && this.#have === this.#want) {
        this.#remaining = payloadLength(this.#header)
        this.#have = 0
        this.#want = 2
        if (this.#remaining === 0 && stop) return i
      }
    }
    return i
  }
}

function payloadLength(header: Buffer): number {
  const len7 = (header[1] as number) & 0x7f
  if (len7 === 126) return header.readUInt16BE(2)
  // A 64-bit length: beyond 2^53 bytes nothing will ever arrive to count anyway.
  if (len7 === 127) return Number(header.readBigUInt64BE(2))
  return len7
}

/** The close codes Portcullis sends (RFC 6455 §7.4.1). */
export const CLOSE_GOING_AWAY = 1001
export const CLOSE_POLICY_VIOLATION = 1008
/** The server hit a condition that kept it from going on (RFC 6455 §7.4.1). */
export const CLOSE_INTERNAL_ERROR = 1011
/** Try again later (IANA WebSocket close code registry): a dependency is unavailable for now. */
export const CLOSE_TRY_AGAIN_LATER = 1013

/**
 * A close frame with `code` and a short reason: unmasked towards the client, masked towards the
 * server (§5.3: every frame a client sends is masked, and Portcullis speaks as the client upstream).
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason.slice(0, 120), 'utf8')
  const payload = Buffer.alloc(2 + text.length)
  payload.writeUInt16BE(code, 0)
  text.copy(payload, 2)
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const mask = randomBytes(4)
  for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (mask[i % 4] as number)
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}
