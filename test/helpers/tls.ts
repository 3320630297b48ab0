/**
 * Self-signed certificates made in the test, never committed: a P-256 key from node:crypto and a
 * certificate for 127.0.0.1 and localhost from `openssl req -x509` (Debian's openssl), written to the
 * test's directory as PEM files.
 */
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface TestCertificate {
  readonly certFile: string
  readonly keyFile: string
  readonly cert: string
  readonly key: string
  /** As `tls.TLSSocket#getPeerCertificate().fingerprint256` shows it. */
  readonly fingerprint256: string
}

export function selfSignedCertificate(dir: string, name: string, opts: { days?: number } = {}): TestCertificate {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const keyFile = join(dir, `${name}.key.pem`)
  const certFile = join(dir, `${name}.cert.pem`)
  writeFileSync(keyFile, key, { mode: 0o600 })
  execFileSync(
    'openssl',
    ['req', '-x509', '-key', keyFile, '-out', certFile, '-days', String(opts.days ?? 2), '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  const cert = readFileSync(certFile, 'utf8')
  return { certFile, keyFile, cert, key, fingerprint256: new X509Certificate(cert).fingerprint256 }
}

/** Write `from`'s files over `to`'s paths (a certificate renewed in place). */
export function replaceCertificate(to: TestCertificate, from: TestCertificate): void {
  writeFileSync(to.certFile, from.cert)
  writeFileSync(to.keyFile, from.key)
}
