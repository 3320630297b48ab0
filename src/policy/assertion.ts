import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type JsonWebKey, type KeyObject } from 'node:crypto'
import type { Clock } from '../clock.ts'
import { PortcullisError } from '../errors.ts'
import type { Identity } from './identity.ts'

/**
 * The signed identity assertion (`identity.assertion`): a short-lived JWT of the identity that every
 * proxied request carries in `X-Portcullis-Assertion`, so an upstream can check the identity headers
 * came from Portcullis. Signed with ES256; the public keys are served at
 * `/.well-known/portcullis/jwks.json`. An assertion is kept per identity and audience until close to
 * its expiry, not signed per request.
 */
export interface AssertionSigner {
  /** The public keys, as a JWK Set. */
  readonly jwks: { readonly keys: readonly Record<string, unknown>[] }
  /** The assertion for this identity and audience (the upstream's origin): cached, or newly signed. */
  token(identity: Identity, audience: string): string | Promise<string>
  /** The private key (a reload whose `signingKey` is unchanged keeps it, a generated one too). */
  readonly key: KeyObject
}

/** Where the public keys are served (an own route of Portcullis, on every host). */
export const ASSERTION_JWKS_PATH = '/.well-known/portcullis/jwks.json'

/** Claims every assertion carries when the identity has them, besides those `identity.headers` uses. */
export const ASSERTION_BASE_CLAIMS: readonly string[] = ['email', 'groups', 'name', 'preferred_username']

/** Claims the assertion sets itself: an identity's claim of the same name is never copied over them. */
const REGISTERED = new Set(['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti'])

/** Re-signed when less than this part of the lifetime is left, and never with less than `MIN_LEFT_MS`. */
const RENEW_FRACTION = 0.25
const MIN_LEFT_MS = 5_000

const KEY_SETTING = 'identity.assertion.signingKey'

export interface AssertionSignerOptions {
  /** The private key (`loadSigningKey`). */
  readonly key: KeyObject
  /** `iss`: server.publicUrl's origin. */
  readonly issuer: string
  /** Lifetime of each assertion, in ms (whole seconds are used; at least 1 s). */
  readonly ttlMs: number
  /** Identity claims copied into the assertion when present (besides `sub`). */
  readonly claims: readonly string[]
  readonly clock: Clock
}

interface Signed {
  readonly sub: string
  readonly token: string
  /** When it is signed again (ms since the epoch). */
  readonly renewAt: number
}

/**
 * The private key of `identity.assertion.signingKey`: a PKCS#8 PEM, or an EC private JWK as JSON;
 * empty is a new key. Either must be an EC P-256 key (ES256). Anything else is a CONFIG_INVALID
 * error naming the setting; its message never holds key material.
 */
export function loadSigningKey(text: string): KeyObject {
  const given = text.trim()
  if (given === '') return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  let key: KeyObject
  if (given.startsWith('{')) {
    let jwk: unknown
    try {
      jwk = JSON.parse(given)
    } catch (err) {
      throw keyError('JSON that does not parse', err)
    }
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw keyError('JSON that is not a JWK object')
    const fields = jwk as Record<string, unknown>
    if (fields.kty !== 'EC') throw keyError(`a JWK of kty ${JSON.stringify(fields.kty ?? null)}`)
    if (fields.crv !== 'P-256') throw keyError(`a JWK on curve ${JSON.stringify(fields.crv ?? null)}`)
    if (typeof fields.d !== 'string') throw keyError('a public JWK (no "d")')
    if (fields.alg !== undefined && fields.alg !== 'ES256') throw keyError(`a JWK for alg ${JSON.stringify(fields.alg)}`)
    try {
      key = createPrivateKey({ key: fields as JsonWebKey, format: 'jwk' })
    } catch (err) {
      throw keyError('a JWK that is not a valid EC key', err)
    }
  } else if (given.includes('-----BEGIN PRIVATE KEY-----')) {
    try {
      key = createPrivateKey({ key: given, format: 'pem' })
    } catch (err) {
      throw keyError('a PEM that does not parse', err)
    }
  } else if (given.includes('-----BEGIN EC PRIVATE KEY-----')) {
    throw keyError('a SEC1 PEM ("BEGIN EC PRIVATE KEY"); convert it with `openssl pkcs8 -topk8 -nocrypt`')
  } else if (given.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) {
    throw keyError('an encrypted PEM; give the key unencrypted (`openssl pkcs8 -topk8 -nocrypt`)')
  } else {
    throw keyError('neither a PKCS#8 PEM ("BEGIN PRIVATE KEY") nor a JWK')
  }
  if (key.asymmetricKeyType !== 'ec') throw keyError(`a ${key.asymmetricKeyType ?? 'non-asymmetric'} key`)
  const curve = key.asymmetricKeyDetails?.namedCurve
  if (curve !== 'prime256v1') throw keyError(`an EC key on curve ${curve ?? 'unknown'}`)
  return key
}

