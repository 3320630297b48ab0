/**
 * Small HTML templates. Every interpolated value goes through `escapeHtml`; pages carry no script and
 * no token, and are served with a restrictive CSP by `http/errors.ts`.
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`)
}

export interface ErrorPage {
  readonly status: number
  readonly title: string
  readonly message: string
  readonly code: string
  readonly requestId: string
  /** Provider error code at the callback, shown verbatim (already restricted to a safe charset). */
  readonly providerError?: string | undefined
  /** The provider's `error_description`, already cleaned and shortened (`safeDescription`); escaped here. */
  readonly providerDescription?: string | undefined
  /** The access rule that refused the request (`routes[2].allow.groups`): a config path, no claim value. */
  readonly rule?: string | undefined
  readonly retryUrl?: string | undefined
}

export function renderErrorPage(p: ErrorPage): string {
  const provider = p.providerError === undefined ? '' : `<p>The identity provider answered: <code>${escapeHtml(p.providerError)}</code></p>\n`
  const description =
    p.providerDescription === undefined || p.providerDescription === ''
      ? ''
      : `<p>Its explanation: <q>${escapeHtml(p.providerDescription)}</q></p>\n`
  const rule = p.rule === undefined ? '' : `<p>Rule: <code>${escapeHtml(p.rule)}</code> (your administrator can tell you how to get access)</p>\n`
  const retry = p.retryUrl === undefined ? '' : `<p><a href="${escapeHtml(p.retryUrl)}">Try again</a></p>`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(p.title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:.1rem .3rem}small{color:#777}</style>
</head><body>
<h1>${escapeHtml(p.title)}</h1>
<p>${escapeHtml(p.message)}</p>
${provider}${description}${rule}${retry}
<p><small>Error ${escapeHtml(p.code)} · status ${p.status} · request ${escapeHtml(p.requestId)}</small></p>
</body></html>
`
}
