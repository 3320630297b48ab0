import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import YAML from 'yaml'
import { configSchema } from './schema.ts'
import type { ConfigIssue } from './types.ts'
import { formatPath, objectKeysAt, schemaAt, schemaKindAt, suggest, unwrapSchema, type PathSegment } from './validate.ts'

/**
 * Reading a config source into a plain tree for `validate.ts` (the first of three steps: read, resolve, validate):
 *
 * 1. read the YAML (`--config FILE` or given text); a syntax error stops here;
 * 2. renamed keys (`REMOVED_KEYS`) get a pointed issue;
 * 3. `${VAR}` / `${VAR:-default}` in every string value; `$${` is a literal `${`;
 * 4. `PORTCULLIS_<SECTION>_<KEY>` environment overrides;
 * 5. `<key>File`: the file's content (one trailing newline stripped) becomes `<key>`.
 *
 * Override values and file contents are taken literally: they are not `${...}`-expanded (a secret may
 * contain `${`). Problems are collected as `ConfigIssue`s, never thrown. Messages name variables and file paths, never
 * a value read from the environment or a file (they are secrets more often than not).
 */

/** Where the configuration comes from. `text` wins over reading `file`; `file` still names the source and
 * anchors relative `<key>File` paths. */
export interface ConfigSourceOptions {
  file?: string
  text?: string
  env: Record<string, string | undefined>
}

/** The loaded tree (`undefined` when the source could not be read or parsed at all) and what went wrong. */
export interface ConfigSource {
  raw: unknown
  issues: ConfigIssue[]
}

/**
 * Keys that were renamed: old path → new path (`[]` stands for every element of a list). A config that
 * still uses an old key gets "renamed to <new path>" instead of a bare "unknown key" (pomerium
 * `config/options_check.go`). Every entry needs a changelog line.
 */
export const REMOVED_KEYS: Readonly<Record<string, string>> = {
  // 'session.cookieSecret': 'session.secrets',
}

/** Prefix of environment overrides: `PORTCULLIS_<SECTION>_<KEY>`. */
const ENV_PREFIX = 'PORTCULLIS_'

/** Top-level sections that are not overridable from the environment (lists of objects). */
const NOT_OVERRIDABLE = new Set(['routes'])

type Tree = Record<string, unknown>

