/**
 * Several Portcullis processes sharing one real redis-server, behind a round-robin front (Debian's
 * nginx: an `upstream` block of the replicas, no stickiness, one request per upstream connection so
 * consecutive requests alternate). What a load balancer in front of a Deployment does.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import { holdPort } from './ports.ts'
import { spawnPortcullis, type PortcullisProcess } from './process.ts'
import { startNginx } from './fronts.ts'

/** The nginx http-block of a round-robin front on 127.0.0.1:`listen` over `backends` (ports). */
export function roundRobinFront(listen: number, backends: readonly number[]): string {
  return `  upstream portcullis {
${backends.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join('\n')}
  }
  server {
    listen 127.0.0.1:${listen};
    location / {
      proxy_pass http://portcullis;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Connection "";
      # A replica's answer is the answer: never retried on the other one (that would hide a failure).
      proxy_next_upstream off;
    }
  }
`
}

export interface Replicas {
  /** `http://127.0.0.1:<front port>`: the public URL. */
  readonly url: string
  readonly frontPort: number
  readonly replicas: readonly PortcullisProcess[]
}

export interface HeldPort {
  readonly port: number
  readonly url: string
  release(): Promise<void>
}

/**
 * Ports held for the front and each replica, so configs (publicUrl, a provider's back-channel URL
 * naming one replica) can be written before anything starts; each is released right before its
 * server binds it.
 */
export async function holdPorts(count: number): Promise<HeldPort[]> {
  const held: HeldPort[] = []
  for (let i = 0; i < count; i++) {
    const h = await holdPort()
    held.push({ port: h.port, url: `http://127.0.0.1:${h.port}`, release: h.release })
  }
  return held
}

/**
 * Start one Portcullis process per held replica port, each on `config(port, index)` written to its
 * own file, with `env(port, index)`; then the round-robin front on the held `front` port.
 */
export async function startReplicas(
  t: Test,
  front: HeldPort,
  ports: readonly HeldPort[],
  config: ((port: number, index: number) => string) | { file: string },
  env: (port: number, index: number) => Record<string, string> = () => ({}),
  /** The front's nginx http-block; default {@link roundRobinFront} over the replicas. */
  frontBlock?: string,
): Promise<Replicas> {
  const replicas: PortcullisProcess[] = []
  for (const [i, held] of ports.entries()) {
    let file: string
    if (typeof config === 'function') {
      file = join(t.testdir(), `portcullis-${i}.yaml`)
      writeFileSync(file, config(held.port, i))
    } else file = config.file
    await held.release()
    replicas.push(await spawnPortcullis(t, { file, port: held.port, env: env(held.port, i) }))
  }
  await front.release()
  await startNginx(t, frontBlock ?? roundRobinFront(front.port, replicas.map((r) => r.port)), front.port)
  return { url: front.url, frontPort: front.port, replicas }
}

/** How many access-log lines of `path` each replica wrote since `since[i]` lines. */
export function servedBy(replicas: readonly PortcullisProcess[], path: string, since: readonly number[] = []): number[] {
  return replicas.map((r, i) => r.logs.slice(since[i] ?? 0).filter((l) => l.msg === 'request' && l.path === path).length)
}
