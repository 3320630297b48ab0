/** A process tree as /proc shows it: for tests that must leave no process behind. */
import { readdirSync, readFileSync } from 'node:fs'

/** Every live process whose parent chain leads to `root` (from /proc). */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ")".
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      parent.set(Number(name), ppid)
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = []
  const walk = (pid: number) => {
    for (const [child, p] of parent) {
      if (p === pid) {
        found.push(child)
        walk(child)
      }
    }
  }
  walk(root)
  return found
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    // A zombie is dead, only not yet reaped by its parent.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/**
 * The direct children of `root` whose command line holds `marker` (a cluster's workers: under tsx a
 * Node process may also have a helper child of its own, esbuild's service).
 */
export function childrenRunning(root: number, marker: string): number[] {
  return descendants(root).filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      return ppid === root && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)
    } catch {
      return false
    }
  })
}
