/**
 * A tiny Chrome DevTools Protocol client for a child started with `--inspect=127.0.0.1:<port>`: force a
 * full GC and read the V8 heap, so the memory measurement can tell memory the sessions retain from
 * garbage the logins left behind (RSS alone mixes both); and run the CPU profiler over exactly one
 * measured load run (`node --cpu-prof` would also record start-up, logins and warm-up).
 */
import { createWriteStream } from 'node:fs'
import http from 'node:http'
import WebSocket from 'ws'

function getJson<T>(url: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => {
          try {
            resolve(JSON.parse(body) as T)
          } catch (err) {
            reject(err as Error)
          }
        })
      })
      .on('error', reject)
  })
}

export interface Inspector {
  /** Full GC, then V8 heap usage in bytes. */
  gcAndHeap(): Promise<{ usedBytes: number; totalBytes: number }>
  /** Start the V8 sampling profiler (what `node --cpu-prof` uses), sampling every `intervalUs`. */
  startProfile(intervalUs?: number): Promise<void>
  /** Stop it and return the profile (the `.cpuprofile` JSON). */
  stopProfile(): Promise<unknown>
  /** Write a heap snapshot (what DevTools' Memory tab takes) to `file`; resolves with `file`. */
  heapSnapshot(file: string): Promise<string>
  close(): void
}

export async function connectInspector(port: number): Promise<Inspector> {
  const targets = await getJson<Array<{ webSocketDebuggerUrl?: string }>>(`http://127.0.0.1:${port}/json/list`)
  const url = targets[0]?.webSocketDebuggerUrl
  if (url === undefined) throw new Error(`no inspector target on port ${port}`)
  const ws = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  let nextId = 1
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  let onChunk: ((chunk: string) => void) | null = null
  ws.on('message', (data: Buffer) => {
    const msg = JSON.parse(data.toString()) as { id?: number; method?: string; params?: { chunk?: string }; result?: unknown; error?: { message: string } }
    if (msg.method === 'HeapProfiler.addHeapSnapshotChunk' && typeof msg.params?.chunk === 'string') onChunk?.(msg.params.chunk)
    if (msg.id === undefined) return
    const p = pending.get(msg.id)
    if (p === undefined) return
    pending.delete(msg.id)
    if (msg.error !== undefined) p.reject(new Error(msg.error.message))
    else p.resolve(msg.result)
  })
  const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      ws.send(JSON.stringify({ id, method, params }))
    })
  return {
    async gcAndHeap() {
      // Twice: the first pass can leave objects that only die once their finalizers/weak refs ran.
      await call('HeapProfiler.collectGarbage')
      await call('HeapProfiler.collectGarbage')
      const usage = await call<{ usedSize: number; totalSize: number }>('Runtime.getHeapUsage')
      return { usedBytes: usage.usedSize, totalBytes: usage.totalSize }
    },
    async startProfile(intervalUs = 500) {
      await call('Profiler.enable')
      await call('Profiler.setSamplingInterval', { interval: intervalUs })
      await call('Profiler.start')
    },
    async stopProfile() {
      const { profile } = await call<{ profile: unknown }>('Profiler.stop')
      return profile
    },
    async heapSnapshot(file) {
      const out = createWriteStream(file)
      onChunk = (chunk) => out.write(chunk)
      try {
        await call('HeapProfiler.takeHeapSnapshot', { reportProgress: false })
      } finally {
        onChunk = null
        await new Promise<void>((resolve) => out.end(() => resolve()))
      }
      return file
    },
    close() {
      ws.close()
    },
  }
}
