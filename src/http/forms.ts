import type { FastifyInstance } from 'fastify'

/**
 * A scope for Portcullis's own POST endpoints (sign-out, back-channel logout) where form bodies are
 * parsed into URLSearchParams, small ones only. Registered at the root, a form parser would be
 * inherited by the proxy's scope, and proxied form posts would no longer stream through untouched.
 */
export function registerFormScope(app: FastifyInstance, register: (scope: FastifyInstance) => void): void {
  void app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
      done(null, new URLSearchParams(body as string))
    })
    scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, _body, done) => done(null, undefined))
    register(scope)
  })
}
