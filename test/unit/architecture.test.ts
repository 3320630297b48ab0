/**
 * What the repository promises about its own shape.
 *
 * - The import table (the layers of docs/architecture.md): an inner layer never imports an outer one,
 *   protocol libraries stay in their folder, and the demo never reaches into the product. Reads every
 *   `src/**\/*.ts`, extracts its import specifiers and checks them.
 * - The docs stand on their own: no tracked file cites the design, style, ecosystem or landscape
 *   notes that are kept outside the repository, nor a path into the folder beside it; and every
 *   source or test file that docs/*.md and the READMEs name exists.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { builtinModules } from 'node:module'
import t from 'tap'
import { importsOf } from '../helpers/imports.ts'

const ROOT = resolve(import.meta.dirname, '../..')
const SRC = join(ROOT, 'src')

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

/** Where an import points: `src:<path relative to src>`, `node:<builtin>` or `pkg:<package name>`. */
function target(fromFile: string, spec: string): string {
  if (spec.startsWith('.')) return `src:${relative(SRC, resolve(dirname(fromFile), spec)).replaceAll('\\', '/')}`
  if (spec.startsWith('node:') || builtinModules.includes(spec)) return `node:${spec.replace(/^node:/, '')}`
  const parts = spec.split('/')
  return `pkg:${spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]}`
}

type Rule = { layer: (file: string) => boolean; allow: (to: string, typeOnly: boolean) => boolean; name: string }

const inDir = (d: string) => (f: string) => f.startsWith(`${d}/`)
const isFile = (n: string) => (f: string) => f === n
const srcIn = (to: string, ...dirs: string[]) => dirs.some((d) => to.startsWith(`src:${d}/`))
const srcIs = (to: string, ...names: string[]) => names.some((n) => to === `src:${n}`)
const basics = (to: string) => to.startsWith('node:') || srcIs(to, 'errors.ts', 'clock.ts')

const RULES: Rule[] = [
  { name: 'errors.ts/clock.ts import nothing from src', layer: (f) => f === 'errors.ts' || f === 'clock.ts', allow: (to) => !to.startsWith('src:') },
  { name: 'config/', layer: inDir('config'), allow: (to) => basics(to) || srcIn(to, 'config') || to === 'pkg:yaml' || to === 'pkg:zod' },
  {
    name: 'policy/',
    layer: inDir('policy'),
    allow: (to, typeOnly) => basics(to) || srcIn(to, 'policy') || (typeOnly && srcIs(to, 'config/types.ts')),
  },
  {
    name: 'oidc/',
    layer: inDir('oidc'),
    allow: (to, typeOnly) =>
      basics(to) || srcIn(to, 'oidc') || (typeOnly && srcIs(to, 'config/types.ts')) || ['pkg:openid-client', 'pkg:jose', 'pkg:lru-cache'].includes(to),
  },
  {
    name: 'session/',
    layer: inDir('session'),
    allow: (to, typeOnly) =>
      basics(to) || srcIn(to, 'session') || (typeOnly && (srcIs(to, 'config/types.ts') || srcIn(to, 'oidc'))) || ['pkg:jose', 'pkg:lru-cache'].includes(to),
  },
  {
    // Redis-backed implementations of the domain's interfaces (store, revocations, replay cache, refresh lock).
    name: 'redis/',
    layer: inDir('redis'),
    allow: (to, typeOnly) =>
      basics(to) || srcIn(to, 'redis', 'session') || (typeOnly && (srcIs(to, 'config/types.ts') || srcIn(to, 'oidc'))) || ['pkg:ioredis', 'pkg:lru-cache'].includes(to),
  },
  {
    // The Prometheus instruments: prom-client, and the types of what they are told about (the
    // domain layers report through plain callbacks and never import this file or prom-client).
    name: 'metrics.ts',
    layer: isFile('metrics.ts'),
    allow: (to, typeOnly) => basics(to) || to === 'pkg:prom-client' || (typeOnly && (srcIs(to, 'runtime.ts') || srcIn(to, 'oidc', 'session'))),
  },
  {
    name: 'runtime.ts',
    layer: isFile('runtime.ts'),
    allow: (to) => basics(to) || srcIn(to, 'config', 'oidc', 'session', 'policy', 'redis'),
  },
  {
    name: 'http/ and app.ts',
    layer: (f) => f === 'app.ts' || inDir('http')(f),
    allow: (to) => !srcIn(to, 'demo') && !srcIs(to, 'main.ts') && !['pkg:oidc-provider'].includes(to),
  },
  {
    name: 'main.ts',
    layer: isFile('main.ts'),
    allow: (to) => basics(to) || srcIs(to, 'app.ts', 'runtime.ts', 'cluster.ts', 'metrics.ts') || srcIn(to, 'config', 'demo') || to === 'pkg:pino',
  },
  {
    // The CLI's process tree (server.workers): node:cluster and a logger, nothing of the proxy.
    name: 'cluster.ts',
    layer: isFile('cluster.ts'),
    allow: (to, typeOnly) => basics(to) || (typeOnly && to === 'pkg:pino'),
  },
  {
    name: 'demo/',
    layer: inDir('demo'),
    allow: (to, typeOnly) => to.startsWith('node:') || srcIn(to, 'demo') || (typeOnly && srcIs(to, 'config/types.ts')) || ['pkg:oidc-provider', 'pkg:ws', 'pkg:jose'].includes(to),
  },
]

