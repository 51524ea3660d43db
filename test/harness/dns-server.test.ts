// Self-tests for the fake DNS server: Node's own resolver (what the service uses) must see the
// scripted data and failures, and raw queries pin down the wire details (AD bit, TC, TCP framing).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { once } from 'node:events';
import dnsPacket from 'dns-packet';
import type { DecodedPacket, Packet, RecordType } from 'dns-packet';
import { FakeDnsServer } from './dns-server.ts';

const QUERY_TIMEOUT_MS = 2000;

let dns: FakeDnsServer;
beforeEach(async () => {
  dns = await FakeDnsServer.start();
});
afterEach(async () => {
  await dns.close();
});

function resolver(opts: { timeout?: number; tries?: number } = {}): Resolver {
  const r = new Resolver({ timeout: opts.timeout ?? 1000, tries: opts.tries ?? 1 });
  r.setServers([dns.address]);
  return r;
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code);
    return true;
  });
}

interface QueryOptions {
  dnssecOk?: boolean;
  adFlag?: boolean;
  edns?: number | false;
  id?: number;
}

function buildQuery(name: string, type: RecordType, opts: QueryOptions = {}): Packet {
  const edns = opts.edns ?? (opts.dnssecOk ? 1232 : false);
  return {
    type: 'query',
    id: opts.id ?? 4242,
    flags: dnsPacket.RECURSION_DESIRED | (opts.adFlag ? dnsPacket.AUTHENTIC_DATA : 0),
    questions: [{ type, name, class: 'IN' }],
    additionals:
      edns === false
        ? []
        : [
            {
              type: 'OPT',
              name: '.',
              udpPayloadSize: edns,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: opts.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
              flag_do: opts.dnssecOk ?? false,
              options: [],
            },
          ],
  };
}

function udpQuery(name: string, type: RecordType, opts: QueryOptions = {}): Promise<DecodedPacket> {
  const socket = dgram.createSocket('udp4');
  return new Promise<DecodedPacket>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('UDP query timed out')), QUERY_TIMEOUT_MS);
    socket.once('message', (msg) => {
      clearTimeout(timer);
      resolve(dnsPacket.decode(msg));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.send(dnsPacket.encode(buildQuery(name, type, opts)), dns.port, '127.0.0.1');
  }).finally(() => socket.close());
}

// Sends all queries in a single write, then collects one framed response per query.
function tcpQueries(queries: Packet[]): Promise<DecodedPacket[]> {
  const socket = net.connect(dns.port, '127.0.0.1');
  return new Promise<DecodedPacket[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('TCP query timed out')), QUERY_TIMEOUT_MS);
    const responses: DecodedPacket[] = [];
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const length = pending.readUInt16BE(0);
        responses.push(dnsPacket.decode(pending.subarray(2, 2 + length)));
        pending = pending.subarray(2 + length);
      }
      if (responses.length === queries.length) {
        clearTimeout(timer);
        resolve(responses);
      }
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.write(Buffer.concat(queries.map((q) => dnsPacket.streamEncode(q))));
  }).finally(() => socket.destroy());
}

async function tcpQuery(name: string, type: RecordType, opts: QueryOptions = {}): Promise<DecodedPacket> {
  const [response] = await tcpQueries([buildQuery(name, type, opts)]);
  return response;
}

function rcodeOf(packet: DecodedPacket): string {
  return (packet as DecodedPacket & { rcode: string }).rcode;
}

test('listens for UDP and TCP on the same loopback port and reports it as host:port', async () => {
  assert.match(dns.address, /^127\.0\.0\.1:\d+$/);
  assert.equal(dns.address, `127.0.0.1:${dns.port}`);
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  assert.equal(rcodeOf(await udpQuery('example.test', 'A')), 'NOERROR');
  assert.equal(rcodeOf(await tcpQuery('example.test', 'A')), 'NOERROR');
});

