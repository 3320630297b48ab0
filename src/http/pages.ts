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

export interface SignInPage {
  /** Where the e-mail form goes: `{prefix}/start`. */
  readonly action: string
  /** The validated return URL, carried in a hidden field and on every provider link. */
  readonly rd: string
  /** One button per `provider.socialProviders` entry: its visible text and its `{prefix}/start?provider=` link. */
  readonly social: ReadonlyArray<{ readonly label: string; readonly href: string }>
}

/**
 * The sign-in page's styles. Contrast on white (WCAG AA, text ≥ 4.5:1): body text #1a1a1a (17.4:1),
 * muted #4b5563 (7.6:1), white on the #1d4ed8 button (6.7:1); the input's border #6b7280 (4.8:1) is
 * above the 3:1 of a control's boundary. Focus: a 3px #1d4ed8 outline (6.7:1 on white) 2px off the control (on
 * `:focus`, so keyboard and pointer focus alike).
 */
const SIGN_IN_STYLE = [
  '*{box-sizing:border-box}',
  'body{margin:0;font-family:system-ui,sans-serif;font-size:1rem;line-height:1.5;color:#1a1a1a;background:#f3f4f6;padding:0 1rem}',
  'main{max-width:26rem;margin:4rem auto;padding:2rem;background:#fff;border:1px solid #d1d5db;border-radius:8px}',
  'h1{font-size:1.5rem;margin:0 0 .5rem}',
  'p{margin:0 0 1.25rem;color:#4b5563}',
  'label{display:block;font-weight:600;margin-bottom:.375rem;color:#1a1a1a}',
  'input{display:block;width:100%;font:inherit;padding:.625rem .75rem;color:#1a1a1a;background:#fff;border:1px solid #6b7280;border-radius:6px}',
  '.button{display:block;width:100%;margin-top:1rem;padding:.625rem 1rem;font:inherit;font-weight:600;text-align:center;text-decoration:none;border-radius:6px;cursor:pointer}',
  '.primary{color:#fff;background:#1d4ed8;border:1px solid #1d4ed8}',
  '.primary:hover{background:#1e40af}',
  '.secondary{color:#1a1a1a;background:#fff;border:1px solid #6b7280}',
  '.secondary:hover{background:#f3f4f6}',
  'input:focus,.button:focus{outline:3px solid #1d4ed8;outline-offset:2px}',
  '.or{margin:1.5rem 0 0;text-align:center;color:#4b5563}',
  'ul{list-style:none;margin:0;padding:0}',
].join('')

/** The sign-in page: an e-mail form to `{prefix}/start` (its `login_hint`), and the social provider buttons. No script. */
export function renderSignInPage(p: SignInPage): string {
  const social =
    p.social.length === 0
      ? ''
      : `<p class="or">or</p>\n<ul>\n${p.social
          .map((s) => `<li><a class="button secondary" href="${escapeHtml(s.href)}">${escapeHtml(s.label)}</a></li>`)
          .join('\n')}\n</ul>\n`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>${SIGN_IN_STYLE}</style>
</head><body>
<main>
<h1>Sign in</h1>
<p>Enter your e-mail address to continue.</p>
<form method="get" action="${escapeHtml(p.action)}">
<label for="login_hint">E-mail address</label>
<input type="email" id="login_hint" name="login_hint" autocomplete="email" autocapitalize="none" spellcheck="false" maxlength="256" required>
<input type="hidden" name="rd" value="${escapeHtml(p.rd)}">
<button type="submit" class="button primary">Continue</button>
</form>
${social}</main>
</body></html>
`
}
