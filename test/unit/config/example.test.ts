/**
 * Keeps config.example.yaml honest (the mod_auth_openidc `check_conf_reference.sh` way):
 * it validates, and every key of the schema appears in it as real YAML, with a comment.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import YAML, { isMap, isSeq, type Node } from 'yaml'
import { z } from 'zod'
import { configSchema } from '../../../src/config/schema.ts'
import { formatIssues, loadConfig } from '../../../src/config/index.ts'

const EXAMPLE = fileURLToPath(new URL('../../../config.example.yaml', import.meta.url))
const text = readFileSync(EXAMPLE, 'utf8')
const env = {
  PORTCULLIS_CLIENT_SECRET: 'example-client-secret',
  PORTCULLIS_COOKIE_SECRET: 'example-cookie-secret-0123456789abcdef',
}

/** Leaf kinds: their values are data (strings, switches) or user-chosen keys (records), not schema keys. */
const LEAF_TYPES = new Set(['string', 'number', 'boolean', 'enum', 'literal', 'record', 'union'])

/**
 * Every key path of the schema: `server.listen`, `provider.endpoints.jwks`, `routes[].match.pathPrefix`.
 * zod 4: objects expose `.shape`; `.default()` / `.optional()` wrap (`.unwrap()`); `.transform()` is a
 * `ZodPipe` whose `.in` is the file-side type; arrays expose `.element`.
 */
function schemaKeyPaths(node: z.ZodType, prefix: string, seen: Set<z.ZodType> = new Set()): string[] {
  // A rule used in several places (`routes[].allow`, `access.defaultAllow`, and `allow.any[]` within
  // itself): its keys where it first appears.
  if (node instanceof z.ZodLazy) {
    if (seen.has(node)) return []
    seen.add(node)
    return schemaKeyPaths(node.unwrap() as z.ZodType, prefix, seen)
  }
  // `z.preprocess`: a pipe from a transform into the schema that holds the keys.
  if (node instanceof z.ZodPipe && node.in instanceof z.ZodTransform) return schemaKeyPaths(node.out as z.ZodType, prefix, seen)
  if (node instanceof z.ZodDefault || node instanceof z.ZodOptional || node instanceof z.ZodNullable || node instanceof z.ZodPrefault) {
    return schemaKeyPaths(node.unwrap() as z.ZodType, prefix, seen)
  }
  if (node instanceof z.ZodPipe) return schemaKeyPaths(node.in as z.ZodType, prefix, seen)
  if (node instanceof z.ZodArray) return schemaKeyPaths(node.element as z.ZodType, `${prefix}[]`, seen)
  if (node instanceof z.ZodObject) {
    return Object.entries(node.shape as Record<string, z.ZodType>).flatMap(([key, child]) => {
      const path = prefix === '' ? key : `${prefix}.${key}`
      return [path, ...schemaKeyPaths(child, path, seen)]
    })
  }
  const type = node._zod.def.type
  if (!LEAF_TYPES.has(type)) throw new Error(`schema walker does not know zod type "${type}" at ${prefix}: teach it`)
  return []
}

/** Whether a key path (`routes[].match.host`) exists as keys in a parsed YAML tree; `[]` = some element. */
function hasKeyPath(value: unknown, segments: readonly string[]): boolean {
  if (segments.length === 0) return true
  const [head, ...rest] = segments as [string, ...string[]]
  if (head === '[]') return Array.isArray(value) && value.some((item) => hasKeyPath(item, rest))
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, head)) return false
  return hasKeyPath((value as Record<string, unknown>)[head], rest)
}

function splitPath(path: string): string[] {
  return path.replaceAll('[]', '.[]').split('.').filter((s) => s !== '')
}

/** Key path → comment for the first occurrence of each key in the example (the comment above it, or inline). */
function keyComments(doc: YAML.Document): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>()
  const walk = (node: unknown, prefix: string, inherited: string | undefined): void => {
    if (isMap(node)) {
      node.items.forEach((pair, i) => {
        const key = String((pair.key as { value?: unknown } | null)?.value)
        const path = prefix === '' ? key : `${prefix}.${key}`
        const keyNode = pair.key as Node | null
        const valueNode = pair.value as Node | null
        const comment =
          keyNode?.commentBefore ?? valueNode?.comment ?? (i === 0 ? (node.commentBefore ?? inherited) : undefined) ?? undefined
        if (!out.has(path)) out.set(path, comment ?? undefined)
        walk(valueNode, path, valueNode?.commentBefore ?? undefined)
      })
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, `${prefix}[]`, i === 0 ? (node.commentBefore ?? inherited) : undefined))
    }
  }
  walk(doc.contents, '', doc.commentBefore ?? undefined)
  return out
}

const keyPaths = schemaKeyPaths(configSchema, '')

t.test('the schema walker finds the keys it should', async (t) => {
  for (const path of ['server.listen', 'provider.endpoints.jwks', 'provider.clockSkew', 'routes[].match.pathPrefix', 'routes[].upstream', 'logging.level']) {
    t.ok(keyPaths.includes(path), path)
  }
  t.notOk(keyPaths.some((p) => p.startsWith('identity.headers.')), 'record keys are data, not schema keys')
})

t.test('config.example.yaml validates', async (t) => {
  const result = loadConfig({ file: EXAMPLE, env })
  if (!result.ok) t.fail(formatIssues(result.issues))
  else {
    t.same(result.warnings, [], 'the example weakens nothing')
    t.equal(result.config.provider.issuer, 'https://yourenv.scalekit.com')
    t.equal(result.config.provider.clientSecret, env.PORTCULLIS_CLIENT_SECRET)
    t.same(result.config.session.secrets, [env.PORTCULLIS_COOKIE_SECRET])
  }
})

t.test('every schema key appears in config.example.yaml as a key', async (t) => {
  const parsed: unknown = YAML.parse(text)
  for (const path of keyPaths) t.ok(hasKeyPath(parsed, splitPath(path)), `${path} is in the example`)
})

t.test('the comment finder sees a missing comment', async (t) => {
  const comments = keyComments(YAML.parseDocument('# a\na:\n  # b\n  b: 1\n  c: 2 # c\n  d: 3\nl:\n  # m\n  - m: 1\n    n: 2\n'))
  t.same(Object.fromEntries(comments), { a: ' a', 'a.b': ' b', 'a.c': ' c', 'a.d': undefined, l: undefined, 'l[].m': ' m', 'l[].n': undefined })
})

t.test('every schema key in config.example.yaml has a comment', async (t) => {
  const comments = keyComments(YAML.parseDocument(text))
  for (const path of keyPaths) {
    const comment = comments.get(path)
    t.ok(comment !== undefined && comment.trim() !== '', `${path} is documented`)
  }
})

t.test('the header documents <key>File, PORTCULLIS_<SECTION>_<KEY> and ${VAR}', async (t) => {
  const header = text.slice(0, text.search(/^[^#\s]/m))
  for (const term of ['<key>File', 'PORTCULLIS_<SECTION>_<KEY>', '${VAR}', '${VAR:-default}', '$${']) {
    t.ok(header.includes(term), term)
  }
})
