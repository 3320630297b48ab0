import { readFileSync } from 'node:fs'
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Runtime, RuntimeDeps } from './runtime.ts'
import type { ConnectionEvents, ProviderEndpoint, ProviderRequestResult } from './oidc/connection.ts'
import type { RefreshReport } from './session/refresher.ts'

/**
 * Portcullis's Prometheus instruments (`portcullis_*`, plus prom-client's `process_*` and `nodejs_*`
 * defaults) on a registry of their own, never prom-client's global one: several apps can run in one
 * process (the tests), and the workers of `server.workers` can be aggregated by the primary
 * (`registry` is the seam: prom-client's `AggregatorRegistry.setRegistries([metrics.registry])` in each
 * worker, `clusterMetrics()` in the primary; each instrument says how it is aggregated).
 *
 * The instruments live with the process (`main.ts` makes them once, the app is built with them), not
 * with a runtime: a SIGHUP reload swaps the runtime and every counter goes on counting. What a runtime
 * knows (the provider's state, the sessions in its store, its Redis connection) is read at scrape time
 * from the runtime being served (`watch`); what happens inside a runtime (provider requests, refreshes)
 * reaches the counters through the plain callbacks of `runtimeDeps`, so the domain layers (oidc/,
 * session/) never import prom-client.
 *
 * On the request path every call is a lookup of a label child made once per label values (route,
 * status) and an increment: no label object is built per request.
 */
export interface Metrics {
  readonly registry: Registry
  /** One answered request: its route label (the access line's `route`), status and duration. */
  request(route: string, code: number, seconds: number): void
  /** One decision of the pipeline. */
  decision(mode: string, result: DecisionResult): void
  /** The upstream's response headers arrived `seconds` after the request was sent. */
  upstream(route: string, seconds: number): void
  /** A login was sent to the provider (`{prefix}/start`). */
  loginStarted(): void
  /** A callback made a session. */
  loginCompleted(): void
  /** A callback failed; `reason` is the error code (`LOGIN_DENIED`, `LOGIN_FAILED`, ...). */
  loginFailed(reason: string): void
  /** `error`: the logout could not be carried out (the provider not connected, the store unavailable). */
  backchannelLogout(outcome: 'accepted' | 'replay' | 'invalid' | 'error'): void
  configReload(result: 'ok' | 'refused'): void
  /** The runtime whose state the gauges show at each scrape (the app's current one), and how many requests are in flight. */
  watch(current: () => Runtime, inFlight?: () => number): void
  /** The rate limits' counters, read at each scrape (`portcullis_rate_limited_total`, `portcullis_rate_limit_local_total`). */
  watchRateLimits(stats: () => RateLimitCounts): void
  /**
   * Deps for `createRuntime` that report provider requests and refreshes here, chained after the
   * callbacks `base` already has (`main.ts` logs through them).
   */
  runtimeDeps(base?: RuntimeDeps): RuntimeDeps
}

/** The rate limits' monotonic counts (the app's `RateLimitStats`). */
export interface RateLimitCounts {
  readonly limited: Readonly<Record<string, number>>
  readonly localFallbacks: number
}

/** What the pipeline decided, as the `result` label of `portcullis_auth_decisions_total`. */
export type DecisionResult = 'allow' | 'public' | 'login' | 'step_up' | 'deny' | 'unauthenticated' | 'rejected' | 'error'

