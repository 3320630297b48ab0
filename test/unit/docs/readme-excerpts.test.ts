/**
 * The README's integration configs are the deploy files the tests run: every fenced block after an
 * `<!-- excerpt: FILE -->` marker is a set of lines of FILE, in FILE's order (indentation and all),
 * so a config copied from the README is the one that was tested. A changed deploy file without the
 * README following (or the other way round) fails here.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../../..')
const MARKER = /^<!-- excerpt: (\S+) -->\n```[a-z]*\n([\s\S]*?)\n```/gm

/** The first line of `lines` that `file` lacks at or after the previous match, or null when all are there in order. */
export function missingLine(file: readonly string[], lines: readonly string[]): string | null {
  let at = 0
  for (const line of lines) {
    if (line.trim() === '') continue
    const found = file.indexOf(line, at)
    if (found === -1) return line
    at = found + 1
  }
  return null
}

t.test('every README excerpt is in its file, in order', async (t) => {
  const readme = readFileSync(resolve(ROOT, 'README.md'), 'utf8')
  const excerpts = [...readme.matchAll(MARKER)]
  t.ok(excerpts.length >= 5, `the README has its integration excerpts (${excerpts.length})`)
  for (const [, file, body] of excerpts) {
    const path = resolve(ROOT, file as string)
    t.ok(existsSync(path), `${file} exists`)
    if (!existsSync(path)) continue
    const lines = readFileSync(path, 'utf8').split('\n').map((l) => l.trimEnd())
    t.equal(missingLine(lines, (body as string).split('\n').map((l) => l.trimEnd())), null, `README excerpt of ${file}`)
  }
})

t.test('the check fails on a line that is not there, or out of order', async (t) => {
  const file = ['a', '  b', 'c']
  t.equal(missingLine(file, ['a', 'c']), null)
  t.equal(missingLine(file, ['b']), 'b', 'indentation counts')
  t.equal(missingLine(file, ['c', 'a']), 'a', 'order counts')
})
