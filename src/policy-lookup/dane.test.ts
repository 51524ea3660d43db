// The TLSA lookup against the harness's fake validating resolver: when DANE applies at all (secure
// addresses, a trusted AD bit), what a failure on a signed zone means, which records count, and
// the CNAME-expanded name tried before the original (RFC 7672 §2.2).
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { Resolver } from '../dns/resolver.ts';
import { resolveDestination, type NextHop } from '../delivery/destination.ts';
import type { DaneEvidence } from '../tls-policy/evidence.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';
import { lookupDane } from './dane.ts';

let dns: FakeDnsServer;
beforeEach(async () => {
  dns = await FakeDnsServer.start();
});
afterEach(async () => {
  await dns.close();
});

const resolver = (trustAd = true) => new Resolver({ servers: [dns.address], timeoutMs: 200, tries: 1, trustAd });

const EE: TlsaRecord = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 0xab) };
const TA: TlsaRecord = { usage: 2, selector: 0, matchingType: 2, data: Buffer.alloc(64, 0xcd) };
const PKIX_EE: TlsaRecord = { usage: 1, selector: 1, matchingType: 1, data: Buffer.alloc(32, 0x11) };
const PKIX_TA: TlsaRecord = { usage: 0, selector: 0, matchingType: 1, data: Buffer.alloc(32, 0x22) };
const SHORT: TlsaRecord = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(20, 0x33) };

const tlsa = (r: TlsaRecord) => ({ type: 'TLSA' as const, ...r });
const HOP = { host: 'mx.dane.test', addressesSecure: true };
const tlsaQueries = () => dns.queries.filter((q) => q.type === 'TLSA').map((q) => q.name.toLowerCase());

function kind<K extends DaneEvidence['kind']>(e: DaneEvidence, k: K): Extract<DaneEvidence, { kind: K }> {
  assert.equal(e.kind, k, JSON.stringify(e));
  return e as Extract<DaneEvidence, { kind: K }>;
}

test('secure TLSA records at _25._tcp.<host> are usable evidence', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(EE), tlsa(TA));
  const e = kind(await lookupDane(resolver(), HOP), 'usable');
  assert.equal(e.qname, '_25._tcp.mx.dane.test');
  assert.deepEqual(e.usable, [EE, TA]);
  assert.deepEqual(e.all, [EE, TA]);
  assert.deepEqual(tlsaQueries(), ['_25._tcp.mx.dane.test']);
  assert.ok(dns.queries.every((q) => q.do), 'asked with the DO bit, so AD can be reported');
});

test('the port in the prefix is the one the hop is reached on', async () => {
  dns.secure('dane.test').add('_587._tcp.mx.dane.test', tlsa(EE));
  assert.equal(kind(await lookupDane(resolver(), { ...HOP, port: 587 }), 'usable').qname, '_587._tcp.mx.dane.test');
  assert.equal(kind(await lookupDane(resolver(), HOP, 587), 'usable').qname, '_587._tcp.mx.dane.test');
  assert.equal((await lookupDane(resolver(), HOP)).kind, 'none', 'nothing at _25');
});

test('records without the AD bit are not DANE: an unsigned zone gives none', async () => {
  dns.add('_25._tcp.mx.dane.test', tlsa(EE));
  const e = kind(await lookupDane(resolver(), HOP), 'none');
  assert.match(e.reason, /not DNSSEC-secure/);
});

test('with trustAd off the AD bit is ignored: none, even for a signed zone', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(EE));
  assert.equal((await lookupDane(resolver(false), HOP)).kind, 'none');
});

test('insecure address records: no TLSA lookup at all (RFC 7672 §2.2)', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(EE));
  const e = kind(await lookupDane(resolver(), { ...HOP, addressesSecure: false }), 'none');
  assert.match(e.reason, /address records of mx\.dane\.test are not DNSSEC-secure/);
  assert.deepEqual(tlsaQueries(), []);
  assert.match(kind(await lookupDane(resolver(), { host: '192.0.2.1', addressesSecure: true }), 'none').reason, /address literal/);
  assert.deepEqual(tlsaQueries(), []);
});

test('SERVFAIL or silence on a signed zone is dnssec-invalid, never "no TLSA"', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(EE));
  for (const failure of ['SERVFAIL', 'TIMEOUT'] as const) {
    dns.fail('_25._tcp.mx.dane.test', failure, 'TLSA');
    const e = kind(await lookupDane(resolver(), HOP), 'failed');
    assert.equal(e.failure, 'dnssec-invalid');
    assert.match(e.detail, new RegExp(`_25\\._tcp\\.mx\\.dane\\.test failed \\((SERVFAIL|TIMEOUT)\\)`));
  }
});

test('secure denial, as NXDOMAIN or as an empty answer, is none', async () => {
  dns.secure('dane.test').add('mx.dane.test', { type: 'A', address: '192.0.2.1' });
  assert.match(kind(await lookupDane(resolver(), HOP), 'none').reason, /no such name/);
  dns.add('_25._tcp.mx.dane.test', { type: 'TXT', data: 'not a TLSA' });
  assert.match(kind(await lookupDane(resolver(), HOP), 'none').reason, /securely no TLSA records/);
});

