/** `server.workers`: a number is that many processes; auto is one per core the process may use. */
import { availableParallelism } from 'node:os'
import t from 'tap'
import { workerCount, workerChannel } from '../../src/cluster.ts'

t.test('workerCount', async (t) => {
  t.equal(workerCount(1), 1)
  t.equal(workerCount(4), 4)
  t.equal(workerCount('auto'), availableParallelism(), 'auto: os.availableParallelism()')
  t.ok(workerCount('auto') >= 1)
})

t.test('a process that is not a cluster worker has no worker channel (it serves as a single process)', async (t) => {
  t.equal(workerChannel(), null)
})
