import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { DnsError, Resolver } from '../../src/dns/resolver.ts';
import { probe, startValidatingResolver, validatingResolverAvailable } from './validating-resolver.ts';
import type { ValidatingResolver } from './validating-resolver.ts';

const TLSA_DATA = randomBytes(32);
const TLSA_NAME = '_25._tcp.mx.example.test';
// Over the 1232-octet EDNS size Lacre asks for, so the answer comes truncated over UDP.
const LONG_TXT = 'v=long; '.repeat(250);

describe('validating resolver (unbound + ldns-signzone)', () => {
  let dns: ValidatingResolver;
  let validated: Resolver;
  let untrusting: Resolver;

  before(async () => {
    assert.ok(validatingResolverAvailable(), 'unbound or ldnsutils missing: apt-get install unbound ldnsutils');
    dns = await startValidatingResolver({
      zones: [
        {
          origin: 'example.test',
          records: [
            { name: 'example.test', type: 'MX', preference: 10, exchange: 'mx.example.test' },
            'mx IN A 127.0.0.1',
            { name: TLSA_NAME, type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: TLSA_DATA },
            'away IN CNAME www.example.org.',
            { name: 'big.example.test', type: 'TXT', data: LONG_TXT },
          ],
        },
        {
          origin: 'plain.test',
          sign: false,
          records: [
            { name: 'plain.test', type: 'MX', preference: 5, exchange: 'mx.plain.test' },
            { name: '_25._tcp.mx.plain.test', type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: TLSA_DATA },
          ],
        },
        {
          origin: 'bogus.test',
          tamper: 'bogus-tlsa',
          records: [
            'bogus.test. IN MX 10 mx.bogus.test.',
            `_25._tcp.mx IN TLSA 3 1 1 ${TLSA_DATA.toString('hex')}`,
          ],
        },
        { origin: 'stranger.test', tamper: 'wrong-anchor', records: ['@ IN MX 10 mx.stranger.test.'] },
      ],
    });
    validated = new Resolver({ servers: [dns.server], trustAd: true, timeoutMs: 3000, tries: 1 });
    untrusting = new Resolver({ servers: [dns.server], trustAd: false, timeoutMs: 3000, tries: 1 });
  });

  after(async () => {
    await dns?.stop();
  });

  it('serves on a loopback port with one trust anchor per signed zone', () => {
    assert.match(dns.server, /^127\.0\.0\.1:\d+$/);
    assert.equal(dns.trustAnchors.length, 3);
    for (const ds of dns.trustAnchors) assert.match(ds, /\sDS\s+\d+ 13 2 [0-9a-f]{64}$/);
  });

  it('answers TLSA and MX from the signed zone as secure', async () => {
    const tlsa = await validated.tlsa(TLSA_NAME);
    assert.equal(tlsa.secure, true);
    assert.deepEqual(tlsa.records, [{ usage: 3, selector: 1, matchingType: 1, data: TLSA_DATA }]);
    const mx = await validated.mx('example.test');
    assert.equal(mx.secure, true);
    assert.deepEqual(mx.records, [{ preference: 10, exchange: 'mx.example.test' }]);
  });

  it('serves a signed answer too large for UDP over TCP', async () => {
    const udp = await probe(dns.server, 'big.example.test', 'TXT');
    assert.equal(udp.truncated, true);
    const txt = await validated.txt('big.example.test');
    assert.deepEqual(txt.records, [LONG_TXT]);
    assert.equal(txt.secure, true);
  });

  it('reports the same answers as not secure when the AD bit is not trusted', async () => {
    const tlsa = await untrusting.tlsa(TLSA_NAME);
    assert.equal(tlsa.records.length, 1);
    assert.equal(tlsa.secure, false);
    assert.equal((await untrusting.mx('example.test')).secure, false);
  });

  it('answers the unsigned zone without the AD bit', async () => {
    const mx = await validated.mx('plain.test');
    assert.deepEqual(mx.records, [{ preference: 5, exchange: 'mx.plain.test' }]);
    assert.equal(mx.secure, false);
    assert.equal((await validated.tlsa('_25._tcp.mx.plain.test')).secure, false);
  });

  it('fails a TLSA lookup with SERVFAIL when its signature is corrupted, leaving the rest of the zone secure', async () => {
    await assert.rejects(validated.tlsa('_25._tcp.mx.bogus.test'), (err: unknown) => {
      assert.ok(err instanceof DnsError);
      assert.equal(err.code, 'SERVFAIL');
      return true;
    });
    assert.equal((await validated.mx('bogus.test')).secure, true);
    assert.match(dns.log(), /validation failure <_25\._tcp\.mx\.bogus\.test\. TLSA IN>/);
  });

  it('fails every lookup in a zone whose trust anchor does not match its keys', async () => {
    await assert.rejects(validated.mx('stranger.test'), (err: unknown) => err instanceof DnsError && err.code === 'SERVFAIL');
  });

  it('proves a missing name in the signed zone does not exist (authenticated NXDOMAIN)', async () => {
    await assert.rejects(validated.tlsa('_25._tcp.nothere.example.test'), (err: unknown) => {
      assert.ok(err instanceof DnsError);
      assert.equal(err.code, 'NXDOMAIN');
      return true;
    });
    const raw = await probe(dns.server, 'nothere.example.test', 'A');
    assert.deepEqual([raw.rcode, raw.ad], ['NXDOMAIN', true]);
    const unsigned = await probe(dns.server, 'nothere.plain.test', 'A');
    assert.deepEqual([unsigned.rcode, unsigned.ad], ['NXDOMAIN', false]);
  });

  it('proves a missing type at an existing name is empty (authenticated NODATA)', async () => {
    const aaaa = await validated.aaaa('mx.example.test');
    assert.deepEqual(aaaa.records, []);
    assert.equal(aaaa.secure, true);
  });

  it('answers names outside its zones from its own empty root instead of the Internet', async () => {
    await assert.rejects(validated.mx('example.org'), (err: unknown) => err instanceof DnsError && err.code === 'NXDOMAIN');
    // A CNAME out of the zones would send unbound to the real root servers without the local root.
    const raw = await probe(dns.server, 'away.example.test', 'A');
    assert.equal(raw.rcode, 'NXDOMAIN');
    assert.deepEqual(
      raw.answers.filter((a) => a.type === 'CNAME').map((a) => (a as { data?: unknown }).data),
      ['www.example.org'],
    );
  });
});

describe('validating resolver lifecycle', () => {
  it('stops answering and can be stopped twice', async () => {
    const dns = await startValidatingResolver({ zones: [{ origin: 'once.test', records: ['@ IN A 127.0.0.1'] }] });
    try {
      assert.equal((await probe(dns.server, 'once.test', 'A')).ad, true);
    } finally {
      await dns.stop();
    }
    await dns.stop();
    await assert.rejects(probe(dns.server, 'once.test', 'A', 300), /no answer/);
  });

  it('refuses to corrupt signatures of a type the zone does not have', async () => {
    await assert.rejects(
      startValidatingResolver({ zones: [{ origin: 'nothing.test', tamper: 'bogus-tlsa', records: ['@ IN A 127.0.0.1'] }] }),
      /no TLSA records to corrupt/,
    );
  });
});
