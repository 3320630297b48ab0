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
