/** The import specifiers of a TypeScript source text (static, re-exports and dynamic imports). */
export interface Imp {
  spec: string
  typeOnly: boolean
}

const IMPORT = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm
const DYNAMIC = /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g

export function importsOf(text: string): Imp[] {
  const out: Imp[] = []
  for (const m of text.matchAll(IMPORT)) out.push({ spec: m[3] as string, typeOnly: m[2] !== undefined })
  for (const m of text.matchAll(DYNAMIC)) out.push({ spec: m[1] as string, typeOnly: false })
  return out
}
