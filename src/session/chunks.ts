/**
 * Cookie chunking: a value longer than one cookie can hold is split into `NAME`, `NAME_1`, `NAME_2`, ...
 * Browsers cap a cookie (name, value and attributes) near 4096 bytes; we keep each chunk's value under
 * CHUNK_SIZE so the attributes fit too. A request with more than MAX_CHUNKS pieces is not ours.
 */
export const CHUNK_SIZE = 3800
export const MAX_CHUNKS = 8
const CHUNK_INDEX = /^[1-9]\d?$/

export function chunkName(base: string, index: number): string {
  return index === 0 ? base : `${base}_${index}`
}

/** Split a value into named chunks. Throws for a value that would need more than MAX_CHUNKS. */
export function split(base: string, value: string): Array<[name: string, value: string]> {
  if (value.length > MAX_CHUNKS * CHUNK_SIZE) throw new RangeError(`value of ${value.length} characters needs more than ${MAX_CHUNKS} chunks`)
  const out: Array<[string, string]> = []
  for (let i = 0, n = 0; i < value.length || n === 0; i += CHUNK_SIZE, n++) {
    out.push([chunkName(base, n), value.slice(i, i + CHUNK_SIZE)])
  }
  return out
}

/**
 * Join the chunks present in a cookie map: `NAME`, then `NAME_1`, ... until one is missing.
 * Returns null when there is no `NAME`, a chunk is empty or too long, or there are more than MAX_CHUNKS.
 */
export function join(base: string, cookies: Readonly<Record<string, string | undefined>>): string | null {
  const first = cookies[base]
  if (first === undefined || first === '' || first.length > CHUNK_SIZE) return null
  let value = first
  for (let i = 1; ; i++) {
    const next = cookies[chunkName(base, i)]
    if (next === undefined) return value
    if (i >= MAX_CHUNKS || next === '' || next.length > CHUNK_SIZE) return null
    value += next
  }
}

/**
 * Names of session chunk cookies present in the request that a new value of `keep` chunks does not
 * overwrite: they must be cleared, or a later join would glue stale pieces on.
 */
export function staleChunks(base: string, cookieNames: Iterable<string>, keep: number): string[] {
  const prefix = `${base}_`
  const stale: string[] = []
  for (const name of cookieNames) {
    if (name === base) {
      if (keep === 0) stale.push(name)
      continue
    }
    if (!name.startsWith(prefix)) continue
    const rest = name.slice(prefix.length)
    // Only indexes we may have written (below MAX_CHUNKS): a request with 500 made-up chunk cookies
    // gets at most MAX_CHUNKS lines back, not 500.
    if (!CHUNK_INDEX.test(rest)) continue
    const index = Number(rest)
    if (index < MAX_CHUNKS && index >= keep) stale.push(name)
  }
  return stale
}
