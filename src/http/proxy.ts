import type { FastifyInstance } from 'fastify'
import type { FastifyReplyFromHooks } from '@fastify/reply-from'
import httpProxy from '@fastify/http-proxy'
import type { FastifyLane } from './fastify-lane.ts'

/**
 * The proxy route on the Fastify path: one catch-all @fastify/http-proxy (its routes for every
 * proxied method, and its content-type parsers that leave the body unread for the relay). The
 * decision was made in the root `onRequest` hook (`http/fastify-lane.ts`); a forward is carried out
 * here, before http-proxy's own handler, straight through the undici relay the fast lane uses
 * (`http/upstream.ts`): http-proxy's per-request URL parsing and header copies are skipped.
 * Its WebSocket mode is off: it answers the client 101 before it asks the upstream, so upgrades are
 * relayed at the socket level instead (`http/tunnel.ts`).
 */
export function registerProxy(app: FastifyInstance, lane: FastifyLane): void {
  void app.register(httpProxy, {
    upstream: '',
    prefix: '/',
    websocket: false,
    config: { kind: 'proxy', label: 'proxy' },
    preHandler: (request, reply, next) => {
      try {
        lane.forward(request, reply)
      } catch (err) {
        next(err as Error)
      }
    },
    replyOptions: { getUpstream },
  })
}

// Never reached (every proxied request is answered in the preHandler); http-proxy requires it.
const getUpstream: NonNullable<FastifyReplyFromHooks['getUpstream']> = () => 'http://127.0.0.1'
