import { createHash, hkdfSync } from 'node:crypto'

/**
 * Keys derived from the configured secrets with HKDF-SHA256, one per purpose, each with a key id.
 * The first secret seals; every secret opens; a value opened with an older key reports `renew` so it
 * is re-sealed with the first one (after @fastify/cookie's `signer.js`).
 */
export interface Key {
  readonly kid: string
  readonly raw: Uint8Array
}

export interface KeyRing {
  /** The key that seals. */
  readonly current: Key
  /** Look up an opening key by id. */
  byId(kid: string): Key | undefined
}

export type KeyPurpose = 'session' | 'login'

const SALT = Buffer.from('portcullis/v1')

export function createKeyRing(secrets: readonly string[], purpose: KeyPurpose): KeyRing {
  if (secrets.length === 0) throw new Error('at least one secret is required')
  const keys = secrets.map((secret) => {
    const raw = new Uint8Array(hkdfSync('sha256', Buffer.from(secret, 'utf8'), SALT, `portcullis ${purpose} A256GCM`, 32))
    const kid = createHash('sha256').update(raw).update(purpose).digest('base64url').slice(0, 12)
    return { kid, raw }
  })
  const map = new Map<string, Key>()
  for (const k of keys) if (!map.has(k.kid)) map.set(k.kid, k)
  return { current: keys[0] as Key, byId: (kid) => map.get(kid) }
}
