/**
 * Summarize a V8 `.cpuprofile` (from `node --cpu-prof`): self time per function and per module
 * (package under node_modules, or the file under src/), biggest first.
 *
 *   npx tsx bench/lib/profile.ts <file.cpuprofile> [top=25]
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }
  hitCount?: number
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
  timeDeltas?: number[]
}

export interface ProfileSummary {
  totalMs: number
  /** Sampled time not spent idle (the `(idle)` node) or in `(program)`/`(garbage collector)` is split out. */
  idleMs: number
  functions: Array<{ name: string; where: string; selfMs: number; pct: number }>
  modules: Array<{ module: string; selfMs: number; pct: number }>
}

function moduleOf(url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)'
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const nm = path.lastIndexOf('node_modules/')
  if (nm !== -1) {
    const rest = path.slice(nm + 'node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? path)
  }
  if (path.startsWith('node:')) return path
  const src = path.indexOf('/src/')
  if (src !== -1) return path.slice(src + 1)
  const dist = path.indexOf('/dist/')
  if (dist !== -1) return path.slice(dist + 1)
  return path
}

function shortWhere(url: string, line: number): string {
  if (url === '') return ''
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const nm = path.lastIndexOf('node_modules/')
  const short = nm !== -1 ? path.slice(nm + 'node_modules/'.length) : path.replace(/^.*?\/(src|dist|bench|test)\//, '$1/')
  return `${short}:${line + 1}`
}

/** Summarize a profile file, or an already parsed profile. */
export function summarizeProfile(input: string | object, top = 25): ProfileSummary {
  const profile = (typeof input === 'string' ? JSON.parse(readFileSync(input, 'utf8')) : input) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parentOf = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id)
  const selfUs = new Map<number, number>()
  if (profile.samples !== undefined && profile.timeDeltas !== undefined) {
    // timeDeltas[i] is the time between sample i-1 and sample i: charge it to sample i-1's node.
    for (let i = 1; i < profile.samples.length; i++) {
      const id = profile.samples[i - 1] as number
      selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
    }
  } else {
    const total = profile.endTime - profile.startTime
    const hits = profile.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0)
    for (const n of profile.nodes) selfUs.set(n.id, ((n.hitCount ?? 0) * total) / Math.max(1, hits))
  }
  /** Nearest ancestor with a script URL outside node's internals, for native frames (writev, writeString, ...). */
  const jsCaller = (id: number): ProfileNode | undefined => {
    let fallback: ProfileNode | undefined
    for (let cur = parentOf.get(id); cur !== undefined; cur = parentOf.get(cur)) {
      const n = byId.get(cur)
      if (n === undefined || n.callFrame.url === '') continue
      fallback ??= n
      if (!n.callFrame.url.startsWith('node:')) return n
    }
    return fallback
  }
  const fn = new Map<string, { name: string; where: string; us: number }>()
  const mod = new Map<string, number>()
  let totalUs = 0
  let idleUs = 0
  for (const [id, us] of selfUs) {
    const node = byId.get(id)
    if (node === undefined) continue
    const { functionName, url, lineNumber } = node.callFrame
    totalUs += us
    if (functionName === '(idle)') {
      idleUs += us
      continue
    }
    const name = functionName === '' ? '(anonymous)' : functionName
    let where = shortWhere(url, lineNumber)
    let m = moduleOf(url, name)
    if (url === '' && !name.startsWith('(')) {
      // A native function: say who called it, and charge it to the caller's module.
      const caller = jsCaller(id)
      if (caller !== undefined) {
        where = `native, from ${caller.callFrame.functionName || '(anonymous)'} ${shortWhere(caller.callFrame.url, caller.callFrame.lineNumber)}`
        m = moduleOf(caller.callFrame.url, caller.callFrame.functionName)
      }
    }
    const key = `${name}\t${where}`
    const entry = fn.get(key) ?? { name, where, us: 0 }
    entry.us += us
    fn.set(key, entry)
    mod.set(m, (mod.get(m) ?? 0) + us)
  }
  const busy = Math.max(1, totalUs - idleUs)
  return {
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    functions: [...fn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ name: e.name, where: e.where, selfMs: e.us / 1000, pct: (100 * e.us) / busy })),
    modules: [...mod.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([module, us]) => ({ module, selfMs: us / 1000, pct: (100 * us) / busy })),
  }
}

export function formatProfile(s: ProfileSummary): string {
  const lines: string[] = []
  lines.push(`profile: ${(s.totalMs / 1000).toFixed(1)} s sampled, ${(s.idleMs / 1000).toFixed(1)} s idle; percentages of busy time`)
  lines.push('  top self time by function:')
  for (const f of s.functions) lines.push(`    ${f.pct.toFixed(1).padStart(5)}%  ${f.selfMs.toFixed(0).padStart(7)} ms  ${f.name}  ${f.where}`)
  lines.push('  self time by module (native functions charged to the module that called them):')
  for (const m of s.modules) lines.push(`    ${m.pct.toFixed(1).padStart(5)}%  ${m.selfMs.toFixed(0).padStart(7)} ms  ${m.module}`)
  return lines.join('\n')
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write('usage: tsx bench/lib/profile.ts <file.cpuprofile> [top]\n')
    process.exit(2)
  }
  process.stdout.write(`${formatProfile(summarizeProfile(file, Number(process.argv[3] ?? 25)))}\n`)
}
