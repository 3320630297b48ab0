import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CookieSerializeOptions } from '@fastify/cookie'
import { split, staleChunks } from '../session/chunks.ts'
import type { Runtime } from '../runtime.ts'

/**
 * Writing and clearing Portcullis's cookies on a reply, with the attributes of DESIGN.md §5:
 * HttpOnly, Secure when the public URL is https, SameSite=Lax, Path=/ (transactions: the auth prefix
 * only, so they never travel to the upstream), optional Domain.
 */
function baseOptions(rt: Runtime, path: string): CookieSerializeOptions {
  const opts: CookieSerializeOptions = { httpOnly: true, secure: rt.secureCookies, sameSite: 'lax', path }
  if (rt.config.session.cookieDomain !== '') opts.domain = rt.config.session.cookieDomain
  return opts
}

/** Set the session cookie chunks and clear chunks a previous, longer value left behind. */
export function setSessionCookies(rt: Runtime, request: FastifyRequest, reply: FastifyReply, value: string, maxAgeMs: number): void {
  const base = rt.config.session.cookieName
  const pieces = split(base, value)
  if (request.portcullis !== null && request.portcullis !== undefined) request.portcullis.cookieWritten = true
  const opts = { ...baseOptions(rt, '/'), maxAge: Math.max(1, Math.floor(maxAgeMs / 1000)) }
  for (const [name, piece] of pieces) reply.setCookie(name, piece, opts)
  for (const name of staleChunks(base, Object.keys(request.cookies), pieces.length)) {
    reply.clearCookie(name, baseOptions(rt, '/'))
  }
}

/** Clear every session chunk the request carries (and the base name in any case). */
export function clearSessionCookies(rt: Runtime, request: FastifyRequest, reply: FastifyReply): void {
  const base = rt.config.session.cookieName
  const names = new Set(staleChunks(base, Object.keys(request.cookies), 0))
  names.add(base)
  for (const name of names) reply.clearCookie(name, baseOptions(rt, '/'))
}

export function setTransactionCookie(rt: Runtime, reply: FastifyReply, name: string, value: string): void {
  reply.setCookie(name, value, { ...baseOptions(rt, rt.txCookiePath), maxAge: Math.floor(rt.config.session.loginTimeout / 1000) })
}

export function clearTransactionCookie(rt: Runtime, reply: FastifyReply, name: string): void {
  reply.clearCookie(name, baseOptions(rt, rt.txCookiePath))
}
