import type { IncomingHttpHeaders } from 'node:http'

/**
 * A top-level browser navigation gets redirects and HTML pages; anything else (XHR, fetch, API
 * clients) gets 401 JSON. A navigation is a GET/HEAD that accepts text/html and, when the browser
 * says so, has `Sec-Fetch-Mode: navigate` (step 5 of the pipeline, `http/pipeline.ts`).
 */
export function isBrowserNavigation(req: { readonly method: string; readonly headers: IncomingHttpHeaders }): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const mode = req.headers['sec-fetch-mode']
  if (mode !== undefined && mode !== 'navigate') return false
  if (req.headers['x-requested-with'] !== undefined) return false
  return wantsHtml(req.headers)
}

/** The client accepts an HTML page (for error rendering). */
export function wantsHtml(headers: IncomingHttpHeaders): boolean {
  const accept = headers.accept
  return typeof accept === 'string' && accept.includes('text/html')
}
