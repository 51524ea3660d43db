// The DNS memo against the harness's fake DNS server (counting the queries that reach it), plus a
// tiny raw UDP server for negative answers with an SOA, which the fake does not send.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { DnsError, Resolver } from './resolver.ts';
import { DnsCache } from './cache.ts';

let dns: FakeDnsServer;
before(async () => {
  dns = await FakeDnsServer.start();
});
after(async () => {
  await dns.close();
});

function rig(servers = [dns.address]) {
  const clock = { now: Date.parse('2030-01-01T00:00:00Z') };
  const cache = new DnsCache(new Resolver({ servers, timeoutMs: 300, tries: 1 }), { now: () => clock.now });
  return { clock, cache };
}

const asked = (name: string) => dns.queries.filter((q) => q.name.toLowerCase() === name).length;

test('an answer is kept for its TTL, at most an hour and at least five seconds', async () => {
  dns.add('_mta-sts.ttl.test', { type: 'TXT', data: 'v=STSv1; id=1', ttl: 60 });
  dns.add('_mta-sts.long.test', { type: 'TXT', data: 'v=STSv1; id=2', ttl: 86_400 });
  dns.add('_25._tcp.mx.zero.test', { type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 1), ttl: 0 });
  const { clock, cache } = rig();

  for (let i = 0; i < 5; i++) assert.deepEqual((await cache.txt('_mta-sts.ttl.test')).records, ['v=STSv1; id=1']);
  assert.equal(asked('_mta-sts.ttl.test'), 1);
  clock.now += 59_999;
  await cache.txt('_MTA-STS.ttl.test.');
  assert.equal(asked('_mta-sts.ttl.test'), 1, 'the same name however written');
  clock.now += 1;
  await cache.txt('_mta-sts.ttl.test');
  assert.equal(asked('_mta-sts.ttl.test'), 2, 'asked again once the TTL ran out');

  await cache.txt('_mta-sts.long.test');
  clock.now += 3_599_999;
  await cache.txt('_mta-sts.long.test');
  assert.equal(asked('_mta-sts.long.test'), 1);
  clock.now += 1;
  await cache.txt('_mta-sts.long.test');
  assert.equal(asked('_mta-sts.long.test'), 2, 'a day-long TTL is kept for an hour');

  const first = await cache.tlsa('_25._tcp.mx.zero.test');
  first.records.length = 0;
  clock.now += 4_999;
  assert.equal((await cache.tlsa('_25._tcp.mx.zero.test')).records.length, 1, "a caller's changes do not reach the next");
  assert.equal(asked('_25._tcp.mx.zero.test'), 1);
  clock.now += 1;
  await cache.tlsa('_25._tcp.mx.zero.test');
  assert.equal(asked('_25._tcp.mx.zero.test'), 2, 'TTL 0 is kept for the minimum');
  assert.deepEqual(cache.stats, { hits: 7, queries: 6 });
});

test('NXDOMAIN and NODATA are kept; SERVFAIL and timeouts are not; concurrent lookups share one query', async () => {
  // The name exists, with no TLSA at it: NODATA.
  dns.add('_25._tcp.mx.nodata.test', { type: 'TXT', data: 'not a TLSA record' });
  dns.fail('_mta-sts.broken.test', 'SERVFAIL');
  dns.fail('_mta-sts.silent.test', 'TIMEOUT');
  const { clock, cache } = rig();

  const nx = await Promise.all(Array.from({ length: 10 }, () => cache.txt('_mta-sts.none.test').catch((e: unknown) => e)));
  for (const err of nx) assert.ok(err instanceof DnsError && err.code === 'NXDOMAIN' && err.name === '_mta-sts.none.test');
  assert.equal(asked('_mta-sts.none.test'), 1, 'ten concurrent lookups, one query');
  await assert.rejects(cache.txt('_mta-sts.none.test'), (e: unknown) => e instanceof DnsError && e.code === 'NXDOMAIN');
  assert.equal(asked('_mta-sts.none.test'), 1);

  assert.deepEqual((await cache.tlsa('_25._tcp.mx.nodata.test')).records, []);
  assert.deepEqual((await cache.tlsa('_25._tcp.mx.nodata.test')).records, []);
  assert.equal(asked('_25._tcp.mx.nodata.test'), 1);
  // Without an SOA in the answer there is no negative TTL: kept for the minimum.
  clock.now += 5_000;
  await assert.rejects(cache.txt('_mta-sts.none.test'));
  assert.equal(asked('_mta-sts.none.test'), 2);

  for (let i = 0; i < 3; i++) {
    await assert.rejects(cache.txt('_mta-sts.broken.test'), (e: unknown) => e instanceof DnsError && e.code === 'SERVFAIL');
    await assert.rejects(cache.txt('_mta-sts.silent.test'), (e: unknown) => e instanceof DnsError && e.code === 'TIMEOUT');
  }
  assert.equal(asked('_mta-sts.broken.test'), 3, 'every SERVFAIL was asked again');
  assert.equal(asked('_mta-sts.silent.test'), 3, 'every timeout was asked again');
  dns.fail('_mta-sts.broken.test', null);
  dns.add('_mta-sts.broken.test', { type: 'TXT', data: 'v=STSv1; id=3' });
  assert.deepEqual((await cache.txt('_mta-sts.broken.test')).records, ['v=STSv1; id=3'], 'the record is seen as soon as the server answers');
});

test('a negative answer with the zone SOA is kept for the lesser of its TTL and MINIMUM, at most five minutes (RFC 2308 §5)', async () => {
  // Answers NXDOMAIN for nx-*, NODATA otherwise, with an SOA whose TTL and MINIMUM the name gives.
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  let queries = 0;
  socket.on('message', (msg, rinfo) => {
    queries++;
    const query = dnsPacket.decode(msg);
    const q = query.questions![0];
    const [, ttl, minimum] = /-(\d+)-(\d+)\./.exec(q.name)!.map(Number);
    const soa = { mname: 'ns.test', rname: 'hostmaster.test', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum };
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.RECURSION_AVAILABLE | (q.name.startsWith('nx-') ? 3 : 0),
      questions: [q],
      answers: [],
      authorities: [{ type: 'SOA', name: 'test', ttl, class: 'IN', data: soa }],
    });
    socket.send(response, rinfo.port, rinfo.address);
  });
  try {
    const { clock, cache } = rig([`127.0.0.1:${socket.address().port}`]);
    const nx = await cache.txt('nx-3600-30.test').catch((e: unknown) => e);
    assert.ok(nx instanceof DnsError && nx.code === 'NXDOMAIN' && nx.negativeTtl === 30);
    assert.equal((await cache.tlsa('nodata-20-900.test')).ttl, 20);
    await cache.txt('nodata-3600-3600.test');
    assert.equal(queries, 3);

    clock.now += 19_999;
    await cache.tlsa('nodata-20-900.test');
    await assert.rejects(cache.txt('nx-3600-30.test'));
    assert.equal(queries, 3);
    clock.now += 1;
    await cache.tlsa('nodata-20-900.test');
    assert.equal(queries, 4, 'the SOA TTL (20 s) was lower than MINIMUM');
    clock.now += 10_000;
    await assert.rejects(cache.txt('nx-3600-30.test'));
    assert.equal(queries, 5, 'MINIMUM (30 s) was lower than the SOA TTL');
    clock.now = clock.now - 30_000 + 300_000;
    await cache.txt('nodata-3600-3600.test');
    assert.equal(queries, 6, 'an hour-long negative TTL is kept five minutes');
  } finally {
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
});
