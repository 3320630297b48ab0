/**
 * The Kubernetes kit (deploy/kubernetes), without a cluster: every kustomization (the base and each
 * overlay, found by listing the directory) is rendered with `kubectl kustomize`, as shipped and once
 * more with each Kustomize Component of deploy/kubernetes/components added (on a temp copy of the
 * kit, as the kit's README tells the operator to: `components: [../../components/redis]`), and the
 * rendered objects are checked the way an API server and a careful reviewer would:
 *
 * - schemas: core objects with kubernetes-models' `.validate()` (the Kubernetes OpenAPI schemas, on
 *   Node 20: version 4.5.1); custom resources (Traefik Middleware/IngressRoute, Gateway API HTTPRoute,
 *   Envoy Gateway SecurityPolicy, Istio AuthorizationPolicy) with small JSON schemas written here for
 *   the fields the kit uses. Why our own: kubernetes-models has no models for these CRDs, their real
 *   CRD schemas are large, versioned per controller release and not on this machine; ours are strict
 *   (`additionalProperties: false`), so a misspelled field fails, which the core schemas do not catch.
 *   A kind with no schema at all is a failure, so a new kind cannot slip in unvalidated.
 * - references, within one rendered kustomization: probe ports, Service selectors and targetPorts,
 *   ConfigMap and Secret references (volumes, env, and every `*File` path in Portcullis's config,
 *   which must land in a mounted Secret volume on a key that Secret has), PDB and HPA targets, Ingress,
 *   IngressRoute, HTTPRoute, Middleware, SecurityPolicy and Istio mesh-config backends.
 * - agreement with Portcullis's config: the rendered ConfigMap's config.yaml is loaded with the
 *   project's own loader and validator (the `*File` secrets written to temp files from the rendered
 *   Secret), and its `server.listen` port, `authPrefix`, identity headers and session cookie name are
 *   what the probes, ports, annotations and CRDs use.
 * - security invariants on every container, and `restartPolicy: Always` on a sidecar initContainer.
 * - scale-out: a Portcullis workload with more than one replica, or an HPA, must have session.redis
 *   (without it a back-channel logout received by one replica is not honoured by the others) and not
 *   the memory store; session.redis must have a password; its host:port must be a Service of the
 *   kustomization that reaches a Redis container, or a documented external name. A Redis in the kit
 *   (components/redis) must be one Pod that is never doubled (Recreate), read its requirepass from the
 *   same Secret key as Portcullis's passwordFile, and be behind a NetworkPolicy that admits the
 *   Portcullis pods, on the Redis port, and nothing else.
 * - the environment Kubernetes gives the Pod: unless `enableServiceLinks: false`, every Service of
 *   the namespace injects `<NAME>_SERVICE_HOST`, `<NAME>_PORT`, ... variables (the loader ignores these
 *   shapes under PORTCULLIS_<SECTION>_, but the kit turns them off all the same); the config is loaded
 *   with that environment.
 *
 * External names (the user's app and its TLS Secrets, the Gateway) are listed in EXTERNAL below and in
 * deploy/kubernetes/README.md. The checks are plain functions returning problems; the self-tests at
 * the end feed them mutated copies of rendered objects, so every check is shown to be able to fail.
 *
 * Without kubectl the render step is skipped (with the reason), and the raw resource files are still
 * schema-checked.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import YAML from 'yaml'
import { Ajv, type ValidateFunction } from 'ajv'
import { Namespace } from 'kubernetes-models/v1/Namespace'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { Secret } from 'kubernetes-models/v1/Secret'
import { Service } from 'kubernetes-models/v1/Service'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { loadConfig, type Config } from '../../src/config/index.ts'
import { sessionCookieName } from '../../src/runtime.ts'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const KIT = join(REPO, 'deploy/kubernetes')
/** kubectl (v1.32 on our machines); KUBECTL=... picks another one, or a missing one to try the fallback. */
const KUBECTL = process.env.KUBECTL ?? '/usr/bin/kubectl'

/** Names the kit refers to but does not contain: the operator's own objects (see the kit's README). */
const EXTERNAL = {
  services: new Set(['app']),
  /** The Redis Service session.redis names, in Portcullis's namespace: yours, or components/redis's. */
  redis: new Set(['portcullis-redis']),
  tlsSecrets: new Set(['app-example-com-tls', 'auth-example-com-tls']),
  gateways: new Set(['envoy-gateway-system/eg']),
}

// ---------------------------------------------------------------------------------------------
// Plain-data helpers (rendered YAML is untyped; these narrow it).

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const obj = (v: unknown): Obj => (isObj(v) ? v : {})
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : [])
const objs = (v: unknown): Obj[] => arr(v).filter(isObj)
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const strs = (v: unknown): string[] => arr(v).filter((x): x is string => typeof x === 'string')
const get = (v: unknown, ...path: string[]): unknown => path.reduce<unknown>((node, key) => obj(node)[key], v)
const name = (o: Obj): string => str(get(o, 'metadata', 'name')) ?? '?'
const ns = (o: Obj): string => str(get(o, 'metadata', 'namespace')) ?? 'default'
const id = (o: Obj): string => `${str(o.kind)}/${ns(o)}/${name(o)}`
const lower = (list: readonly string[]): string[] => list.map((h) => h.toLowerCase()).sort()
const sameSet = (a: readonly string[], b: readonly string[]): boolean => JSON.stringify(lower(a)) === JSON.stringify(lower(b))

function clone<T>(value: T): T {
  return structuredClone(value)
}

// ---------------------------------------------------------------------------------------------
// Schemas.

/** kubernetes-models classes by apiVersion/kind; each validates against the Kubernetes OpenAPI schema. */
const CORE: Record<string, (data: Obj) => { validate(): void }> = {
  // The constructors take the typed interfaces; rendered YAML is untyped and checked by validate().
  'v1/Namespace': (d) => new Namespace(d as ConstructorParameters<typeof Namespace>[0]),
  'v1/ConfigMap': (d) => new ConfigMap(d as ConstructorParameters<typeof ConfigMap>[0]),
  'v1/Secret': (d) => new Secret(d as ConstructorParameters<typeof Secret>[0]),
  'v1/Service': (d) => new Service(d as ConstructorParameters<typeof Service>[0]),
  'apps/v1/Deployment': (d) => new Deployment(d as ConstructorParameters<typeof Deployment>[0]),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d as ConstructorParameters<typeof PodDisruptionBudget>[0]),
  'autoscaling/v2/HorizontalPodAutoscaler': (d) => new HorizontalPodAutoscaler(d as ConstructorParameters<typeof HorizontalPodAutoscaler>[0]),
  'networking.k8s.io/v1/Ingress': (d) => new Ingress(d as ConstructorParameters<typeof Ingress>[0]),
  'networking.k8s.io/v1/NetworkPolicy': (d) => new NetworkPolicy(d as ConstructorParameters<typeof NetworkPolicy>[0]),
}

