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
      const port = (srv.address() as { port: number }).port
      resolve({ port, release: () => new Promise<void>((done) => srv.close(() => done())) })
    })
  })
}
