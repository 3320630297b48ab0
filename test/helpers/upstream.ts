/**
 * Start the echo upstream for one tap test and close it in `t.teardown`.
 *
 * @see src/demo/upstream.ts
 */
import type { Test } from 'tap'
import { startEchoUpstream } from '../../src/demo/upstream.ts'
import type { EchoUpstream, EchoUpstreamOptions } from '../../src/demo/upstream.ts'

export type { EchoRecord, EchoUpstream, EchoUpstreamOptions } from '../../src/demo/upstream.ts'

/** `startEchoUpstream(opts)` on 127.0.0.1:0 (unless `opts` says otherwise), closed when `t` ends. */
export async function startTestUpstream(t: Test, opts: EchoUpstreamOptions = {}): Promise<EchoUpstream> {
  const upstream = await startEchoUpstream(opts)
  t.teardown(() => upstream.close())
  return upstream
}