function keyError(what: string, cause?: unknown): PortcullisError {
  return new PortcullisError('CONFIG_INVALID', `${KEY_SETTING}: must be an EC P-256 private key (PKCS#8 PEM or JWK JSON) for ES256; got ${what}`, cause === undefined ? undefined : { cause })
}

/** RFC 7638 JWK thumbprint (SHA-256) of an EC public key: its `kid`. */
export function jwkThumbprint(jwk: { readonly crv?: unknown; readonly x?: unknown; readonly y?: unknown }): string {
  // The required members in lexicographic order, no white space (RFC 7638 §3.2).
  const canonical = JSON.stringify({ crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y })
  return createHash('sha256').update(canonical).digest('base64url')
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/**
 * The ES256 signer. Signing is synchronous (node:crypto) and happens once per identity and audience
 * per lifetime: the cache is keyed by the identity's `claims` object, which every request with the
 * same session cookie (the open-cache) or the same bearer token (the verifier's cache) shares, and
 * forgotten with it.
 */
export function createAssertionSigner(opts: AssertionSignerOptions): AssertionSigner {
  const { key, issuer, clock } = opts
  const ttlSec = Math.floor(opts.ttlMs / 1000)
  if (ttlSec < 1) throw new PortcullisError('CONFIG_INVALID', 'identity.assertion.ttl: must be at least 1s')
  const renewLeftMs = Math.max(ttlSec * 1000 * RENEW_FRACTION, MIN_LEFT_MS)
  const exported = createPublicKey(key).export({ format: 'jwk' })
  const publicJwk = { kty: 'EC', crv: exported.crv, x: exported.x, y: exported.y }
  const kid = jwkThumbprint(publicJwk)
  const jwks = Object.freeze({ keys: Object.freeze([Object.freeze({ ...publicJwk, kid, alg: 'ES256', use: 'sig' })]) })
  const header = b64({ alg: 'ES256', typ: 'JWT', kid })
  const names = [...new Set(opts.claims)].filter((name) => !REGISTERED.has(name))
  const cache = new WeakMap<object, Map<string, Signed>>()

  function signFor(identity: Identity, audience: string, now: number): Signed {
    const iat = Math.floor(now / 1000)
    const payload: Record<string, unknown> = { iss: issuer, sub: identity.sub, aud: audience }
    for (const name of names) {
      const value = identity.claims[name]
      if (value !== undefined && value !== null) payload[name] = value
    }
    payload.iat = iat
    payload.exp = iat + ttlSec
    payload.jti = randomBytes(16).toString('base64url')
    const input = `${header}.${b64(payload)}`
    // JWS wants the signature as r || s (RFC 7518 §3.4), not DER.
    const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
    return { sub: identity.sub, token: `${input}.${signature}`, renewAt: (iat + ttlSec) * 1000 - renewLeftMs }
  }

  return {
    jwks,
    key,
    token(identity, audience) {
      const now = clock.now()
      let byAudience = cache.get(identity.claims)
      if (byAudience === undefined) {
        byAudience = new Map()
        cache.set(identity.claims, byAudience)
      }
      const kept = byAudience.get(audience)
      if (kept !== undefined && now < kept.renewAt && kept.sub === identity.sub) return kept.token
      const signed = signFor(identity, audience, now)
      byAudience.set(audience, signed)
      return signed.token
    },
  }
}