t.test('every src file follows the import table', async (t) => {
  const all = files(SRC)
  t.ok(all.length > 20, 'found the sources')
  let checked = 0
  for (const file of all) {
    const rel = relative(SRC, file).replaceAll('\\', '/')
    const rules = RULES.filter((r) => r.layer(rel))
    for (const imp of importsOf(readFileSync(file, 'utf8'))) {
      const to = target(file, imp.spec)
      for (const rule of rules) {
        checked++
        if (!rule.allow(to, imp.typeOnly)) t.fail(`${rel} imports ${imp.typeOnly ? 'type ' : ''}${imp.spec} (${to}), against the ${rule.name} rule`)
      }
    }
  }
  t.ok(checked > 50, `checked ${checked} imports`)
})

t.test('only oidc/ imports openid-client; only http/ and app.ts import fastify; only metrics.ts and http/ import prom-client', async (t) => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file).replaceAll('\\', '/')
    for (const imp of importsOf(readFileSync(file, 'utf8'))) {
      const to = target(file, imp.spec)
      if (to === 'pkg:openid-client') t.ok(rel.startsWith('oidc/'), `${rel} imports openid-client`)
      if (to === 'pkg:fastify' || to.startsWith('pkg:@fastify/')) t.ok(rel === 'app.ts' || rel.startsWith('http/'), `${rel} imports ${imp.spec}`)
      if (to === 'pkg:prom-client') t.ok(rel === 'metrics.ts' || rel.startsWith('http/'), `${rel} imports prom-client`)
    }
  }
})

t.test('the checker itself catches a violation', async (t) => {
  const imps = importsOf(`import { x } from '../http/pipeline.ts'\nimport type { Y } from '../oidc/tokens.ts'\nconst m = await import('fastify')`)
  t.same(
    imps.map((i) => [i.spec, i.typeOnly]),
    [
      ['../http/pipeline.ts', false],
      ['../oidc/tokens.ts', true],
      ['fastify', false],
    ],
  )
  const sessionRule = RULES.find((r) => r.name === 'session/') as Rule
  const from = join(SRC, 'session/x.ts')
  t.notOk(sessionRule.allow(target(from, '../http/pipeline.ts'), false), 'session may not import http')
  t.notOk(sessionRule.allow(target(from, '../oidc/refresh.ts'), false), 'session may not import oidc runtime code')
  t.ok(sessionRule.allow(target(from, '../oidc/tokens.ts'), true), 'session may import oidc types')
})

// ---------------------------------------------------------------------------------------------------
// The docs stand on their own

/**
 * A citation of a file that is not in the repository: the design, style, ecosystem and landscape
 * notes by file name (`<NAME>.md`, `<NAME>.md §3 step 2`) or by name and section (`<NAME> §2`,
 * `<NAME> rule 6`), and any relative path into the shared folder beside the repository. Built from
 * parts, so that this file does not cite them itself.
 */
const OUTSIDE_NOTES = ['DESIGN', 'STYLE', 'ECOSYSTEM', 'LANDSCAPE']
const OUTSIDE_CITATION = new RegExp(`\\b(?:${OUTSIDE_NOTES.join('|')})(?:\\.md\\b|\\s*§|\\s+rule\\s+\\d)|\\.\\.[\\\\/]shared\\b`)

/** The files git tracks, as paths from the repository root (what a clone holds). */
function trackedFiles(): string[] {
  return execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    .split('\0')
    .filter((p) => p !== '' && !p.startsWith('node_modules/') && !p.includes('/node_modules/') && p !== 'package-lock.json')
}

/** `file:line: text` for every line of `text` that cites a file outside the repository. */
function outsideCitations(file: string, text: string): string[] {
  const hits: string[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string
    if (OUTSIDE_CITATION.test(line)) hits.push(`${file}:${i + 1}: ${line.trim().slice(0, 160)}`)
  }
  return hits
}

