/** Small statistics and formatting helpers for the bench table. */

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

export function min(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : Math.min(...values)
}

export function max(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : Math.max(...values)
}

/** 12345.6 → "12,346"; small values keep one decimal. */
export function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '-'
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1)
}

export function fmtMs(n: number): string {
  if (!Number.isFinite(n)) return '-'
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)
}

export function fmtRatio(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}x` : '-'
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return '-'
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`
}

export function pad(text: string, width: number, right = false): string {
  if (text.length >= width) return text
  return right ? text.padStart(width) : text.padEnd(width)
}

export function fmtKiB(n: number): string {
  if (!Number.isFinite(n)) return '-'
  return `${(n / 1024).toFixed(1)} KiB`
}
