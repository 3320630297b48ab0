/**
 * The container image, without a Docker engine (none runs on our machines):
 * parse the Dockerfile, replay the build stage's COPY and RUN steps in a temp dir, assemble the
 * runtime stage from only what its `COPY --from=build` lines copy, and start the image's CMD there
 * (as the image's USER when we are root). Everything is read from the Dockerfile, so changing the
 * Dockerfile changes what this test does, and breaks it when the image would not work.
 *
 * Both "filesystems" live under os.tmpdir(), not under the repo (t.testdir() is in .tap/ inside it):
 * Node's module resolution walks up the parent directories, and the repo's own node_modules (with
 * every devDependency) would hide a package missing from the image.
 *
 * Slow (npm ci + tsc): about a minute; the tap timeout below is 5 minutes.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, join, posix, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { reservePort } from '../helpers/portcullis.ts'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const DOCKERFILE = join(REPO, 'Dockerfile')
const TIMEOUT_MS = 300_000
/** What `npm ci` becomes here: same lockfile install, but from the npm cache when it can. */
const NPM_CI_HERE = 'npm ci --prefer-offline --no-audit --no-fund'

// The runner's per-file timeout (.taprc: 120 s) would otherwise kill this file before npm ci is done.
t.setTimeout(TIMEOUT_MS + 30_000)

// ---------------------------------------------------------------------------------------------
// A small Dockerfile parser: enough for our own file (no heredocs, no ARG substitution).

interface Instruction {
  keyword: string
  args: string
  line: number
}

interface Stage {
  image: string
  alias?: string
  instructions: Instruction[]
}

function parseInstructions(text: string): Instruction[] {
  const out: Instruction[] = []
  const lines = text.split(/\r?\n/)
  let buf = ''
  let start = 0
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? ''
    const trimmed = raw.trim()
    // Comments (and parser directives) are whole lines; inside a continuation they are dropped too.
    if (trimmed.startsWith('#') || (trimmed === '' && buf === '')) continue
    if (buf === '') start = i + 1
    if (trimmed.endsWith('\\')) {
      buf += `${trimmed.slice(0, -1)} `
      continue
    }
    buf += trimmed
    const m = /^(\S+)\s*([\s\S]*)$/.exec(buf.trim())
    if (m) out.push({ keyword: (m[1] ?? '').toUpperCase(), args: (m[2] ?? '').trim(), line: start })
    buf = ''
  }
  if (buf.trim() !== '') throw new Error('Dockerfile ends inside a line continuation')
  return out
}

function parseStages(text: string): Stage[] {
  const stages: Stage[] = []
  for (const ins of parseInstructions(text)) {
    if (ins.keyword === 'FROM') {
      const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'))
      const image = words[0] ?? ''
      const alias = words.length >= 3 && words[1]?.toUpperCase() === 'AS' ? words[2] : undefined
      stages.push({ image, ...(alias !== undefined ? { alias } : {}), instructions: [] })
      continue
    }
    const current = stages.at(-1)
    if (!current) throw new Error(`line ${ins.line}: ${ins.keyword} before the first FROM`)
    current.instructions.push(ins)
  }
  return stages
}

/** `COPY [--flag=value ...] src... dest`, or its JSON-array form. */
function parseCopy(args: string): { flags: Record<string, string>; sources: string[]; dest: string } {
  const flags: Record<string, string> = {}
  let rest = args
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest)
    if (!m) break
    flags[m[1] ?? ''] = m[2] ?? 'true'
    rest = rest.slice(m[0].length)
  }
  const words = rest.trim().startsWith('[') ? (JSON.parse(rest) as string[]) : rest.trim().split(/\s+/)
  if (words.length < 2) throw new Error(`COPY needs a source and a destination: ${args}`)
  return { flags, sources: words.slice(0, -1), dest: words.at(-1) ?? '' }
}

