/**
 * Real front proxies for the forward-auth system tests: Debian's nginx and Caddy as child processes
 * of the test, everything they write (pid, logs, temp files, Caddy's data and config dirs) in a temp
 * directory, listening on 127.0.0.1 on a port the test held, stopped in `t.teardown`. A missing
 * binary is a failure naming the install script, never a skip.
 *
 * The configs are the operator's files in deploy/ with only their addresses replaced:
 * `deploy/nginx/portcullis-auth.conf` (addresses written as placeholders that `fillPlaceholders`
 * swaps) and `deploy/caddy/Caddyfile` (Caddy's own `{$VAR:default}` environment placeholders).
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Test } from 'tap'
import { request } from './http.ts'
import { eventually } from './wait.ts'

export const NGINX = '/usr/sbin/nginx'
export const CADDY = '/usr/bin/caddy'
export const DEPLOY = resolve(import.meta.dirname, '../../deploy')

/** `text` with each key replaced by its value; throws when a key is not in the text (the deploy file changed). */
export function fillPlaceholders(text: string, replacements: Record<string, string>): string {
  let out = text
  for (const [from, to] of Object.entries(replacements)) {
    if (!out.includes(from)) throw new Error(`placeholder ${JSON.stringify(from)} not found in the config`)
    out = out.split(from).join(to)
  }
  return out
}

/** deploy/nginx/portcullis-auth.conf for a test: its three addresses replaced, nothing else. */
export function deployedNginxConf(ports: { listen: number; portcullis: number; app: number }): string {
  const text = readFileSync(join(DEPLOY, 'nginx/portcullis-auth.conf'), 'utf8')
  return fillPlaceholders(text, {
    'listen 80;': `listen 127.0.0.1:${ports.listen};`,
    'server 127.0.0.1:4180;': `server 127.0.0.1:${ports.portcullis};`,
    'server 127.0.0.1:8080;': `server 127.0.0.1:${ports.app};`,
  })
}

interface Child {
  exitCode: number | null
  stderr: () => string
}

/** Spawn `cmd`, stop it (SIGTERM, wait) and remove `dir` in `t.teardown`. */
function spawnFront(t: Test, cmd: string, args: string[], dir: string, env?: NodeJS.ProcessEnv): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, ...(env ? { env } : {}) })
  let stderr = ''
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((done) => proc.once('exit', done))
      proc.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    get exitCode() {
      return proc.exitCode
    },
    stderr: () => stderr,
  }
}

/** Wait until `url` answers anything; throw with the front's output when it exits or never does. */
async function waitUp(name: string, child: Child, url: string, log: () => string): Promise<void> {
  const up = await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}): ${child.stderr()} ${log()}`)
      return (await request(url).catch(() => null)) !== null
    },
    { timeoutMs: 10_000 },
  )
  if (!up) throw new Error(`${name} did not answer at ${url}: ${child.stderr()} ${log()}`)
}

/**
 * nginx with `httpBlock` (the contents of an http {} context: server blocks, upstreams, maps) on
 * 127.0.0.1:`port`; false (and `t` failed) without nginx.
 */
export async function startNginx(t: Test, httpBlock: string, port: number): Promise<boolean> {
  if (!existsSync(NGINX)) {
    t.fail(`${NGINX} not found: run scripts/install-system-deps.sh (installs Debian's nginx) and try again`)
    return false
  }
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-nginx-'))
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${httpBlock}
}
`,
  )
  const child = spawnFront(t, NGINX, ['-c', conf, '-p', dir, '-g', 'daemon off;'], dir)
  const log = (): string => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '')
  await waitUp('nginx', child, `http://127.0.0.1:${port}/oauth2/not-here`, log)
  return true
}

/**
 * Caddy running `caddyfile` with `env` (its `{$VAR}` placeholders), HOME and XDG dirs in a temp dir;
 * waits until `probeUrl` answers. False (and `t` failed) without caddy.
 */
export async function startCaddy(t: Test, caddyfile: string, env: Record<string, string>, probeUrl: string): Promise<boolean> {
  if (!existsSync(CADDY)) {
    t.fail(`${CADDY} not found: run scripts/install-system-deps.sh (installs Debian's caddy) and try again`)
    return false
  }
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-caddy-'))
  const childEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    XDG_DATA_HOME: join(dir, 'data'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    ...env,
  }
  const child = spawnFront(t, CADDY, ['run', '--config', caddyfile, '--adapter', 'caddyfile'], dir, childEnv)
  await waitUp('caddy', child, probeUrl, () => '')
  return true
}