function isPlainObject(value: unknown): value is Tree {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function pathKey(path: readonly PathSegment[]): string {
  return JSON.stringify(path)
}

function startsWith(path: readonly PathSegment[], prefix: readonly PathSegment[]): boolean {
  return prefix.length <= path.length && prefix.every((segment, i) => path[i] === segment)
}

/** Schema kinds whose values stay strings (durations, URLs, enums): never re-typed from text. */
function isStringKind(kind: string | undefined): boolean {
  return kind === 'string' || kind === 'enum' || kind === 'literal' || kind === 'template_literal'
}

/** A yaml error without the source excerpt (the excerpt could show a secret written inline). */
function describeYamlError(error: YAML.YAMLError, source: string): string {
  const text = error.message.split(':\n')[0] ?? error.message
  const line = error.linePos?.[0].line
  const lineText = line === undefined ? '' : (source.split(/\r?\n/)[line - 1] ?? '')
  const hint = /[[{,]\s*\$\{/.test(lineText) ? ' (hint: quote "${...}" inside [ ] and { }, e.g. ["${PORTCULLIS_COOKIE_SECRET}"])' : ''
  return `${text}${hint}`
}

/** Step 1: the YAML document as a plain tree, or the issues that prevent reading it. */
function parseSource(opts: ConfigSourceOptions): { tree?: Tree; issues: ConfigIssue[] } {
  const name = opts.file ?? 'the configuration text'
  let text = opts.text
  if (text === undefined) {
    if (opts.file === undefined) {
      return { issues: [{ path: '', message: 'no configuration given: pass --config FILE or set PORTCULLIS_CONFIG' }] }
    }
    try {
      text = readFileSync(opts.file, 'utf8')
    } catch (err) {
      return { issues: [{ path: '', message: `cannot read config file ${opts.file}: ${errorCode(err)}` }] }
    }
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (doc.errors.length > 0) {
    return { issues: doc.errors.map((e) => ({ path: '', message: `YAML syntax error in ${name}: ${describeYamlError(e, text)}` })) }
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 })
  if (value === null || value === undefined) return { tree: {}, issues: [] }
  if (!isPlainObject(value)) {
    const got = Array.isArray(value) ? 'a list' : `a ${typeof value}`
    return { issues: [{ path: '', message: `${name} must be a mapping of sections (server:, provider:, session:, routes:, ...), not ${got}` }] }
  }
  return { tree: value, issues: [] }
}

function errorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case 'ENOENT':
      return 'no such file (ENOENT)'
    case 'EACCES':
      return 'permission denied (EACCES)'
    case 'EISDIR':
      return 'is a directory (EISDIR)'
    default:
      return code ?? 'unknown error'
  }
}

/**
 * Step 2: finds keys listed in `table` (old path → new path), reports "renamed to ..." and removes them so
 * the schema does not report them a second time as unknown keys.
 */
export function applyRemovedKeys(raw: unknown, table: Readonly<Record<string, string>> = REMOVED_KEYS): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const [oldPath, newPath] of Object.entries(table)) {
    const segments = oldPath.replaceAll('[]', '.[]').split('.').filter((s) => s !== '')
    const visit = (node: unknown, i: number, path: PathSegment[]): void => {
      const segment = segments[i] as string
      const last = i === segments.length - 1
      if (segment === '[]') {
        if (Array.isArray(node)) node.forEach((item, j) => visit(item, i + 1, [...path, j]))
        return
      }
      if (!isPlainObject(node) || !Object.hasOwn(node, segment)) return
      if (last) {
        issues.push({ path: formatPath([...path, segment]), message: `renamed to ${newPath}` })
        delete node[segment]
      } else {
        visit(node[segment], i + 1, [...path, segment])
      }
    }
    if (segments.length > 0) visit(raw, 0, [])
  }
  return issues
}

interface PathIssue {
  path: PathSegment[]
  message: string
}

const REFERENCE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s

/**
 * Expands `${VAR}` and `${VAR:-default}` in one string; `$${` is a literal `${`. `:-` applies when the
 * variable is unset or empty. Returns `undefined` (after reporting) when a reference cannot be resolved.
 */
function expandString(
  text: string,
  env: ConfigSourceOptions['env'],
  referenced: Set<string>,
  report: (message: string) => void,
): { value: string; whole: boolean } | undefined {
  let out = ''
  let ok = true
  let references = 0
  let i = 0
  while (i < text.length) {
    if (text.startsWith('$${', i)) {
      out += '${'
      i += 3
    } else if (text.startsWith('${', i)) {
      const end = text.indexOf('}', i + 2)
      if (end < 0) {
        report('unterminated "${": close it with "}" or write "$${" for a literal "${"')
        return undefined
      }
      const expression = text.slice(i + 2, end)
      const m = REFERENCE.exec(expression)
      references++
      if (m === null) {
        report(`invalid reference "\${${expression}}": use \${NAME} or \${NAME:-default}`)
        ok = false
      } else {
        const name = m[1] as string
        const fallback = m[2]
        referenced.add(name)
        const value = env[name]
        if (fallback?.includes('${')) {
          report(`nested references are not supported in the default of \${${name}:-...}`)
          ok = false
        } else if (value !== undefined && value !== '') {
          out += value
        } else if (fallback !== undefined) {
          out += fallback
        } else {
          report(value === undefined ? `environment variable ${name} is not set` : `environment variable ${name} is set but empty`)
          ok = false
        }
      }
      i = end + 1
    } else {
      out += text[i]
      i++
    }
  }
  if (!ok) return undefined
  return { value: out, whole: references === 1 && /^\$\{[^}]*\}$/.test(text) }
}

