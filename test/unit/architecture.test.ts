/**
 * Enforces the import table of STYLE.md §2.3: an inner layer never imports an outer one, protocol
 * libraries stay in their folder, and the demo never reaches into the product. Reads every
 * `src/**\/*.ts`, extracts its import specifiers and checks them.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { builtinModules } from 'node:module'
import t from 'tap'
import { importsOf } from '../helpers/imports.ts'

const SRC = resolve(import.meta.dirname, '../../src')

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
    name: 'runtime.ts',
    layer: isFile('runtime.ts'),
    allow: (to) => basics(to) || srcIn(to, 'config', 'oidc', 'session', 'policy'),
  },
  {
    name: 'http/ and app.ts',
    layer: (f) => f === 'app.ts' || inDir('http')(f),
    allow: (to) => !srcIn(to, 'demo') && !srcIs(to, 'main.ts') && !['pkg:oidc-provider'].includes(to),
  },
  {
    name: 'main.ts',
    layer: isFile('main.ts'),
    allow: (to) => basics(to) || srcIs(to, 'app.ts', 'runtime.ts') || srcIn(to, 'config', 'demo') || to === 'pkg:pino',
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

t.test('only oidc/ imports openid-client; only http/ and app.ts import fastify', async (t) => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file).replaceAll('\\', '/')
    for (const imp of importsOf(readFileSync(file, 'utf8'))) {
      const to = target(file, imp.spec)
      if (to === 'pkg:openid-client') t.ok(rel.startsWith('oidc/'), `${rel} imports openid-client`)
      if (to === 'pkg:fastify' || to.startsWith('pkg:@fastify/')) t.ok(rel === 'app.ts' || rel.startsWith('http/'), `${rel} imports ${imp.spec}`)
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
