import type { FastifyReply, FastifyRequest } from 'fastify'
import { fastifyCookie, type SerializeOptions as CookieSerializeOptions } from '@fastify/cookie'
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
  for (const [name, piece] of pieces) putCookie(reply, name, piece, opts)
  for (const name of staleChunks(base, Object.keys(request.cookies), pieces.length)) {
    clearCookie(reply, name, baseOptions(rt, '/'))
  }
}

/** Clear every session chunk the request carries (and the base name in any case). */
export function clearSessionCookies(rt: Runtime, request: FastifyRequest, reply: FastifyReply): void {
  const base = rt.config.session.cookieName
  const names = new Set(staleChunks(base, Object.keys(request.cookies), 0))
  names.add(base)
  for (const name of names) clearCookie(reply, name, baseOptions(rt, '/'))
}

export function setTransactionCookie(rt: Runtime, reply: FastifyReply, name: string, value: string): void {
  putCookie(reply, name, value, { ...baseOptions(rt, rt.txCookiePath), maxAge: Math.floor(rt.config.session.loginTimeout / 1000) })
}

export function clearTransactionCookie(rt: Runtime, reply: FastifyReply, name: string): void {
  clearCookie(reply, name, baseOptions(rt, rt.txCookiePath))
}

/**
 * Add a `Set-Cookie` line to the reply's headers right away (not in an onSend hook, as
 * `reply.setCookie` does): the proxy step hands the reply's headers to the raw response it writes
 * itself. A later write of the same cookie in one response replaces the earlier one.
 */
function putCookie(reply: FastifyReply, name: string, value: string, opts: CookieSerializeOptions): void {
  const line = fastifyCookie.serialize(name, value, opts)
  const prior = reply.getHeader('set-cookie')
  const list = prior === undefined ? [] : Array.isArray(prior) ? prior.map(String) : [String(prior)]
  const same = `${name}=`
  const kept = list.filter((l) => !l.startsWith(same))
  kept.push(line)
  void reply.removeHeader('set-cookie').header('set-cookie', kept)
}

function clearCookie(reply: FastifyReply, name: string, opts: CookieSerializeOptions): void {
  putCookie(reply, name, '', { ...opts, expires: new Date(0), maxAge: 0 })
}