export interface MetricsOptions {
  /** `portcullis_build_info{version}`; default: package.json's. */
  readonly version?: string
  /** prom-client's default process and Node.js metrics (default true). */
  readonly defaultMetrics?: boolean
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

type CounterChild = { inc(value?: number): void }
type HistogramChild = { observe(value: number): void }

export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new Registry()
  const registers = [registry]
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry })

  // The request path's instruments count in plain slots (`fastCounter`, `FastHistogram`): prom-client's
  // own label children hash and validate their labels on every call (about 0.2 µs for a counter,
  // 0.35 µs for a histogram, several per request); these are read at scrape time.
  const requests = fastCounter({ name: 'portcullis_requests_total', help: 'Requests answered, by route label and status code', labelNames: ['route', 'code'], registers })
  const duration = new FastHistogram({
    name: 'portcullis_request_duration_seconds',
    help: 'Time from the request to the end of its answer, by route label',
    labelNames: ['route'],
    buckets: LATENCY_BUCKETS,
    registers,
  })
  let inFlight: () => number = () => 0
  new Gauge({
    name: 'portcullis_requests_in_flight',
    help: 'Requests received and not yet answered (WebSockets not counted)',
    registers,
    collect() {
      this.set(inFlight())
    },
  })
  const decisions = fastCounter({
    name: 'portcullis_auth_decisions_total',
    help: 'Decisions of the request pipeline, by result and mode (proxy, check = {prefix}/auth, verify = {prefix}/verify)',
    labelNames: ['result', 'mode'],
    registers,
  })
  const upstream = new FastHistogram({
    name: 'portcullis_upstream_response_seconds',
    help: "Time from sending a request upstream to the upstream's response headers, by route",
    labelNames: ['route'],
    buckets: LATENCY_BUCKETS,
    registers,
  })
  const logins = new Counter({ name: 'portcullis_logins_total', help: 'Logins, by stage: started (sent to the provider), completed (a session was made)', labelNames: ['stage'], registers })
  const loginFailures = new Counter({ name: 'portcullis_login_failures_total', help: 'Callbacks that made no session, by reason (error code)', labelNames: ['reason'], registers })
  const refreshes = new Counter({
    name: 'portcullis_refreshes_total',
    help: 'Token refreshes by outcome: ok, ended (the provider ended the session), failed (provider unavailable or refused); joined (waited for one in flight), shared (took a recent result)',
    labelNames: ['outcome'],
    registers,
  })
  const backchannel = new Counter({ name: 'portcullis_backchannel_logouts_total', help: 'Back-channel logout requests, by outcome: accepted, replay, invalid (refused with 400), error (could not be carried out)', labelNames: ['outcome'], registers })
  const providerRequests = new Counter({
    name: 'portcullis_provider_requests_total',
    help: 'HTTP requests to the identity provider, by endpoint and result: ok, error (answered, but not usable), unavailable (no answer, timeout, 5xx)',
    labelNames: ['endpoint', 'result'],
    registers,
  })
  const providerDuration = new Histogram({
    name: 'portcullis_provider_request_duration_seconds',
    help: 'Time to the identity provider\'s answer, by endpoint',
    labelNames: ['endpoint'],
    buckets: LATENCY_BUCKETS,
    registers,
  })
  const reloads = new Counter({ name: 'portcullis_config_reloads_total', help: 'Configuration reloads (SIGHUP), by result: ok, refused (the running configuration was kept)', labelNames: ['result'], registers })

  let current: (() => Runtime) | null = null
  new Gauge({
    name: 'portcullis_provider_up',
    help: 'The identity provider is reachable: 1, or 0 before it was connected and while its requests fail',
    registers,
    aggregator: 'min',
    collect() {
      if (current !== null) this.set(current().provider.up ? 1 : 0)
    },
  })
  new Gauge({
    name: 'portcullis_redis_up',
    help: 'The Redis connection (session.redis) is ready: 1 or 0, by mode (standalone, sentinel, cluster); absent without session.redis',
    labelNames: ['mode'],
    registers,
    aggregator: 'min',
    collect() {
      this.reset()
      const rt = current?.()
      if (rt === undefined || rt.redis === null) return
      const settings = rt.config.session.redis
      const mode = settings.cluster.nodes.length > 0 ? 'cluster' : settings.sentinel.nodes.length > 0 ? 'sentinel' : 'standalone'
      this.set({ mode }, rt.redis.ready ? 1 : 0)
    },
  })
  new Gauge({
    name: 'portcullis_sessions',
    help: 'Sessions held by a server-side store (memory, redis), by store; absent for the cookie store',
    labelNames: ['store'],
    registers,
    aggregator: 'max',
    async collect() {
      this.reset()
      const sessions = current?.().sessions
      if (sessions?.size === undefined) return
      try {
        const n = await withTimeout(sessions.size(), 2_000)
        if (typeof n === 'number') this.set({ store: sessions.kind }, n)
      } catch {
        // The store cannot count now (Redis down): no value rather than a wrong one.
      }
    },
  })
  let rateLimitStats: (() => RateLimitCounts) | null = null
  new Counter({
    name: 'portcullis_rate_limited_total',
    help: 'Requests refused with 429 by the rate limits, by endpoint (start, callback, backchannelLogout)',
    labelNames: ['endpoint'],
    registers,
    collect() {
      if (rateLimitStats === null) return
      this.reset()
      for (const [endpoint, n] of Object.entries(rateLimitStats().limited)) this.labels(endpoint).inc(n)
    },
  })
  new Counter({
    name: 'portcullis_rate_limit_local_total',
    help: 'Requests the rate limits counted in this process because Redis did not answer',
    registers,
    collect() {
      if (rateLimitStats === null) return
      this.reset()
      this.inc(rateLimitStats().localFallbacks)
    },
  })
  const buildInfo = new Gauge({ name: 'portcullis_build_info', help: 'The running version (always 1)', labelNames: ['version'], registers, aggregator: 'first' })
  buildInfo.set({ version: opts.version ?? packageVersion() }, 1)

  // Label children, made once per label values and kept: the request path does two Map lookups.
  const requestChildren = new Map<string, { duration: HistogramSlot; codes: Map<number, CounterSlot> }>()
  const decisionChildren = new Map<string, CounterSlot>()
  const upstreamChildren = new Map<string, HistogramSlot>()
  const providerChildren = new Map<string, { duration: HistogramChild; results: Map<string, CounterChild> }>()
  const refreshChildren = new Map<string, CounterChild>()
  const child = <T>(cache: Map<string, T>, key: string, make: () => T): T => {
    let c = cache.get(key)
    if (c === undefined) {
      c = make()
      cache.set(key, c)
    }
    return c
  }

  const onProviderRequest = (endpoint: ProviderEndpoint, seconds: number, result: ProviderRequestResult): void => {
    const e = child(providerChildren, endpoint, () => ({ duration: providerDuration.labels(endpoint), results: new Map() }))
    e.duration.observe(seconds)
    child(e.results, result, () => providerRequests.labels(endpoint, result)).inc()
  }
  const onRefresh = (outcome: RefreshReport): void => child(refreshChildren, outcome, () => refreshes.labels(outcome)).inc()

  return {
    registry,
    request(route, code, seconds) {
      let r = requestChildren.get(route)
      if (r === undefined) {
        r = { duration: duration.slot({ route }), codes: new Map() }
        requestChildren.set(route, r)
      }
      let c = r.codes.get(code)
      if (c === undefined) {
        c = requests.slot({ route, code: String(code) })
        r.codes.set(code, c)
      }
      c.n++
      duration.record(r.duration, seconds)
    },
    decision(mode, result) {
      const key = `${mode} ${result}`
      let c = decisionChildren.get(key)
      if (c === undefined) {
        c = decisions.slot({ result, mode })
        decisionChildren.set(key, c)
      }
      c.n++
    },
    upstream(route, seconds) {
      let h = upstreamChildren.get(route)
      if (h === undefined) {
        h = upstream.slot({ route })
        upstreamChildren.set(route, h)
      }
      upstream.record(h, seconds)
    },
    loginStarted: () => logins.labels('started').inc(),
    loginCompleted: () => logins.labels('completed').inc(),
    loginFailed: (reason) => loginFailures.labels(reason).inc(),
    backchannelLogout: (outcome) => backchannel.labels(outcome).inc(),
    configReload: (result) => reloads.labels(result).inc(),
    watchRateLimits(get) {
      rateLimitStats = get
    },
    watch(get, count) {
      current = get
      if (count !== undefined) inFlight = count
    },
    runtimeDeps(base = {}) {
      const given: ConnectionEvents = base.providerEvents ?? {}
      const givenRefresh = base.onRefresh
      return {
        ...base,
        providerEvents: {
          ...given,
          onRequest(endpoint, seconds, result) {
            onProviderRequest(endpoint, seconds, result)
            given.onRequest?.(endpoint, seconds, result)
          },
        },
        onRefresh(outcome) {
          onRefresh(outcome)
          givenRefresh?.(outcome)
        },
      }
    },
  }
}