/**
 * Step 3: `${...}` in every string value (keys are left alone). A value that is exactly one reference,
 * at a key whose type is a boolean or a number, is read as YAML (`allowInsecureHttp: ${INSECURE:-false}`).
 * A value that cannot be expanded is left as written; its issue sits at its path.
 */
function expandTree(tree: Tree, env: ConfigSourceOptions['env'], referenced: Set<string>, issues: PathIssue[]): void {
  const visit = (node: unknown, path: PathSegment[]): unknown => {
    if (typeof node === 'string') {
      if (!node.includes('${')) return node
      const result = expandString(node, env, referenced, (message) => issues.push({ path, message }))
      if (result === undefined) return node
      const kind = schemaKindAt(path)
      if (result.whole && (kind === 'boolean' || kind === 'number')) {
        try {
          const typed: unknown = YAML.parse(result.value)
          if (typeof typed === kind) return typed
        } catch {
          // keep the string: the schema reports the type
        }
      }
      return result.value
    }
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) node[i] = visit(node[i], [...path, i])
      return node
    }
    if (isPlainObject(node)) {
      for (const key of Object.keys(node)) node[key] = visit(node[key], [...path, key])
    }
    return node
  }
  visit(tree, [])
}

/**
 * Turns an override's text into a value for a key: string-typed keys keep the raw text; lists and maps of
 * strings are read as YAML with every scalar a string (`[a, 1]` → `['a', '1']`; a bare value is a list
 * of one); everything else is read as a YAML scalar or flow value (`true`, `30`, `{a: b}`).
 */
function overrideValue(path: PathSegment[], text: string): { value: unknown } | undefined {
  const node = schemaAt(path)
  if (node === undefined) return undefined
  const inner = unwrapSchema(node)._zod.def
  if (isStringKind(inner.type)) return { value: text }
  try {
    if (inner.type === 'array' || inner.type === 'record') {
      const element = inner.type === 'array' ? schemaKindAt([...path, 0]) : schemaKindAt([...path, 'x'])
      if (isStringKind(element)) {
        if (inner.type === 'array' && !text.trim().startsWith('[')) return { value: [text] }
        return { value: YAML.parse(text, { schema: 'failsafe' }) as unknown }
      }
    }
    return { value: YAML.parse(text) as unknown }
  } catch {
    return undefined
  }
}

