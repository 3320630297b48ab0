/**
 * Debian's chromium driven by playwright-core, for the system tests: one browser per test, closed in
 * `t.teardown`. Playwright cannot download its own browser here (no network but the registries), so
 * a missing /usr/bin/chromium is a failure naming the install script, never a skip.
 */
import { existsSync } from 'node:fs'
import type { Test } from 'tap'
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'
const LAUNCH_ARGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
]
const NAV_TIMEOUT_MS = 15_000

/** A headless chromium with one context and page (default timeouts 15 s); undefined (and `t` failed) without chromium. */
export async function launchBrowser(t: Test, context: BrowserContextOptions = {}): Promise<{ browser: Browser; context: BrowserContext; page: Page } | undefined> {
  if (!existsSync(CHROMIUM)) {
    t.fail(`${CHROMIUM} not found: run scripts/install-system-deps.sh (installs Debian's chromium) and try again`)
    return undefined
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_ARGS })
  t.teardown(() => browser.close())
  const ctx = await browser.newContext(context)
  const page = await ctx.newPage()
  page.setDefaultTimeout(NAV_TIMEOUT_MS)
  page.setDefaultNavigationTimeout(NAV_TIMEOUT_MS)
  return { browser, context: ctx, page }
}
