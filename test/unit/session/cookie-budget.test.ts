import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createCookieStore, MAX_COOKIE_SESSION } from '../../../src/session/cookie-store.ts'
import { createKeyRing } from '../../../src/session/keyring.ts'
import type { Session } from '../../../src/session/model.ts'
import { fakeClock } from '../../helpers/clock.ts'
import { TEST_SECRET } from '../../helpers/config.ts'

const clock = fakeClock()
const store = createCookieStore({ ring: createKeyRing([TEST_SECRET], 'session'), limits: { maxAge: 3_600_000, idleTimeout: 600_000 }, clock })
const base: Session = {
  v: 1,
  id: 'budget-session',
  sub: 'alice',
  sid: 'sid-1',
  claims: { email: 'alice@example.com' },
  idToken: randomBytes(3000).toString('base64url'),
  accessToken: randomBytes(900).toString('base64url'),
  refreshToken: 'rt',
  accessExpiresAt: clock.now() + 300_000,
  authTime: undefined,
  createdAt: clock.now(),
  lastSeenAt: clock.now(),
}

t.test('a session within budget keeps its ID token', async (t) => {
  const sealed = await store.save(base)
  t.ok(sealed.length <= MAX_COOKIE_SESSION)
  t.equal((await store.load(sealed))?.session.idToken, base.idToken)
})

t.test('a session over budget drops the ID token first, then is refused', async (t) => {
  const nearly: Session = { ...base, idToken: randomBytes(6000).toString('base64url'), claims: { pad: randomBytes(3500).toString('base64url') } }
  const sealed = await store.save(nearly)
  t.ok(sealed.length <= MAX_COOKIE_SESSION, 'fits once the ID token is left out')
  const loaded = await store.load(sealed)
  t.equal(loaded?.session.idToken, '', 'the ID token (only needed as id_token_hint) was dropped')
  t.equal(loaded?.session.sub, 'alice')
  const hopeless: Session = { ...base, claims: { pad: randomBytes(12_000).toString('base64url') } }
  await t.rejects(store.save(hopeless), { code: 'SESSION_TOO_LARGE' })
})