/** The variable-name tails Kubernetes gives each Service of the namespace (`<NAME>_SERVICE_HOST`, `<NAME>_PORT_80_TCP_ADDR`, ...). */
const SERVICE_LINK = /^(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$/

/**
 * Step 4: `PORTCULLIS_<SECTION>_<KEY>` overrides. SECTION is a top-level key of the schema; KEY is matched
 * against that section's keys case-insensitively with `_` removed (`CLIENT_SECRET` and `CLIENTSECRET`
 * both set `clientSecret`); `<KEY>_FILE` sets `<key>File`. Variables whose second segment is not a
 * section (`PORTCULLIS_CONFIG`, `PORTCULLIS_CLIENT_SECRET`) are not overrides. An override replaces the
 * file's `<key>` and `<key>File` alike (for list keys, `<key>File` still appends). Returns the paths it set.
 */
function applyOverrides(tree: Tree, env: ConfigSourceOptions['env'], referenced: ReadonlySet<string>, issues: PathIssue[]): PathSegment[][] {
  const sections = Object.keys(configSchema.shape)
  const setBy = new Map<string, string>()
  const touched: PathSegment[][] = []
  for (const name of Object.keys(env).sort()) {
    const text = env[name]
    if (text === undefined || !name.startsWith(ENV_PREFIX)) continue
    const rest = name.slice(ENV_PREFIX.length)
    const cut = rest.indexOf('_')
    const sectionPart = (cut < 0 ? rest : rest.slice(0, cut)).toLowerCase()
    const section = sections.find((s) => s.toLowerCase() === sectionPart)
    if (section === undefined) continue
    if (NOT_OVERRIDABLE.has(section)) {
      if (!referenced.has(name)) issues.push({ path: [section], message: `environment variable ${name}: ${section} cannot be set from the environment` })
      continue
    }
    const keys = objectKeysAt([section]) ?? []
    const wanted = (cut < 0 ? '' : rest.slice(cut + 1)).replaceAll('_', '').toLowerCase()
    let key = keys.find((k) => k.toLowerCase() === wanted)
    let isFile = false
    if (key === undefined && wanted.endsWith('file')) {
      key = keys.find((k) => `${k.toLowerCase()}file` === wanted)
      isFile = key !== undefined
    }
    if (key === undefined) {
      if (referenced.has(name)) continue // used by ${...} in the file, not meant as an override
      // Kubernetes service links: a Service named portcullis-metrics (or -session, -server, ...) in the
      // namespace gives every pod PORTCULLIS_METRICS_SERVICE_HOST, _PORT, _PORT_9180_TCP_ADDR and the
      // like. They are not overrides, and must not stop Portcullis from starting.
      if (SERVICE_LINK.test(cut < 0 ? '' : rest.slice(cut + 1))) continue
      const envNames = keys.flatMap((k) => [`${ENV_PREFIX}${section.toUpperCase()}_${snake(k)}`, `${ENV_PREFIX}${section.toUpperCase()}_${snake(k)}_FILE`])
      const hint = suggest(name, envNames)
      issues.push({
        path: [section],
        message: `environment variable ${name} does not match any key of ${section}${hint === undefined ? '' : ` (did you mean ${hint}?)`}`,
      })
      continue
    }

    const target = isFile ? `${key}File` : key
    const earlier = setBy.get(`${section}.${target}`)
    if (earlier !== undefined) {
      issues.push({ path: [section, target], message: `set by both environment variables ${earlier} and ${name}; keep one` })
      continue
    }
    setBy.set(`${section}.${target}`, name)

    let sectionNode = tree[section]
    if (sectionNode === undefined || sectionNode === null) {
      sectionNode = {}
      tree[section] = sectionNode
    }
    if (!isPlainObject(sectionNode)) continue // the schema reports the section's type
    const isList = schemaKindAt([section, key]) === 'array'

    if (isFile) {
      const value = isList && text.trim().startsWith('[') ? (parseFailsafe(text) ?? text) : text
      sectionNode[`${key}File`] = value
      if (!isList) delete sectionNode[key]
    } else {
      const parsed = overrideValue([section, key], text)
      if (parsed === undefined) {
        issues.push({ path: [section, key], message: `environment variable ${name} is not a valid YAML value` })
        continue
      }
      sectionNode[key] = parsed.value
      delete sectionNode[`${key}File`]
    }
    touched.push([section, key], [section, `${key}File`])
  }
  return touched
}

function parseFailsafe(text: string): unknown {
  try {
    return YAML.parse(text, { schema: 'failsafe' }) as unknown
  } catch {
    return undefined
  }
}

/** `clientSecret` → `CLIENT_SECRET`. */
function snake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
}

/** Reads one `<key>File`: content with one trailing newline (`\n` or `\r\n`) removed. */
function readSecretFile(path: string, baseDir: string): { text: string } | { error: string } {
  const absolute = resolve(baseDir, path)
  try {
    return { text: readFileSync(absolute, 'utf8').replace(/\r?\n$/, '') }
  } catch (err) {
    return { error: `cannot read ${absolute}: ${errorCode(err)}` }
  }
}

/**
 * Step 5: `<key>File` wherever `<key>` is a key of the schema object at that place. The file's content
 * becomes `<key>`. Both set is an issue. For list keys (`session.secrets`), `<key>File` is a path or a
 * list of paths, one entry per file, appended after the entries of `<key>`. Relative paths are resolved
 * against the config file's directory (the working directory when there is no file).
 */