const STRING = { type: 'string', minLength: 1 }
const STRINGS = { type: 'array', items: STRING, minItems: 1 }
const HEADER_NAMES = { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9-]+$' }, minItems: 1 }
const PORT = { type: 'integer', minimum: 1, maximum: 65535 }
const strict = (properties: Obj, required: string[] = []): Obj => ({ type: 'object', additionalProperties: false, properties, required })
/** metadata as kustomize renders it; the CRD objects are namespaced. */
const METADATA = strict(
  { name: { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' }, namespace: STRING, labels: { type: 'object' }, annotations: { type: 'object' } },
  ['name', 'namespace'],
)
const crd = (apiVersion: string, kind: string, spec: Obj): Obj =>
  strict({ apiVersion: { const: apiVersion }, kind: { const: kind }, metadata: METADATA, spec }, ['apiVersion', 'kind', 'metadata', 'spec'])

/**
 * The custom resources, for the fields the kit uses (from the controllers' documented CRD fields:
 * Traefik v3 `traefik.io/v1alpha1`, Gateway API v1, Envoy Gateway `gateway.envoyproxy.io/v1alpha1`,
 * Istio `security.istio.io/v1`). Strict: an unknown or misspelled field fails.
 */
const CRD_SCHEMAS: Record<string, Obj> = {
  'traefik.io/v1alpha1/Middleware': crd(
    'traefik.io/v1alpha1',
    'Middleware',
    strict(
      {
        forwardAuth: strict(
          {
            address: { type: 'string', pattern: '^https?://' },
            trustForwardHeader: { type: 'boolean' },
            authResponseHeaders: HEADER_NAMES,
            authRequestHeaders: HEADER_NAMES,
            addAuthCookiesToResponse: STRINGS,
            preserveLocationHeader: { type: 'boolean' },
            preserveRequestMethod: { type: 'boolean' },
          },
          ['address'],
        ),
      },
      ['forwardAuth'],
    ),
  ),
  'traefik.io/v1alpha1/IngressRoute': crd(
    'traefik.io/v1alpha1',
    'IngressRoute',
    strict(
      {
        entryPoints: STRINGS,
        routes: {
          type: 'array',
          minItems: 1,
          items: strict(
            {
              match: STRING,
              kind: { const: 'Rule' },
              middlewares: { type: 'array', items: strict({ name: STRING, namespace: STRING }, ['name']) },
              services: {
                type: 'array',
                minItems: 1,
                items: strict({ name: STRING, namespace: STRING, port: { anyOf: [PORT, STRING] } }, ['name', 'port']),
              },
            },
            ['match', 'kind', 'services'],
          ),
        },
        tls: strict({ secretName: STRING }),
      },
      ['routes'],
    ),
  ),
  'gateway.networking.k8s.io/v1/HTTPRoute': crd(
    'gateway.networking.k8s.io/v1',
    'HTTPRoute',
    strict(
      {
        parentRefs: { type: 'array', minItems: 1, items: strict({ name: STRING, namespace: STRING, sectionName: STRING }, ['name']) },
        hostnames: STRINGS,
        rules: {
          type: 'array',
          minItems: 1,
          items: strict(
            {
              matches: {
                type: 'array',
                items: strict({ path: strict({ type: { enum: ['Exact', 'PathPrefix', 'RegularExpression'] }, value: { type: 'string', pattern: '^/' } }, ['type', 'value']) }),
              },
              backendRefs: { type: 'array', minItems: 1, items: strict({ name: STRING, namespace: STRING, port: PORT }, ['name', 'port']) },
            },
            ['backendRefs'],
          ),
        },
      },
      ['parentRefs', 'rules'],
    ),
  ),
  'gateway.envoyproxy.io/v1alpha1/SecurityPolicy': crd(
    'gateway.envoyproxy.io/v1alpha1',
    'SecurityPolicy',
    strict(
      {
        targetRefs: {
          type: 'array',
          minItems: 1,
          items: strict({ group: { const: 'gateway.networking.k8s.io' }, kind: { enum: ['HTTPRoute', 'Gateway', 'GRPCRoute'] }, name: STRING }, ['group', 'kind', 'name']),
        },
        extAuth: strict(
          {
            failOpen: { type: 'boolean' },
            headersToExtAuth: HEADER_NAMES,
            http: strict(
              {
                backendRefs: {
                  type: 'array',
                  minItems: 1,
                  items: strict({ group: { type: 'string' }, kind: { const: 'Service' }, name: STRING, namespace: STRING, port: PORT }, ['name', 'port']),
                },
                path: { type: 'string', pattern: '^/' },
                headersToBackend: HEADER_NAMES,
              },
              ['backendRefs'],
            ),
          },
          ['http'],
        ),
      },
      ['targetRefs', 'extAuth'],
    ),
  ),
  'security.istio.io/v1/AuthorizationPolicy': crd(
    'security.istio.io/v1',
    'AuthorizationPolicy',
    strict(
      {
        selector: strict({ matchLabels: { type: 'object', minProperties: 1, additionalProperties: { type: 'string' } } }, ['matchLabels']),
        action: { enum: ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] },
        provider: strict({ name: STRING }, ['name']),
        rules: { type: 'array', minItems: 1, items: strict({ to: { type: 'array' }, from: { type: 'array' }, when: { type: 'array' } }) },
      },
      ['action'],
    ),
  ),
}

/** The Istio mesh config fragment (overlays/istio/mesh-config.yaml; not a Kubernetes object). */
const MESH_CONFIG_SCHEMA = strict(
  {
    meshConfig: strict(
      {
        extensionProviders: {
          type: 'array',
          minItems: 1,
          items: strict(
            {
              name: STRING,
              envoyExtAuthzHttp: strict(
                {
                  service: STRING,
                  port: PORT,
                  pathPrefix: { type: 'string', pattern: '^/' },
                  timeout: { type: 'string', pattern: '^[0-9]+(ms|s|m)$' },
                  failOpen: { type: 'boolean' },
                  includeRequestHeadersInCheck: HEADER_NAMES,
                  headersToUpstreamOnAllow: HEADER_NAMES,
                  headersToDownstreamOnAllow: HEADER_NAMES,
                  headersToDownstreamOnDeny: HEADER_NAMES,
                },
                ['service', 'port'],
              ),
            },
            ['name', 'envoyExtAuthzHttp'],
          ),
        },
      },
      ['extensionProviders'],
    ),
  },
  ['meshConfig'],
)

const ajv = new Ajv({ allErrors: true, strict: true })
const crdValidators = new Map<string, ValidateFunction>(Object.entries(CRD_SCHEMAS).map(([key, schema]) => [key, ajv.compile(schema)]))
const meshConfigValidator = ajv.compile(MESH_CONFIG_SCHEMA)

function ajvProblems(what: string, validate: ValidateFunction, data: unknown): string[] {
  if (validate(data)) return []
  return (validate.errors ?? []).map((e) => `${what}: schema: ${e.instancePath || '/'} ${e.message ?? ''}${e.params !== undefined ? ` ${JSON.stringify(e.params)}` : ''}`)
}

/** Every object against its schema; a kind without one is a problem too. */
export function schemaProblems(o: Obj): string[] {
  const key = `${str(o.apiVersion)}/${str(o.kind)}`
  const core = CORE[key]
  if (core !== undefined) {
    try {
      core(o).validate()
      return []
    } catch (err) {
      return [`${id(o)}: schema: ${(err as Error).message}`]
    }
  }
  const validator = crdValidators.get(key)
  if (validator !== undefined) return ajvProblems(id(o), validator, o)
  return [`${id(o)}: no schema for ${key} (add one to this test)`]
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function kustomizations(): string[] {
  const overlays = readdirSync(join(KIT, 'overlays'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => `overlays/${d.name}`)
  return ['base', ...overlays.sort()]
}

function parseObjects(text: string, source: string): Obj[] {
  return YAML.parseAllDocuments(text).map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${source} document ${i}: ${doc.errors[0]?.message ?? 'YAML error'}`)
    const value: unknown = doc.toJS()
    if (!isObj(value)) throw new Error(`${source} document ${i} is not a mapping`)
    return value
  })
}

/** The Kustomize Components of the kit (deploy/kubernetes/components/<name>). */
function componentDirs(): string[] {
  if (!existsSync(join(KIT, 'components'))) return []
  return readdirSync(join(KIT, 'components'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => `components/${d.name}`)
    .sort()
}

function render(dir: string, root = KIT): Obj[] {
  const out = spawnSync(KUBECTL, ['kustomize', join(root, dir)], { encoding: 'utf8' })
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${out.stderr}`)
  return parseObjects(out.stdout, dir)
}

/**
 * `dir` with `component` added the way the kit's README says (its relative path appended to the
 * kustomization's `components:`), rendered from a temp copy of the kit, so the kit is not touched.
 */
function renderWithComponent(dir: string, component: string): Obj[] {
  const temp = mkdtempSync(join(tmpdir(), 'portcullis-kit-'))
  try {
    cpSync(KIT, temp, { recursive: true })
    const file = join(temp, dir, 'kustomization.yaml')
    const k = obj(YAML.parse(readFileSync(file, 'utf8')))
    k.components = [...strs(k.components), posix.relative(dir, component)]
    writeFileSync(file, YAML.stringify(k))
    return render(dir, temp)
  } finally {
    rmSync(temp, { recursive: true, force: true })
  }
}

/** The kustomization's resource files that are files (not directories), for the no-kubectl fallback. */
function rawResourceFiles(dir: string): string[] {
  const k = obj(YAML.parse(readFileSync(join(KIT, dir, 'kustomization.yaml'), 'utf8')))
  return strs(k.resources)
    .map((r) => join(KIT, dir, r))
    .filter((p) => p.endsWith('.yaml'))
}

// ---------------------------------------------------------------------------------------------
// The kit's checks. `Kit` is one rendered kustomization; `extras` are its files that are not objects.

interface Kit {
  dir: string
  objects: Obj[]
  /** overlays/istio/mesh-config.yaml, parsed, when the kustomization has one. */
  meshConfig?: unknown
}

const of = (kit: Kit, kind: string): Obj[] => kit.objects.filter((o) => o.kind === kind)
const find = (kit: Kit, kind: string, n: string, namespace: string): Obj | undefined => of(kit, kind).find((o) => name(o) === n && ns(o) === namespace)

interface PodOwner {
  owner: Obj
  template: Obj
  spec: Obj
  labels: Record<string, string>
}

function pods(kit: Kit): PodOwner[] {
  return of(kit, 'Deployment').map((d) => {
    const template = obj(get(d, 'spec', 'template'))
    const labels = Object.fromEntries(Object.entries(obj(get(template, 'metadata', 'labels'))).filter((e): e is [string, string] => typeof e[1] === 'string'))
    return { owner: d, template, spec: obj(template.spec), labels }
  })
}

interface ContainerAt {
  pod: PodOwner
  container: Obj
  init: boolean
  where: string
}

function containers(pod: PodOwner): ContainerAt[] {
  const at = (list: unknown, init: boolean): ContainerAt[] =>
    objs(list).map((c) => ({ pod, container: c, init, where: `${id(pod.owner)} ${init ? 'initContainer' : 'container'} ${str(c.name) ?? '?'}` }))
  return [...at(pod.spec.initContainers, true), ...at(pod.spec.containers, false)]
}

/** A Portcullis container: its image is the kit's `portcullis` image (as renamed by `images:`). */
function isPortcullis(c: Obj): boolean {
  return /(^|\/)portcullis(:|@|$)/.test(str(c.image) ?? '')
}

const selects = (selector: Obj, labels: Record<string, string>): boolean => {
  const entries = Object.entries(selector)
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v)
}

/** The container port a probe or targetPort (name or number) means in this container, or undefined. */
function containerPort(c: Obj, port: unknown): number | undefined {
  for (const p of objs(c.ports)) {
    const number = p.containerPort
    if (typeof number !== 'number') continue
    if (typeof port === 'string' && p.name === port) return number
    if (typeof port === 'number' && number === port) return number
  }
  return undefined
}

/** The Portcullis config of one kit: the ConfigMap mounted at /etc/portcullis, loaded and validated. */
interface PortcullisConfig {
  configMap: Obj
  text: string
  config: Config
  port: number
}

const CONFIG_DIR = '/etc/portcullis'
const CONFIG_KEY = 'config.yaml'

/** Every `<key>File` value in a config tree, with its path (`provider.clientSecretFile`, `session.secretsFile[0]`). */
function fileRefs(tree: unknown, path: string[] = []): { path: string; file: string }[] {
  if (!isObj(tree)) return []
  const out: { path: string; file: string }[] = []
  for (const [key, value] of Object.entries(tree)) {
    const here = [...path, key].join('.')
    if (key.endsWith('File') && typeof value === 'string') out.push({ path: here, file: value })
    else if (key.endsWith('File') && Array.isArray(value)) value.forEach((v, i) => typeof v === 'string' && out.push({ path: `${here}[${i}]`, file: v }))
    else out.push(...fileRefs(value, [...path, key]))
  }
  return out
}

/** What a mounted file in a container is: the Secret and key behind it, or a problem. */
function secretFileAt(kit: Kit, at: ContainerAt, file: string): { secret: Obj; key: string } | string {
  const mount = objs(at.container.volumeMounts)
    .filter((m) => typeof m.mountPath === 'string' && file.startsWith(`${str(m.mountPath)}/`))
    .sort((a, b) => (str(b.mountPath) ?? '').length - (str(a.mountPath) ?? '').length)[0]
  if (mount === undefined) return `no volumeMount of ${at.where} contains ${file}`
  const volume = objs(at.pod.spec.volumes).find((v) => v.name === mount.name)
  const secretName = str(get(volume, 'secret', 'secretName'))
  if (volume === undefined || secretName === undefined) return `${file} is in volume ${str(mount.name) ?? '?'}, which is not a Secret volume`
  const relative = posix.relative(str(mount.mountPath) ?? '', file)
  const items = objs(get(volume, 'secret', 'items'))
  const key = items.length === 0 ? relative : str(items.find((i) => i.path === relative)?.key)
  if (key === undefined) return `${file}: Secret volume ${str(volume.name) ?? '?'} projects no item at path ${relative}`
  const secret = find(kit, 'Secret', secretName, ns(at.pod.owner))
  if (secret === undefined) return `${file}: Secret ${secretName} is not in this kustomization`
  if (!Object.hasOwn(obj(secret.data), key) && !Object.hasOwn(obj(secret.stringData), key)) return `${file}: Secret ${secretName} has no key ${key}`
  return { secret, key }
}

function secretValue(secret: Obj, key: string): string {
  const data = str(obj(secret.data)[key])
  return data !== undefined ? Buffer.from(data, 'base64').toString('utf8') : (str(obj(secret.stringData)[key]) ?? '')
}

/**
 * The variables Kubernetes puts into a container's environment: its `env` values (and Secret and
 * ConfigMap keys), plus, unless the Pod says `enableServiceLinks: false`, the service links of every
 * Service in the Pod's namespace (`<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]`,
 * `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`; the cluster IP is made up).
 */
export function podEnv(kit: Kit, at: ContainerAt): Record<string, string> {
  const env: Record<string, string> = {}
  if (at.pod.spec.enableServiceLinks !== false) {
    for (const svc of of(kit, 'Service').filter((x) => ns(x) === ns(at.pod.owner) && get(x, 'spec', 'clusterIP') !== 'None')) {
      const prefix = name(svc).toUpperCase().replaceAll('-', '_')
      const ip = '10.96.0.10'
      const ports = objs(get(svc, 'spec', 'ports'))
      ports.forEach((p, i) => {
        const port = String(p.port)
        const proto = (str(p.protocol) ?? 'TCP').toUpperCase()
        const url = `${proto.toLowerCase()}://${ip}:${port}`
        if (i === 0) Object.assign(env, { [`${prefix}_SERVICE_HOST`]: ip, [`${prefix}_SERVICE_PORT`]: port, [`${prefix}_PORT`]: url })
        if (typeof p.name === 'string') env[`${prefix}_SERVICE_PORT_${p.name.toUpperCase().replaceAll('-', '_')}`] = port
        const base = `${prefix}_PORT_${port}_${proto}`
        Object.assign(env, { [base]: url, [`${base}_PROTO`]: proto.toLowerCase(), [`${base}_PORT`]: port, [`${base}_ADDR`]: ip })
      })
    }
  }
  for (const e of objs(at.container.env)) {
    const n = str(e.name)
    if (n === undefined) continue
    const secretRef = obj(get(e, 'valueFrom', 'secretKeyRef'))
    const mapRef = obj(get(e, 'valueFrom', 'configMapKeyRef'))
    const secret = typeof secretRef.name === 'string' ? find(kit, 'Secret', secretRef.name, ns(at.pod.owner)) : undefined
    const map = typeof mapRef.name === 'string' ? find(kit, 'ConfigMap', mapRef.name, ns(at.pod.owner)) : undefined
    if (typeof e.value === 'string') env[n] = e.value
    else if (secret !== undefined) env[n] = secretValue(secret, str(secretRef.key) ?? '')
    else if (map !== undefined) env[n] = str(obj(map.data)[str(mapRef.key) ?? '']) ?? ''
  }
  return env
}

/**
 * Loads the Portcullis config mounted into `at` with the project's loader, in the environment the Pod
 * gets (podEnv): `*File` paths must resolve into a mounted Secret (their contents, from the rendered
 * Secret, go to temp files for the loader).
 */
function loadPortcullisConfig(kit: Kit, at: ContainerAt, problems: string[]): PortcullisConfig | undefined {
  const mount = objs(at.container.volumeMounts).find((m) => m.mountPath === CONFIG_DIR)
  const volume = objs(at.pod.spec.volumes).find((v) => v.name === mount?.name)
  const cmName = str(get(volume, 'configMap', 'name'))
  if (cmName === undefined) {
    problems.push(`${at.where}: no ConfigMap volume mounted at ${CONFIG_DIR}`)
    return undefined
  }
  const configMap = find(kit, 'ConfigMap', cmName, ns(at.pod.owner))
  const text = str(obj(configMap?.data)[CONFIG_KEY])
  if (configMap === undefined || text === undefined) {
    problems.push(`${at.where}: ConfigMap ${cmName} with key ${CONFIG_KEY} is not in this kustomization`)
    return undefined
  }
  const tree: unknown = YAML.parse(text)
  const temp = mkdtempSync(join(tmpdir(), 'portcullis-kit-'))
  try {
    // Each <key>File (the paths fileRefs finds) becomes a temp file with the Secret's value.
    const wanted = new Map(fileRefs(tree).map((ref, i) => [ref.file, { ...ref, local: join(temp, `secret-${i}`) }]))
    for (const ref of wanted.values()) {
      const found = secretFileAt(kit, at, ref.file)
      if (typeof found === 'string') problems.push(`${at.where}: config ${ref.path}: ${found}`)
      else writeFileSync(ref.local, secretValue(found.secret, found.key))
    }
    const swap = (v: unknown): unknown => (typeof v === 'string' ? (wanted.get(v)?.local ?? v) : v)
    const replace = (node: unknown): void => {
      if (!isObj(node)) return
      for (const [key, value] of Object.entries(node)) {
        if (key.endsWith('File') && typeof value === 'string') node[key] = swap(value)
        else if (key.endsWith('File') && Array.isArray(value)) node[key] = value.map(swap)
        else replace(value)
      }
    }
    replace(tree)
    const loaded = loadConfig({ text: YAML.stringify(tree), file: join(temp, CONFIG_KEY), env: podEnv(kit, at) })
    if (!loaded.ok) {
      for (const issue of loaded.issues) problems.push(`${kit.dir}: ConfigMap ${cmName} ${CONFIG_KEY}: ${issue.path}: ${issue.message}`)
      return undefined
    }
    const port = Number(/:(\d+)$/.exec(loaded.config.server.listen)?.[1])
    return { configMap, text, config: loaded.config, port }
  } finally {
    rmSync(temp, { recursive: true, force: true })
  }
}

/** The config.yaml text a Portcullis pod mounts ('{}' when there is none). */
function configTextOf(kit: Kit, pod: PodOwner): string {
  const at = containers(pod).find((c) => isPortcullis(c.container))
  const mount = objs(at?.container.volumeMounts).find((m) => m.mountPath === CONFIG_DIR)
  const volume = objs(pod.spec.volumes).find((v) => v.name === mount?.name)
  const configMap = find(kit, 'ConfigMap', str(get(volume, 'configMap', 'name')) ?? '', ns(pod.owner))
  return str(obj(configMap?.data)[CONFIG_KEY]) ?? '{}'
}

const SECURITY: [string, (c: Obj, pod: Obj) => boolean][] = [
  ['runAsNonRoot: true', (c, pod) => get(c, 'securityContext', 'runAsNonRoot') === true || (get(c, 'securityContext', 'runAsNonRoot') === undefined && get(pod, 'securityContext', 'runAsNonRoot') === true)],
  ['readOnlyRootFilesystem: true', (c) => get(c, 'securityContext', 'readOnlyRootFilesystem') === true],
  ['allowPrivilegeEscalation: false', (c) => get(c, 'securityContext', 'allowPrivilegeEscalation') === false],
  ['capabilities.drop: [ALL]', (c) => strs(get(c, 'securityContext', 'capabilities', 'drop')).includes('ALL') && arr(get(c, 'securityContext', 'capabilities', 'add')).length === 0],
  ['seccompProfile RuntimeDefault', (c, pod) => (get(c, 'securityContext', 'seccompProfile', 'type') ?? get(pod, 'securityContext', 'seccompProfile', 'type')) === 'RuntimeDefault'],
  ['resources.requests cpu and memory', (c) => get(c, 'resources', 'requests', 'cpu') !== undefined && get(c, 'resources', 'requests', 'memory') !== undefined],
  ['resources.limits memory', (c) => get(c, 'resources', 'limits', 'memory') !== undefined],
  ['not privileged', (c) => get(c, 'securityContext', 'privileged') !== true],
]

/** A Service reachable at an in-cluster URL host `<svc>.<ns>.svc.cluster.local` in this kit, and the port it reaches. */
function serviceAt(kit: Kit, host: string, port: number): { service: Obj; target: unknown } | string {
  const m = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(host)
  if (m === null) return `${host} is not an in-cluster Service name (<svc>.<ns>.svc.cluster.local)`
  return servicePort(kit, m[1] as string, m[2] as string, port)
}

function servicePort(kit: Kit, service: string, namespace: string, port: unknown): { service: Obj; target: unknown } | string {
  const svc = find(kit, 'Service', service, namespace)
  if (svc === undefined) return `Service ${namespace}/${service} is not in this kustomization`
  const p = objs(get(svc, 'spec', 'ports')).find((x) => x.port === port || (typeof port === 'string' && x.name === port))
  if (p === undefined) return `Service ${namespace}/${service} has no port ${String(port)}`
  return { service: svc, target: p.targetPort ?? p.port }
}

/** The Portcullis port a Service's target reaches, through the pods it selects. */
function reachesPortcullis(kit: Kit, found: { service: Obj; target: unknown }, want: number): string | undefined {
  const selector = obj(get(found.service, 'spec', 'selector'))
  const behind = pods(kit).filter((p) => selects(selector, p.labels) && ns(p.owner) === ns(found.service))
  const ports = behind.flatMap((p) => containers(p).filter((c) => isPortcullis(c.container)).map((c) => containerPort(c.container, found.target)))
  if (ports.length === 0 || ports.some((p) => p !== want)) return `${id(found.service)} target ${String(found.target)} does not reach Portcullis on port ${want}`
  return undefined
}

function backendProblems(kit: Kit, where: string, service: string, namespace: string, port: unknown, portcullis: PortcullisConfig | undefined): string[] {
  if (find(kit, 'Service', service, namespace) === undefined && EXTERNAL.services.has(service)) return []
  const found = servicePort(kit, service, namespace, port)
  if (typeof found === 'string') return [`${where}: ${found}`]
  if (portcullis !== undefined) {
    const selector = obj(get(found.service, 'spec', 'selector'))
    const portcullisBehind = pods(kit).some((p) => selects(selector, p.labels) && containers(p).some((c) => isPortcullis(c.container)))
    if (portcullisBehind) {
      const wrong = reachesPortcullis(kit, found, portcullis.port)
      if (wrong !== undefined) return [`${where}: ${wrong}`]
    }
  }
  return []
}

function checkUrl(kit: Kit, where: string, text: string | undefined, path: string, portcullis: PortcullisConfig): string[] {
  if (text === undefined) return [`${where}: no URL`]
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return [`${where}: ${text} is not a URL`]
  }
  const problems: string[] = []
  if (url.pathname !== path) problems.push(`${where}: path ${url.pathname}, want ${path}`)
  const found = serviceAt(kit, url.hostname, Number(url.port || (url.protocol === 'https:' ? 443 : 80)))
  if (typeof found === 'string') problems.push(`${where}: ${found}`)
  else {
    const wrong = reachesPortcullis(kit, found, portcullis.port)
    if (wrong !== undefined) problems.push(`${where}: ${wrong}`)
  }
  return problems
}

