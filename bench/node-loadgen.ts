/**
 * The bench's built-in load generator, for machines without wrk (the `--smoke` run in CI, or
 * `--loadgen=node`): `connections` keep-alive connections (an undici Pool, no pipelining), each
 * sending the next request as soon as the previous answer is read, for `durationSec`. Prints the same
 * `BENCHJSON {...}` line as bench/lib/wrk-report.lua. It is much slower than wrk (it is Node), so
 * its numbers are only good for "it works", not for comparisons near its own ceiling.
 *
 *   node --import tsx bench/node-loadgen.ts '{"url":"http://127.0.0.1:8080/","connections":64,"durationSec":1,"headers":{}}'
 */
import { Pool } from 'undici'

interface Spec {
  url: string
  connections: number
  durationSec: number
  headers: Record<string, string>
}

const spec = JSON.parse(process.argv[2] ?? '{}') as Spec
const target = new URL(spec.url)
const pool = new Pool(target.origin, { connections: spec.connections, pipelining: 1, keepAliveTimeout: 60_000 })
const path = `${target.pathname}${target.search}`
const latencies: number[] = []
const errors = { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }
let bytes = 0
let stop = false

async function worker(): Promise<void> {
  while (!stop) {
    const t0 = process.hrtime.bigint()
    try {
      const res = await pool.request({ path, method: 'GET', headers: spec.headers, headersTimeout: 5000, bodyTimeout: 5000 })
      for await (const chunk of res.body) bytes += (chunk as Buffer).length
      if (res.statusCode >= 400) errors.status++
      latencies.push(Number(process.hrtime.bigint() - t0) / 1000)
    } catch (err) {
      const code = (err as { code?: string }).code ?? ''
      if (code.includes('TIMEOUT')) errors.timeout++
      else if (code === 'ECONNREFUSED') errors.connect++
      else errors.read++
      if (!stop) await new Promise((r) => setTimeout(r, 10))
    }
  }
}

const started = process.hrtime.bigint()
const workers = Array.from({ length: spec.connections }, () => worker())
await new Promise((r) => setTimeout(r, spec.durationSec * 1000))
stop = true
await Promise.all(workers)
const durationUs = Number(process.hrtime.bigint() - started) / 1000
await pool.close()

latencies.sort((a, b) => a - b)
const pct = (p: number): number => (latencies.length === 0 ? 0 : (latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] ?? 0))
const mean = latencies.length === 0 ? 0 : latencies.reduce((s, v) => s + v, 0) / latencies.length
const report = {
  requests: latencies.length,
  duration_us: Math.round(durationUs),
  bytes,
  errors,
  latency_us: {
    min: Math.round(latencies[0] ?? 0),
    mean,
    stdev: 0,
    max: Math.round(latencies.at(-1) ?? 0),
    p50: Math.round(pct(50)),
    p90: Math.round(pct(90)),
    p99: Math.round(pct(99)),
    p999: Math.round(pct(99.9)),
  },
}
process.stdout.write(`BENCHJSON ${JSON.stringify(report)}\n`)