/** One label set's count, added to its prom-client counter at the next scrape. */
interface CounterSlot {
  n: number
}

/**
 * A prom-client counter fed from slots: the request path adds to a slot's number, and the counter's
 * `collect` (run by every scrape, before it reads the counter) moves what was added into it.
 */
function fastCounter(config: { name: string; help: string; labelNames: string[]; registers: Registry[] }): { slot(labels: Record<string, string>): CounterSlot } {
  const slots: Array<{ readonly labels: Record<string, string>; readonly slot: CounterSlot }> = []
  const counter = new Counter({
    ...config,
    collect() {
      for (const s of slots) {
        if (s.slot.n === 0) continue
        this.inc(s.labels, s.slot.n)
        s.slot.n = 0
      }
    },
  })
  return {
    slot(labels) {
      const slot = { n: 0 }
      slots.push({ labels, slot })
      counter.inc(labels, 0) // the series shows from its first use
      return slot
    },
  }
}

/** One label set's buckets (`counts[i]`: observations in bucket i, the last one past every bound). */
interface HistogramSlot {
  readonly labels: Record<string, string>
  readonly counts: Float64Array
  sum: number
  count: number
}

type HistogramGet = Awaited<ReturnType<Histogram<string>['get']>>

/**
 * A prom-client histogram whose observations are array increments in slots; it reports them itself
 * when read (`get`, and the text format's `getForPromString`), in the shape prom-client's own
 * histogram reports (`_bucket` per bound with `le`, `+Inf`, `_sum`, `_count`), so the registry, its
 * text format and the cluster aggregator treat it as any histogram.
 */
