import type { Logger } from 'pino'
import type { Note } from './decision.ts'

/** Write the lines a decision asked for (a session ended, a refresh failed) to a request's logger. */
export function writeNotes(log: Pick<Logger, 'info' | 'warn'>, notes: readonly Note[], reqId?: string): void {
  for (const note of notes) {
    const fields = reqId === undefined ? note.fields : { reqId, ...note.fields }
    if (note.level === 'warn') log.warn(fields, note.msg)
    else log.info(fields, note.msg)
  }
}
