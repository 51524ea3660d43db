// Tests for destination resolution (routes, MX ordering, null MX, implicit MX, address lists and
// the temporary/permanent verdicts) against the harness's fake DNS server.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { Resolver } from '../dns/resolver.ts';
import { orderMx, parseRoutes, resolveDestination, type Destination, type DestinationOptions, type NextHop } from './destination.ts';

let dns: FakeDnsServer;
beforeEach(async () => {
  dns = await FakeDnsServer.start();
});
afterEach(async () => {
  await dns.close();
});

// Always picks the last candidate: Fisher-Yates then leaves the order as the DNS answer gave it.
const keepOrder = () => 0.999;

function options(extra: Partial<DestinationOptions> & { trustAd?: boolean } = {}): DestinationOptions {
  const { trustAd, ...rest } = extra;
  return {
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 100, tries: 1, trustAd }),
    routes: new Map(),
    smtpPort: 2525,
    random: keepOrder,
    ...rest,
  };
}

function hops(dest: Destination): NextHop[] {
  assert.equal(dest.kind, 'hops', JSON.stringify(dest));
  return (dest as Extract<Destination, { kind: 'hops' }>).hops;
}

function summary(dest: Destination): [string, number, string[]][] {
  return hops(dest).map((h) => [h.host, h.preference, h.addresses]);
}

