// The policy sources as deliveries use them, against the harness's fake DNS server: the
// `_mta-sts` TXT record is asked once per TTL, not once per batch, a domain without one once per
// negative TTL, and an MX host's TLSA records once per TTL, not once per hop.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { Resolver } from '../dns/resolver.ts';
import { buildPolicySources } from './sources.ts';

let dns: FakeDnsServer;
let data: TempData;
before(async () => {
  dns = await FakeDnsServer.start();
  data = await openTempData();
});
after(async () => {
  await dns.close();
  await data.close();
});

test('repeated batches and hops reuse the _mta-sts TXT and TLSA answers; a SERVFAIL is asked again', async () => {
  const built = buildPolicySources({
    store: data.store,
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 300, tries: 1, trustAd: true }),
    configured: {},
    defaultLevel: 'may',
    ca: [],
    mtaStsPort: 1,
    mtaStsFetchTimeoutMs: 1_000,
  });
  // A TXT record that is not MTA-STS: evidence "none" without any policy fetch.
  dns.add('_mta-sts.listed.test', { type: 'TXT', data: 'v=spf1 -all', ttl: 300 });
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', { type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7), ttl: 300 });
  dns.fail('_mta-sts.flaky.test', 'SERVFAIL');
  const hop = { host: 'mx.dane.test', addressesSecure: true, source: 'mx' as const };

  for (let batch = 0; batch < 5; batch++) {
    assert.equal((await built.sources.mtaSts('listed.test')).kind, 'none');
    assert.equal((await built.sources.mtaSts('unlisted.test')).kind, 'none');
    assert.equal((await built.sources.mtaSts('flaky.test')).kind, 'none');
    assert.equal((await built.sources.dane(hop)).kind, 'usable');
  }
  const count = (name: string, type: string) => dns.queries.filter((q) => q.name.toLowerCase() === name && q.type === type).length;
  assert.equal(count('_mta-sts.listed.test', 'TXT'), 1);
  assert.equal(count('_mta-sts.unlisted.test', 'TXT'), 1, 'NXDOMAIN is kept too');
  assert.equal(count('_mta-sts.flaky.test', 'TXT'), 5, 'a failed lookup is never kept');
  assert.equal(count('_25._tcp.mx.dane.test', 'TLSA'), 1);
});
