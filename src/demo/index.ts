import { randomBytes } from 'node:crypto'
import { ACR_MFA, DEMO_USERS, startProvider, type DemoUser, type RunningProvider } from './provider.ts'
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
 *
 * Access rules, to show what a refusal and a step-up look like: every page needs an e-mail in
 * example.com, verified (`access.defaultAllow`): alice and bob get in, carol (partner.example,
 * unverified) is refused everywhere but the public signed-out page. `/admin` needs the admins group
 * and a second factor: bob is refused; alice, signed in with her password only, is sent to sign in
 * again and gets in with her one-time code.
 */
export const SIGNED_OUT_PATH = '/signed-out'
/** The demo's page for admins who signed in with a second factor. */
export const ADMIN_PATH = '/admin'

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
  const upstream = await startEchoUpstream({
    title: 'Demo app behind Portcullis',
    signedOutPath: SIGNED_OUT_PATH,
    links: [{ href: ADMIN_PATH, text: 'Admin page (admins only, with a second factor)' }],
  })
  const config = {
    server: { listen: opts.listen, publicUrl: opts.publicUrl },
    provider: { issuer: provider.issuer, clientId, clientSecret, allowInsecureHttp: true },
    session: { secrets: [randomBytes(32).toString('base64url')], postLogoutRedirect: signedOut },
    routes: [
      { match: { pathPrefix: '/' }, upstream: upstream.url },
      // Admins, and only after a login with the one-time code (alice: 123456).
      { match: { pathPrefix: ADMIN_PATH }, upstream: upstream.url, allow: { groups: ['admins'] }, require: { mfa: true } },
      // Public: whoever just signed out must be able to see it.
      { match: { pathPrefix: SIGNED_OUT_PATH }, upstream: upstream.url, public: true },
    ],
    // Every route without its own rule: a verified example.com address (carol is refused).
    access: { defaultAllow: { domains: ['example.com'] }, mfaAcrValues: [ACR_MFA] },
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