// ---------------------------------------------------------------------------------------------
// Scale-out: session.redis for several replicas, and the Redis it names.

/** A Redis container: its image is redis (as components/redis names it) or valkey. */
function isRedis(c: Obj): boolean {
  return /(^|\/)(redis|valkey)(:|@|$)/.test(str(c.image) ?? '')
}

type RedisSettings = Config['session']['redis']

const redisConfigured = (r: RedisSettings): boolean => r.url !== '' || r.sentinel.nodes.length > 0 || r.cluster.nodes.length > 0

/** The host:port pairs session.redis connects to (the URL, or the Sentinels, or the Cluster seeds). */
function redisEndpoints(r: RedisSettings): { host: string; port: number }[] {
  if (r.url !== '') {
    const url = new URL(r.url)
    return [{ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 6379) }]
  }
  return [...r.sentinel.nodes, ...r.cluster.nodes].map((node) => {
    const cut = node.lastIndexOf(':')
    return { host: node.slice(0, cut).replace(/^\[|\]$/g, ''), port: Number(node.slice(cut + 1)) }
  })
}

/**
 * The Service a host names as cluster DNS resolves it from a Pod in `namespace`: `svc` (the Pod's own
 * namespace), `svc.ns`, `svc.ns.svc` or `svc.ns.svc.cluster.local`; undefined for any other host.
 */
