/**
 * The sign-in page in a real browser (Debian's Chromium through playwright-core), looked at the way a
 * person would: its screenshot is decoded (test/helpers/png.ts) and must show something, and a
 * keyboard user's Tab must draw a focus ring around the e-mail field; through the DOM, every control
 * has a name, the document a language and a title, and text contrasts with its background by at
 * least 4.5:1 (WCAG AA). Then a real login: the e-mail of a mapped domain, typed and submitted,
 * reaches the provider with organization_id and login_hint, and the browser comes back to `rd`.
 *
 * The screenshots are written to the system's temp directory (the paths are printed) for a person to
 * look at. Needs /usr/bin/chromium (scripts/install-system-deps.sh); without it this test FAILS, it
 * never skips.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { launchBrowser } from '../helpers/browser.ts'
import { startStack } from '../helpers/portcullis.ts'
import { DEMO_USERS } from '../helpers/provider.ts'
import { decodePng, pixelAt, type DecodedImage, type Rgba } from '../helpers/png.ts'

const VIEWPORT = { width: 800, height: 900 }
/** The page's focus colour (src/http/pages.ts). */
const FOCUS = { r: 0x1d, g: 0x4e, b: 0xd8 }
const SHOTS = mkdtempSync(join(tmpdir(), 'portcullis-sign-in-'))

async function launch(t: Test, viewport = VIEWPORT): Promise<{ browser: Browser; page: Page } | undefined> {
  // One CSS pixel is one screenshot pixel, so element boxes index the decoded image directly.
  const got = await launchBrowser(t, { viewport, deviceScaleFactor: 1, colorScheme: 'light' })
  return got === undefined ? undefined : { browser: got.browser, page: got.page }
}

async function screenshot(t: Test, page: Page, name: string): Promise<DecodedImage> {
  const png = await page.screenshot({ type: 'png' })
  const file = join(SHOTS, `${name}.png`)
  writeFileSync(file, png)
  t.comment(`screenshot: ${file}`)
  return decodePng(png)
}

const key = (p: Rgba): string => `${p.r},${p.g},${p.b}`
const near = (p: Rgba, q: { r: number; g: number; b: number }, tolerance: number): boolean =>
  Math.abs(p.r - q.r) <= tolerance && Math.abs(p.g - q.g) <= tolerance && Math.abs(p.b - q.b) <= tolerance

/** WCAG 2 relative luminance of an sRGB colour (0-255 channels). */
function luminance(c: readonly number[]): number {
  const [r, g, b] = c.map((v) => {
    const s = v / 255
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
  })
  return 0.2126 * (r ?? 0) + 0.7152 * (g ?? 0) + 0.0722 * (b ?? 0)
}

function contrast(a: readonly number[], b: readonly number[]): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x)
  return ((hi ?? 0) + 0.05) / ((lo ?? 0) + 0.05)
}

interface Audit {
  lang: string
  title: string
  /** Inputs a user sees, and the name assistive technology reads for each. */
  inputs: Array<{ id: string; type: string; label: string }>
  controls: Array<{ tag: string; name: string }>
  colours: Array<{ what: string; fg: number[]; bg: number[] }>
  scrollWidth: number
  innerWidth: number
}

/**
 * Runs in the page (a string, so the page gets it exactly as written): names, language, title, and
 * the computed text colour of each text element with the first opaque background behind it.
 */
const AUDIT = String.raw`(() => {
  const text = (el) => (el ? (el.textContent || '').replace(/\s+/g, ' ').trim() : '')
  const rgb = (css) => (css.match(/[\d.]+/g) || []).map(Number)
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor)
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3)
      if (c.length === 4 && c[3] > 0) return null
    }
    return [255, 255, 255]
  }
  const nameOf = (el) => {
    const aria = (el.getAttribute('aria-label') || '').trim()
    if (aria) return aria
    const by = el.getAttribute('aria-labelledby')
    if (by) return by.split(/\s+/).map((id) => text(document.getElementById(id))).join(' ').trim()
    if (el.id) {
      const label = document.querySelector('label[for="' + CSS.escape(el.id) + '"]')
      if (label) return text(label)
    }
    return text(el.closest('label'))
  }
  const colours = []
  for (const [what, selector] of [['heading', 'h1'], ['intro', 'main > p'], ['label', 'label'], ['button', 'button'], ['link', 'a']]) {
    document.querySelectorAll(selector).forEach((el, i) => {
      colours.push({ what: what + ' ' + i + ' "' + text(el) + '"', fg: rgb(getComputedStyle(el).color).slice(0, 3), bg: background(el) })
    })
  }
  return {
    lang: document.documentElement.lang,
    title: document.title,
    inputs: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].map((el) => ({ id: el.id, type: el.type, label: nameOf(el) })),
    controls: [...document.querySelectorAll('button, a[href], [role=button]')].map((el) => ({ tag: el.tagName.toLowerCase(), name: (el.getAttribute('aria-label') || text(el)).trim() })),
    colours,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }
})()`

