import type { FastifyInstance } from 'fastify'
import { validateRedirect } from '../../policy/redirects.ts'
import type { RuntimeHolder } from '../context.ts'
import { PAGE_HEADERS } from '../errors.ts'
import { renderSignInPage } from '../pages.ts'
import { readQuery, single } from '../query.ts'

/** How the providers' own names are written; any other name is shown capitalized. */
const PROVIDER_LABELS: Readonly<Record<string, string>> = {
  google: 'Google',
  microsoft: 'Microsoft',
  github: 'GitHub',
  gitlab: 'GitLab',
  apple: 'Apple',
  linkedin: 'LinkedIn',
  salesforce: 'Salesforce',
}

/** The button text of a `provider.socialProviders` entry: "Continue with GitHub". */
export function socialLabel(name: string): string {
  const known = Object.hasOwn(PROVIDER_LABELS, name) ? PROVIDER_LABELS[name] : undefined
  return `Continue with ${known ?? name.charAt(0).toUpperCase() + name.slice(1)}`
}

/**
 * GET {prefix}/sign_in?rd=URL: a page that asks for the user's e-mail and sends it to
 * `{prefix}/start` as `login_hint` (which `provider.domainRouting` turns into an organization or a
 * connection), with one button per `provider.socialProviders` entry (`{prefix}/start?provider=`).
 * `rd` is validated as `{prefix}/start` does (off-list → `/`) and carried on. Served with the error
 * pages' headers: no script, inline styles only, never framed, never cached.
 */
export function registerSignIn(app: FastifyInstance, holder: RuntimeHolder): void {
  const rt0 = holder.current
  app.get(`${rt0.prefix}/sign_in`, { config: { kind: 'auth', label: 'auth:sign-in' } }, async (request, reply) => {
    const rt = request.portcullis.runtime
    const query = readQuery(request.url)
    const rd = validateRedirect(single(query, 'rd'), rt.publicUrl, rt.config.redirects.allowedDomains) ?? new URL('/', rt.publicUrl).href
    const start = `${rt.prefix}/start`
    const social = rt.config.provider.socialProviders.map((name) => ({
      label: socialLabel(name),
      href: `${start}?${new URLSearchParams({ provider: name, rd }).toString()}`,
    }))
    return reply
      .code(200)
      .headers({ ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8' })
      .send(renderSignInPage({ action: start, rd, social }))
  })
}