function clusterService(host: string, namespace: string): { name: string; namespace: string } | undefined {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(?:\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)(?:\.svc(?:\.cluster\.local)?)?)?\.?$/.exec(host)
  if (m === null) return undefined
  return { name: m[1] as string, namespace: m[3] ?? namespace }
}

/** One Portcullis container whose config has session.redis, and the Redis workloads its endpoints reach. */
interface RedisClient {
  at: ContainerAt
  loaded: PortcullisConfig
  reaches: Obj[]
}

/** HPAs scaling this workload. */
const hpasOf = (kit: Kit, owner: Obj): Obj[] =>
  of(kit, 'HorizontalPodAutoscaler').filter((h) => {
    const ref = obj(get(h, 'spec', 'scaleTargetRef'))
    return ref.kind === owner.kind && ref.name === name(owner) && ns(h) === ns(owner)
  })

/**
 * Several replicas (or an HPA) of a Portcullis workload need session.redis, and its endpoints must
 * reach Redis: a Service here whose port leads to a Redis container, or a documented external name.
 */
function scaleOutProblems(kit: Kit, at: ContainerAt, loaded: PortcullisConfig): { problems: string[]; client?: RedisClient } {
  const problems: string[] = []
  const cfg = loaded.config
  const owner = at.pod.owner
  const replicas = Number(get(owner, 'spec', 'replicas') ?? 1)
  const hpas = hpasOf(kit, owner)
  const several = replicas > 1 || hpas.length > 0
  const scale = `${replicas} replica${replicas === 1 ? '' : 's'}${hpas.length > 0 ? ` and an HPA up to ${Math.max(...hpas.map((h) => Number(get(h, 'spec', 'maxReplicas') ?? 1)))}` : ''}`
  if (several && cfg.session.store === 'memory') problems.push(`${at.where}: ${scale} with session.store: memory (sessions live in one replica's memory; use redis)`)
  if (!redisConfigured(cfg.session.redis)) {
    if (several) {
      problems.push(
        `${at.where}: ${scale} without session.redis: a sign-out or back-channel logout received by one replica is not honoured by the others, and concurrent refreshes on two replicas replay a rotated refresh token`,
      )
    }
    return { problems }
  }
  const r = cfg.session.redis
  if (r.password === '' && (r.url === '' || new URL(r.url).password === '') && r.tls.cert === '') {
    problems.push(`${at.where}: session.redis has no password (passwordFile from the Secret) and no client certificate`)
  }
  const reaches: Obj[] = []
  for (const ep of redisEndpoints(r)) {
    const where = `${at.where}: session.redis ${ep.host}:${ep.port}`
    const ref = clusterService(ep.host, ns(owner))
    const svc = ref === undefined ? undefined : find(kit, 'Service', ref.name, ref.namespace)
    if (svc === undefined) {
      if (ref === undefined || ref.namespace !== ns(owner) || !EXTERNAL.redis.has(ref.name)) problems.push(`${where} is neither a Service in this kustomization nor a documented external name`)
      continue
    }
    const port = objs(get(svc, 'spec', 'ports')).find((p) => p.port === ep.port)
    if (port === undefined) {
      problems.push(`${where}: ${id(svc)} has no port ${ep.port}`)
      continue
    }
    const target = port.targetPort ?? port.port
    const behind = pods(kit).filter((p) => selects(obj(get(svc, 'spec', 'selector')), p.labels) && ns(p.owner) === ns(svc))
    const redis = behind.filter((p) => containers(p).some((c) => isRedis(c.container) && containerPort(c.container, target) !== undefined))
    if (redis.length === 0 || redis.length !== behind.length) problems.push(`${where}: ${id(svc)} target ${String(target)} does not reach a Redis container port`)
    reaches.push(...redis.map((p) => p.owner))
  }
  return { problems, client: { at, loaded, reaches } }
}

/** The Secret keys a container's command and args read, by their mounted file paths. */
function filesRead(kit: Kit, at: ContainerAt): { file: string; secret: string; key: string }[] {
  const text = [...strs(at.container.command), ...strs(at.container.args)].join('\n')
  const out: { file: string; secret: string; key: string }[] = []
  for (const m of objs(at.container.volumeMounts)) {
    const volume = objs(at.pod.spec.volumes).find((v) => v.name === m.name)
    const secretName = str(get(volume, 'secret', 'secretName'))
    if (secretName === undefined) continue
    const items = objs(get(volume, 'secret', 'items'))
    const secret = find(kit, 'Secret', secretName, ns(at.pod.owner))
    const keys = items.length > 0 ? items.map((i) => ({ key: str(i.key) ?? '', path: str(i.path) ?? '' })) : Object.keys(obj(secret?.data)).map((k) => ({ key: k, path: k }))
    for (const { key, path } of keys) {
      const file = posix.join(str(m.mountPath) ?? '', path)
      if (text.includes(file)) out.push({ file, secret: secretName, key })
    }
  }
  return out
}

/** NetworkPolicy peers and ports, for the policies that select these pods' ingress. */
function ingressPolicies(kit: Kit, pod: PodOwner): Obj[] {
  return of(kit, 'NetworkPolicy').filter((np) => {
    if (ns(np) !== ns(pod.owner)) return false
    const types = strs(get(np, 'spec', 'policyTypes'))
    if (types.length > 0 && !types.includes('Ingress')) return false
    const selector = obj(get(np, 'spec', 'podSelector'))
    const labels = obj(selector.matchLabels)
    return selector.matchExpressions === undefined && Object.entries(labels).every(([k, v]) => pod.labels[k] === v)
  })
}

/**
 * Every Redis Deployment in the kit: reached by a Portcullis config, one Pod that is never doubled,
 * requirepass from the Secret key Portcullis's passwordFile reads, and a NetworkPolicy that admits the
 * Portcullis pods that use it, on its port, and nothing else.
 */
function redisProblems(kit: Kit, clients: RedisClient[]): string[] {
  const problems: string[] = []
  for (const pod of pods(kit).filter((p) => containers(p).some((c) => isRedis(c.container)))) {
    const where = id(pod.owner)
    const users = clients.filter((c) => c.reaches.includes(pod.owner))
    if (users.length === 0) problems.push(`${where}: no Portcullis config's session.redis reaches this Redis`)
    if (Number(get(pod.owner, 'spec', 'replicas') ?? 1) !== 1) problems.push(`${where}: Redis pods that do not replicate must be exactly one replica (each would hold part of the sessions and revocations)`)
    if (get(pod.owner, 'spec', 'strategy', 'type') !== 'Recreate') problems.push(`${where}: needs strategy Recreate (a rolling update runs two unreplicated Redis pods behind one Service)`)
    const redis = containers(pod).filter((c) => isRedis(c.container))
    for (const at of redis) {
      const text = [...strs(at.container.command), ...strs(at.container.args)].join('\n')
      if (!text.includes('requirepass')) problems.push(`${at.where}: runs without requirepass`)
      const reads = filesRead(kit, at)
      for (const user of users) {
        const ref = fileRefs(YAML.parse(user.loaded.text)).find((f) => f.path === 'session.redis.passwordFile')
        const theirs = ref === undefined ? undefined : secretFileAt(kit, user.at, ref.file)
        if (theirs === undefined || typeof theirs === 'string') {
          problems.push(`${at.where}: ${user.at.where} does not read the Redis password from a Secret (session.redis.passwordFile)`)
          continue
        }
        if (!reads.some((r) => r.secret === name(theirs.secret) && r.key === theirs.key)) {
          problems.push(`${at.where}: its requirepass is not read from Secret ${name(theirs.secret)} key ${theirs.key}, which ${user.at.where} reads for session.redis.passwordFile (reads: ${reads.map((r) => `${r.secret}/${r.key}`).join(', ') || 'none'})`)
        }
      }
    }
    // The NetworkPolicy: only the Portcullis pods that use this Redis, from this namespace, on its port.
    const policies = ingressPolicies(kit, pod)
    if (policies.length === 0) {
      problems.push(`${where}: no NetworkPolicy limits who reaches this Redis`)
      continue
    }
    const admitted = new Set<Obj>()
    for (const np of policies) {
      for (const rule of objs(get(np, 'spec', 'ingress'))) {
        const from = objs(rule.from)
        if (from.length === 0) problems.push(`${id(np)}: an ingress rule without from admits every source`)
        for (const peer of from) {
          if (peer.namespaceSelector !== undefined || peer.ipBlock !== undefined) problems.push(`${id(np)}: a peer with namespaceSelector or ipBlock admits more than this namespace's Portcullis pods`)
          const selector = obj(peer.podSelector)
          const labels = obj(selector.matchLabels)
          if (selector.matchExpressions !== undefined || Object.keys(labels).length === 0) {
            problems.push(`${id(np)}: a peer's podSelector must name labels (matchLabels); an empty one admits every pod of the namespace`)
            continue
          }
          for (const p of pods(kit).filter((x) => ns(x.owner) === ns(np) && Object.entries(labels).every(([k, v]) => x.labels[k] === v))) {
            if (!containers(p).some((c) => isPortcullis(c.container))) problems.push(`${id(np)}: admits ${id(p.owner)}, which runs no Portcullis`)
            admitted.add(p.owner)
          }
        }
        const ports = objs(rule.ports)
        if (ports.length === 0) problems.push(`${id(np)}: an ingress rule without ports admits every port`)
        for (const port of ports) {
          if (!redis.some((at) => containerPort(at.container, port.port) !== undefined)) problems.push(`${id(np)}: port ${String(port.port)} is no Redis container port`)
        }
      }
    }
    for (const user of users) if (!admitted.has(user.at.pod.owner)) problems.push(`${where}: its NetworkPolicy does not admit ${id(user.at.pod.owner)}, whose Portcullis uses it`)
  }
  return problems
}

