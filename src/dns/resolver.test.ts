// Tests for the DNS stub resolver against the harness's fake DNS server, plus tiny raw UDP servers
// for the misbehaviour the fake cannot script (spoofed IDs, REFUSED, servers without EDNS).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import { getServers } from 'node:dns';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket } from 'dns-packet';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { DnsError, Resolver, parseDnsServers, type DnsErrorCode } from './resolver.ts';

let dns: FakeDnsServer;
beforeEach(async () => {
  dns = await FakeDnsServer.start();
});
afterEach(async () => {
  await dns.close();
});

function resolver(opts: { servers?: string[]; timeoutMs?: number; tries?: number; trustAd?: boolean } = {}): Resolver {
  return new Resolver({ servers: opts.servers ?? [dns.address], timeoutMs: opts.timeoutMs ?? 1000, tries: opts.tries ?? 1, trustAd: opts.trustAd });
}

async function rejectsWith(promise: Promise<unknown>, code: DnsErrorCode, name: string, rrtype: string): Promise<DnsError> {
  let caught: unknown;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof DnsError, `expected a DnsError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.name, name);
  assert.equal(caught.rrtype, rrtype);
  return caught;
}

interface RawServer {
  address: string;
  seen: { id: number; port: number; edns: boolean }[];
  close(): Promise<void>;
}

/** A UDP-only server whose replies are whatever `reply` builds for each query, sent in order. */
async function rawServer(reply: (query: DecodedPacket) => Buffer[]): Promise<RawServer> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const seen: RawServer['seen'] = [];
  socket.on('message', (msg, rinfo) => {
    const query = dnsPacket.decode(msg);
    seen.push({ id: query.id!, port: rinfo.port, edns: (query.additionals ?? []).some((a) => a.type === 'OPT') });
    for (const out of reply(query)) socket.send(out, rinfo.port, rinfo.address);
  });
  return {
    address: `127.0.0.1:${socket.address().port}`,
    seen,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

function response(query: DecodedPacket, opts: { id?: number; rcode?: number; answers?: Answer[]; name?: string; opt?: boolean } = {}): Buffer {
  const q = query.questions![0];
  return dnsPacket.encode({
    type: 'response',
    id: opts.id ?? query.id,
    flags: dnsPacket.RECURSION_AVAILABLE | (opts.rcode ?? 0),
    questions: [{ ...q, name: opts.name ?? q.name }],
    answers: opts.answers ?? [],
    additionals: opts.opt
      ? [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
      : [],
  });
}

test('MX, A, AAAA, TXT and TLSA answers come back as plain records', async () => {
  const der = Buffer.from('c0ffee', 'hex');
  dns
    .add('example.test', { type: 'MX', preference: 10, exchange: 'MX1.Example.Test.' }, { type: 'MX', preference: 20, exchange: 'mx2.example.test' })
    .add('example.test', { type: 'TXT', data: 'v=spf1 -all' })
    .add('mx1.example.test', { type: 'A', address: '192.0.2.1' }, { type: 'AAAA', address: '2001:db8::1' })
    .add('_25._tcp.mx1.example.test', { type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: der });
  const r = resolver();

  const mx = await r.mx('Example.TEST.');
  assert.deepEqual(mx.records, [
    { preference: 10, exchange: 'mx1.example.test' },
    { preference: 20, exchange: 'mx2.example.test' },
  ]);
  assert.equal(mx.canonicalName, 'example.test');
  assert.equal(mx.secure, false);
  assert.deepEqual((await r.a('mx1.example.test')).records, ['192.0.2.1']);
  assert.deepEqual((await r.aaaa('mx1.example.test')).records, ['2001:db8::1']);
  assert.deepEqual((await r.txt('example.test')).records, ['v=spf1 -all']);
  assert.deepEqual((await r.tlsa('_25._tcp.mx1.example.test')).records, [{ usage: 3, selector: 1, matchingType: 1, data: der }]);
});

test('queries ask for recursion and carry EDNS0 with a 1232-byte buffer and the DO bit', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  await resolver().a('example.test');
  assert.equal(dns.queries.length, 1);
  assert.equal(dns.queries[0].transport, 'udp');
  assert.equal(dns.queries[0].edns, 1232);
  assert.equal(dns.queries[0].do, true);
});

test('a TXT record split into several character-strings is joined into one string', async () => {
  const long = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(400) + 'é'.repeat(100);
  dns.add('sel._domainkey.example.test', { type: 'TXT', data: long }, { type: 'TXT', data: ['a', 'b', 'c'] });
  const txt = await resolver().txt('sel._domainkey.example.test');
  assert.deepEqual(txt.records.toSorted(), [long, 'abc'].toSorted());
});

test('a name with no records of the asked type is NODATA: an empty list, not an error', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  const mx = await resolver().mx('example.test');
  assert.deepEqual(mx.records, []);
  assert.equal(mx.canonicalName, 'example.test');
});

test('NXDOMAIN is a permanent DnsError naming the query', async () => {
  const err = await rejectsWith(resolver().mx('nowhere.test'), 'NXDOMAIN', 'nowhere.test', 'MX');
  assert.equal(err.temporary, false);
});

test('SERVFAIL is a temporary DnsError, after every try', async () => {
  dns.fail('broken.test', 'SERVFAIL');
  const err = await rejectsWith(resolver({ tries: 2 }).a('broken.test'), 'SERVFAIL', 'broken.test', 'A');
  assert.equal(err.temporary, true);
  assert.equal(dns.queries.length, 2);
});

test('a server that never answers gives TIMEOUT within the configured time', async () => {
  dns.fail('silent.test', 'TIMEOUT');
  const started = Date.now();
  const err = await rejectsWith(resolver({ timeoutMs: 100, tries: 2 }).mx('silent.test'), 'TIMEOUT', 'silent.test', 'MX');
  const elapsed = Date.now() - started;
  assert.equal(err.temporary, true);
  assert.equal(dns.queries.length, 2);
  assert.ok(elapsed >= 190 && elapsed < 2000, `took ${elapsed} ms`);
});

test('the second server is asked when the first times out', async () => {
  const second = await FakeDnsServer.start();
  try {
    dns.fail('example.test', 'TIMEOUT');
    second.add('example.test', { type: 'A', address: '192.0.2.7' });
    const a = await resolver({ servers: [dns.address, second.address], timeoutMs: 100, tries: 1 }).a('example.test');
    assert.deepEqual(a.records, ['192.0.2.7']);
    assert.equal(dns.queries.length, 1);
    assert.equal(second.queries.length, 1);
  } finally {
    await second.close();
  }
});

test('tries rotate through the servers: with two servers and two tries each is asked twice', async () => {
  const second = await FakeDnsServer.start();
  try {
    dns.fail('silent.test', 'TIMEOUT');
    second.fail('silent.test', 'TIMEOUT');
    await rejectsWith(resolver({ servers: [dns.address, second.address], timeoutMs: 50, tries: 2 }).a('silent.test'), 'TIMEOUT', 'silent.test', 'A');
    assert.equal(dns.queries.length, 2);
    assert.equal(second.queries.length, 2);
  } finally {
    await second.close();
  }
});

test('an IPv6 server written as [::1]:port is reached over UDP6 and TCP6', async () => {
  const v6 = await FakeDnsServer.start({ host: '::1', maxUdpSize: 512 });
  try {
    v6.add('example.test', { type: 'TXT', data: 'x'.repeat(600) });
    const txt = await new Resolver({ servers: [v6.address], timeoutMs: 1000, tries: 1 }).txt('example.test');
    assert.deepEqual(txt.records, ['x'.repeat(600)]);
    assert.deepEqual(v6.queries.map((q) => q.transport), ['udp', 'tcp']);
  } finally {
    await v6.close();
  }
});

test('a truncated UDP answer is asked again over TCP', async () => {
  const small = await FakeDnsServer.start({ maxUdpSize: 512 });
  try {
    const hosts = Array.from({ length: 40 }, (_, i) => ({ type: 'MX' as const, preference: i, exchange: `mail-exchanger-${i}.example.test` }));
    small.add('big.test', ...hosts);
    const mx = await new Resolver({ servers: [small.address], timeoutMs: 1000, tries: 1 }).mx('big.test');
    assert.equal(mx.records.length, 40);
    assert.deepEqual(
      small.queries.map((q) => [q.transport, q.truncated]),
      [['udp', true], ['tcp', false]],
    );
  } finally {
    await small.close();
  }
});

test('the AD bit shows as secure only when trustAd is on', async () => {
  dns.secure('signed.test').add('signed.test', { type: 'A', address: '192.0.2.1' });
  dns.add('plain.test', { type: 'A', address: '192.0.2.2' });
  assert.equal((await resolver().a('signed.test')).secure, false);
  assert.equal((await resolver({ trustAd: true }).a('signed.test')).secure, true);
  assert.equal((await resolver({ trustAd: true }).a('plain.test')).secure, false);
  // NODATA in a signed zone is authenticated denial: secure too.
  assert.deepEqual(await resolver({ trustAd: true }).mx('signed.test'), { records: [], secure: true, canonicalName: 'signed.test' });
});

test('a CNAME chain is followed and only the final name’s records of the asked type are kept', async () => {
  dns
    .add('www.example.test', { type: 'CNAME', target: 'Edge.Example.Test.' })
    .add('edge.example.test', { type: 'CNAME', target: 'host.cdn.test' })
    .add('host.cdn.test', { type: 'A', address: '192.0.2.9' }, { type: 'A', address: '192.0.2.10' });
  const a = await resolver().a('WWW.example.test');
  assert.deepEqual(a.records.toSorted(), ['192.0.2.10', '192.0.2.9']);
  assert.equal(a.canonicalName, 'host.cdn.test');
});

test('a CNAME to a name without the asked type is NODATA at the end of the chain', async () => {
  dns.add('alias.test', { type: 'CNAME', target: 'target.test' }).add('target.test', { type: 'A', address: '192.0.2.1' });
  assert.deepEqual(await resolver().aaaa('alias.test'), { records: [], secure: false, canonicalName: 'target.test' });
});

test('a response with the wrong ID or the wrong question is ignored; the genuine one is used', async () => {
  const a = (query: DecodedPacket, address: string): Answer[] => [
    { type: 'A', name: query.questions![0].name, ttl: 60, class: 'IN', data: address },
  ];
  const server = await rawServer((query) => [
    response(query, { id: (query.id! + 1) & 0xffff, answers: a(query, '203.0.113.66') }),
    response(query, { name: 'other.test', answers: a(query, '203.0.113.67') }),
    response(query, { answers: a(query, '192.0.2.1') }),
  ]);
  try {
    const result = await new Resolver({ servers: [server.address], timeoutMs: 1000, tries: 1 }).a('example.test');
    assert.deepEqual(result.records, ['192.0.2.1']);
  } finally {
    await server.close();
  }
});

test('a spoofed NXDOMAIN with a wrong ID cannot make a name vanish', async () => {
  const server = await rawServer((query) => [
    response(query, { id: query.id! ^ 0x8000, rcode: 3 }),
    response(query, { answers: [{ type: 'A', name: 'example.test', ttl: 60, class: 'IN', data: '192.0.2.1' }] }),
  ]);
  try {
    const result = await new Resolver({ servers: [server.address], timeoutMs: 1000, tries: 1 }).a('example.test');
    assert.deepEqual(result.records, ['192.0.2.1']);
  } finally {
    await server.close();
  }
});

test('each query uses a fresh socket and a random ID', async () => {
  const server = await rawServer((query) => [response(query)]);
  try {
    const r = new Resolver({ servers: [server.address], timeoutMs: 1000, tries: 1 });
    for (let i = 0; i < 4; i++) await r.a('example.test');
    assert.equal(server.seen.length, 4);
    assert.ok(new Set(server.seen.map((s) => s.port)).size > 1, 'source ports all equal');
    assert.ok(new Set(server.seen.map((s) => s.id)).size > 1, 'IDs all equal');
  } finally {
    await server.close();
  }
});

test('REFUSED from the first server moves on to the next; if all refuse, the error is REFUSED', async () => {
  const refusing = await rawServer((query) => [response(query, { rcode: 5 })]);
  try {
    dns.add('example.test', { type: 'A', address: '192.0.2.1' });
    const ok = await new Resolver({ servers: [refusing.address, dns.address], timeoutMs: 1000, tries: 1 }).a('example.test');
    assert.deepEqual(ok.records, ['192.0.2.1']);
    const err = await rejectsWith(new Resolver({ servers: [refusing.address], timeoutMs: 1000, tries: 1 }).a('example.test'), 'REFUSED', 'example.test', 'A');
    assert.equal(err.temporary, true);
  } finally {
    await refusing.close();
  }
});

test('a server that answers FORMERR to EDNS is asked again without it (RFC 6891 §7)', async () => {
  const old = await rawServer((query) => {
    const edns = (query.additionals ?? []).some((a) => a.type === 'OPT');
    if (edns) return [response(query, { rcode: 1 })];
    return [response(query, { answers: [{ type: 'A', name: 'example.test', ttl: 60, class: 'IN', data: '192.0.2.1' }] })];
  });
  try {
    const result = await new Resolver({ servers: [old.address], timeoutMs: 1000, tries: 1 }).a('example.test');
    assert.deepEqual(result.records, ['192.0.2.1']);
    assert.deepEqual(old.seen.map((s) => s.edns), [true, false]);
  } finally {
    await old.close();
  }
});

test('a FORMERR that carries OPT is a real FORMERR, not an EDNS problem', async () => {
  const picky = await rawServer((query) => [response(query, { rcode: 1, opt: true })]);
  try {
    await rejectsWith(new Resolver({ servers: [picky.address], timeoutMs: 1000, tries: 1 }).a('example.test'), 'FORMERR', 'example.test', 'A');
    assert.equal(picky.seen.length, 1);
  } finally {
    await picky.close();
  }
});

test('an empty server list means the system resolvers', () => {
  assert.deepEqual(new Resolver({ servers: [] }).servers, parseDnsServers(getServers().join(',')));
});

test('parseDnsServers accepts host, host:port and bracketed IPv6, and returns canonical host:port', () => {
  assert.deepEqual(parseDnsServers(''), []);
  assert.deepEqual(parseDnsServers(' 127.0.0.1:5353 , 192.0.2.53,[::1]:53,[2001:db8::53]'), [
    '127.0.0.1:5353',
    '192.0.2.53:53',
    '[::1]:53',
    '[2001:db8::53]:53',
  ]);
});

test('parseDnsServers names the bad entry', () => {
  const bad: [string, RegExp][] = [
    ['127.0.0.1:53,resolver.example:53', /entry 2 "resolver\.example:53".*not an IP address/],
    ['127.0.0.1:99999', /"127\.0\.0\.1:99999".*bad port/],
    ['127.0.0.1:0', /bad port/],
    ['127.0.0.1:', /bad port/],
    ['127.0.0.1,,127.0.0.2', /entry 2 "".*empty/],
    ['[::1:53', /"\[::1:53"/],
    ['[::1]:x', /bad port "x"/],
  ];
  for (const [text, message] of bad) assert.throws(() => parseDnsServers(text), message, text);
});

test('the Resolver refuses a server that is not an IP address', () => {
  assert.throws(() => new Resolver({ servers: ['dns.example:53'] }), /dns\.example:53.*not an IP address/);
});