/** A tiny deterministic generator (LCG) so shuffles are reproducible. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

test('orderMx sorts by ascending preference and leaves the input alone', () => {
  const input = [
    { preference: 30, exchange: 'c' },
    { preference: 10, exchange: 'a' },
    { preference: 20, exchange: 'b' },
  ];
  const copy = structuredClone(input);
  assert.deepEqual(orderMx(input, Math.random).map((r) => r.exchange), ['a', 'b', 'c']);
  assert.deepEqual(input, copy);
});

test('orderMx shuffles equal preferences (RFC 5321 §5.1), reaching every order, and never mixes preferences', () => {
  const input = [
    { preference: 10, exchange: 'a' },
    { preference: 10, exchange: 'b' },
    { preference: 10, exchange: 'c' },
    { preference: 5, exchange: 'first' },
    { preference: 50, exchange: 'last' },
  ];
  const random = seeded(42);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const order = orderMx(input, random).map((r) => r.exchange);
    assert.equal(order[0], 'first');
    assert.equal(order[4], 'last');
    seen.add(order.slice(1, 4).join(''));
  }
  assert.deepEqual([...seen].sort(), ['abc', 'acb', 'bac', 'bca', 'cab', 'cba']);
  // The same random source gives the same order.
  assert.deepEqual(orderMx(input, seeded(7)), orderMx(input, seeded(7)));
  // A random() that returns exactly 1 must not push anything out of range.
  assert.equal(orderMx(input, () => 1).length, 5);
});

test('MX hosts become hops in preference order, IPv6 addresses before IPv4, on the SMTP port', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 20, exchange: 'backup.example.test' })
    .add('example.test', { type: 'MX', preference: 10, exchange: 'mx-a.example.test' }, { type: 'MX', preference: 10, exchange: 'mx-b.example.test' })
    .add('backup.example.test', { type: 'A', address: '192.0.2.30' })
    .add('mx-a.example.test', { type: 'A', address: '192.0.2.10' }, { type: 'AAAA', address: '2001:db8::10' }, { type: 'A', address: '192.0.2.11' })
    .add('mx-b.example.test', { type: 'AAAA', address: '2001:db8::20' });

  const dest = await resolveDestination('example.test', options());
  assert.deepEqual(summary(dest), [
    ['mx-a.example.test', 10, ['2001:db8::10', '192.0.2.10', '192.0.2.11']],
    ['mx-b.example.test', 10, ['2001:db8::20']],
    ['backup.example.test', 20, ['192.0.2.30']],
  ]);
  assert.ok(hops(dest).every((h) => h.port === 2525 && h.source === 'mx'));

  // Another draw of the random source swaps the two preference-10 hosts, never the backup.
  const swapped = await resolveDestination('example.test', options({ random: () => 0 }));
  assert.deepEqual(summary(swapped).map(([host]) => host), ['mx-b.example.test', 'mx-a.example.test', 'backup.example.test']);
});

test('the SMTP port defaults to 25', async () => {
  dns.add('example.test', { type: 'MX', preference: 0, exchange: 'mx.example.test' }).add('mx.example.test', { type: 'A', address: '192.0.2.1' });
  const { smtpPort: _unused, ...rest } = options();
  assert.equal(hops(await resolveDestination('example.test', rest))[0].port, 25);
});

test('a null MX (RFC 7505) means the domain takes no mail', async () => {
  dns.add('nomail.test', { type: 'MX', preference: 0, exchange: '.' });
  assert.deepEqual(await resolveDestination('nomail.test', options()), { kind: 'null-mx' });
  assert.equal(dns.queries.length, 1, 'no address lookups after a null MX');
});

test('a "." exchange beside real MX records is skipped, not taken for a null MX', async () => {
  dns
    .add('mixed.test', { type: 'MX', preference: 0, exchange: '.' }, { type: 'MX', preference: 10, exchange: 'mx.mixed.test' })
    .add('mx.mixed.test', { type: 'A', address: '192.0.2.1' });
  const dest = await resolveDestination('mixed.test', options());
  assert.deepEqual(summary(dest), [['mx.mixed.test', 10, ['192.0.2.1']]]);
  assert.deepEqual(dest.kind === 'hops' && dest.notes, ['null-mx-with-others: mixed.test']);
});

test('NXDOMAIN for the domain is permanent', async () => {
  assert.deepEqual(await resolveDestination('nowhere.test', options()), {
    kind: 'unresolvable',
    temporary: false,
    reason: 'nxdomain: nowhere.test',
  });
});

test('SERVFAIL or a timeout on the MX lookup is temporary', async () => {
  dns.fail('broken.test', 'SERVFAIL', 'MX').fail('silent.test', 'TIMEOUT', 'MX');
  assert.deepEqual(await resolveDestination('broken.test', options()), {
    kind: 'unresolvable',
    temporary: true,
    reason: 'dns-servfail: MX broken.test',
  });
  assert.deepEqual(await resolveDestination('silent.test', options()), {
    kind: 'unresolvable',
    temporary: true,
    reason: 'dns-timeout: MX silent.test',
  });
});

test('no MX records: the domain itself is the host at preference 0 (implicit MX, RFC 5321 §5.1)', async () => {
  dns.add('plain.test', { type: 'A', address: '192.0.2.5' }, { type: 'AAAA', address: '2001:db8::5' });
  const dest = await resolveDestination('plain.test', options());
  assert.deepEqual(hops(dest), [
    { host: 'plain.test', port: 2525, preference: 0, addresses: ['2001:db8::5', '192.0.2.5'], source: 'implicit-mx', addressesSecure: false },
  ]);
});

test('no MX and no address is permanent; no MX and a failing address lookup is temporary', async () => {
  dns.add('txt-only.test', { type: 'TXT', data: 'hello' });
  assert.deepEqual(await resolveDestination('txt-only.test', options()), {
    kind: 'unresolvable',
    temporary: false,
    reason: 'no-mx-no-address: txt-only.test',
  });
  dns.add('flaky.test', { type: 'TXT', data: 'hello' }).fail('flaky.test', 'SERVFAIL', 'A').fail('flaky.test', 'SERVFAIL', 'AAAA');
  const flaky = await resolveDestination('flaky.test', options());
  assert.equal(flaky.kind === 'unresolvable' && flaky.temporary, true);
  assert.match((flaky as { reason: string }).reason, /^dns-servfail: (A|AAAA) flaky\.test$/);
});

test('an MX host whose lookup fails is skipped, and the others are used', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'bad.example.test' }, { type: 'MX', preference: 20, exchange: 'good.example.test' })
    .fail('bad.example.test', 'SERVFAIL')
    .add('good.example.test', { type: 'A', address: '192.0.2.2' });
  const dest = await resolveDestination('example.test', options());
  assert.deepEqual(summary(dest), [['good.example.test', 20, ['192.0.2.2']]]);
  assert.deepEqual(dest.kind === 'hops' && dest.notes, ['mx-host-skipped: bad.example.test: dns-servfail']);
});

test('one address family failing still leaves the other', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'mx.example.test' })
    .add('mx.example.test', { type: 'AAAA', address: '2001:db8::1' })
    .fail('mx.example.test', 'SERVFAIL', 'A');
  assert.deepEqual(summary(await resolveDestination('example.test', options())), [['mx.example.test', 10, ['2001:db8::1']]]);
});

test('when every MX host fails temporarily the result is temporary', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'mx1.example.test' }, { type: 'MX', preference: 20, exchange: 'mx2.example.test' })
    .fail('mx1.example.test', 'SERVFAIL')
    .fail('mx2.example.test', 'TIMEOUT');
  const dest = await resolveDestination('example.test', options());
  assert.deepEqual(dest, {
    kind: 'unresolvable',
    temporary: true,
    reason:
      'mx-hosts-dns-failure: example.test (mx1.example.test: dns-servfail; mx2.example.test: dns-timeout)',
  });
});

test('MX hosts that do not exist or have no address are permanent, unless one also failed temporarily', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'gone.example.test' }, { type: 'MX', preference: 20, exchange: 'empty.example.test' })
    .add('empty.example.test', { type: 'TXT', data: 'no address here' });
  assert.deepEqual(await resolveDestination('example.test', options()), {
    kind: 'unresolvable',
    temporary: false,
    reason: 'mx-hosts-no-address: example.test (gone.example.test: nxdomain; empty.example.test: no-address)',
  });
  dns.fail('empty.example.test', 'SERVFAIL', 'A');
  const dest = await resolveDestination('example.test', options());
  assert.equal(dest.kind === 'unresolvable' && dest.temporary, true);
});

test('an MX exchange that is an IP address is skipped with a note', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 5, exchange: '192.0.2.99' }, { type: 'MX', preference: 10, exchange: 'mx.example.test' })
    .add('mx.example.test', { type: 'A', address: '192.0.2.1' });
  const dest = await resolveDestination('example.test', options());
  assert.deepEqual(summary(dest), [['mx.example.test', 10, ['192.0.2.1']]]);
  assert.deepEqual(dest.kind === 'hops' && dest.notes, ['mx-ip-literal: 192.0.2.99']);
  assert.ok(!dns.queries.some((q) => q.name.startsWith('192.')), 'no lookup of the literal');

  dns.reset();
  dns.add('literal.test', { type: 'MX', preference: 5, exchange: '192.0.2.99' });
  assert.deepEqual(await resolveDestination('literal.test', options()), {
    kind: 'unresolvable',
    temporary: false,
    reason: 'no-valid-mx: literal.test (mx-ip-literal: 192.0.2.99)',
  });
});

test('a host listed twice is tried once, at its best preference', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 30, exchange: 'mx.example.test' }, { type: 'MX', preference: 10, exchange: 'MX.example.test' })
    .add('mx.example.test', { type: 'A', address: '192.0.2.1' });
  assert.deepEqual(summary(await resolveDestination('example.test', options())), [['mx.example.test', 10, ['192.0.2.1']]]);
});

test('no more than maxMxHosts hosts are resolved', async () => {
  for (let i = 0; i < 12; i++) {
    dns.add('many.test', { type: 'MX', preference: i, exchange: `mx${i}.many.test` }).add(`mx${i}.many.test`, { type: 'A', address: `192.0.2.${i + 1}` });
  }
  const dest = await resolveDestination('many.test', options({ maxMxHosts: 3 }));
  assert.deepEqual(summary(dest).map(([host]) => host), ['mx0.many.test', 'mx1.many.test', 'mx2.many.test']);
  assert.deepEqual(dest.kind === 'hops' && dest.notes, ['mx-capped: 12 hosts, using 3']);
  assert.ok(!dns.queries.some((q) => q.name === 'mx3.many.test'), 'hosts past the cap are not looked up');
  assert.equal(hops(await resolveDestination('many.test', options())).length, 10, 'default cap is 10');
});

test('an MX host that is a CNAME keeps its MX name and gets the target’s addresses', async () => {
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'mx.example.test' })
    .add('mx.example.test', { type: 'CNAME', target: 'real.hoster.test' })
    .add('real.hoster.test', { type: 'A', address: '192.0.2.8' });
  assert.deepEqual(summary(await resolveDestination('example.test', options())), [['mx.example.test', 10, ['192.0.2.8']]]);
});

test('mxSecure and addressesSecure follow the AD bit when it is trusted', async () => {
  dns
    .secure('signed.test')
    .add('signed.test', { type: 'MX', preference: 10, exchange: 'mx.signed.test' }, { type: 'MX', preference: 20, exchange: 'mx.unsigned.test' })
    .add('mx.signed.test', { type: 'A', address: '192.0.2.1' })
    .add('mx.unsigned.test', { type: 'A', address: '192.0.2.2' });
  const trusted = await resolveDestination('signed.test', options({ trustAd: true }));
  assert.equal(trusted.kind === 'hops' && trusted.mxSecure, true);
  assert.deepEqual(hops(trusted).map((h) => [h.host, h.addressesSecure]), [['mx.signed.test', true], ['mx.unsigned.test', false]]);
  const untrusted = await resolveDestination('signed.test', options());
  assert.equal(untrusted.kind === 'hops' && untrusted.mxSecure, false);
  assert.ok(hops(untrusted).every((h) => !h.addressesSecure));
});

test('a static route replaces the MX lookup; an IP-literal route needs no DNS at all', async () => {
  dns.add('example.test', { type: 'MX', preference: 10, exchange: 'mx.example.test' });
  const routes = parseRoutes('example.test=192.0.2.50:2526,v6.test=[2001:db8::50]:25');
  assert.deepEqual(hops(await resolveDestination('Example.Test.', options({ routes }))), [
    { host: '192.0.2.50', port: 2526, preference: 0, addresses: ['192.0.2.50'], source: 'route', addressesSecure: false },
  ]);
  assert.deepEqual(summary(await resolveDestination('v6.test', options({ routes }))), [['2001:db8::50', 0, ['2001:db8::50']]]);
  assert.equal(dns.queries.length, 0);
});

test('a route to a host name resolves its AAAA and A, not MX', async () => {
  dns.add('relay.internal.test', { type: 'A', address: '192.0.2.60' }, { type: 'AAAA', address: '2001:db8::60' });
  const routes = parseRoutes('example.test=relay.internal.test:587');
  const dest = await resolveDestination('example.test', options({ routes }));
  assert.deepEqual(hops(dest), [
    { host: 'relay.internal.test', port: 587, preference: 0, addresses: ['2001:db8::60', '192.0.2.60'], source: 'route', addressesSecure: false },
  ]);
  assert.deepEqual(dns.queries.map((q) => q.type).sort(), ['A', 'AAAA']);
});

test('a route whose host does not resolve defers (operator configuration) rather than bounce', async () => {
  const routes = parseRoutes('example.test=missing.internal.test:25');
  assert.deepEqual(await resolveDestination('example.test', options({ routes })), {
    kind: 'unresolvable',
    temporary: true,
    reason: 'route-unresolvable: missing.internal.test for example.test (nxdomain)',
  });
});

test('domains are looked up as their A-label without the trailing dot; a U-label is the same domain; non-names fail permanently', async () => {
  dns.add('xn--bcher-kva.test', { type: 'MX', preference: 10, exchange: 'mx.xn--bcher-kva.test' }).add('mx.xn--bcher-kva.test', { type: 'A', address: '192.0.2.1' });
  assert.deepEqual(summary(await resolveDestination('XN--BCHER-KVA.test.', options())), [['mx.xn--bcher-kva.test', 10, ['192.0.2.1']]]);
  assert.equal(dns.queries[0].name, 'xn--bcher-kva.test');
  dns.clearQueries();
  assert.deepEqual(summary(await resolveDestination('Bücher.test', options())), [['mx.xn--bcher-kva.test', 10, ['192.0.2.1']]]);
  assert.equal(dns.queries[0].name, 'xn--bcher-kva.test');

  dns.clearQueries();
  for (const bad of ['under_score.test', '-dash.test', 'a..b.test', '192.0.2.1', '']) {
    assert.deepEqual(await resolveDestination(bad, options()), { kind: 'unresolvable', temporary: false, reason: `invalid-domain: ${bad}` });
  }
  assert.equal(dns.queries.length, 0);
});

test('parseRoutes reads domain=host:port entries like a transport map', () => {
  assert.deepEqual(parseRoutes(''), new Map());
  assert.deepEqual(
    parseRoutes(' Example.COM.=Relay.Example.NET:2525 , other.test=192.0.2.1:25,v6.test=[2001:db8::1]:587,pf.test=[smtp.pf.test],plain.test=mx.plain.test'),
    new Map([
      ['example.com', { host: 'relay.example.net', port: 2525 }],
      ['other.test', { host: '192.0.2.1', port: 25 }],
      ['v6.test', { host: '2001:db8::1', port: 587 }],
      ['pf.test', { host: 'smtp.pf.test', port: 25 }],
      ['plain.test', { host: 'mx.plain.test', port: 25 }],
    ]),
  );
  // A U-label domain is routed under its A-label, the form the queue groups recipients by.
  assert.deepEqual(parseRoutes('Bücher.test=relay.test:25'), new Map([['xn--bcher-kva.test', { host: 'relay.test', port: 25 }]]));
});

test('parseRoutes names the bad entry', () => {
  const bad: [string, RegExp][] = [
    ['a.test=relay.test:25,b.test', /entry 2 "b\.test": expected domain=host:port/],
    ['a.test=relay.test:0', /entry 1 "a\.test=relay\.test:0": bad port "0"/],
    ['a.test=relay.test:65536', /bad port "65536"/],
    ['a.test=relay.test:smtp', /bad port "smtp"/],
    ['a.test=', /missing host/],
    ['=relay.test:25', /invalid domain ""/],
    ['bücher_x.test=relay.test:25', /invalid domain "bücher_x\.test"/],
    ['a.test=relay_host:25', /invalid host "relay_host"/],
    ['a.test=2001:db8::1', /IPv6 address must be written in brackets/],
    ['a.test=r1.test:25,A.test=r2.test:25', /entry 2 .*a second route for a\.test/],
    ['a.test=r1.test:25,,b.test=r2.test:25', /entry 2 "": expected domain=host:port/],
  ];
  for (const [text, message] of bad) assert.throws(() => parseRoutes(text), message, text);
});