/** Everything but the schemas, for one rendered kustomization. */
export function kitProblems(kit: Kit): string[] {
  const problems: string[] = []
  const configs: PortcullisConfig[] = []
  const redisClients: RedisClient[] = []

  for (const pod of pods(kit)) {
    const terminationGrace = typeof pod.spec.terminationGracePeriodSeconds === 'number' ? pod.spec.terminationGracePeriodSeconds : 30
    for (const at of containers(pod)) {
      const c = at.container
      for (const [what, ok] of SECURITY) if (!ok(c, pod.spec)) problems.push(`${at.where}: security: ${what}`)
      // Probes: every probe port is a declared port of this container.
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const p = get(c, probe, 'httpGet', 'port') ?? get(c, probe, 'tcpSocket', 'port')
        if (p !== undefined && containerPort(c, p) === undefined) problems.push(`${at.where}: ${probe} port ${String(p)} is not a declared container port`)
      }
      // ConfigMap and Secret references from env.
      for (const env of objs(c.env)) {
        const ref = obj(get(env, 'valueFrom', 'secretKeyRef'))
        if (typeof ref.name === 'string') {
          const s = find(kit, 'Secret', ref.name, ns(pod.owner))
          if (s === undefined || !Object.hasOwn(obj(s.data), str(ref.key) ?? '')) problems.push(`${at.where}: env ${str(env.name) ?? '?'}: Secret ${ref.name} key ${String(ref.key)} not in this kustomization`)
        }
        const cref = obj(get(env, 'valueFrom', 'configMapKeyRef'))
        if (typeof cref.name === 'string') {
          const m = find(kit, 'ConfigMap', cref.name, ns(pod.owner))
          if (m === undefined || !Object.hasOwn(obj(m.data), str(cref.key) ?? '')) problems.push(`${at.where}: env ${str(env.name) ?? '?'}: ConfigMap ${cref.name} key ${String(cref.key)} not in this kustomization`)
        }
      }
      for (const m of objs(c.volumeMounts)) {
        if (!objs(pod.spec.volumes).some((v) => v.name === m.name)) problems.push(`${at.where}: volumeMount ${String(m.name)} has no volume`)
      }
      if (!isPortcullis(c)) continue

      if (at.init && c.restartPolicy !== 'Always') problems.push(`${at.where}: a sidecar initContainer needs restartPolicy: Always`)
      const loaded = loadPortcullisConfig(kit, at, problems)
      if (loaded === undefined) continue
      configs.push(loaded)
      const scaleOut = scaleOutProblems(kit, at, loaded)
      problems.push(...scaleOut.problems)
      if (scaleOut.client !== undefined) redisClients.push(scaleOut.client)
      const http = objs(c.ports).filter((p) => p.name === 'http')
      if (http.length !== 1 || http[0]?.containerPort !== loaded.port) problems.push(`${at.where}: container port http is ${String(http[0]?.containerPort)}, server.listen says ${loaded.port}`)
      for (const p of objs(c.ports)) if (p.containerPort !== loaded.port) problems.push(`${at.where}: container port ${String(p.name)} ${String(p.containerPort)} is not server.listen's ${loaded.port}`)
      for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
        const httpGet = obj(get(c, probe, 'httpGet'))
        if (httpGet.path !== path) problems.push(`${at.where}: ${probe} path ${String(httpGet.path)}, want ${path}`)
        if (containerPort(c, httpGet.port) !== loaded.port) problems.push(`${at.where}: ${probe} port ${String(httpGet.port)} is not server.listen's ${loaded.port}`)
      }
      const startup = get(c, 'startupProbe', 'httpGet', 'port')
      if (startup !== undefined && containerPort(c, startup) !== loaded.port) problems.push(`${at.where}: startupProbe port ${String(startup)} is not server.listen's ${loaded.port}`)
      if (terminationGrace * 1000 <= loaded.config.server.shutdownTimeout) problems.push(`${at.where}: terminationGracePeriodSeconds ${terminationGrace} is not above server.shutdownTimeout`)
    }
    // Volumes: every ConfigMap/Secret volume (and its items) resolves in this kustomization.
    for (const v of objs(pod.spec.volumes)) {
      for (const [kind, field, nameKey] of [['ConfigMap', 'configMap', 'name'], ['Secret', 'secret', 'secretName']] as const) {
        const src = obj(v[field])
        const n = str(src[nameKey])
        if (n === undefined) continue
        const target = find(kit, kind, n, ns(pod.owner))
        if (target === undefined) {
          problems.push(`${id(pod.owner)}: volume ${String(v.name)}: ${kind} ${n} is not in this kustomization`)
          continue
        }
        for (const item of objs(src.items)) {
          if (!Object.hasOwn(obj(target.data), str(item.key) ?? '')) problems.push(`${id(pod.owner)}: volume ${String(v.name)}: ${kind} ${n} has no key ${String(item.key)}`)
        }
      }
    }
  }
  const portcullis = configs[0]
  if (portcullis === undefined) problems.push(`${kit.dir}: no Portcullis container with a loadable config`)
  problems.push(...redisProblems(kit, redisClients))

  // Services: selectors match pods; targetPorts resolve; to Portcullis's port when Portcullis is behind.
  for (const svc of of(kit, 'Service')) {
    const selector = obj(get(svc, 'spec', 'selector'))
    const behind = pods(kit).filter((p) => selects(selector, p.labels) && ns(p.owner) === ns(svc))
    if (behind.length === 0) {
      problems.push(`${id(svc)}: selector ${JSON.stringify(selector)} matches no pod template`)
      continue
    }
    for (const p of objs(get(svc, 'spec', 'ports'))) {
      const target = p.targetPort ?? p.port
      for (const pod of behind) {
        const all = containers(pod)
        if (!all.some((c) => containerPort(c.container, target) !== undefined)) problems.push(`${id(svc)}: targetPort ${String(target)} is no container port of ${id(pod.owner)}`)
        if (portcullis !== undefined && all.some((c) => isPortcullis(c.container))) {
          const wrong = reachesPortcullis(kit, { service: svc, target }, portcullis.port)
          if (wrong !== undefined) problems.push(wrong)
        }
      }
    }
  }

  // PDB and HPA target workloads in this kustomization.
  for (const pdb of of(kit, 'PodDisruptionBudget')) {
    const selector = obj(get(pdb, 'spec', 'selector', 'matchLabels'))
    const targets = pods(kit).filter((p) => selects(selector, p.labels) && ns(p.owner) === ns(pdb))
    if (targets.length === 0) problems.push(`${id(pdb)}: selector matches no workload`)
    const minAvailable = get(pdb, 'spec', 'minAvailable')
    for (const p of targets) {
      if (typeof minAvailable === 'number' && Number(get(p.owner, 'spec', 'replicas') ?? 1) <= minAvailable) {
        problems.push(`${id(pdb)}: minAvailable ${minAvailable} with ${String(get(p.owner, 'spec', 'replicas') ?? 1)} replicas of ${id(p.owner)} blocks every eviction`)
      }
    }
  }
  for (const hpa of of(kit, 'HorizontalPodAutoscaler')) {
    const ref = obj(get(hpa, 'spec', 'scaleTargetRef'))
    const target = find(kit, str(ref.kind) ?? '', str(ref.name) ?? '', ns(hpa))
    if (target === undefined || ref.apiVersion !== target.apiVersion) problems.push(`${id(hpa)}: scaleTargetRef ${String(ref.kind)}/${String(ref.name)} is not in this kustomization`)
    const min = Number(get(hpa, 'spec', 'minReplicas') ?? 1)
    if (of(kit, 'PodDisruptionBudget').length > 0 && min < 2) problems.push(`${id(hpa)}: minReplicas ${min} below the 2 the PDB needs`)
  }
  if (pods(kit).length > 0 && (of(kit, 'PodDisruptionBudget').length === 0 || of(kit, 'HorizontalPodAutoscaler').length === 0)) problems.push(`${kit.dir}: needs a PodDisruptionBudget and a HorizontalPodAutoscaler`)

  if (portcullis === undefined) return problems
  const cfg = portcullis.config
  const identityHeaders = Object.keys(cfg.identity.headers)
  const prefix = cfg.server.authPrefix
  const publicHost = new URL(cfg.server.publicUrl).host
  const forwardAuth =
    of(kit, 'Ingress').some((i) => str(obj(get(i, 'metadata', 'annotations'))['nginx.ingress.kubernetes.io/auth-url']) !== undefined) ||
    ['Middleware', 'SecurityPolicy', 'AuthorizationPolicy'].some((k) => of(kit, k).length > 0)
  if (forwardAuth && cfg.server.trustedProxies.length === 0) problems.push(`${kit.dir}: forward-auth needs server.trustedProxies (the ingress controller's pods)`)

  // Ingresses (ingress-nginx): backends, TLS Secrets, the auth annotations.
  let servesPrefix = false
  for (const ing of of(kit, 'Ingress')) {
    for (const tls of objs(get(ing, 'spec', 'tls'))) {
      const s = str(tls.secretName)
      if (s !== undefined && !EXTERNAL.tlsSecrets.has(s) && find(kit, 'Secret', s, ns(ing)) === undefined) problems.push(`${id(ing)}: TLS Secret ${s} is neither here nor a documented external name`)
    }
    for (const rule of objs(get(ing, 'spec', 'rules'))) {
      for (const p of objs(get(rule, 'http', 'paths'))) {
        const svc = obj(get(p, 'backend', 'service'))
        const port = get(svc, 'port', 'number') ?? get(svc, 'port', 'name')
        problems.push(...backendProblems(kit, `${id(ing)} ${String(p.path)}`, str(svc.name) ?? '?', ns(ing), port, portcullis))
        if (rule.host === publicHost && p.path === prefix && find(kit, 'Service', str(svc.name) ?? '', ns(ing)) !== undefined) servesPrefix = true
      }
    }
    const a = obj(get(ing, 'metadata', 'annotations'))
    const authUrl = str(a['nginx.ingress.kubernetes.io/auth-url'])
    if (authUrl === undefined) continue
    problems.push(...checkUrl(kit, `${id(ing)} auth-url`, authUrl, `${prefix}/auth`, portcullis))
    const signin = str(a['nginx.ingress.kubernetes.io/auth-signin'])
    const hosts = objs(get(ing, 'spec', 'rules')).map((r) => str(r.host))
    const sameHost = signin === `https://$host${prefix}/start?rd=$escaped_request_uri` && hosts.every((h) => h === publicHost)
    const ownHost = signin === `${cfg.server.publicUrl}${prefix}/start`
    if (!sameHost && !ownHost) problems.push(`${id(ing)}: auth-signin ${String(signin)} does not reach ${prefix}/start on server.publicUrl's host ${publicHost}`)
    const responseHeaders = (str(a['nginx.ingress.kubernetes.io/auth-response-headers']) ?? '').split(',').map((h) => h.trim()).filter((h) => h !== '')
    if (!sameSet(responseHeaders, identityHeaders)) problems.push(`${id(ing)}: auth-response-headers ${responseHeaders.join(',')} are not identity.headers ${identityHeaders.join(',')}`)
    if (!/^\d+k$/.test(str(a['nginx.ingress.kubernetes.io/proxy-buffer-size']) ?? '') || Number.parseInt(str(a['nginx.ingress.kubernetes.io/proxy-buffer-size']) ?? '0', 10) < 8) {
      problems.push(`${id(ing)}: proxy-buffer-size must be set (8k or more)`)
    }
  }

  // Traefik.
  for (const mw of of(kit, 'Middleware')) {
    const fa = obj(get(mw, 'spec', 'forwardAuth'))
    problems.push(...checkUrl(kit, `${id(mw)} address`, str(fa.address), `${prefix}/verify`, portcullis))
    if (fa.trustForwardHeader !== true) problems.push(`${id(mw)}: trustForwardHeader must be true`)
    if (!sameSet(strs(fa.authResponseHeaders), identityHeaders)) problems.push(`${id(mw)}: authResponseHeaders are not identity.headers`)
    if (!strs(fa.addAuthCookiesToResponse).includes(sessionCookieName(cfg))) problems.push(`${id(mw)}: addAuthCookiesToResponse lacks the session cookie ${sessionCookieName(cfg)}`)
  }
  for (const route of of(kit, 'IngressRoute')) {
    const tlsSecret = str(get(route, 'spec', 'tls', 'secretName'))
    if (tlsSecret !== undefined && !EXTERNAL.tlsSecrets.has(tlsSecret)) problems.push(`${id(route)}: TLS Secret ${tlsSecret} is not a documented external name`)
    for (const r of objs(get(route, 'spec', 'routes'))) {
      for (const m of objs(r.middlewares)) {
        if (find(kit, 'Middleware', str(m.name) ?? '', str(m.namespace) ?? ns(route)) === undefined) problems.push(`${id(route)}: middleware ${String(m.name)} is not in this kustomization`)
      }
      for (const s of objs(r.services)) {
        problems.push(...backendProblems(kit, `${id(route)} ${String(r.match)}`, str(s.name) ?? '?', str(s.namespace) ?? ns(route), s.port, portcullis))
        if (String(r.match).includes(`Host(\`${publicHost}\`)`) && String(r.match).includes(`PathPrefix(\`${prefix}\`)`) && find(kit, 'Service', str(s.name) ?? '', ns(route)) !== undefined) servesPrefix = true
      }
    }
  }

  // Gateway API and Envoy Gateway.
  for (const route of of(kit, 'HTTPRoute')) {
    for (const parent of objs(get(route, 'spec', 'parentRefs'))) {
      if (!EXTERNAL.gateways.has(`${str(parent.namespace) ?? ns(route)}/${String(parent.name)}`)) problems.push(`${id(route)}: Gateway ${String(parent.name)} is not a documented external name`)
    }
    for (const rule of objs(get(route, 'spec', 'rules'))) {
      for (const b of objs(rule.backendRefs)) {
        problems.push(...backendProblems(kit, id(route), str(b.name) ?? '?', str(b.namespace) ?? ns(route), b.port, portcullis))
        const paths = objs(rule.matches).map((m) => get(m, 'path', 'value'))
        if (strs(get(route, 'spec', 'hostnames')).includes(publicHost) && paths.includes(prefix) && find(kit, 'Service', str(b.name) ?? '', ns(route)) !== undefined) servesPrefix = true
      }
    }
  }
  for (const sp of of(kit, 'SecurityPolicy')) {
    for (const ref of objs(get(sp, 'spec', 'targetRefs'))) {
      if (find(kit, str(ref.kind) ?? '', str(ref.name) ?? '', ns(sp)) === undefined) problems.push(`${id(sp)}: target ${String(ref.kind)}/${String(ref.name)} is not in this kustomization`)
    }
    const http = obj(get(sp, 'spec', 'extAuth', 'http'))
    for (const b of objs(http.backendRefs)) {
      const found = servicePort(kit, str(b.name) ?? '?', str(b.namespace) ?? ns(sp), b.port)
      if (typeof found === 'string') problems.push(`${id(sp)}: backend: ${found}`)
      else {
        const wrong = reachesPortcullis(kit, found, portcullis.port)
        if (wrong !== undefined) problems.push(`${id(sp)}: ${wrong}`)
      }
    }
    if (http.path !== `${prefix}/verify`) problems.push(`${id(sp)}: extAuth.http.path ${String(http.path)}, want ${prefix}/verify`)
    if (!sameSet(strs(http.headersToBackend), identityHeaders)) problems.push(`${id(sp)}: headersToBackend are not identity.headers`)
    const toAuth = lower(strs(get(sp, 'spec', 'extAuth', 'headersToExtAuth')))
    for (const h of ['cookie', 'accept', 'x-forwarded-proto']) if (!toAuth.includes(h)) problems.push(`${id(sp)}: headersToExtAuth lacks ${h}`)
  }

  // Istio: the AuthorizationPolicy's provider is in the mesh config fragment, which names our Service.
  for (const ap of of(kit, 'AuthorizationPolicy')) {
    if (get(ap, 'spec', 'action') !== 'CUSTOM') continue
    const providerName = str(get(ap, 'spec', 'provider', 'name'))
    const provider = objs(get(kit.meshConfig, 'meshConfig', 'extensionProviders')).find((p) => p.name === providerName)
    if (provider === undefined) {
      problems.push(`${id(ap)}: provider ${String(providerName)} is not in the overlay's mesh-config.yaml`)
      continue
    }
    const http = obj(provider.envoyExtAuthzHttp)
    const found = serviceAt(kit, str(http.service) ?? '', Number(http.port))
    if (typeof found === 'string') problems.push(`${id(ap)}: mesh provider: ${found}`)
    else {
      const wrong = reachesPortcullis(kit, found, portcullis.port)
      if (wrong !== undefined) problems.push(`${id(ap)}: mesh provider: ${wrong}`)
    }
    if (http.pathPrefix !== `${prefix}/verify`) problems.push(`${id(ap)}: mesh provider pathPrefix ${String(http.pathPrefix)}, want ${prefix}/verify`)
    if (!sameSet(strs(http.headersToUpstreamOnAllow), identityHeaders)) problems.push(`${id(ap)}: headersToUpstreamOnAllow are not identity.headers`)
    const inCheck = lower(strs(http.includeRequestHeadersInCheck))
    for (const h of ['cookie', 'accept', 'x-forwarded-proto']) if (!inCheck.includes(h)) problems.push(`${id(ap)}: includeRequestHeadersInCheck lacks ${h}`)
    // A CUSTOM rule naming hosts or paths leaves the others unchecked: one empty rule checks all.
    const rules = objs(get(ap, 'spec', 'rules'))
    if (rules.length !== 1 || Object.keys(rules[0] ?? {}).length !== 0) problems.push(`${id(ap)}: rules must be one empty rule (check every request)`)
  }

  // Forward-auth: the login endpoints must be routed to Portcullis on server.publicUrl's host.
  if (forwardAuth && !servesPrefix && of(kit, 'AuthorizationPolicy').length === 0) problems.push(`${kit.dir}: nothing routes ${publicHost}${prefix} to Portcullis`)
  return problems
}