/** An exec-form (JSON array) command, or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.trim().startsWith('[')) return undefined
  const parsed = JSON.parse(args) as unknown
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) return undefined
  return parsed as string[]
}

/** `ENV a=b c=d` or the legacy `ENV a b`. */
function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {}
  if (!args.includes('=')) {
    const [k, ...v] = args.split(/\s+/)
    if (k) env[k] = v.join(' ')
    return env
  }
  for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)/g)) env[m[1] ?? ''] = m[3] ?? m[2] ?? ''
  return env
}

function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const [ref, digest] = image.split('@')
  const r = ref ?? ''
  const colon = r.lastIndexOf(':')
  const hasTag = colon > r.lastIndexOf('/')
  return { name: hasTag ? r.slice(0, colon) : r, ...(hasTag ? { tag: r.slice(colon + 1) } : {}), ...(digest ? { digest } : {}) }
}

/** The Node major version an image is pinned to: in its tag (node:24-slim) or its name (nodejs24-debian13). */
function nodeMajor(image: string): number | undefined {
  const { name, tag } = splitImage(image)
  const fromTag = tag !== undefined && /^node$|\/node$/.test(name) ? /^(\d+)(?:[.-]|$)/.exec(tag)?.[1] : undefined
  const fromName = /(?:^|\/)nodejs(\d+)(?:-|$)/.exec(name)?.[1]
  const v = fromTag ?? fromName
  return v === undefined ? undefined : Number(v)
}

// ---------------------------------------------------------------------------------------------
// Replaying the steps. Container paths are mapped under a root directory ("/app" → root/app).

function inRoot(root: string, containerPath: string): string {
  const p = join(root, posix.resolve('/', containerPath))
  if (p !== root && !p.startsWith(root + sep)) throw new Error(`${containerPath} escapes ${root}`)
  return p
}

function readDockerignore(): string[] {
  const file = join(REPO, '.dockerignore')
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim().replace(/^\/+|\/+$/g, ''))
    .filter((l) => l !== '' && !l.startsWith('#'))
}

function ignoredBy(patterns: readonly string[], relPath: string): boolean {
  // Our .dockerignore holds plain paths; that is all this supports (no globs or "!").
  return patterns.some((p) => relPath === p || relPath.startsWith(`${p}/`))
}

/** Docker's COPY: a directory's contents go into dest; a file goes to dest (or into it if dest ends in "/"). */
function copyLike(from: string, dest: string, destIsDir: boolean, filter?: (src: string) => boolean): void {
  if (statSync(from).isDirectory()) {
    mkdirSync(dest, { recursive: true })
    cpSync(from, dest, { recursive: true, ...(filter ? { filter } : {}) })
    return
  }
  const target = destIsDir ? join(dest, basename(from)) : dest
  mkdirSync(dirname(target), { recursive: true })
  cpSync(from, target)
}

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
}

/** Environment for the build stage's RUN lines: ours, minus what tap, npm and tsx put there. */
function buildEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue
    if (/^(npm_|TAP|_TAPJS_|NODE_OPTIONS$|NODE_ENV$|TSX_|PORTCULLIS_)/i.test(k)) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

const children = new Set<ChildProcess>()

/**
 * spawn() with exactly `env`. tap's @tapjs/processinfo hooks every spawn in a test process and adds
 * its loader to NODE_OPTIONS (and its _TAPJS_ variables), which would make the "image" load tap code
 * and write into the repo's .tap/ (as the image's USER: EACCES at exit). `env -i` execs the command
 * with only the variables given, in the same process, so signals still reach it directly.
 */
function spawnClean(command: string, args: string[], opts: { cwd: string; env: Record<string, string>; uid?: number; gid?: number }): ChildProcess {
  const assignments = Object.entries(opts.env).map(([k, v]) => `${k}=${v}`)
  return spawn(existsSync('/usr/bin/env') ? '/usr/bin/env' : 'env', ['-i', ...assignments, command, ...args], {
    cwd: opts.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {}),
  })
}

