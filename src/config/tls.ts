import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import type { ConfigIssue } from './types.ts'

/**
 * `server.tls`: the PEM certificate (chain) and private key of an HTTPS listener, checked the way the
 * listener will load them (`tls.createSecureContext`), so a certificate that cannot be served is a
 * config error naming `server.tls.cert` or `server.tls.key` (exit 2 at startup; a SIGHUP reload is
 * refused and the running certificate kept), not a listener that fails its first handshake.
 */
export function tlsIssues(cert: string, key: string): ConfigIssue[] {
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (err) {
    return [{ path: 'server.tls.cert', message: `is not a PEM certificate (-----BEGIN CERTIFICATE-----): ${reason(err)}` }]
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    const encrypted = /passphrase|encrypted/i.test(reason(err)) || key.includes('ENCRYPTED')
    return [
      {
        path: 'server.tls.key',
        message: encrypted ? 'is an encrypted private key: give it unencrypted (protect the file instead)' : `is not a PEM private key (-----BEGIN PRIVATE KEY-----): ${reason(err)}`,
      },
    ]
  }
  if (!x509.checkPrivateKey(privateKey)) {
    return [{ path: 'server.tls.key', message: `does not belong to server.tls.cert (${describeCertificate(x509)})` }]
  }
  try {
    createSecureContext({ cert, key })
  } catch (err) {
    return [{ path: 'server.tls.cert', message: `cannot be served with server.tls.key: ${reason(err)}` }]
  }
  return []
}

/** The certificate as operators know it: subject, fingerprint, expiry. */
export interface CertificateSummary {
  readonly subject: string
  readonly fingerprint256: string
  readonly validTo: string
  readonly expiresInDays: number
}

/** For the logs (startup and reload) and start-up warnings; null when `cert` does not parse. */
export function certificateSummary(cert: string, nowMs = Date.now()): CertificateSummary | null {
  try {
    const x509 = new X509Certificate(cert)
    return {
      subject: x509.subject.replace(/\n/g, ', '),
      fingerprint256: x509.fingerprint256,
      validTo: new Date(x509.validTo).toISOString(),
      expiresInDays: Math.floor((Date.parse(x509.validTo) - nowMs) / 86_400_000),
    }
  } catch {
    return null
  }
}

function describeCertificate(x509: X509Certificate): string {
  return `its certificate is ${x509.subject.replace(/\n/g, ', ')}, SHA-256 ${x509.fingerprint256}`
}

function reason(err: unknown): string {
  const e = err as { code?: string; message?: string }
  return e.message ?? e.code ?? String(err)
}
