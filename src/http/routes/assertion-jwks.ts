import type { FastifyInstance } from 'fastify'
import { PortcullisError } from '../../errors.ts'
import { ASSERTION_JWKS_PATH } from '../../policy/assertion.ts'

/**
 * GET /.well-known/portcullis/jwks.json: the public keys of `X-Portcullis-Assertion`
 * (`identity.assertion`), as a JWK Set, on every host. With assertions off it is a 404 like any
 * unknown address of Portcullis's, so nothing is advertised. Registered whatever the config says:
 * a reload may turn assertions on or off, and the runtime of the request decides.
 */
export function registerAssertionJwks(app: FastifyInstance): void {
  app.get(ASSERTION_JWKS_PATH, { config: { kind: 'auth', label: 'auth:assertion-jwks' } }, async (request, reply) => {
    const signer = request.portcullis.runtime.assertions
    if (signer === null) throw new PortcullisError('NOT_FOUND', 'Nothing is served at this address.')
    return reply
      .header('content-type', 'application/jwk-set+json')
      .header('cache-control', 'public, max-age=300')
      .send(JSON.stringify(signer.jwks))
  })
}
