import type { FastifyInstance } from 'fastify'
import { claimText } from '../../policy/identity.ts'
import type { RuntimeHolder } from '../context.ts'
import type { Note } from '../decision.ts'
import { authenticate } from '../pipeline.ts'
import { putCookies } from '../cookies.ts'
import { writeNotes } from '../notes.ts'

/**
 * GET {prefix}/userinfo: the current user's identity as JSON. Claims only; never a token.
 */
export function registerUserinfo(app: FastifyInstance, holder: RuntimeHolder): void {
  app.get(`${holder.current.prefix}/userinfo`, { config: { kind: 'auth', label: 'auth:userinfo' } }, async (request, reply) => {
    const rt = request.portcullis.runtime
    const notes: Note[] = []
    const found = await authenticate(rt, { headers: request.headers, now: rt.clock.now() }, notes)
    writeNotes(request.log, notes)
    putCookies(reply, found.setCookie)
    const session = found.loaded?.session ?? null
    void reply.header('cache-control', 'no-store')
    if (session === null) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'UNAUTHENTICATED', message: 'Not signed in.', requestId: request.id })
    }
    request.portcullis.identity = { sub: session.sub, claims: session.claims }
    const c = session.claims
    const groups = Array.isArray(c.groups) ? c.groups.filter((g): g is string => typeof g === 'string') : []
    return reply.send({
      user: session.sub,
      email: claimText(c.email) || undefined,
      preferredUsername: claimText(c.preferred_username) || undefined,
      groups,
      // The provider's session id is an internal handle, not something page scripts need.
      claims: Object.fromEntries(Object.entries(c).filter(([name]) => name !== 'sid')),
    })
  })
}