// ---------------------------------------------------------------------------------------------
// The tests.

const dirs = kustomizations()
const components = componentDirs()
/** Every rendering: each kustomization as shipped, and with each component added. */
const variants: { key: string; dir: string; component?: string }[] = [
  ...dirs.map((dir) => ({ key: dir, dir })),
  ...components.flatMap((component) => dirs.map((dir) => ({ key: `${dir}+${component}`, dir, component }))),
]
const haveKubectl = existsSync(KUBECTL) && spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8' }).status === 0
const rendered = new Map<string, Kit>()
/** Where kubectl is absent, the render-based tests are skipped with this reason (tap reports it). */
const noKubectl: string | false = haveKubectl ? false : `${KUBECTL} is not available here: rendering and the cross-object checks are skipped (the raw files are still schema-checked)`
if (noKubectl !== false) t.comment(noKubectl)

t.test('the kit has a base, the five overlays and the redis component', async (t) => {
  t.same(dirs, ['base', 'overlays/envoy-gateway', 'overlays/ingress-nginx', 'overlays/istio', 'overlays/sidecar', 'overlays/traefik'])
  t.same(components, ['components/redis'])
  for (const c of components) t.equal(obj(YAML.parse(readFileSync(join(KIT, c, 'kustomization.yaml'), 'utf8'))).kind, 'Component', `${c} is a Kustomize Component`)
})

t.test('raw resource files parse and pass their schemas (no kubectl needed)', async (t) => {
  for (const dir of [...dirs, ...components]) {
    for (const file of rawResourceFiles(dir)) {
      // Without kustomize the namespace is not set yet: give it the kustomization's, as kustomize would.
      const k = obj(YAML.parse(readFileSync(join(KIT, dir, 'kustomization.yaml'), 'utf8')))
      for (const o of parseObjects(readFileSync(file, 'utf8'), file)) {
        const copy = clone(o)
        // A component takes the namespace of the kustomization that includes it.
        const namespace = typeof k.namespace === 'string' ? k.namespace : 'portcullis'
        if (o.kind !== 'Namespace') obj(copy.metadata).namespace ??= namespace
        t.same(schemaProblems(copy), [], `${dir}/${posix.basename(file)} ${id(copy)}`)
      }
    }
  }
})

for (const { key, dir, component } of variants) {
  t.test(`${key}: rendered with kubectl kustomize and validated`, { skip: noKubectl }, async (t) => {
    const objects = component === undefined ? render(dir) : renderWithComponent(dir, component)
    const meshFile = join(KIT, dir, 'mesh-config.yaml')
    const kit: Kit = { dir: key, objects, ...(existsSync(meshFile) ? { meshConfig: YAML.parse(readFileSync(meshFile, 'utf8')) as unknown } : {}) }
    rendered.set(key, kit)
    t.ok(objects.length >= 7, `${dir} renders ${objects.length} objects`)
    for (const o of objects) t.same(schemaProblems(o), [], `schema: ${id(o)}`)
    if (kit.meshConfig !== undefined) t.same(ajvProblems('mesh-config.yaml', meshConfigValidator, kit.meshConfig), [], 'mesh-config.yaml schema')
    t.same(kitProblems(kit), [], `${dir}: references, ports, security and config agree`)
    // The kit's names: generated ConfigMap/Secret names carry kustomize's hash and are referenced by it.
    for (const o of [...of(kit, 'ConfigMap'), ...of(kit, 'Secret')]) t.match(name(o), /-[a-z0-9]{10}$/, `${id(o)} has a content hash`)
    const sidecars = pods(kit).flatMap((p) => containers(p).filter((c) => c.init && isPortcullis(c.container)))
    if (dir === 'overlays/sidecar') {
      t.equal(sidecars.length, 1, 'Portcullis is a native sidecar (an initContainer)')
      t.equal(sidecars[0]?.container.restartPolicy, 'Always', 'with restartPolicy: Always')
      const app = pods(kit).find((p) => containers(p).some((c) => isPortcullis(c.container)))?.spec
      const appContainers = objs(app?.containers)
      t.ok(appContainers.length > 0 && appContainers.every((c) => arr(c.ports).length === 0), 'the app declares no container port (it listens on loopback)')
      const configText = str(obj(of(kit, 'ConfigMap')[0]?.data)[CONFIG_KEY]) ?? '{}'
      const upstreams = objs(get(YAML.parse(configText), 'routes')).map((r) => str(r.upstream) ?? '')
      t.ok(upstreams.length > 0 && upstreams.every((u) => new URL(u).hostname === '127.0.0.1'), 'every route goes to the app on 127.0.0.1')
      t.same(of(kit, 'HorizontalPodAutoscaler').map((h) => get(h, 'spec', 'scaleTargetRef', 'name')), ['legacy-app'], 'the HPA scales the app Deployment')
    } else {
      t.equal(sidecars.length, 0, 'no sidecar outside the sidecar overlay')
    }
    const placeholders = of(kit, 'Secret').flatMap((s) => Object.keys(obj(s.data)).map((k) => secretValue(s, k)))
    t.ok(placeholders.length > 0 && placeholders.every((v) => v.startsWith('CHANGE-ME')), 'the Secrets hold marked placeholders only')
    // Scale-out: every Portcullis here runs several replicas, so each has session.redis, and a Redis
    // is in the rendering exactly when the component is added (the shipped kit names the operator's).
    const portcullisPods = pods(kit).filter((p) => containers(p).some((c) => isPortcullis(c.container)))
    t.ok(portcullisPods.length > 0 && portcullisPods.every((p) => Number(get(p.owner, 'spec', 'replicas') ?? 1) > 1 && hpasOf(kit, p.owner).length > 0), 'Portcullis runs several replicas with an HPA')
    const redisUrls = portcullisPods.map((p) => str(get(YAML.parse(configTextOf(kit, p)), 'session', 'redis', 'url')))
    t.same(redisUrls, portcullisPods.map(() => 'redis://portcullis-redis:6379'), 'session.redis.url names portcullis-redis')
    const redisPods = pods(kit).filter((p) => containers(p).some((c) => isRedis(c.container)))
    if (component === 'components/redis') {
      t.equal(redisPods.length, 1, 'the component adds one Redis Deployment')
      t.equal(of(kit, 'NetworkPolicy').length, 1, 'and its NetworkPolicy')
      t.ok(find(kit, 'Service', 'portcullis-redis', ns(portcullisPods[0]?.owner ?? {})) !== undefined, 'and the Service portcullis-redis next to Portcullis')
      t.equal(redisPods[0]?.spec.enableServiceLinks, false, 'Redis gets no service-link variables')
    } else {
      t.equal(redisPods.length, 0, 'no Redis without the component: session.redis names the Redis you provide')
    }
    t.ok(portcullisPods.every((p) => p.spec.enableServiceLinks === false), 'Portcullis gets no service-link variables')
  })
}