test('serves MX, A, AAAA, TXT and TLSA records to Node’s resolver', async () => {
  const tlsaData = Buffer.from('a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90', 'hex');
  dns
    .add(
      'example.test',
      { type: 'MX', preference: 10, exchange: 'mx1.example.test' },
      { type: 'MX', preference: 20, exchange: 'mx2.example.test' },
      { type: 'TXT', data: 'v=spf1 -all' },
    )
    .add('mx1.example.test', { type: 'A', address: '127.0.0.1' }, { type: 'AAAA', address: '::1' })
    .add('_25._tcp.mx1.example.test', {
      type: 'TLSA',
      usage: 3,
      selector: 1,
      matchingType: 1,
      data: tlsaData,
    });
  const r = resolver();
  const mx = await r.resolveMx('example.test');
  assert.deepEqual(
    // Node 24 adds a `type: 'MX'` field to each entry; only the data matters here.
    mx.map(({ priority, exchange }) => ({ priority, exchange })).sort((a, b) => a.priority - b.priority),
    [
      { priority: 10, exchange: 'mx1.example.test' },
      { priority: 20, exchange: 'mx2.example.test' },
    ],
  );
  assert.deepEqual(await r.resolve4('mx1.example.test'), ['127.0.0.1']);
  assert.deepEqual(await r.resolve6('mx1.example.test'), ['::1']);
  assert.deepEqual(await r.resolveTxt('example.test'), [['v=spf1 -all']]);
  const tlsa = await r.resolveTlsa('_25._tcp.mx1.example.test');
  assert.equal(tlsa.length, 1);
  assert.equal(tlsa[0].certUsage, 3);
  assert.equal(tlsa[0].selector, 1);
  assert.equal(tlsa[0].match, 1);
  assert.deepEqual(Buffer.from(tlsa[0].data), tlsaData);
});

test('splits a long TXT string into 255-byte character-strings', async () => {
  const value = 'v=DKIM1; k=rsa; p=' + 'A'.repeat(600);
  dns.add('sel._domainkey.example.test', { type: 'TXT', data: value });
  const [record] = await resolver().resolveTxt('sel._domainkey.example.test');
  assert.deepEqual(
    record.map((s) => s.length),
    [255, 255, value.length - 510],
  );
  assert.equal(record.join(''), value);
});

test('sends TXT character-strings as given when passed an array', async () => {
  dns.add('example.test', { type: 'TXT', data: ['part one ', 'part two'] });
  assert.deepEqual(await resolver().resolveTxt('example.test'), [['part one ', 'part two']]);
  assert.throws(() => dns.add('x.test', { type: 'TXT', data: ['x'.repeat(256)] }), /255 bytes/);
});

test('follows a CNAME chain inside the answer as a recursive resolver returns it', async () => {
  dns
    .add('mail.example.test', { type: 'CNAME', target: 'hop.example.net' })
    .add('hop.example.net', { type: 'CNAME', target: 'mx.example.org' })
    .add('mx.example.org', { type: 'A', address: '192.0.2.7' });
  const r = resolver();
  assert.deepEqual(await r.resolve4('mail.example.test'), ['192.0.2.7']);
  assert.deepEqual(await r.resolveCname('mail.example.test'), ['hop.example.net']);

  const response = await udpQuery('mail.example.test', 'A');
  assert.deepEqual(
    response.answers?.map((a) => [a.name, a.type, 'data' in a ? a.data : null]),
    [
      ['mail.example.test', 'CNAME', 'hop.example.net'],
      ['hop.example.net', 'CNAME', 'mx.example.org'],
      ['mx.example.org', 'A', '192.0.2.7'],
    ],
  );
});

test('answers NXDOMAIN at the end of a CNAME chain that leads nowhere, keeping the chain', async () => {
  dns.add('alias.example.test', { type: 'CNAME', target: 'gone.example.test' });
  const response = await udpQuery('alias.example.test', 'A');
  assert.equal(rcodeOf(response), 'NXDOMAIN');
  assert.equal(response.answers?.length, 1);
  await rejectsWithCode(resolver().resolve4('alias.example.test'), 'ENOTFOUND');
});

