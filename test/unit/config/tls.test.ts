/**
 * `server.tls` as config: the certificate and key are checked the way the listener loads them, so a
 * pair that cannot be served is an issue at its path; a certificate near or past its end is a warning.
 */
import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { validateConfig } from '../../../src/config/validate.ts'
import { configWarnings } from '../../../src/config/index.ts'
import { rawConfigFor } from '../../helpers/config.ts'
import { selfSignedCertificate } from '../../helpers/tls.ts'

function withTls(tls: Record<string, string>) {
  return validateConfig(
    rawConfigFor({
      issuer: 'https://idp.example.com',
      clientId: 'c',
      clientSecret: 's',
      upstream: 'http://127.0.0.1:9',
      publicUrl: 'https://app.example.com',
      overrides: { server: { tls } },
    }),
  )
}

t.test('a certificate with its own key is valid; a certificate expiring soon is a warning', async (t) => {
  const cert = selfSignedCertificate(t.testdir(), 'app.example.com', { days: 3 })
  const result = withTls({ cert: cert.cert, key: cert.key })
  t.ok(result.ok, 'valid')
  if (!result.ok) return
  const warnings = configWarnings(result.config).filter((w) => w.startsWith('server.tls'))
  t.match(warnings, [/^server\.tls\.cert expires on .* \(CN=app\.example\.com\): replace the files and send SIGHUP$/])
  const later = selfSignedCertificate(t.testdir(), 'later', { days: 90 })
  const fine = withTls({ cert: later.cert, key: later.key })
  t.ok(fine.ok && configWarnings(fine.config).every((w) => !w.includes('server.tls')), 'no warning for one that has months left')
})

t.test('each way a pair cannot be served is named at its path', async (t) => {
  const cert = selfSignedCertificate(t.testdir(), 'app')
  const other = selfSignedCertificate(t.testdir(), 'other')
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const encrypted = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString()
  const cases: Array<[string, Record<string, string>, string, RegExp]> = [
    ['no key', { cert: cert.cert }, 'server.tls.key', /needs both a certificate and its key/],
    ['no certificate', { key: cert.key }, 'server.tls.cert', /needs both a certificate and its key/],
    ['a key for a certificate', { cert: cert.key, key: cert.key }, 'server.tls.cert', /is not a PEM certificate/],
    ['a certificate for a key', { cert: cert.cert, key: cert.cert }, 'server.tls.key', /is not a PEM private key/],
    ['an encrypted key', { cert: cert.cert, key: encrypted }, 'server.tls.key', /is an encrypted private key/],
    ['another certificate\'s key', { cert: cert.cert, key: other.key }, 'server.tls.key', /does not belong to server\.tls\.cert \(its certificate is CN=app, SHA-256 /],
  ]
  for (const [name, tls, path, message] of cases) {
    const result = withTls(tls)
    t.notOk(result.ok, `${name}: refused`)
    if (result.ok) continue
    t.match(result.issues, [{ path, message }], `${name}: named at ${path}`)
  }
})