class FastHistogram extends Histogram<string> {
  readonly #name: string
  readonly #help: string
  readonly #bounds: readonly number[]
  readonly #slots: HistogramSlot[] = []

  constructor(config: { name: string; help: string; labelNames: string[]; buckets: readonly number[]; registers: Registry[] }) {
    super({ ...config, buckets: [...config.buckets] })
    this.#name = config.name
    this.#help = config.help
    this.#bounds = [...config.buckets].sort((a, b) => a - b)
  }

  slot(labels: Record<string, string>): HistogramSlot {
    const slot = { labels, counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 }
    this.#slots.push(slot)
    return slot
  }

  /** One observation, on the request path: a bucket found and three numbers moved. */
  record(slot: HistogramSlot, value: number): void {
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    slot.counts[i] = (slot.counts[i] as number) + 1
    slot.sum += value
    slot.count++
  }

  override async get(): Promise<HistogramGet> {
    const name = this.#name
    const values: HistogramGet['values'] = []
    for (const s of this.#slots) {
      let acc = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += s.counts[i] as number
        values.push({ labels: { le: this.#bounds[i] as number, ...s.labels }, value: acc, metricName: `${name}_bucket` })
      }
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${name}_bucket` })
      values.push({ labels: s.labels, value: s.sum, metricName: `${name}_sum` })
      values.push({ labels: s.labels, value: s.count, metricName: `${name}_count` })
    }
    // The object prom-client's own histogram returns (its `collect` is unused: nothing to collect).
    return { name, help: this.#help, type: 'histogram', values, aggregator: 'sum' } as unknown as HistogramGet
  }

  getForPromString(): Promise<HistogramGet> {
    return this.get()
  }
}

function withTimeout<T>(value: Promise<T> | T, ms: number): Promise<T> {
  if (!(value instanceof Promise)) return Promise.resolve(value)
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), ms)
    timer.unref()
  })
  return Promise.race([value, late]).finally(() => clearTimeout(timer))
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown }
    return typeof pkg.version === 'string' ? pkg.version : 'unknown'
  } catch {
    return 'unknown'
  }
}

/** What a metrics listener serves: a registry, or the primary's sum over its workers. */
export interface MetricsSource {
  metrics(): Promise<string>
  readonly contentType: string
}

/**
 * `server.workers` > 1, in a worker: its instruments answer the primary's scrape (prom-client's
 * cluster messages); the worker itself binds no `metrics.listen` (a port shared through the cluster
 * would give each scrape one random worker's counts).
 */
export function shareWithPrimary(metrics: Metrics): void {
  // prom-client answers the primary's requests only once an AggregatorRegistry was made in the
  // process (its constructor adds the worker's message listener); the instance itself is not used.
  void new AggregatorRegistry()
  AggregatorRegistry.setRegistries([metrics.registry])
}

/** In the primary: every worker's instruments at each scrape, combined by each instrument's aggregator (counters and histograms summed). */
export function workersMetrics(): MetricsSource {
  const aggregator = new AggregatorRegistry()
  return { metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType }
}
