/**
 * `clientAddress` (src/http/facts.ts): the peer, or, from a trusted proxy, the rightmost
 * X-Forwarded-For hop that is not a trusted proxy. What the rate limits key on.
 */
import t from 'tap'
import { clientAddress } from '../../../src/http/facts.ts'

const TRUSTED = new Set(['10.0.0.1', '10.0.0.2', '::ffff:10.0.0.1', 'fd00::1'])
const trusted = (a: string): boolean => TRUSTED.has(a)
const of = (xff: string | string[] | undefined, peer: string): string => clientAddress(xff === undefined ? {} : { 'x-forwarded-for': xff }, peer, trusted)

t.test('an untrusted peer is the client, whatever it sends', async (t) => {
  t.equal(of(undefined, '192.0.2.1'), '192.0.2.1')
  t.equal(of('198.51.100.1', '192.0.2.1'), '192.0.2.1')
  t.equal(of('10.0.0.1', '192.0.2.1'), '192.0.2.1', 'not even a trusted address in the header')
  t.equal(of(undefined, ''), '', 'an unknown peer stays unknown')
})

t.test('a trusted peer: the rightmost hop that is not trusted', async (t) => {
  t.equal(of(undefined, '10.0.0.1'), '10.0.0.1', 'no header: the proxy itself')
  t.equal(of('', '10.0.0.1'), '10.0.0.1', 'an empty header: the proxy itself')
  t.equal(of('198.51.100.1', '10.0.0.1'), '198.51.100.1')
  t.equal(of('6.6.6.6, 198.51.100.1', '10.0.0.1'), '198.51.100.1', 'what the client prepended is ignored')
  t.equal(of('6.6.6.6, 198.51.100.1, 10.0.0.2', '10.0.0.1'), '198.51.100.1', 'through two trusted proxies')
  t.equal(of(['6.6.6.6', '198.51.100.1'], '10.0.0.1'), '198.51.100.1', 'several header lines')
  t.equal(of('198.51.100.1', '::ffff:10.0.0.1'), '198.51.100.1', 'an IPv4-mapped trusted peer')
  t.equal(of('2001:db8::5', 'fd00::1'), '2001:db8::5', 'IPv6')
  t.equal(of('[2001:db8::5]:443', 'fd00::1'), '2001:db8::5', 'bracketed IPv6 with a port')
  t.equal(of('198.51.100.1:5555', '10.0.0.1'), '198.51.100.1', 'IPv4 with a port')
  t.equal(of(' 198.51.100.1 ', '10.0.0.1'), '198.51.100.1', 'spaces')
  t.equal(of('10.0.0.2', '10.0.0.1'), '10.0.0.2', 'every hop trusted: the leftmost')
  t.equal(of('198.51.100.1, unknown', '10.0.0.1'), '10.0.0.1', 'a hop that is no address: the trusted proxy that passed it on')
  t.equal(of('198.51.100.1, garbage, 10.0.0.2', '10.0.0.1'), '10.0.0.2', '... the nearest one')
  t.equal(of('[2001:db8::5', 'fd00::1'), 'fd00::1', 'an unclosed bracket is no address')
})
