/**
 * Bench ceiling (issue #4 point 1 (b)): Fastify + @fastify/http-proxy with no auth, the same package
 * versions Portcullis resolves from node_modules, stock http-proxy/reply-from options (undici Agent
 * with its defaults), logging off. Prints `{"ready":true,"port":N,"versions":{...}}` once it listens.
 *
 *   node --import tsx bench/servers/bare-proxy.ts <upstream URL>
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import httpProxy from '@fastify/http-proxy'

const upstream = process.argv[2]
if (upstream === undefined) {
  process.stderr.write('usage: bare-proxy.ts <upstream URL>\n')
  process.exit(2)
}

const require = createRequire(import.meta.url)
function versionOf(pkg: string): string {
  try {
    const file = require.resolve(`${pkg}/package.json`)
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

const app = Fastify({ logger: false })
await app.register(httpProxy, { upstream, prefix: '/' })
await app.listen({ host: '127.0.0.1', port: 0 })
const port = (app.server.address() as AddressInfo).port
const versions = Object.fromEntries(['fastify', '@fastify/http-proxy', '@fastify/reply-from', 'undici'].map((p) => [p, versionOf(p)]))
process.stdout.write(`${JSON.stringify({ ready: true, port, versions })}\n`)
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
