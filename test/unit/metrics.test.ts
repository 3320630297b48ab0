/**
 * The instruments of src/metrics.ts without a server: the request path's slot-fed counters and
 * histograms report exactly what prom-client's own would, and the registry aggregates across workers
 * (prom-client's AggregatorRegistry, the seam for `server.workers`).
 */
import t from 'tap'
import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client'
import { createMetrics } from '../../src/metrics.ts'

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const SAMPLES = [0.0004, 0.001, 0.0011, 0.003, 0.07, 0.07, 0.3, 1, 2.6, 31, 45, 0.0099]

/** The lines of `name`'s samples, the metric name taken out (so two names can be compared). */
function linesOf(text: string, name: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .map((l) => l.slice(name.length))
}

t.test("the request histogram and counter expose what prom-client's own would for the same observations", async (t) => {
  const metrics = createMetrics({ defaultMetrics: false })
  const reference = new Registry()
  const refHist = new Histogram({ name: 'ref_seconds', help: 'h', labelNames: ['route'], buckets: BUCKETS, registers: [reference] })
  const refCount = new Counter({ name: 'ref_total', help: 'h', labelNames: ['route', 'code'], registers: [reference] })
  for (const [i, s] of SAMPLES.entries()) {
    const route = i % 3 === 0 ? 'auth:callback' : 'routes[0]'
    const code = i % 2 === 0 ? 200 : 302
    metrics.request(route, code, s)
    refHist.labels(route).observe(s)
    refCount.labels(route, String(code)).inc()
  }
  const ours = await metrics.registry.metrics()
  const theirs = await reference.metrics()
  t.strictSame(linesOf(ours, 'portcullis_request_duration_seconds').sort(), linesOf(theirs, 'ref_seconds').sort(), 'histogram: the same buckets, sums and counts')
  t.strictSame(linesOf(ours, 'portcullis_requests_total').sort(), linesOf(theirs, 'ref_total').sort(), 'counter: the same counts')
  t.match(ours, /# TYPE portcullis_request_duration_seconds histogram/)
  // A second scrape reads the same totals (counts move into the counter once, and stay).
  t.strictSame(linesOf(await metrics.registry.metrics(), 'portcullis_requests_total').sort(), linesOf(theirs, 'ref_total').sort(), 'scraping twice counts nothing twice')
})

t.test('the registry aggregates across workers (AggregatorRegistry): counters and histograms summed', async (t) => {
  const workers = [createMetrics({ defaultMetrics: false, version: '1.2.3' }), createMetrics({ defaultMetrics: false, version: '1.2.3' })]
  workers[0]!.request('routes[0]', 200, 0.002)
  workers[0]!.decision('proxy', 'allow')
  workers[1]!.request('routes[0]', 200, 0.02)
  workers[1]!.request('routes[0]', 200, 0.2)
  workers[1]!.decision('proxy', 'allow')
  workers[1]!.loginStarted()
  const primary = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON())))
  const text = await primary.metrics()
  t.match(text, /^portcullis_requests_total\{route="routes\[0\]",code="200"\} 3$/m)
  t.match(text, /^portcullis_request_duration_seconds_count\{route="routes\[0\]"\} 3$/m)
  t.match(text, /^portcullis_request_duration_seconds_bucket\{le="0.025",route="routes\[0\]"\} 2$/m)
  t.match(text, /^portcullis_auth_decisions_total\{result="allow",mode="proxy"\} 2$/m)
  t.match(text, /^portcullis_logins_total\{stage="started"\} 1$/m)
  t.match(text, /^portcullis_build_info\{version="1.2.3"\} 1$/m, 'build info: the first, not a sum')
})
