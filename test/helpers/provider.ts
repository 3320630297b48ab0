/**
 * Start the embedded OpenID Provider for one tap test and close it in `t.teardown`.
 *
 * @see src/demo/provider.ts
 */
import type { Test } from 'tap'
import { startProvider } from '../../src/demo/provider.ts'
import type { ProviderOptions, RunningProvider } from '../../src/demo/provider.ts'

export { DEMO_USERS, DEMO_RESOURCE, DEMO_API_SCOPES, PROVIDER_ROUTES } from '../../src/demo/provider.ts'
export type { DemoClient, DemoUser, ProviderOptions, RunningProvider } from '../../src/demo/provider.ts'

/** `startProvider(opts)` on 127.0.0.1:0 (unless `opts` says otherwise), closed when `t` ends. */
export async function startTestProvider(t: Test, opts: ProviderOptions): Promise<RunningProvider> {
  const running = await startProvider(opts)
  t.teardown(() => running.close())
  return running
}