test('answers SERVFAIL for a CNAME loop', async () => {
  dns
    .add('a.example.test', { type: 'CNAME', target: 'b.example.test' })
    .add('b.example.test', { type: 'CNAME', target: 'a.example.test' });
  assert.equal(rcodeOf(await udpQuery('a.example.test', 'A')), 'SERVFAIL');
});

test('refuses a CNAME next to other data', () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  assert.throws(() => dns.add('example.test', { type: 'CNAME', target: 'x.test' }), /CNAME/);
});

test('answers NXDOMAIN for a name that does not exist', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  await rejectsWithCode(resolver().resolveMx('nothing.example.test'), 'ENOTFOUND');
  assert.equal(rcodeOf(await udpQuery('nothing.example.test', 'MX')), 'NXDOMAIN');
});

test('answers NODATA (NOERROR, empty) for a name that exists with other types', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  const response = await udpQuery('example.test', 'MX');
  assert.equal(rcodeOf(response), 'NOERROR');
  assert.equal(response.answers?.length, 0);
  await rejectsWithCode(resolver().resolveMx('example.test'), 'ENODATA');
});

test('answers NODATA, not NXDOMAIN, for an empty non-terminal', async () => {
  dns.add('_25._tcp.mx.example.test', { type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32) });
  assert.equal(rcodeOf(await udpQuery('_tcp.mx.example.test', 'TLSA')), 'NOERROR');
  assert.equal(rcodeOf(await udpQuery('_26._tcp.mx.example.test', 'TLSA')), 'NXDOMAIN');
});

test('matches names case-insensitively and ignores a trailing dot', async () => {
  dns.add('Example.TEST.', { type: 'A', address: '192.0.2.1' });
  assert.deepEqual(await resolver().resolve4('EXAMPLE.test'), ['192.0.2.1']);
});

test('answers SERVFAIL for a name scripted to fail', async () => {
  dns.add('broken.test', { type: 'A', address: '192.0.2.1' });
  dns.fail('broken.test', 'SERVFAIL');
  await rejectsWithCode(resolver().resolve4('broken.test'), 'ESERVFAIL');
});

test('answers NXDOMAIN for a name scripted to, even when it has records', async () => {
  dns.add('hidden.test', { type: 'A', address: '192.0.2.1' });
  dns.fail('hidden.test', 'NXDOMAIN');
  await rejectsWithCode(resolver().resolve4('hidden.test'), 'ENOTFOUND');
});

test('applies a per-type failure to that type only, and can lift it', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' }, { type: 'TXT', data: 'hello' });
  dns.fail('example.test', 'SERVFAIL', 'TXT');
  const r = resolver();
  await rejectsWithCode(r.resolveTxt('example.test'), 'ESERVFAIL');
  assert.deepEqual(await r.resolve4('example.test'), ['192.0.2.1']);
  dns.fail('example.test', null, 'TXT');
  assert.deepEqual(await resolver().resolveTxt('example.test'), [['hello']]);
});

test('fails a CNAME chain whose target is scripted to SERVFAIL', async () => {
  dns.add('alias.example.test', { type: 'CNAME', target: 'target.example.test' });
  dns.add('target.example.test', { type: 'A', address: '192.0.2.1' });
  dns.fail('target.example.test', 'SERVFAIL');
  await rejectsWithCode(resolver().resolve4('alias.example.test'), 'ESERVFAIL');
});

test('drops queries for a name scripted to time out, so the client gets ETIMEOUT', { timeout: 5000 }, async () => {
  dns.add('slow.test', { type: 'A', address: '192.0.2.1' });
  dns.fail('slow.test', 'TIMEOUT');
  const started = Date.now();
  await rejectsWithCode(resolver({ timeout: 200, tries: 1 }).resolve4('slow.test'), 'ETIMEOUT');
  assert.ok(Date.now() - started >= 150);
  assert.ok(dns.queries.length >= 1);
  assert.ok(dns.queries.every((q) => q.outcome === 'dropped'));
});

