import { createHash } from 'node:crypto'
import type { LoginTransaction } from '../oidc/login.ts'
import { open, seal } from './codec.ts'
import type { KeyRing } from './keyring.ts'

/**
 * Login transactions in cookies: one short-lived sealed cookie per login, named for its state so
 * several tabs can log in at once; capped in number (oldest dropped), sealed with a key of their own
 * purpose so a transaction cookie can never pass for a session cookie.
 */
const TX_INFIX = '_tx_'

export function txCookieName(base: string, state: string): string {
  return `${base}${TX_INFIX}${createHash('sha256').update(state).digest('hex').slice(0, 16)}`
}

/** A name `txCookieName` can produce: the infix and exactly 16 hex digits. */
export function isTxCookieName(base: string, name: string): boolean {
  return name.length === base.length + TX_INFIX.length + 16 && name.startsWith(base + TX_INFIX) && TX_SUFFIX.test(name.slice(-16))
}
const TX_SUFFIX = /^[0-9a-f]{16}$/

/**
 * At most this many transaction cookies of a request are opened or cleared in one answer (the schema's
 * ceiling of `session.maxPendingLogins`): a client sending hundreds costs a few decryptions, not
 * hundreds, and gets a bounded number of `Set-Cookie` lines back. Any beyond are cleared by later logins.
 */
export const MAX_TX_READ = 20

export function sealTransaction(tx: LoginTransaction, ring: KeyRing): Promise<string> {
  return seal({ t: 'tx', ...tx }, ring)
}

/** Open a transaction cookie; null when it is not ours, malformed, or older than `ttlMs`. */
export async function openTransaction(value: string, ring: KeyRing, now: number, ttlMs: number): Promise<LoginTransaction | null> {
  const opened = await open(value, ring)
  if (opened === null) return null
  const p = opened.payload as Record<string, unknown> | null
  if (
    p === null ||
    typeof p !== 'object' ||
    p.t !== 'tx' ||
    typeof p.state !== 'string' ||
    typeof p.nonce !== 'string' ||
    typeof p.verifier !== 'string' ||
    typeof p.rd !== 'string' ||
    typeof p.createdAt !== 'number'
  ) {
    return null
  }
  if (now - p.createdAt > ttlMs || p.createdAt > now + 60_000) return null
  return { state: p.state, nonce: p.nonce, verifier: p.verifier, rd: p.rd, createdAt: p.createdAt }
}

/**
 * Which existing transaction cookies to delete before adding one more, so at most `max` remain:
 * expired or unreadable ones first, then the oldest.
 */
export async function transactionsToEvict(
  existing: ReadonlyArray<[name: string, value: string]>,
  ring: KeyRing,
  now: number,
  ttlMs: number,
  max: number,
): Promise<string[]> {
  const live: Array<{ name: string; createdAt: number }> = []
  const evict: string[] = []
  for (const [name, value] of existing.slice(0, MAX_TX_READ)) {
    const tx = await openTransaction(value, ring, now, ttlMs)
    if (tx === null) evict.push(name)
    else live.push({ name, createdAt: tx.createdAt })
  }
  live.sort((a, b) => a.createdAt - b.createdAt)
  while (live.length > max - 1) evict.push((live.shift() as { name: string }).name)
  return evict
}
