/**
 * Keeps the bench's worker rows working (they need redis-server, so they are a system test): the
 * 1-second smoke run of (b), (w) one worker and (ww) two workers, both with a cookie store and
 * session.redis on a redis-server the bench starts, prints their rates and the (ww)/(w) ratio, and
 * says that the bare proxy stays one process. No timing assertions: only that each rate is above 0.
 */
import { spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { resolve } from 'node:path'
import t from 'tap'

const ROOT = resolve(import.meta.dirname, '../..')

t.test('npm run bench -- --smoke --only=b,w,ww', async (t) => {
  const res = await new Promise<{ code: number | null; stdout: string }>((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'bench/run.ts'), '--smoke', '--only=b,w,ww'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stdout += d.toString()))
    const timer = setTimeout(() => child.kill('SIGTERM'), 100_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout })
    })
  })
  t.equal(res.code, 0, `exits 0\n${res.stdout}`)
  for (const prefix of ['(b) ', '(w) Portcullis, one worker', '(ww) Portcullis, two workers']) {
    const line = res.stdout.split('\n').find((l) => l.startsWith(prefix))
    const rate = Number(/\d[\d,]*(?:\.\d+)?/.exec(line ?? '')?.[0]?.replace(/,/g, '') ?? Number.NaN)
    t.ok(rate > 0, `${prefix.trim()} printed a positive rate: ${line}`)
  }
  t.match(res.stdout, /\(ww\) \/ \(w\) = \d+\.\d+x; \(b\) and \(c\) are single processes/, 'prints the ratio and that the bare proxy is one process')
  const file = /^results: (.+\.json)$/m.exec(res.stdout)?.[1]
  t.ok(file, 'prints where the JSON went')
  if (file === undefined) return
  const path = resolve(ROOT, file)
  t.teardown(() => rmSync(path, { force: true }))
  const json = JSON.parse(readFileSync(path, 'utf8')) as { rows: Record<string, { status: string }>; workers: { ratioTwoToOne: number | null } }
  t.equal(json.rows.w?.status, 'ok')
  t.equal(json.rows.ww?.status, 'ok')
  t.ok((json.workers.ratioTwoToOne ?? 0) > 0, 'the JSON has the ratio')
})
