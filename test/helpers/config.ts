/**
 * Config for tests: `configFor()` builds a raw config around a provider and an upstream, with
 * overrides merged per section, and validates it through the real loader's validator.
 */
import { validateConfig } from '../../src/config/validate.ts'
import type { Config } from '../../src/config/types.ts'

export const TEST_SECRET = 'test-cookie-secret-0123456789-abcdef'

export interface ConfigForOptions {
  issuer: string
  clientId: string
  clientSecret: string
  upstream: string
  publicUrl: string
  overrides?: Record<string, unknown>
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over)) {
    const prev = out[k]
    out[k] =
      v !== null && typeof v === 'object' && !Array.isArray(v) && prev !== null && typeof prev === 'object' && !Array.isArray(prev)
        ? merge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v
  }
  return out
}

export function rawConfigFor(o: ConfigForOptions): Record<string, unknown> {
  return merge(
    {
      server: { listen: '127.0.0.1:0', publicUrl: o.publicUrl },
      provider: { issuer: o.issuer, clientId: o.clientId, clientSecret: o.clientSecret, allowInsecureHttp: true },
      session: { secrets: [TEST_SECRET] },
      routes: [{ match: { pathPrefix: '/' }, upstream: o.upstream }],
      logging: { level: 'info' },
    },
    o.overrides ?? {},
  )
}

export function configFor(o: ConfigForOptions): Config {
  const result = validateConfig(rawConfigFor(o))
  if (!result.ok) throw new Error(`test config invalid:\n${result.issues.map((i) => `${i.path}: ${i.message}`).join('\n')}`)
  return result.config
}
