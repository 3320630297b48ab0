import type { FastifyInstance } from 'fastify'
import { PROXIED_METHODS } from './fast-lane.ts'

/**
 * The proxy route on the Fastify path: a catch-all for every proxied method. It has no handler of
 * its own to speak of: the root `onRequest` hook (`http/fastify-lane.ts`) decides the request and
 * carries the decision out on the raw response before Fastify reads a byte of the body, through the
 * undici relay the fast lane uses (`http/upstream.ts`).
 *
 * @fastify/http-proxy used to be this route. Both of its modes are replaced: its HTTP path
 * (@fastify/reply-from) re-parses the destination URL and copies the headers on every request, and
 * its WebSocket mode answers the client 101 before it asks the upstream and buffers whole messages,
 * so upgrades are relayed at the socket level (`http/tunnel.ts`).
 */
export function registerProxy(app: FastifyInstance): void {
  for (const url of ['/', '/*']) {
    app.route({
      method: [...PROXIED_METHODS],
      url,
      config: { kind: 'proxy', label: 'proxy' },
      handler: async () => {
        throw new Error('a proxied request reached its route handler: it is answered in onRequest')
      },
    })
  }
}