// ---------------------------------------------------------------------------------------------
// Self-tests: the checks fail on mutated copies of the rendered objects.

type Mutation = (kit: Kit) => void
const portcullisContainer = (kit: Kit): Obj => {
  const c = pods(kit).flatMap((p) => containers(p)).find((c) => isPortcullis(c.container))
  if (c === undefined) throw new Error('no Portcullis container')
  return c.container
}
const first = (kit: Kit, kind: string): Obj => {
  const o = of(kit, kind)[0]
  if (o === undefined) throw new Error(`no ${kind}`)
  return o
}
const setConfig = (kit: Kit, edit: (text: string) => string): void => {
  const cm = first(kit, 'ConfigMap')
  const data = obj(cm.data)
  data[CONFIG_KEY] = edit(str(data[CONFIG_KEY]) ?? '')
}

/** Edits the first ConfigMap's config.yaml as a YAML tree (comments do not matter in a mutated copy). */
const editConfig = (kit: Kit, edit: (tree: Obj) => void): void =>
  setConfig(kit, (text) => {
    const tree = obj(YAML.parse(text))
    edit(tree)
    return YAML.stringify(tree)
  })
const sessionOf = (tree: Obj): Obj => obj(tree.session)
const redisOf = (tree: Obj): Obj => obj(sessionOf(tree).redis)
const deployment = (kit: Kit, n: string): Obj => {
  const d = of(kit, 'Deployment').find((o) => name(o) === n)
  if (d === undefined) throw new Error(`no Deployment ${n}`)
  return d
}
const podSpec = (d: Obj): Obj => obj(get(d, 'spec', 'template', 'spec'))
const redisContainer = (kit: Kit): Obj => {
  const c = objs(podSpec(deployment(kit, 'portcullis-redis')).containers).find(isRedis)
  if (c === undefined) throw new Error('no Redis container')
  return c
}
const redisPeer = (kit: Kit): Obj => obj(objs(objs(get(first(kit, 'NetworkPolicy'), 'spec', 'ingress'))[0]?.from)[0])
const WITH_REDIS = 'base+components/redis'

