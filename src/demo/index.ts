import { randomBytes } from 'node:crypto'
import { DEMO_USERS, startProvider, type DemoUser, type RunningProvider } from './provider.ts'
import { startEchoUpstream, type EchoUpstream } from './upstream.ts'

/**
 * The local demo stack of `portcullis demo` (and of `npm start` without a config): an embedded OpenID
 * Provider with the reference provider's paths, an echo upstream that shows the identity headers it
 * received, and the raw config for a Portcullis in front of it on `publicUrl`. `main.ts` validates the
 * config and starts Portcullis itself, so the demo runs main's code path.
 */
export interface DemoStack {
  readonly config: Record<string, unknown>
  readonly provider: RunningProvider
  readonly upstream: EchoUpstream
  readonly users: readonly DemoUser[]
  close(): Promise<void>
}

export async function startDemoStack(opts: { publicUrl: string; listen: string }): Promise<DemoStack> {
  const clientId = 'portcullis-demo'
  const clientSecret = randomBytes(24).toString('base64url')
  const provider = await startProvider({
    clients: [
      {
        clientId,
        clientSecret,
        redirectUris: [new URL('/oauth2/callback', opts.publicUrl).href],
        postLogoutRedirectUris: [new URL('/', opts.publicUrl).href],
        backchannelLogoutUri: new URL('/oauth2/backchannel-logout', opts.publicUrl).href,
      },
    ],
    allowLoopbackFetch: true,
  })
  const upstream = await startEchoUpstream({ title: 'Demo app behind Portcullis' })
  const config = {
    server: { listen: opts.listen, publicUrl: opts.publicUrl },
    provider: { issuer: provider.issuer, clientId, clientSecret, allowInsecureHttp: true },
    session: { secrets: [randomBytes(32).toString('base64url')] },
    routes: [{ match: { pathPrefix: '/' }, upstream: upstream.url }],
    logging: { level: 'info' },
  }
  return {
    config,
    provider,
    upstream,
    users: DEMO_USERS,
    async close() {
      await Promise.allSettled([provider.close(), upstream.close()])
    },
  }
}