t.test('the pattern catches citations of files outside the repository, and nothing else', async (t) => {
  const cites = [
    `(${OUTSIDE_NOTES[0]}.md §3 step 2)`,
    `@see ${OUTSIDE_NOTES[1]}.md §3 rule 10; oauth2-proxy pkg/middleware/headers.go`,
    `${OUTSIDE_NOTES[1]}.md rule 8`,
    `${OUTSIDE_NOTES[1]} rule 6`,
    `(${OUTSIDE_NOTES[3]} §3 item 12)`,
    `${OUTSIDE_NOTES[2]}.md §9`,
    `${OUTSIDE_NOTES[3]}.md`,
    `see ../${'shared'}/notes/plan.md`,
    `..\\${'shared'}\\notes`,
  ]
  for (const c of cites) t.ok(OUTSIDE_CITATION.test(c), `caught: ${c}`)
  const fine = [
    'step 2 of the pipeline (docs/architecture.md)',
    'RFC 9110 §7.6.1',
    '@see oauth2-proxy pkg/middleware/headers.go; mod_auth_openidc',
    'README.md, CHANGELOG.md, deploy/README.md',
    'the design of the style of the landscape',
    `${OUTSIDE_NOTES[1]}SHEET.md`,
    `MY_${OUTSIDE_NOTES[0]}.md`,
    './shared/x',
  ]
  for (const c of fine) t.notOk(OUTSIDE_CITATION.test(c), `not caught: ${c}`)
  t.strictSame(outsideCitations('x.ts', `one\n * (${OUTSIDE_NOTES[0]}.md §5)\nthree`), [`x.ts:2: * (${OUTSIDE_NOTES[0]}.md §5)`], 'names the file and line')
})

t.test('no tracked file cites a file outside the repository', async (t) => {
  const files = trackedFiles()
  let scanned = 0
  const hits: string[] = []
  for (const file of files) {
    const abs = join(ROOT, file)
    // Deleted in the work tree but not yet in the index: nothing to read.
    if (!existsSync(abs) || !statSync(abs).isFile()) continue
    const buf = readFileSync(abs)
    if (buf.includes(0)) continue // binary
    scanned++
    hits.push(...outsideCitations(file, buf.toString('utf8')))
  }
  t.ok(files.includes('test/unit/architecture.test.ts'), 'git lists the tracked files (this one among them)')
  t.ok(scanned > 100, `scanned ${scanned} tracked files`)
  t.strictSame(hits, [], `no citation of ${OUTSIDE_NOTES.map((n) => `${n}.md`).join(', ')} or ../${'shared'}/; each line shows file:line`)
})

/** The docs that describe the code: docs/*.md and the READMEs (not the CHANGELOG, which is history). */
function describingDocs(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`)
  return [...docs, 'README.md', 'deploy/README.md', 'bench/README.md'].filter((f) => existsSync(join(ROOT, f)))
}

const SRC_DIRS = new Set(readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name))

/**
 * The `.ts` files a doc names, as paths from the repository root: full paths (`src/http/pipeline.ts`,
 * `test/...`, `bench/...`) anywhere in the text, and in backticks the short forms
 * docs/architecture.md uses inside `src/` (`http/pipeline.ts`, `app.ts`).
 */
function namedSourceFiles(text: string): string[] {
  const out = new Set<string>()
  for (const m of text.matchAll(/(?<![\w./-])((?:src|test|bench)\/[\w./-]+\.ts)\b/g)) out.add(m[1] as string)
  for (const m of text.matchAll(/`([\w./-]+\.ts)`/g)) {
    const p = m[1] as string
    if (/^(?:src|test|bench)\//.test(p)) continue
    const first = p.split('/')[0] as string
    if (!p.includes('/') || SRC_DIRS.has(first)) out.add(`src/${p}`)
  }
  return [...out]
}

t.test('the extractor finds full and short paths', async (t) => {
  t.strictSame(
    namedSourceFiles('see `src/http/pipeline.ts`, test/unit/x.test.ts and `http/fast-lane.ts`, `app.ts`; not `foo/bar.ts` nor sub/src/x.ts').sort(),
    ['src/app.ts', 'src/http/fast-lane.ts', 'src/http/pipeline.ts', 'test/unit/x.test.ts'],
  )
})

t.test('every source and test file the docs name exists', async (t) => {
  const docs = describingDocs()
  t.ok(docs.includes('docs/architecture.md') && docs.includes('README.md'), `read ${docs.join(', ')}`)
  let named = 0
  const missing: string[] = []
  for (const doc of docs) {
    for (const path of namedSourceFiles(readFileSync(join(ROOT, doc), 'utf8'))) {
      named++
      if (!existsSync(join(ROOT, path))) missing.push(`${doc} names ${path}`)
    }
  }
  t.ok(named > 30, `checked ${named} file names`)
  t.strictSame(missing, [], 'no doc names a file that is not there')
})
