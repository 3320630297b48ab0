import type { FastifyRequest } from 'fastify'
import { join } from '../session/chunks.ts'

/**
 * The session cookie value a request carries (chunks joined), or null. Bearer tokens join here when
 * routes accept them (a later issue).
 */
export function readSessionCookie(request: FastifyRequest, cookieName: string): string | null {
  return join(cookieName, request.cookies)
}
