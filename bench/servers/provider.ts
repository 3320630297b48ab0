/**
 * Bench OpenID Provider: src/demo/provider.ts `startProvider` in its own process, so its work during
 * logins lands on its own core (or at least not on Portcullis's). Reads its options as JSON from
 * argv[2]; prints `{"ready":true,"issuer":"...","port":N}` once it listens.
 *
 *   node --import tsx bench/servers/provider.ts '{"clients":[...],"accessTokenTtl":3600}'
 */
import { startProvider, type ProviderOptions } from '../../src/demo/provider.ts'

const opts = JSON.parse(process.argv[2] ?? '{}') as ProviderOptions
const provider = await startProvider({ ...opts, allowLoopbackFetch: true })
// The demo provider keeps a record of every request for tests; the bench never reads it, and a long
// login loop would grow it without bound. Trim it now and then.
setInterval(() => {
  provider.requests.length = 0
  provider.authorizations.length = 0
}, 1000).unref()
process.stdout.write(`${JSON.stringify({ ready: true, issuer: provider.issuer, port: provider.port })}\n`)
process.on('SIGTERM', () => void provider.close().finally(() => process.exit(0)))
