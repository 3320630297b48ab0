/**
 * Bounded polling for tests (nothing sleeps to synchronise). `waitUntil` throws with
 * what it waited for; `eventually` answers whether the condition came true in time.
 */
export async function eventually(check: () => boolean | Promise<boolean>, opts: { timeoutMs?: number; everyMs?: number } = {}): Promise<boolean> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000)
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, opts.everyMs ?? 20))
  }
}

export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  if (!(await eventually(check, { timeoutMs, everyMs: 10 }))) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}