/** The focused element and its outline, in the page. */
const FOCUSED = String.raw`(() => {
  const el = document.activeElement
  const s = getComputedStyle(el)
  return { id: el.id, outlineStyle: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth), outlineOffset: parseFloat(s.outlineOffset) }
})()`

t.test('the sign-in page: seen, audited, and used for a login', async (t) => {
  const alice = DEMO_USERS[0]!
  const { proxy, provider } = await startStack(t, {
    overrides: {
      provider: { domainRouting: { 'example.com': { organization_id: 'org_example' } }, socialProviders: ['github', 'google'] },
    },
  })
  const launched = await launch(t)
  if (!launched) return
  const { page } = launched
  const csp: string[] = []
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) csp.push(m.text())
  })

  const res = await page.goto(`${proxy.url}/oauth2/sign_in?rd=${encodeURIComponent('/dashboard?tab=1')}`)
  t.equal(res?.status(), 200, 'the sign-in page answers 200')

  // Look at it.
  const before = await screenshot(t, page, 'sign-in')
  t.equal(before.width, VIEWPORT.width, 'the screenshot is the viewport wide')
  t.equal(before.height, VIEWPORT.height, 'and high')
  const colours = new Set<string>()
  for (let y = 0; y < before.height; y += 2) for (let x = 0; x < before.width; x += 2) colours.add(key(pixelAt(before, x, y)))
  t.ok(colours.size > 1, `the page is not blank (${colours.size} colours)`)
  t.ok(colours.size > 20, 'it shows anti-aliased text, not just boxes')

  const button = await page.locator('button[type=submit]').boundingBox()
  t.ok(button, 'the Continue button is laid out')
  if (button) {
    const centre = pixelAt(before, Math.round(button.x + 4), Math.round(button.y + button.height / 2))
    t.ok(near(centre, FOCUS, 8), `the Continue button is blue (${key(centre)})`)
  }
  const heading = await page.locator('h1').boundingBox()
  if (heading) {
    let dark = 0
    for (let y = Math.floor(heading.y); y < heading.y + heading.height; y++) {
      for (let x = Math.floor(heading.x); x < heading.x + heading.width; x++) {
        const p = pixelAt(before, x, y)
        if (p.r < 80 && p.g < 80 && p.b < 80) dark++
      }
    }
    t.ok(dark > 50, `the heading's text is drawn, dark (${dark} dark pixels)`)
  }

  // A keyboard user: the first Tab lands on the e-mail field, and a ring is drawn around it.
  t.not((await page.evaluate<{ id: string }>(FOCUSED)).id, 'login_hint', 'nothing is focused on arrival (no autofocus)')
  await page.keyboard.press('Tab')
  const focused = await page.evaluate<{ id: string; outlineStyle: string; outlineWidth: number; outlineOffset: number }>(FOCUSED)
  t.equal(focused.id, 'login_hint', 'Tab focuses the e-mail field first')
  t.equal(focused.outlineStyle, 'solid', 'with a solid outline')
  t.ok(focused.outlineWidth >= 3, `of at least 3px (${focused.outlineWidth}px)`)
  const after = await screenshot(t, page, 'sign-in-focused')
  const box = await page.locator('#login_hint').boundingBox()
  t.ok(box, 'the e-mail field is laid out')
  if (box) {
    // The band the ring is drawn in: outside the field's border, within offset + width of it.
    const reach = focused.outlineOffset + focused.outlineWidth
    let band = 0
    let changed = 0
    let ring = 0
    let elsewhere = 0
    for (let y = Math.floor(box.y - reach - 4); y < box.y + box.height + reach + 4; y++) {
      for (let x = Math.floor(box.x - reach - 4); x < box.x + box.width + reach + 4; x++) {
        const dx = Math.max(box.x - (x + 0.5), x + 0.5 - (box.x + box.width), 0)
        const dy = Math.max(box.y - (y + 0.5), y + 0.5 - (box.y + box.height), 0)
        const out = Math.max(dx, dy)
        const differs = key(pixelAt(before, x, y)) !== key(pixelAt(after, x, y))
        if (out > focused.outlineOffset + 0.25 && out < reach - 0.25) {
          band++
          if (differs) changed++
          if (near(pixelAt(after, x, y), FOCUS, 24)) ring++
        } else if (out >= reach + 1.5 && differs) {
          elsewhere++
        }
      }
    }
    const perimeter = 2 * (box.width + box.height)
    t.ok(band >= 2 * perimeter, `the band around the field is measured (${band} pixels, perimeter ${Math.round(perimeter)})`)
    t.ok(changed / band > 0.9, `focus changes the pixels around the field (${changed} of ${band})`)
    t.ok(ring / band > 0.9, `to the focus colour (${ring} of ${band})`)
    t.equal(elsewhere, 0, 'and nothing just outside the ring')
  }

  // The DOM, as an accessibility checker reads it.
  const audit = await page.evaluate<Audit>(AUDIT)
  t.equal(audit.lang, 'en', '<html lang="en">')
  t.equal(audit.title, 'Sign in', 'a title')
  t.same(audit.inputs, [{ id: 'login_hint', type: 'email', label: 'E-mail address' }], 'the one visible input has its label')
  t.same(
    audit.controls,
    [
      { tag: 'button', name: 'Continue' },
      { tag: 'a', name: 'Continue with GitHub' },
      { tag: 'a', name: 'Continue with Google' },
    ],
    'every button and link has a name',
  )
  t.ok(audit.colours.length >= 6, `colours measured for ${audit.colours.length} elements`)
  for (const c of audit.colours) {
    t.equal(c.bg === null ? 'translucent' : 'opaque', 'opaque', `${c.what}: an opaque background behind it`)
    const ratio = contrast(c.fg, c.bg ?? [255, 255, 255])
    t.ok(ratio >= 4.5, `${c.what}: contrast ${ratio.toFixed(2)}:1 (rgb ${c.fg.join(',')} on ${(c.bg ?? []).join(',')})`)
  }
  t.equal(audit.scrollWidth, audit.innerWidth, 'no horizontal scrolling')
  t.same(csp, [], 'the page breaks no rule of its Content-Security-Policy')

  // Use it: type the e-mail of a mapped domain and press Enter.
  const seen = provider.authorizations.length
  await page.keyboard.type(alice.email)
  const providerOrigin = new URL(provider.issuer).origin
  await Promise.all([page.waitForURL((u) => u.origin === providerOrigin), page.keyboard.press('Enter')])
  t.equal(await page.locator('input[name="password"]').count(), 1, "on the provider's login form")
  t.equal(await page.inputValue('input[name="login"]'), alice.email, 'which the login_hint filled in')
  const authorize = provider.authorizations.slice(seen).find((a) => a.response_type === 'code')
  t.equal(authorize?.organization_id, 'org_example', 'the provider saw organization_id from domainRouting')
  t.equal(authorize?.login_hint, alice.email, 'and the login_hint')

  await page.fill('input[name="password"]', alice.password)
  const target = `${proxy.url}/dashboard?tab=1`
  await Promise.all([page.waitForURL(target), page.locator('form [type="submit"], form button').first().click()])
  t.equal(page.url(), target, 'signed in, back at rd')
})

t.test('on a phone-sized screen the page fits and keeps its contrast', async (t) => {
  const { proxy } = await startStack(t, { overrides: { provider: { socialProviders: ['microsoft'] } } })
  const launched = await launch(t, { width: 360, height: 740 })
  if (!launched) return
  const { page } = launched
  await page.goto(`${proxy.url}/oauth2/sign_in?rd=/`)
  const shot = await screenshot(t, page, 'sign-in-narrow')
  const audit = await page.evaluate<Audit>(AUDIT)
  t.ok(audit.scrollWidth <= audit.innerWidth, `no horizontal scrolling (${audit.scrollWidth} ≤ ${audit.innerWidth})`)
  const input = await page.locator('#login_hint').boundingBox()
  t.ok(input && input.x >= 0 && input.x + input.width <= 360, 'the e-mail field is on screen')
  const link = await page.locator('a', { hasText: 'Continue with Microsoft' }).boundingBox()
  t.ok(link && link.y + link.height <= shot.height, 'the Microsoft button is on the first screen')
  for (const c of audit.colours) t.ok(contrast(c.fg, c.bg ?? [255, 255, 255]) >= 4.5, `${c.what}: contrast`)
})
