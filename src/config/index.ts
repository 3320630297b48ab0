import { readConfigSource, type ConfigSourceOptions } from './load.ts'
import { isLoopbackHost, sortIssues, validateConfig } from './validate.ts'
import type { Config, ConfigIssue } from './types.ts'
import { certificateSummary } from './tls.ts'

export type { Config, ConfigIssue, RouteConfig } from './types.ts'
export type { ConfigSourceOptions } from './load.ts'

/**
 * Loads and validates the configuration: read → `${VAR}` → overrides → `<key>File` →
 * schema → cross-field rules → deep freeze. Either a frozen `Config` with start-up warnings for switches
 * that weaken security, or every issue, sorted by path, for `main.ts` to print before exiting 2.
 */
export function loadConfig(opts: ConfigSourceOptions): { ok: true; config: Config; warnings: string[] } | { ok: false; issues: ConfigIssue[] } {
  const source = readConfigSource(opts)
  if (source.raw === undefined) return { ok: false, issues: sortIssues(source.issues) }

  const result = validateConfig(source.raw)
  if (result.ok && source.issues.length === 0) return { ok: true, config: result.config, warnings: configWarnings(result.config) }

  // A key that could not be loaded (unset ${VAR}, unreadable <key>File) also fails the schema at the
  // same path ("is required", "must be at least 32 bytes"): the load issue is the one that explains it.
  // Section-level load issues (an unknown PORTCULLIS_<SECTION>_* variable) do not hide schema issues.
  const explained = new Set(source.issues.filter((i) => /[.[]/.test(i.path)).map((i) => i.path))
  const schemaIssues = result.ok ? [] : result.issues.filter((i) => !explained.has(i.path))
  return { ok: false, issues: sortIssues([...source.issues, ...schemaIssues]) }
}

/** Start-up warnings for valid but weakened configurations; `main.ts` logs them at warn level. */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = []
  if (config.provider.allowInsecureHttp && config.provider.allowInsecureHttpHosts.length === 0) {
    warnings.push('provider.allowInsecureHttp is on: the provider is reached over plain http (loopback only; never in production)')
  } else if (config.provider.allowInsecureHttp) {
    const hosts = config.provider.allowInsecureHttpHosts.join(', ')
    warnings.push(
      `provider.allowInsecureHttp is on with provider.allowInsecureHttpHosts (${hosts}): the provider is reached over plain http, also across a network, where codes and tokens can be read (local stacks only; never in production)`,
    )
  }
  const publicUrl = new URL(config.server.publicUrl)
  if (publicUrl.protocol === 'http:' && !isLoopbackHost(publicUrl.hostname) && config.server.tls.cert === '') {
    warnings.push(`server.publicUrl is plain http on ${publicUrl.hostname}: session cookies are sent without the Secure attribute`)
  }
  for (const entry of config.server.trustedProxies) {
    if (/^(0\.0\.0\.0\/0|::\/0|::0\/0)$/.test(entry)) {
      warnings.push(`server.trustedProxies contains ${entry}: X-Forwarded-* headers are believed from every peer`)
    }
  }
  if (config.server.tls.cert !== '') {
    const cert = certificateSummary(config.server.tls.cert)
    if (cert !== null && cert.expiresInDays < 0) warnings.push(`server.tls.cert expired on ${cert.validTo} (${cert.subject}): clients refuse it`)
    else if (cert !== null && cert.expiresInDays < 14) warnings.push(`server.tls.cert expires on ${cert.validTo} (${cert.subject}): replace the files and send SIGHUP`)
  }
  return warnings
}

/** One line per issue, `config error: <path>: <message>` (a document-level issue has no path). */
export function formatIssues(issues: readonly ConfigIssue[]): string {
  return issues.map((i) => (i.path === '' ? `config error: ${i.message}` : `config error: ${i.path}: ${i.message}`)).join('\n')
}
