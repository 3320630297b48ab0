/**
 * A fake {@link Clock} for tests: time moves only when the test says so, so lifetimes (session
 * maxAge, idle timeout, login transaction expiry) are tested without sleeping.
 */
import type { Clock } from '../../src/clock.ts'

export interface FakeClock extends Clock {
  /** Milliseconds since the epoch, as set by the test. */
  now(): number
  /** Move time forward (or back, with a negative `ms`). */
  advance(ms: number): void
  /** Jump to an absolute time (ms since the epoch). */
  set(ms: number): void
}

export function fakeClock(start: number = Date.now()): FakeClock {
  let current = start
  return {
    now: () => current,
    advance(ms: number) {
      current += ms
    },
    set(ms: number) {
      current = ms
    },
  }
}
