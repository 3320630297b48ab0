import type { FastifyReply } from 'fastify'
import { fastifyCookie, type SerializeOptions as CookieSerializeOptions } from '@fastify/cookie'
import { split, staleChunks } from '../session/chunks.ts'
import type { Runtime } from '../runtime.ts'

/**
 * Portcullis's cookies, with the attributes the session model asks for: HttpOnly, Secure when the
 * public URL is https, SameSite=Lax, Path=/ (transactions: the auth prefix only, so they never travel
 * to the upstream), optional Domain. The session cookie is written as `Set-Cookie` lines (plain data
 * in a decision, written by whichever lane answers); own routes add them to their Fastify reply.
 */
function baseOptions(rt: Runtime, path: string): CookieSerializeOptions {
  const opts: CookieSerializeOptions = { httpOnly: true, secure: rt.secureCookies, sameSite: 'lax', path }
  if (rt.config.session.cookieDomain !== '') opts.domain = rt.config.session.cookieDomain
  return opts
}

/**
 * `Set-Cookie` lines that set the session cookie chunks for `value`, and clear the chunks a previous,
 * longer value left behind among the request's `cookieNames`.
 */
export function sessionCookieLines(rt: Runtime, cookieNames: Iterable<string>, value: string, maxAgeMs: number): string[] {
  const lines = setSessionLines(rt, value, Math.max(1, Math.floor(maxAgeMs / 1000)))
  return [...lines, ...staleChunkLines(rt, cookieNames, lines.length)]
}

/** The `Set-Cookie` lines of the session chunks for `value` (one per chunk), `Max-Age` in seconds. */
export function setSessionLines(rt: Runtime, value: string, maxAgeSec: number): string[] {
  const opts = { ...baseOptions(rt, '/'), maxAge: maxAgeSec }
  return split(rt.sessionCookie, value).map(([name, piece]) => fastifyCookie.serialize(name, piece, opts))
}

/** Lines clearing the session chunks among `cookieNames` that a value of `keep` chunks leaves behind. */
export function staleChunkLines(rt: Runtime, cookieNames: Iterable<string>, keep: number): string[] {
  return staleChunks(rt.sessionCookie, cookieNames, keep).map((name) => clearLine(rt, name, '/'))
}

/** `Set-Cookie` lines that clear every session chunk among `cookieNames` (and the base name in any case). */
export function clearSessionCookieLines(rt: Runtime, cookieNames: Iterable<string>): string[] {
  const base = rt.sessionCookie
  const names = new Set(staleChunks(base, cookieNames, 0))
  names.add(base)
  return [...names].map((name) => clearLine(rt, name, '/'))
}

function clearLine(rt: Runtime, name: string, path: string): string {
  return fastifyCookie.serialize(name, '', { ...baseOptions(rt, path), expires: new Date(0), maxAge: 0 })
}

export function setTransactionCookie(rt: Runtime, reply: FastifyReply, name: string, value: string): void {
  putCookies(reply, [fastifyCookie.serialize(name, value, { ...baseOptions(rt, rt.txCookiePath), maxAge: Math.floor(rt.config.session.loginTimeout / 1000) })])
}

export function clearTransactionCookie(rt: Runtime, reply: FastifyReply, name: string): void {
  putCookies(reply, [clearLine(rt, name, rt.txCookiePath)])
}

/**
 * Add `Set-Cookie` lines to a reply's headers right away (not in an onSend hook, as
 * `reply.setCookie` does). A later line for the same cookie name replaces an earlier one.
 */
export function putCookies(reply: FastifyReply, lines: readonly string[]): void {
  if (lines.length === 0) return
  const prior = reply.getHeader('set-cookie')
  let list = prior === undefined ? [] : Array.isArray(prior) ? prior.map(String) : [String(prior)]
  for (const line of lines) {
    const same = line.slice(0, line.indexOf('=') + 1)
    list = list.filter((l) => !l.startsWith(same))
    list.push(line)
  }
  void reply.removeHeader('set-cookie').header('set-cookie', list)
}