test('sets AD for a secure zone only when the query sets DO or AD', async () => {
  dns.add('example.test', { type: 'MX', preference: 10, exchange: 'mx.example.test' });
  dns.secure('example.test');

  const withDo = await udpQuery('example.test', 'MX', { dnssecOk: true });
  assert.equal(withDo.flag_ad, true);
  assert.equal(withDo.answers?.length, 1);
  const withAdFlag = await udpQuery('example.test', 'MX', { adFlag: true });
  assert.equal(withAdFlag.flag_ad, true);
  const plain = await udpQuery('example.test', 'MX');
  assert.equal(plain.flag_ad, false);
  const ednsWithoutDo = await udpQuery('example.test', 'MX', { edns: 1232 });
  assert.equal(ednsWithoutDo.flag_ad, false);
  const overTcp = await tcpQuery('example.test', 'MX', { dnssecOk: true });
  assert.equal(overTcp.flag_ad, true);
});

test('echoes DO in the OPT record of the answer', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  const response = await udpQuery('example.test', 'A', { dnssecOk: true });
  const opt = response.additionals?.find((a) => a.type === 'OPT');
  assert.ok(opt && opt.type === 'OPT');
  assert.equal(opt.flag_do, true);
  const plain = await udpQuery('example.test', 'A');
  assert.equal(plain.additionals?.length, 0);
});

test('never sets AD outside a secure zone', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  assert.equal((await udpQuery('example.test', 'A', { dnssecOk: true })).flag_ad, false);
});

test('secures names below the zone, and lets a nested setting override it', async () => {
  dns
    .add('mx.example.test', { type: 'A', address: '192.0.2.1' })
    .add('mx.insecure.example.test', { type: 'A', address: '192.0.2.2' });
  dns.secure('example.test').secure('insecure.example.test', false);
  assert.equal((await udpQuery('mx.example.test', 'A', { dnssecOk: true })).flag_ad, true);
  assert.equal((await udpQuery('mx.insecure.example.test', 'A', { dnssecOk: true })).flag_ad, false);
});

test('sets AD on authenticated denial (NXDOMAIN, NODATA) but never on SERVFAIL', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  dns.secure('example.test');
  dns.fail('broken.example.test', 'SERVFAIL');
  const nx = await udpQuery('none.example.test', 'A', { dnssecOk: true });
  assert.equal(rcodeOf(nx), 'NXDOMAIN');
  assert.equal(nx.flag_ad, true);
  const nodata = await udpQuery('example.test', 'TLSA', { dnssecOk: true });
  assert.equal(nodata.flag_ad, true);
  const servfail = await udpQuery('broken.example.test', 'A', { dnssecOk: true });
  assert.equal(rcodeOf(servfail), 'SERVFAIL');
  assert.equal(servfail.flag_ad, false);
});

test('withholds AD when a CNAME chain leaves the secure zone', async () => {
  dns
    .add('mx.example.test', { type: 'CNAME', target: 'mx.hoster.test' })
    .add('mx.hoster.test', { type: 'A', address: '192.0.2.1' });
  dns.secure('example.test');
  assert.equal((await udpQuery('mx.example.test', 'A', { dnssecOk: true })).flag_ad, false);
  dns.secure('hoster.test');
  assert.equal((await udpQuery('mx.example.test', 'A', { dnssecOk: true })).flag_ad, true);
});

test('truncates a UDP answer over 512 bytes without EDNS and serves it in full over TCP', async () => {
  dns.add('big.test', { type: 'TXT', data: 'x'.repeat(700) });
  const udp = await udpQuery('big.test', 'TXT');
  assert.equal(udp.flag_tc, true);
  assert.equal(udp.answers?.length, 0);
  const tcp = await tcpQuery('big.test', 'TXT');
  assert.equal(tcp.flag_tc, false);
  assert.equal(tcp.answers?.length, 1);
});

test('respects the client’s EDNS buffer size before truncating', async () => {
  dns.add('big.test', { type: 'TXT', data: 'x'.repeat(700) });
  assert.equal((await udpQuery('big.test', 'TXT', { edns: 1232 })).flag_tc, false);
  assert.equal((await udpQuery('big.test', 'TXT', { edns: 600 })).flag_tc, true);
  assert.equal((await udpQuery('big.test', 'TXT', { edns: 100 })).flag_tc, true);
});