const MUTATIONS: [string, string, Mutation, RegExp][] = [
  ['base', 'a probe on an undeclared port', (k) => (obj(get(portcullisContainer(k), 'livenessProbe', 'httpGet')).port = 'metrics'), /livenessProbe port metrics is not a declared container port/],
  ['base', 'a probe on the wrong number', (k) => (obj(get(portcullisContainer(k), 'readinessProbe', 'httpGet')).port = 8080), /readinessProbe port 8080/],
  ['base', 'the container port off server.listen', (k) => (objs(portcullisContainer(k).ports).forEach((p) => (p.containerPort = 4181))), /container port http is 4181, server.listen says 4180/],
  ['base', 'server.listen moved, manifests not', (k) => setConfig(k, (t) => t.replace('0.0.0.0:4180', '0.0.0.0:9000')), /server.listen says 9000/],
  ['base', 'a Service targetPort elsewhere', (k) => (objs(get(first(k, 'Service'), 'spec', 'ports'))[0] ?? {}).targetPort = 8080, /targetPort 8080 is no container port/],
  ['base', 'a Service selector matching nothing', (k) => (obj(get(first(k, 'Service'), 'spec')).selector = { app: 'nothing' }), /matches no pod template/],
  ['base', 'a writable root filesystem', (k) => (obj(portcullisContainer(k).securityContext).readOnlyRootFilesystem = false), /security: readOnlyRootFilesystem/],
  ['base', 'privilege escalation', (k) => delete obj(portcullisContainer(k).securityContext).allowPrivilegeEscalation, /security: allowPrivilegeEscalation/],
  ['base', 'capabilities kept', (k) => (obj(portcullisContainer(k).securityContext).capabilities = { drop: ['NET_RAW'] }), /security: capabilities/],
  ['base', 'no resource limits', (k) => delete obj(portcullisContainer(k).resources).limits, /security: resources.limits/],
  ['base', 'a Secret without the cookie secret', (k) => delete obj(first(k, 'Secret').data)['cookie-secret'], /Secret portcullis-secrets-\w+ has no key cookie-secret/],
  ['base', 'a *File path outside the Secret mount', (k) => setConfig(k, (t) => t.replace('/var/run/secrets/portcullis/client-secret', '/etc/secrets/client-secret')), /provider.clientSecretFile: no volumeMount .* contains \/etc\/secrets\/client-secret/],
  ['base', 'a placeholder secret too short for the config', (k) => (obj(first(k, 'Secret').data)['cookie-secret'] = Buffer.from('short').toString('base64')), /session.secrets.*at least 32 bytes/],
  ['base', 'a ConfigMap volume naming a missing ConfigMap', (k) => objs(pods(k)[0]?.spec.volumes).forEach((v) => isObj(v.configMap) && (v.configMap.name = 'gone')), /ConfigMap gone is not in this kustomization/],
  ['base', 'the HPA aiming at a missing Deployment', (k) => (obj(get(first(k, 'HorizontalPodAutoscaler'), 'spec', 'scaleTargetRef')).name = 'other'), /scaleTargetRef Deployment\/other is not in this kustomization/],
  ['base', 'one replica under minAvailable 1', (k) => (obj(first(k, 'Deployment').spec).replicas = 1), /minAvailable 1 with 1 replicas .* blocks every eviction/],
  ['base', 'a grace period shorter than shutdownTimeout', (k) => (obj(get(first(k, 'Deployment'), 'spec', 'template', 'spec')).terminationGracePeriodSeconds = 10), /terminationGracePeriodSeconds 10/],
  ['overlays/sidecar', 'a sidecar without restartPolicy: Always', (k) => delete portcullisContainer(k).restartPolicy, /needs restartPolicy: Always/],
  ['overlays/ingress-nginx', 'auth-url on the wrong path', (k) => (obj(get(first(k, 'Ingress'), 'metadata', 'annotations'))['nginx.ingress.kubernetes.io/auth-url'] = 'http://portcullis.portcullis.svc.cluster.local:4180/oauth2/verify'), /auth-url: path \/oauth2\/verify, want \/oauth2\/auth/],
  ['overlays/ingress-nginx', 'auth-url to a Service not here', (k) => (obj(get(first(k, 'Ingress'), 'metadata', 'annotations'))['nginx.ingress.kubernetes.io/auth-url'] = 'http://other.portcullis.svc.cluster.local:4180/oauth2/auth'), /Service portcullis\/other is not in this kustomization/],
  ['overlays/ingress-nginx', 'an identity header missing from auth-response-headers', (k) => (obj(get(first(k, 'Ingress'), 'metadata', 'annotations'))['nginx.ingress.kubernetes.io/auth-response-headers'] = 'X-Auth-Request-User'), /auth-response-headers/],
  ['overlays/ingress-nginx', 'no trusted proxies', (k) => setConfig(k, (t) => t.replace('trustedProxies: [10.244.0.0/16]', 'trustedProxies: []')), /forward-auth needs server.trustedProxies/],
  ['overlays/traefik', 'the Middleware on the nginx endpoint', (k) => (obj(get(first(k, 'Middleware'), 'spec', 'forwardAuth')).address = 'http://portcullis.portcullis.svc.cluster.local:4180/oauth2/auth'), /address: path \/oauth2\/auth, want \/oauth2\/verify/],
  ['overlays/traefik', 'the wrong session cookie name', (k) => (obj(get(first(k, 'Middleware'), 'spec', 'forwardAuth')).addAuthCookiesToResponse = ['_oauth2_proxy']), /lacks the session cookie _portcullis/],
  ['overlays/traefik', 'a middleware that is not there', (k) => objs(get(first(k, 'IngressRoute'), 'spec', 'routes')).forEach((r) => (r.middlewares = [{ name: 'gone' }])), /middleware gone is not in this kustomization/],
  ['overlays/envoy-gateway', 'a SecurityPolicy backend not here', (k) => objs(get(first(k, 'SecurityPolicy'), 'spec', 'extAuth', 'http', 'backendRefs')).forEach((b) => (b.name = 'authz')), /backend: Service portcullis\/authz is not in this kustomization/],
  ['overlays/envoy-gateway', 'a SecurityPolicy backend on the wrong port', (k) => objs(get(first(k, 'SecurityPolicy'), 'spec', 'extAuth', 'http', 'backendRefs')).forEach((b) => (b.port = 80)), /has no port 80/],
  ['overlays/envoy-gateway', 'no cookie in the check', (k) => (obj(get(first(k, 'SecurityPolicy'), 'spec', 'extAuth')).headersToExtAuth = ['accept', 'x-forwarded-proto']), /headersToExtAuth lacks cookie/],
  ['overlays/istio', 'a CUSTOM rule limited to one host', (k) => (obj(first(k, 'AuthorizationPolicy').spec).rules = [{ to: [{ operation: { hosts: ['app.example.com'] } }] }]), /one empty rule/],
  ['overlays/istio', 'a provider missing from the mesh config', (k) => (obj(get(first(k, 'AuthorizationPolicy'), 'spec', 'provider')).name = 'other'), /provider other is not in the overlay's mesh-config.yaml/],
  // Scale-out: several replicas need session.redis, and it must reach a Redis with a password.
  ['base', 'several replicas without session.redis', (k) => editConfig(k, (t) => ((sessionOf(t).store = 'cookie'), delete sessionOf(t).redis)), /2 replicas and an HPA up to 6 without session.redis: a sign-out or back-channel logout/],
  ['base', 'an HPA (no replicas field) without session.redis', (k) => (delete obj(deployment(k, 'portcullis').spec).replicas, editConfig(k, (t) => ((sessionOf(t).store = 'cookie'), delete sessionOf(t).redis))), /1 replica and an HPA up to 6 without session.redis/],
  ['overlays/sidecar', 'the memory store on several Pods', (k) => editConfig(k, (t) => (sessionOf(t).store = 'memory')), /with session.store: memory/],
  ['overlays/ingress-nginx', 'the replaced config without session.redis', (k) => editConfig(k, (t) => ((sessionOf(t).store = 'cookie'), delete sessionOf(t).redis)), /without session.redis/],
  ['base', 'a Secret without the Redis password', (k) => delete obj(first(k, 'Secret').data)['redis-password'], /session.redis.passwordFile: .*Secret portcullis-secrets-\w+ has no key redis-password/],
  ['base', 'the Redis password not projected into the mount', (k) => objs(podSpec(deployment(k, 'portcullis')).volumes).forEach((v) => isObj(v.secret) && (v.secret.items = objs(v.secret.items).filter((i) => i.key !== 'redis-password'))), /session.redis.passwordFile: .*projects no item at path redis-password/],
  ['base', 'session.redis without a password', (k) => editConfig(k, (t) => delete redisOf(t).passwordFile), /session.redis has no password/],
  ['base', 'session.redis on an undocumented host', (k) => editConfig(k, (t) => (redisOf(t).url = 'redis://cache:6379')), /session.redis cache:6379 is neither a Service in this kustomization nor a documented external name/],
  ['overlays/sidecar', 'session.redis on a Service of another namespace', (k) => editConfig(k, (t) => (redisOf(t).url = 'redis://portcullis-redis.redis.svc.cluster.local:6379')), /portcullis-redis.redis.svc.cluster.local:6379 is neither/],
  // The component's Redis: its Service, one Pod, its password, its NetworkPolicy.
  [WITH_REDIS, 'the Redis Service on another port', (k) => objs(get(find(k, 'Service', 'portcullis-redis', 'portcullis'), 'spec', 'ports')).forEach((p) => (p.port = 6380)), /session.redis portcullis-redis:6379: Service\/portcullis\/portcullis-redis has no port 6379/],
  [WITH_REDIS, 'the Redis Service aimed past Redis', (k) => objs(get(find(k, 'Service', 'portcullis-redis', 'portcullis'), 'spec', 'ports')).forEach((p) => (p.targetPort = 6380)), /target 6380 does not reach a Redis container port/],
  [WITH_REDIS, 'session.redis on the wrong port', (k) => editConfig(k, (t) => (redisOf(t).url = 'redis://portcullis-redis:6380')), /portcullis-redis has no port 6380/],
  [WITH_REDIS, 'a Redis no config uses', (k) => editConfig(k, (t) => (redisOf(t).url = 'redis://other-redis:6379')), /portcullis-redis: no Portcullis config's session.redis reaches this Redis/],
  [WITH_REDIS, 'two Redis replicas', (k) => (obj(deployment(k, 'portcullis-redis').spec).replicas = 2), /exactly one replica/],
  [WITH_REDIS, 'a rolling update of Redis', (k) => (obj(deployment(k, 'portcullis-redis').spec).strategy = { type: 'RollingUpdate' }), /needs strategy Recreate/],
  [WITH_REDIS, 'Redis without requirepass', (k) => (redisContainer(k).args = ['exec redis-server --save ""']), /runs without requirepass/],
  [WITH_REDIS, 'Redis reading another Secret key', (k) => objs(podSpec(deployment(k, 'portcullis-redis')).volumes).forEach((v) => isObj(v.secret) && objs(v.secret.items).forEach((i) => (i.key = 'cookie-secret'))), /requirepass is not read from Secret portcullis-secrets-\w+ key redis-password/],
  [WITH_REDIS, 'Redis with a writable root filesystem', (k) => (obj(redisContainer(k).securityContext).readOnlyRootFilesystem = false), /portcullis-redis container redis: security: readOnlyRootFilesystem/],
  [WITH_REDIS, 'Redis as root', (k) => ((obj(redisContainer(k).securityContext).runAsNonRoot = false), (obj(podSpec(deployment(k, 'portcullis-redis')).securityContext).runAsUser = 0)), /portcullis-redis container redis: security: runAsNonRoot/],
  [WITH_REDIS, 'no NetworkPolicy', (k) => (k.objects = k.objects.filter((o) => o.kind !== 'NetworkPolicy')), /no NetworkPolicy limits who reaches this Redis/],
  [WITH_REDIS, 'a NetworkPolicy for other pods', (k) => (redisPeer(k).podSelector = { matchLabels: { 'app.kubernetes.io/name': 'app' } }), /does not admit Deployment\/portcullis\/portcullis, whose Portcullis uses it/],
  [WITH_REDIS, 'a NetworkPolicy admitting the whole namespace', (k) => (redisPeer(k).podSelector = {}), /an empty one admits every pod/],
  [WITH_REDIS, 'a NetworkPolicy admitting other namespaces', (k) => (redisPeer(k).namespaceSelector = {}), /namespaceSelector or ipBlock/],
  [WITH_REDIS, 'a NetworkPolicy rule without from', (k) => objs(get(first(k, 'NetworkPolicy'), 'spec', 'ingress')).forEach((r) => delete r.from), /without from admits every source/],
  [WITH_REDIS, 'a NetworkPolicy on every port', (k) => objs(get(first(k, 'NetworkPolicy'), 'spec', 'ingress')).forEach((r) => delete r.ports), /without ports admits every port/],
  [WITH_REDIS, 'a NetworkPolicy on another port', (k) => objs(get(first(k, 'NetworkPolicy'), 'spec', 'ingress')).forEach((r) => (r.ports = [{ port: 6380, protocol: 'TCP' }])), /port 6380 is no Redis container port/],
  [WITH_REDIS, 'a NetworkPolicy admitting a pod without Portcullis', (k) => (obj(get(deployment(k, 'portcullis-redis'), 'spec', 'template', 'metadata', 'labels'))['portcullis-redis-client'] = 'true'), /admits Deployment\/portcullis\/portcullis-redis, which runs no Portcullis/],
  ['overlays/sidecar+components/redis', 'app Pods without the client label', (k) => delete obj(get(deployment(k, 'legacy-app'), 'spec', 'template', 'metadata', 'labels'))['portcullis-redis-client'], /does not admit Deployment\/legacy\/legacy-app/],
]

t.test('self-tests: each check fails on a mutated copy', { skip: noKubectl }, async (t) => {
  for (const [dir, what, mutate, expected] of MUTATIONS) {
    const kit = rendered.get(dir)
    if (kit === undefined) {
      t.fail(`${dir} was not rendered`)
      continue
    }
    const copy: Kit = clone(kit)
    mutate(copy)
    const problems = kitProblems(copy)
    t.ok(problems.some((p) => expected.test(p)), `${dir}: ${what} -> ${expected}`, { problems })
  }
})

t.test('the README recipes for your own Redis load: TLS with a CA from the Secret, and Sentinel', { skip: noKubectl }, async (t) => {
  const base = rendered.get('base')
  if (base === undefined) {
    t.fail('base was not rendered')
    return
  }
  const ca = '-----BEGIN CERTIFICATE-----\nMIIB (a CA bundle)\n-----END CERTIFICATE-----\n'
  const tls = clone(base)
  obj(first(tls, 'Secret').data)['redis-ca'] = Buffer.from(ca).toString('base64')
  objs(podSpec(deployment(tls, 'portcullis')).volumes).forEach((v) => isObj(v.secret) && (v.secret.items = [...objs(v.secret.items), { key: 'redis-ca', path: 'redis-ca' }]))
  editConfig(tls, (t) => Object.assign(redisOf(t), { url: 'rediss://my-cache.example.internal:6378', tls: { caFile: '/var/run/secrets/portcullis/redis-ca' } }))
  // The one problem left is the host the kit cannot know (list yours in EXTERNAL if you keep this test).
  t.same(kitProblems(tls).map((p) => p.replace(/^.*session\.redis /, '')), ['my-cache.example.internal:6378 is neither a Service in this kustomization nor a documented external name'], 'rediss:// with tls.caFile from the Secret loads')
  const withoutItem = clone(tls)
  objs(podSpec(deployment(withoutItem, 'portcullis')).volumes).forEach((v) => isObj(v.secret) && (v.secret.items = objs(v.secret.items).filter((i) => i.key !== 'redis-ca')))
  t.match(kitProblems(withoutItem).join('\n'), /session.redis.tls.caFile: .*projects no item at path redis-ca/, 'and fails when the CA is not added to the volume items')
  const sentinel = clone(base)
  editConfig(sentinel, (t) => {
    delete redisOf(t).url
    redisOf(t).sentinel = { masterName: 'mymaster', nodes: ['redis-node-0.redis-headless:26379', 'redis-node-1.redis-headless:26379'] }
  })
  t.same(
    kitProblems(sentinel).map((p) => p.replace(/^.*session\.redis /, '')),
    ['redis-node-0.redis-headless:26379', 'redis-node-1.redis-headless:26379'].map((n) => `${n} is neither a Service in this kustomization nor a documented external name`),
    'sentinel instead of url loads, and each Sentinel is an endpoint the check looks at',
  )
})

t.test('self-tests: the schemas reject wrong types, misspelled fields and unknown kinds', { skip: noKubectl }, async (t) => {
  const base = rendered.get('base')
  const traefik = rendered.get('overlays/traefik')
  const envoy = rendered.get('overlays/envoy-gateway')
  if (base === undefined || traefik === undefined || envoy === undefined) {
    t.fail('base or overlays not rendered')
    return
  }
  const deployment = clone(first(base, 'Deployment'))
  objs(get(deployment, 'spec', 'template', 'spec', 'containers')).forEach((c) => objs(c.ports).forEach((p) => (p.containerPort = 'http')))
  t.match(schemaProblems(deployment).join('\n'), /containerPort must be integer/, 'kubernetes-models: a string containerPort')
  const service = clone(first(base, 'Service'))
  delete obj(service.spec).ports
  obj(service.spec).type = 'Balancer'
  t.match(schemaProblems(service).join('\n'), /schema/, 'kubernetes-models: a Service type that does not exist')
  const middleware = clone(first(traefik, 'Middleware'))
  obj(get(middleware, 'spec', 'forwardAuth')).trustForwardHeaders = true
  t.match(schemaProblems(middleware).join('\n'), /additionalProperty.*trustForwardHeaders/, 'Middleware: a misspelled field')
  const policy = clone(first(envoy, 'SecurityPolicy'))
  delete obj(get(policy, 'spec', 'extAuth', 'http')).backendRefs
  t.match(schemaProblems(policy).join('\n'), /backendRefs/, 'SecurityPolicy: no backend')
  t.match(schemaProblems({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }).join('\n'), /no schema for example.com\/v1\/Widget/, 'an unknown kind')
})