test('a secure RRset of PKIX-only or malformed records is unusable, naming why', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(PKIX_EE), tlsa(PKIX_TA), tlsa(SHORT));
  const e = kind(await lookupDane(resolver(), HOP), 'unusable');
  assert.equal(e.qname, '_25._tcp.mx.dane.test');
  assert.deepEqual(e.all, [PKIX_EE, PKIX_TA, SHORT]);
  assert.match(e.detail, /3 TLSA record\(s\).*none usable: 1 1 1 \(PKIX usage.*0 0 1 \(PKIX usage.*3 1 1 \(20 bytes/);
});

test('usable records beside unusable ones: only the usable are offered for matching, all are kept for reports', async () => {
  dns.secure('dane.test').add('_25._tcp.mx.dane.test', tlsa(PKIX_EE), tlsa(EE));
  const e = kind(await lookupDane(resolver(), HOP), 'usable');
  assert.deepEqual(e.usable, [EE]);
  assert.deepEqual(e.all, [PKIX_EE, EE]);
});

test('a TLSA RRset reached through a secure CNAME counts, under the name that was asked', async () => {
  dns
    .secure('dane.test')
    .secure('hoster.test')
    .add('_25._tcp.mx.dane.test', { type: 'CNAME', target: '_25._tcp.shared.hoster.test' })
    .add('_25._tcp.shared.hoster.test', tlsa(EE));
  assert.equal(kind(await lookupDane(resolver(), HOP), 'usable').qname, '_25._tcp.mx.dane.test');
  // An insecure link in the chain spoils it.
  dns.secure('hoster.test', false);
  assert.equal((await lookupDane(resolver(), HOP)).kind, 'none');
});

// ---------------------------------------------------------------------------------------------
// CNAME-expanded MX hosts (RFC 7672 §2.2.2), end to end from the MX lookup.

async function cnameHop(): Promise<NextHop> {
  dns
    .secure('customer.test')
    .secure('hoster.test')
    .add('customer.test', { type: 'MX', preference: 10, exchange: 'mx.customer.test' })
    .add('mx.customer.test', { type: 'CNAME', target: 'smtp.hoster.test' })
    .add('smtp.hoster.test', { type: 'A', address: '192.0.2.25' }, { type: 'AAAA', address: '2001:db8::25' });
  const dest = await resolveDestination('customer.test', { resolver: resolver(), routes: new Map() });
  assert.equal(dest.kind, 'hops');
  const [hop] = (dest as Extract<typeof dest, { kind: 'hops' }>).hops;
  return hop;
}

test('a secure CNAME: the expanded name is tried first and wins', async () => {
  dns.add('_25._tcp.smtp.hoster.test', tlsa(EE)).add('_25._tcp.mx.customer.test', tlsa(TA));
  const hop = await cnameHop();
  assert.deepEqual([hop.host, hop.canonicalHost, hop.addressesSecure], ['mx.customer.test', 'smtp.hoster.test', true]);
  const e = kind(await lookupDane(resolver(), hop), 'usable');
  assert.equal(e.qname, '_25._tcp.smtp.hoster.test');
  assert.deepEqual(e.usable, [EE]);
  assert.deepEqual(tlsaQueries(), ['_25._tcp.smtp.hoster.test'], 'the original name is not needed');
});

test('a secure CNAME whose target has no TLSA falls back to the original name', async () => {
  dns.add('hoster.test', { type: 'TXT', data: 'zone exists' }).add('_25._tcp.mx.customer.test', tlsa(TA));
  const hop = await cnameHop();
  const e = kind(await lookupDane(resolver(), hop), 'usable');
  assert.equal(e.qname, '_25._tcp.mx.customer.test');
  assert.deepEqual(tlsaQueries(), ['_25._tcp.smtp.hoster.test', '_25._tcp.mx.customer.test']);
});

test('a secure CNAME whose target\'s TLSA is insecure (an unsigned delegation) also falls back to the original name', async () => {
  dns.add('_25._tcp.smtp.hoster.test', tlsa(EE)).add('_25._tcp.mx.customer.test', tlsa(TA));
  const hop = await cnameHop();
  dns.secure('_tcp.smtp.hoster.test', false);
  const e = kind(await lookupDane(resolver(), hop), 'usable');
  assert.equal(e.qname, '_25._tcp.mx.customer.test');
  assert.deepEqual(e.usable, [TA]);
});

test('a secure CNAME whose target has unusable TLSA stops there: unusable, not the original\'s records', async () => {
  dns.add('_25._tcp.smtp.hoster.test', tlsa(PKIX_EE)).add('_25._tcp.mx.customer.test', tlsa(EE));
  const e = kind(await lookupDane(resolver(), await cnameHop()), 'unusable');
  assert.equal(e.qname, '_25._tcp.smtp.hoster.test');
});

test('an insecure CNAME target: the hop has no secure addresses, so no TLSA is looked up', async () => {
  dns
    .secure('customer.test')
    .add('customer.test', { type: 'MX', preference: 10, exchange: 'mx.customer.test' })
    .add('mx.customer.test', { type: 'CNAME', target: 'smtp.hoster.test' })
    .add('smtp.hoster.test', { type: 'A', address: '192.0.2.25' }, { type: 'AAAA', address: '2001:db8::25' })
    .add('_25._tcp.smtp.hoster.test', tlsa(EE));
  const dest = await resolveDestination('customer.test', { resolver: resolver(), routes: new Map() });
  const [hop] = (dest as Extract<typeof dest, { kind: 'hops' }>).hops;
  assert.deepEqual([hop.addressesSecure, hop.canonicalHost], [false, undefined]);
  assert.equal((await lookupDane(resolver(), hop)).kind, 'none');
  assert.deepEqual(tlsaQueries(), []);
});
