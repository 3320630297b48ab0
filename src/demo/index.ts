import { randomBytes } from 'node:crypto'
import { DEMO_USERS, startProvider, type DemoUser, type RunningProvider } from './provider.ts'
import { startEchoUpstream, type EchoUpstream } from './upstream.ts'

/**
 * The local demo stack of `portcullis demo` (and of `npm start` without a config): an embedded OpenID
 * Provider with the reference provider's paths, an echo upstream that shows the identity headers it
 * received, and the raw config for a Portcullis in front of it on `publicUrl`. `main.ts` validates the
 * config and starts Portcullis itself, so the demo runs main's code path.
 *
 * Signing out ends where it began: Portcullis sends the browser to the provider's end-session
 * endpoint with `post_logout_redirect_uri` = `{publicUrl}/signed-out` (`session.postLogoutRedirect`,
 * registered at the provider), a public route to the demo app's "You are signed out" page, which
 * offers to sign in again.
 */
export const SIGNED_OUT_PATH = '/signed-out'

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
  const signedOut = new URL(SIGNED_OUT_PATH, opts.publicUrl).href
  const provider = await startProvider({
    clients: [
      {
        clientId,
        clientSecret,
        redirectUris: [new URL('/oauth2/callback', opts.publicUrl).href],
        postLogoutRedirectUris: [signedOut, new URL('/', opts.publicUrl).href],
        backchannelLogoutUri: new URL('/oauth2/backchannel-logout', opts.publicUrl).href,
      },
    ],
    allowLoopbackFetch: true,
  })
  const upstream = await startEchoUpstream({ title: 'Demo app behind Portcullis', signedOutPath: SIGNED_OUT_PATH })
  const config = {
    server: { listen: opts.listen, publicUrl: opts.publicUrl },
    provider: { issuer: provider.issuer, clientId, clientSecret, allowInsecureHttp: true },
    session: { secrets: [randomBytes(32).toString('base64url')], postLogoutRedirect: signedOut },
    routes: [
      { match: { pathPrefix: '/' }, upstream: upstream.url },
      // Public: whoever just signed out must be able to see it.
      { match: { pathPrefix: SIGNED_OUT_PATH }, upstream: upstream.url, public: true },
    ],
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
