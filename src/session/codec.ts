import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose'
import type { KeyRing } from './keyring.ts'

/**
 * Seal and open small JSON documents as compact JWE (`dir` + `A256GCM`) with a key id in the header.
 * The payload is deflated before sealing (jose no longer compresses). `open()` never throws: anything
 * that is not a value we sealed ourselves (garbage, truncated, tampered, foreign key, zip bomb) is
 * `null`, which the callers treat as "no session".
 */

/** Upper bound of a sealed value we are willing to look at, and of its inflated payload. */
export const MAX_SEALED_LENGTH = 40_000
const MAX_PLAINTEXT = 64 * 1024
const COMPACT_JWE = /^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export async function seal(payload: unknown, ring: KeyRing): Promise<string> {
  const plaintext = deflateRawSync(Buffer.from(JSON.stringify(payload), 'utf8'))
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: ring.current.kid })
    .encrypt(ring.current.raw)
}

export interface Opened {
  readonly payload: unknown
  /** Opened with a key other than the sealing one: re-seal. */
  readonly renew: boolean
}

export async function open(value: string, ring: KeyRing): Promise<Opened | null> {
  if (value.length === 0 || value.length > MAX_SEALED_LENGTH || !COMPACT_JWE.test(value)) return null
  try {
    const header = decodeProtectedHeader(value)
    if (header.alg !== 'dir' || header.enc !== 'A256GCM' || typeof header.kid !== 'string') return null
    const key = ring.byId(header.kid)
    if (key === undefined) return null
    const { plaintext } = await compactDecrypt(value, key.raw, {
      keyManagementAlgorithms: ['dir'],
      contentEncryptionAlgorithms: ['A256GCM'],
    })
    const json = inflateRawSync(plaintext, { maxOutputLength: MAX_PLAINTEXT }).toString('utf8')
    return { payload: JSON.parse(json) as unknown, renew: key.kid !== ring.current.kid }
  } catch {
    return null
  }
}
