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
}