function runProcess(command: string, args: string[], opts: { cwd: string; env: Record<string, string>; timeoutMs: number; uid?: number; gid?: number }): Promise<Run> {
  const started = Date.now()
  return new Promise((resolvePromise, reject) => {
    const child = spawnClean(command, args, opts)
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString('utf8')))
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      children.delete(child)
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - started })
    })
  })
}

function tail(text: string, n = 40): string {
  return text.split('\n').slice(-n).join('\n')
}

function chmodTree(dir: string): void {
  // What `COPY` gives the image: files owned by root, readable (not writable) by the nonroot user.
  chmodSync(dir, 0o755)
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) chmodTree(p)
    else if (entry.isFile()) chmodSync(p, statSync(p).mode & 0o111 ? 0o755 : 0o644)
  }
}

async function waitFor<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>, alive: () => string | undefined): Promise<T> {
  const until = Date.now() + deadlineMs
  for (;;) {
    const dead = alive()
    if (dead !== undefined) throw new Error(`${what}: ${dead}`)
    const v = await probe().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > until) throw new Error(`${what}: not within ${deadlineMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

// ---------------------------------------------------------------------------------------------

const dockerfileText = readFileSync(DOCKERFILE, 'utf8')
const stages = parseStages(dockerfileText)
const runtimeStage = stages.at(-1)
const runtimeCopies = (runtimeStage?.instructions ?? []).filter((i) => i.keyword === 'COPY').map((i) => parseCopy(i.args))
const buildStageName = runtimeCopies.find((c) => c.flags.from !== undefined)?.flags.from
const buildStage = stages.find((s) => s.alias === buildStageName)

function last(stage: Stage | undefined, keyword: string): Instruction | undefined {
  return stage?.instructions.filter((i) => i.keyword === keyword).at(-1)
}

t.test('the Dockerfile follows the container conventions: multi-stage, pinned Node, numeric non-root USER, exec-form CMD and HEALTHCHECK, npm ci', async (t) => {
  t.ok(stages.length >= 2, `multi-stage (${stages.length} stages)`)
  t.ok(buildStage, `the runtime stage copies from a named build stage (${String(buildStageName)})`)
  t.not(buildStage, runtimeStage, 'the runtime stage is not the build stage')

  const aliases = new Set(stages.map((s) => s.alias).filter((a) => a !== undefined))
  const majors: number[] = []
  for (const stage of stages) {
    if (aliases.has(stage.image)) continue // FROM an earlier stage
    const { name, tag, digest } = splitImage(stage.image)
    t.ok(tag !== undefined || digest !== undefined, `${stage.image}: has an explicit tag or digest`)
    t.not(tag, 'latest', `${stage.image}: not :latest`)
    const major = nodeMajor(stage.image)
    t.ok(major !== undefined && major >= 20, `${stage.image}: pinned to a Node major version (${String(major)})`, { name, tag })
    if (major !== undefined) majors.push(major)
  }
  t.equal(new Set(majors).size, 1, `build and runtime use the same Node major (${majors.join(', ')})`)

  const user = last(runtimeStage, 'USER')?.args
  t.ok(user !== undefined, 'the runtime stage sets USER')
  t.match(user ?? '', /^\d+(:\d+)?$/, 'USER is numeric (uid[:gid]), so Kubernetes runAsNonRoot can verify it')
  t.not(Number((user ?? '0').split(':')[0]), 0, 'USER is not root')

  const cmd = last(runtimeStage, 'CMD')
  const cmdArgs = execForm(cmd?.args ?? '')
  t.ok(cmdArgs, `CMD is in exec form (JSON array): ${cmd?.args}`)
  t.notOk(/\bnpm\b/.test(cmd?.args ?? ''), 'CMD does not go through npm (npm swallows signals)')
  t.notOk(last(runtimeStage, 'ENTRYPOINT') !== undefined && execForm(last(runtimeStage, 'ENTRYPOINT')?.args ?? '') === undefined, 'no shell-form ENTRYPOINT')

  const hc = last(runtimeStage, 'HEALTHCHECK')
  t.ok(hc, 'HEALTHCHECK present')
  const hcCmd = /\bCMD\s+(\[[\s\S]*\])\s*$/.exec(hc?.args ?? '')?.[1]
  t.ok(hcCmd !== undefined && execForm(hcCmd) !== undefined, 'HEALTHCHECK CMD is in exec form (no shell in distroless)')
  t.notMatch(hc?.args ?? '', /\b(curl|wget)\b/, 'HEALTHCHECK does not need curl or wget')

  const runs = (buildStage?.instructions ?? []).filter((i) => i.keyword === 'RUN').map((i) => i.args)
  t.ok(runs.some((r) => /\bnpm ci\b/.test(r)), 'the build installs with npm ci (lockfile)')
  t.notOk(runs.some((r) => /\bnpm (install|i)\b/.test(r)), 'no npm install')
  t.ok(runs.some((r) => /\bnpm prune --omit=dev\b|\bnpm ci --omit=dev\b/.test(r)), 'dev dependencies are dropped before the runtime copy')
  t.equal(last(runtimeStage, 'ENV') !== undefined && parseEnv(last(runtimeStage, 'ENV')?.args ?? '').NODE_ENV, 'production', 'NODE_ENV=production at run time')
  t.notOk((runtimeStage?.instructions ?? []).some((i) => i.keyword === 'RUN'), 'no RUN in the distroless stage (it has no shell)')

  const ignored = readDockerignore()
  for (const p of ['node_modules', 'dist', '.git']) t.ok(ignored.includes(p), `.dockerignore excludes ${p}`)
  const buildSources = (buildStage?.instructions ?? []).filter((i) => i.keyword === 'COPY').flatMap((i) => parseCopy(i.args).sources)
  for (const src of buildSources) t.notOk(ignoredBy(ignored, src), `COPY source ${src} is not excluded by .dockerignore`)
})

t.test('the image built from the Dockerfile starts, answers health checks and stops on SIGTERM', { timeout: TIMEOUT_MS }, async (t) => {
  if (!buildStage || !runtimeStage) {
    t.fail('the Dockerfile has no build stage that the runtime stage copies from')
    return
  }
  const buildRoot = mkdtempSync(join(tmpdir(), 'portcullis-build-'))
  const runtimeRoot = mkdtempSync(join(tmpdir(), 'portcullis-image-'))
  t.teardown(() => {
    for (const child of children) child.kill('SIGKILL')
    rmSync(buildRoot, { recursive: true, force: true })
    rmSync(runtimeRoot, { recursive: true, force: true })
  })

  // --- build stage --------------------------------------------------------------------------
  const ignored = readDockerignore()
  let workdir = '/'
  let env: Record<string, string> = {}
  const timings: string[] = []
  for (const ins of buildStage.instructions) {
    if (ins.keyword === 'WORKDIR') {
      workdir = posix.resolve(workdir, ins.args)
      mkdirSync(inRoot(buildRoot, workdir), { recursive: true })
    } else if (ins.keyword === 'ENV') {
      env = { ...env, ...parseEnv(ins.args) }
    } else if (ins.keyword === 'COPY') {
      const { flags, sources, dest } = parseCopy(ins.args)
      t.equal(flags.from, undefined, `line ${ins.line}: the build stage copies from the build context`)
      const destPath = inRoot(buildRoot, posix.resolve(workdir, dest))
      for (const src of sources) {
        const from = join(REPO, src)
        t.ok(existsSync(from), `line ${ins.line}: COPY source ${src} exists in the repo`)
        copyLike(from, destPath, dest.endsWith('/') || sources.length > 1, (p) => !ignoredBy(ignored, relative(REPO, p).split(sep).join('/')))
      }
    } else if (ins.keyword === 'RUN') {
      const command = ins.args.replace(/\bnpm ci\b/g, NPM_CI_HERE)
      const res = await runProcess('sh', ['-c', command], {
        cwd: inRoot(buildRoot, workdir),
        env: buildEnv(env),
        timeoutMs: 240_000,
      })
      timings.push(`RUN ${command}: ${(res.ms / 1000).toFixed(1)} s`)
      if (res.code !== 0) {
        t.fail(`line ${ins.line}: RUN ${command} exited with ${res.code ?? res.signal}`, { stdout: tail(res.stdout), stderr: tail(res.stderr) })
        return
      }
      t.pass(`line ${ins.line}: RUN ${command} (${(res.ms / 1000).toFixed(1)} s)`)
    } else if (!['ARG', 'LABEL', 'SHELL'].includes(ins.keyword)) {
      t.fail(`line ${ins.line}: this test does not know how to replay ${ins.keyword} in the build stage`)
    }
  }
  const buildWorkdir = workdir
  t.comment(timings.join('\n'))

  // --- runtime stage: only what COPY --from=build copies ------------------------------------
  workdir = '/'
  let runEnv: Record<string, string> = {}
  for (const ins of runtimeStage.instructions) {
    if (ins.keyword === 'WORKDIR') {
      workdir = posix.resolve(workdir, ins.args)
      mkdirSync(inRoot(runtimeRoot, workdir), { recursive: true })
    } else if (ins.keyword === 'ENV') {
      runEnv = { ...runEnv, ...parseEnv(ins.args) }
    } else if (ins.keyword === 'COPY') {
      const { flags, sources, dest } = parseCopy(ins.args)
      t.equal(flags.from, buildStageName, `line ${ins.line}: the runtime stage copies only from the build stage`)
      const destPath = inRoot(runtimeRoot, posix.resolve(workdir, dest))
      for (const src of sources) {
        const from = inRoot(buildRoot, posix.resolve(buildWorkdir, src))
        t.ok(existsSync(from), `line ${ins.line}: ${src} exists after the build`)
        if (existsSync(from)) copyLike(from, destPath, dest.endsWith('/') || sources.length > 1)
      }
    }
  }
  const appDir = inRoot(runtimeRoot, workdir)

  // No devDependency made it into the image; every dependency did.
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; devDependencies?: Record<string, string> }
  // Dev-only is what the lockfile marks `dev: true`: a devDependency that a dependency needs too
  // (ajv, which fastify uses) ships, as it must; every other package only the dev tools need must not.
  const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> }
  const devOnly = Object.entries(lock.packages)
    .filter(([path, entry]) => entry.dev === true && /^node_modules\/(?:@[^/]+\/)?[^/]+$/.test(path))
    .map(([path]) => path.slice('node_modules/'.length))
  const devDeps = [...new Set([...Object.keys(pkg.devDependencies ?? {}), 'typescript', 'tap', 'tsx', 'playwright-core'])]
  t.same(devDeps.filter((d) => !devOnly.includes(d) && !(d in (pkg.dependencies ?? {}))), ['ajv'], 'the devDependencies a dependency needs too: ajv alone')
  t.ok(devOnly.length > 100, `the lockfile marks the dev-only packages (${devOnly.length})`)
  const present = devOnly.filter((d) => existsSync(join(appDir, 'node_modules', d)))
  t.same(present, [], 'no dev-only package in the image node_modules')
  const missing = Object.keys(pkg.dependencies ?? {}).filter((d) => !existsSync(join(appDir, 'node_modules', d, 'package.json')))
  t.same(missing, [], 'every dependency is in the image node_modules')
  t.notOk(existsSync(join(appDir, 'src')), 'no TypeScript sources in the image')

  // --- start the CMD ------------------------------------------------------------------------
  const cmd = execForm(last(runtimeStage, 'CMD')?.args ?? '') ?? []
  const cfgIndex = cmd.indexOf('--config')
  t.ok(cfgIndex >= 0 && cmd[cfgIndex + 1] !== undefined, `CMD passes --config (${cmd.join(' ')})`)
  t.ok(existsSync(join(appDir, cmd[0] ?? '')), `the CMD script ${cmd[0]} exists in the image`)

  const [port, closedIdp, closedUpstream] = [await reservePort(), await reservePort(), await reservePort()]
  const publicUrl = `http://127.0.0.1:${port}`
  const configDir = mkdtempSync(join(tmpdir(), 'portcullis-etc-'))
  t.teardown(() => rmSync(configDir, { recursive: true, force: true }))
  const configFile = join(configDir, 'config.yaml')
  writeFileSync(
    configFile,
    [
      'server:',
      `  listen: 127.0.0.1:${port}`,
      `  publicUrl: ${publicUrl}`,
      'provider:',
      `  issuer: http://127.0.0.1:${closedIdp}`,
      '  clientId: container-test',
      '  clientSecret: container-test-client-secret',
      '  allowInsecureHttp: true',
      '  timeout: 2s',
      'session:',
      '  secrets:',
      '    - container-test-cookie-secret-0123456789abcdef',
      'routes:',
      '  - match: { pathPrefix: / }',
      `    upstream: http://127.0.0.1:${closedUpstream}`,
      'logging:',
      '  level: info',
      '',
    ].join('\n'),
  )
  const invalidFile = join(configDir, 'invalid.yaml')
  writeFileSync(invalidFile, 'server:\n  listen: 127.0.0.1:1\n  publicUrl: not a url\nnoSuchSection: true\n')

  // As the image's USER when we can (root can switch), with the files read-only to it, like COPY.
  const [uid, gid] = (last(runtimeStage, 'USER')?.args ?? '').split(':').map(Number)
  const asUser = process.getuid?.() === 0 && uid !== undefined && Number.isInteger(uid) ? { uid, gid: gid ?? uid } : {}
  chmodTree(runtimeRoot)
  chmodTree(configDir)
  t.comment(asUser.uid !== undefined ? `running as ${asUser.uid}:${asUser.gid}` : 'not root: running as the current user')
  const childEnv = { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: '/home/nonroot', ...runEnv }
  const args = cmd.map((a, i) => (i === cfgIndex + 1 ? configFile : a))
  const before = readdirSync(appDir).sort()

  // An invalid config: exit 2 and the issues on stderr, nothing started.
  const bad = await runProcess(process.execPath, args.map((a) => (a === configFile ? invalidFile : a)), { cwd: appDir, env: childEnv, timeoutMs: 30_000, ...asUser })
  t.equal(bad.code, 2, 'invalid config: exit code 2')
  t.match(bad.stderr, /config error:/, 'invalid config: "config error:" on stderr')
  t.notMatch(bad.stdout, /listening/, 'invalid config: nothing started')

  const started = Date.now()
  const child = spawnClean(process.execPath, args, { cwd: appDir, env: childEnv, ...asUser })
  children.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString('utf8')))
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => {
      children.delete(child)
      r({ code, signal })
    }),
  )
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined
  void exited.then((e) => (exitInfo = e))
  const alive = () => (exitInfo === undefined ? undefined : `exited with ${exitInfo.code ?? exitInfo.signal}\nstdout:\n${tail(stdout)}\nstderr:\n${tail(stderr)}`)

  const health = await waitFor(
    '/healthz',
    20_000,
    async () => {
      const res = await fetch(`${publicUrl}/healthz`, { signal: AbortSignal.timeout(1000) })
      return res.status === 200 ? res : undefined
    },
    alive,
  )
  t.equal(health.status, 200, `/healthz answers 200 (${Date.now() - started} ms after start)`)
  t.same(await health.json(), { status: 'ok' })

  const ready = await fetch(`${publicUrl}/readyz`, { signal: AbortSignal.timeout(2000) })
  t.equal(ready.status, 503, '/readyz answers 503 while the provider is down')
  t.match(await ready.json(), { status: 'not ready' })

  // The image's own HEALTHCHECK command, with its config path pointed at ours: it must find the port
  // in server.listen (this config listens on a port the OS picked, not the EXPOSEd one).
  const hcArgs = execForm(/\bCMD\s+(\[[\s\S]*\])\s*$/.exec(last(runtimeStage, 'HEALTHCHECK')?.args ?? '')?.[1] ?? '') ?? []
  const exposed = last(runtimeStage, 'EXPOSE')?.args.split(/[\s/]/)[0] ?? '4180'
  t.notOk(hcArgs.some((a) => a.includes(`:${exposed}`)), 'HEALTHCHECK does not hard-code a port: it reads server.listen')
  t.ok(hcArgs.includes(cmd[cfgIndex + 1] as string), 'HEALTHCHECK reads the config the CMD runs with')
  t.not(String(port), exposed, 'this run listens elsewhere than the EXPOSEd port')
  const hcHere = hcArgs.slice(1).map((a) => (a === cmd[cfgIndex + 1] ? configFile : a))
  const hcUp = await runProcess(process.execPath, hcHere, { cwd: appDir, env: childEnv, timeoutMs: 10_000 })
  t.equal(hcUp.code, 0, 'HEALTHCHECK command succeeds against the running server')

  // The provider-down error lines are logged while the connection loop retries; wait for one.
  await waitFor('a provider error log line', 10_000, async () => (/provider not reachable/.test(stdout) ? true : undefined), alive)

  child.kill('SIGTERM')
  let stopTimer: NodeJS.Timeout | undefined
  const stop = await Promise.race([exited, new Promise<'timeout'>((r) => (stopTimer = setTimeout(() => r('timeout'), 15_000)))])
  clearTimeout(stopTimer)
  t.not(stop, 'timeout', 'stops within 15 s of SIGTERM')
  if (stop !== 'timeout') {
    t.equal(stop.code, 0, 'SIGTERM: exit code 0')
    t.equal(stop.signal, null, 'SIGTERM: exited by itself, not killed by the signal')
  }

  const lines = stdout.split('\n').filter((l) => l !== '')
  const parsed = lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>
    } catch {
      return undefined
    }
  })
  t.ok(lines.length > 0, `logs on stdout (${lines.length} lines)`)
  t.same(
    lines.filter((_, i) => parsed[i] === undefined),
    [],
    'every stdout line is JSON',
  )
  const msgs = parsed.map((p) => p?.msg)
  t.ok(msgs.includes('portcullis listening'), 'logs "portcullis listening"')
  t.ok(msgs.some((m) => typeof m === 'string' && m.startsWith('shutting down')), 'logs the shutdown')
  t.ok(parsed.every((p) => typeof p?.level === 'number' || typeof p?.level === 'string') && parsed.every((p) => p?.time !== undefined), 'log lines have level and time')
  const providerDown = parsed.find((p) => p?.msg === 'provider not reachable; retrying')
  t.ok(providerDown, 'logs that the provider is not reachable')
  t.notMatch(JSON.stringify(providerDown?.err ?? {}), /\[object Object\]/, 'the logged error says what went wrong (serialized once)', { err: providerDown?.err })
  t.equal(stderr.trim(), '', 'nothing on stderr', { stderr })

  const hcDown = await runProcess(process.execPath, hcHere, { cwd: appDir, env: childEnv, timeoutMs: 10_000 })
  t.equal(hcDown.code, 1, 'HEALTHCHECK command fails once the server is gone')
  t.same(readdirSync(appDir).sort(), before, 'the process wrote nothing into the app directory')
})