function resolveFiles(tree: Tree, baseDir: string, issues: PathIssue[]): void {
  const visit = (node: unknown, path: PathSegment[]): void => {
    if (Array.isArray(node)) {
      node.forEach((item, i) => visit(item, [...path, i]))
      return
    }
    if (!isPlainObject(node)) return
    const keys = objectKeysAt(path)
    if (keys !== undefined) {
      for (const fileKey of Object.keys(node)) {
        if (!fileKey.endsWith('File') || keys.includes(fileKey)) continue
        const key = fileKey.slice(0, -'File'.length)
        if (!keys.includes(key)) continue // the schema reports the unknown key
        const spec = node[fileKey]
        delete node[fileKey]
        const keyPath = [...path, key]
        const isList = schemaKindAt(keyPath) === 'array'
        if (isList) {
          const paths = typeof spec === 'string' ? [spec] : spec
          if (!Array.isArray(paths) || !paths.every((p): p is string => typeof p === 'string')) {
            issues.push({ path: keyPath, message: `${fileKey} must be a file path or a list of file paths` })
            continue
          }
          const existing = node[key] === undefined ? [] : node[key]
          if (!Array.isArray(existing)) continue // the schema reports the type of <key>
          const contents: string[] = []
          for (const p of paths) {
            const read = readSecretFile(p, baseDir)
            if ('error' in read) issues.push({ path: keyPath, message: `${fileKey}: ${read.error}` })
            else contents.push(read.text)
          }
          node[key] = [...existing, ...contents]
        } else {
          if (typeof spec !== 'string') {
            issues.push({ path: keyPath, message: `${fileKey} must be a file path` })
            continue
          }
          if (node[key] !== undefined) {
            issues.push({ path: keyPath, message: `both ${key} and ${fileKey} are set; use one` })
            continue
          }
          const read = readSecretFile(spec, baseDir)
          if ('error' in read) issues.push({ path: keyPath, message: `${fileKey}: ${read.error}` })
          else node[key] = read.text
        }
      }
    }
    for (const key of Object.keys(node)) visit(node[key], [...path, key])
  }
  visit(tree, [])
}

/**
 * Reads a config source into a plain tree ready for `validateConfig`: YAML, renamed keys, `${VAR}`
 * expansion, `PORTCULLIS_<SECTION>_<KEY>` overrides and `<key>File`. `raw` is `undefined` only when the
 * source could not be read or parsed; otherwise it is the best tree that could be built, and `issues`
 * lists what could not be resolved (the value stays as written at those paths).
 */
export function readConfigSource(opts: ConfigSourceOptions): ConfigSource {
  const { tree, issues } = parseSource(opts)
  if (tree === undefined) return { raw: undefined, issues }

  issues.push(...applyRemovedKeys(tree))

  const referenced = new Set<string>()
  const expansionIssues: PathIssue[] = []
  expandTree(tree, opts.env, referenced, expansionIssues)

  const overrideIssues: PathIssue[] = []
  const overridden = applyOverrides(tree, opts.env, referenced, overrideIssues)

  const fileIssues: PathIssue[] = []
  resolveFiles(tree, opts.file === undefined ? process.cwd() : dirname(resolve(opts.file)), fileIssues)

  // An unresolvable ${...} under a key the environment replaced does not matter any more.
  const live = expansionIssues.filter((issue) => !overridden.some((p) => startsWith(issue.path, p)))
  const seen = new Set<string>()
  for (const issue of [...live, ...overrideIssues, ...fileIssues]) {
    const key = `${pathKey(issue.path)} ${issue.message}`
    if (seen.has(key)) continue
    seen.add(key)
    issues.push({ path: formatPath(issue.path), message: issue.message })
  }
  return { raw: tree, issues }
}