test('lets Node’s resolver retry a truncated answer over TCP', async () => {
  const value = 'y'.repeat(3000);
  dns.add('big.test', { type: 'TXT', data: value });
  const [record] = await resolver().resolveTxt('big.test');
  assert.equal(record.join(''), value);
  const log = dns.queries.map((q) => [q.transport, q.truncated]);
  assert.deepEqual(log, [
    ['udp', true],
    ['tcp', false],
  ]);
});

test('can force TCP fallback with a small maxUdpSize', async () => {
  await dns.close();
  dns = await FakeDnsServer.start({ maxUdpSize: 40 });
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  assert.equal((await udpQuery('example.test', 'A', { edns: 4096 })).flag_tc, true);
  assert.deepEqual(await resolver().resolve4('example.test'), ['192.0.2.1']);
  assert.ok(dns.queries.some((q) => q.transport === 'tcp'));
});

test('answers several pipelined queries on one TCP connection', async () => {
  dns.add('a.test', { type: 'A', address: '192.0.2.1' }).add('b.test', { type: 'A', address: '192.0.2.2' });
  const responses = await tcpQueries([buildQuery('a.test', 'A', { id: 1 }), buildQuery('b.test', 'A', { id: 2 })]);
  assert.deepEqual(
    responses.map((r) => [r.id, r.answers?.[0] && 'data' in r.answers[0] ? r.answers[0].data : null]),
    [
      [1, '192.0.2.1'],
      [2, '192.0.2.2'],
    ],
  );
});

test('logs each query with name, type, transport, DO bit and outcome', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  await udpQuery('example.test', 'A', { dnssecOk: true });
  await tcpQuery('Missing.test', 'MX');
  assert.deepEqual(
    dns.queries.map(({ name, type, transport, edns, do: dnssecOk, outcome }) => ({
      name,
      type,
      transport,
      edns,
      dnssecOk,
      outcome,
    })),
    [
      { name: 'example.test', type: 'A', transport: 'udp', edns: 1232, dnssecOk: true, outcome: 'NOERROR' },
      { name: 'Missing.test', type: 'MX', transport: 'tcp', edns: null, dnssecOk: false, outcome: 'NXDOMAIN' },
    ],
  );
});

test('reset forgets records, failures, security and the log', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  dns.fail('other.test', 'SERVFAIL');
  dns.secure('example.test');
  await udpQuery('example.test', 'A');
  dns.reset();
  assert.equal(dns.queries.length, 0);
  assert.equal(rcodeOf(await udpQuery('example.test', 'A', { dnssecOk: true })), 'NXDOMAIN');
  assert.equal((await udpQuery('example.test', 'A', { dnssecOk: true })).flag_ad, false);
  assert.equal(rcodeOf(await udpQuery('other.test', 'A')), 'NXDOMAIN');
});

test('remove drops one type or the whole name', async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' }, { type: 'TXT', data: 't' });
  dns.remove('example.test', 'TXT');
  assert.equal(rcodeOf(await udpQuery('example.test', 'TXT')), 'NOERROR');
  assert.equal((await udpQuery('example.test', 'TXT')).answers?.length, 0);
  dns.remove('example.test');
  assert.equal(rcodeOf(await udpQuery('example.test', 'A')), 'NXDOMAIN');
});

test('closes promptly with an idle TCP client connected, and close is idempotent', { timeout: 5000 }, async () => {
  dns.add('example.test', { type: 'A', address: '192.0.2.1' });
  const socket = net.connect(dns.port, '127.0.0.1');
  socket.on('error', () => {});
  const cut = once(socket, 'close');
  // One answered query proves the server holds the connection; then the client goes idle.
  const answered = once(socket, 'data');
  socket.write(dnsPacket.streamEncode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'example.test' }] }));
  await answered;
  // The idle client never hangs up: close returning within the test's 5 s means it did not wait.
  await dns.close();
  await dns.close();
  await cut;
});
