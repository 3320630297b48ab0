import { createServer } from 'node:net'

/** A free TCP port on 127.0.0.1 (bound by the OS, then released) for configs that need it up front. */
export function reservePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

/**
 * A port on 127.0.0.1 chosen by the OS and kept bound until `release()`: other servers that listen
 * on port 0 meanwhile cannot be given it. Release right before starting the process that needs it.
 */
export function holdPort(): Promise<{ port: number; release: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      srv.unref() // a port never released (a test that failed early) must not keep the process alive
      const port = (srv.address() as { port: number }).port
      resolve({ port, release: () => new Promise<void>((done) => srv.close(() => done())) })
    })
  })
}

const heldPorts = new Map<number, () => Promise<void>>()

/**
 * A port for an in-process Portcullis whose URL must be known before it starts (the provider's
 * redirect URIs): kept bound until `startPortcullis` releases it right before it listens, so servers
 * that listen on port 0 meanwhile (provider, upstream) cannot be given it.
 */
export async function reserveHeldPort(): Promise<number> {
  const { port, release } = await holdPort()
  heldPorts.set(port, release)
  return port
}

/** Release a port from `reserveHeldPort` (no-op for any other port). */
export async function releaseHeldPort(port: number): Promise<void> {
  const release = heldPorts.get(port)
  heldPorts.delete(port)
  await release?.()
}
