/**
 * Durations in the config file: an integer and a unit, `250ms`, `30s`, `5m`, `12h`, `7d`.
 * Returned as milliseconds. A bare number or any other shape is refused (no guessing of units).
 */
const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION = /^(\d{1,9})(ms|s|m|h|d)$/

export function parseDuration(text: string): number | null {
  const m = DURATION.exec(text.trim())
  if (m === null) return null
  return Number(m[1]) * (UNITS[m[2] as string] as number)
}

export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNITS[unit] as number
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}
