import { randomBytes } from 'node:crypto'

/** Time source, injectable so tests can move time without sleeping. Milliseconds since the epoch. */
export interface Clock {
  now(): number
}

/** Randomness source, injectable for deterministic tests. */
export interface Random {
  bytes(n: number): Uint8Array
}

export const systemClock: Clock = { now: () => Date.now() }
export const systemRandom: Random = { bytes: (n) => randomBytes(n) }

/** Seconds since the epoch, as JWT claims count time. */
export function epochSeconds(clock: Clock): number {
  return Math.floor(clock.now() / 1000)
}
