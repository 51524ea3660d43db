// Compose end to end: sender checks, header completion, DKIM signing once before queueing, and
// the signed bytes verified by two independent verifiers after they went through a real SMTP
// session (queue → delivery agent → harness sink over TLS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startDeliveryRig } from '../../test/harness/delivery-rig.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { publishRecords, dkimRecordMap } from '../../test/harness/sender-domain.ts';
import { verifyWithDkimpy } from '../../test/harness/dkimpy.ts';
import { Resolver } from '../dns/resolver.ts';
import { nodeStyleResolver } from '../dns/node-style.ts';
import { SENDER_RECHECK_MS, SenderDomains } from '../domains/sender-domains.ts';
import type { SenderSettings } from '../domains/dns-records.ts';
import { Composer, SenderRefused, MessageRejected } from './outgoing.ts';
import { parseReturnPath } from './return-path.ts';
import { fieldsNamed, parseMessage, fieldValue } from './message-headers.ts';

/** Selectors carry the year they were made in. */
const Y = new Date().getUTCFullYear();

let ca: TestCA;
let dns: FakeDnsServer;
let mxCert: IssuedCert;
let resolver: Resolver;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  mxCert = await ca.issue({ names: ['mx.rcpt.test'] });
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 });
});
after(async () => {
  await dns.close();
});

const settings: SenderSettings = {
  hostname: 'mta.lacre.test',
  returnPathSubdomain: 'bounces',
  returnPathLocalPart: 'bounce',
  spfIp4: [],
  spfIp6: [],
  dmarcRua: 'mailto:dmarc@{domain}',
  tlsRptRua: 'mailto:tlsrpt@{domain}',
};

interface Rig {
  data: TempData;
  domains: SenderDomains;
  composer: Composer;
  tag: (id: string) => string;
  clock: { now: number };
  close(): Promise<void>;
}

async function rig(): Promise<Rig> {
  const data = await openTempData();
  const clock = { now: Date.now() };
  const domains = new SenderDomains({ store: data.store, resolver, settings, rotationGraceMs: 86_400_000, clock: () => clock.now });
  const tag = (id: string) => data.sealer.lookupHash('return-path', id);
  const composer = new Composer({ queue: data.queue, domains, tag, clock: () => clock.now });
  return { data, domains, composer, tag, clock, close: () => data.close() };
}

/** Registers a domain, publishes its records in DNS and verifies it through DNS. */
async function verifiedDomain(r: Rig, domain: string) {
  const view = await r.domains.add(domain, 'cli:test');
  publishRecords(dns, view.records);
  const outcome = await r.domains.verify(domain, { actor: 'cli:test' });
  assert.equal(outcome.domain.status, 'verified', JSON.stringify(outcome.report?.records));
  return outcome.domain;
}

const message = (headers: string, body = 'Hello from Lacre.\r\n') => Buffer.from(`${headers.trim().replace(/\n/g, '\r\n')}\r\n\r\n${body}`);

async function mailauthVerdicts(content: Buffer): Promise<Record<string, string>> {
  const result = await dkimVerify(content, { resolver: nodeStyleResolver(resolver) as never, strict: true });
  return Object.fromEntries(result.results.map((r: { selector?: string; status: { result: string } }) => [r.selector, r.status.result]));
}

test('a spoofed From, Sender or envelope sender is refused with the field and the reason, and nothing is queued', async () => {
  const r = await rig();
  try {
    await verifiedDomain(r, 'good.test');
    await r.domains.add('pending.test', 'cli:test');
    const cases: Array<[Buffer, string | null, string, string]> = [
      [message('From: CEO <ceo@bank.test>\nTo: a@rcpt.test\nSubject: x'), null, 'From', 'unregistered'],
      [message('From: a@pending.test\nTo: a@rcpt.test\nSubject: x'), null, 'From', 'unverified'],
      [message('From: a@good.test\nSender: mallory@evil.test\nTo: a@rcpt.test'), null, 'Sender', 'unregistered'],
      [message('From: a@good.test, b@evil.test\nSender: a@good.test\nTo: a@rcpt.test'), null, 'From', 'unregistered'],
      [message('From: a@good.test\nTo: a@rcpt.test'), 'bounce@evil.test', 'envelope sender', 'unregistered'],
      [message('From: "a@good.test" <ceo@bank.test>\nTo: a@rcpt.test'), null, 'From', 'unregistered'],
    ];
    for (const [content, envelopeSender, field, reason] of cases) {
      await assert.rejects(
        r.composer.submit({ content, envelopeSender, recipients: ['a@rcpt.test'], source: 'smtp' }),
        (err: unknown) => err instanceof SenderRefused && err.field === field && err.reason === reason,
        `${field} ${reason}: ${content.toString().split('\r\n')[0]}`,
      );
    }
    assert.equal((await r.data.store.countByState()).queued, 0);
  } finally {
    await r.close();
  }
});

test('a message without a From, with two From headers, or a multi-address From without Sender is rejected as malformed', async () => {
  const r = await rig();
  try {
    await verifiedDomain(r, 'malformed.test');
    const cases: Array<[Buffer, RegExp]> = [
      [message('To: a@rcpt.test\nSubject: no from'), /no From header/],
      [message('From: a@malformed.test\nFrom: b@malformed.test\nTo: a@rcpt.test'), /more than one From/],
      [message('From: a@malformed.test, b@malformed.test\nTo: a@rcpt.test'), /needs a Sender/],
      [message('From: a@malformed.test\nSubject: a\nSubject: b'), /more than one Subject/],
      [Buffer.from(' folded first\r\nFrom: a@malformed.test\r\n\r\nx'), /folded/],
      [message('From: a@malformed.test\nthis is not a header'), /malformed header line/],
    ];
    for (const [content, pattern] of cases) {
      await assert.rejects(
        r.composer.submit({ content, envelopeSender: null, recipients: ['a@rcpt.test'], source: 'smtp' }),
        (err: unknown) => err instanceof MessageRejected && pattern.test(err.message),
        pattern.source,
      );
    }
  } finally {
    await r.close();
  }
});

test('compose adds Date and a Message-ID under the sending domain, drops Bcc and Return-Path, and signs with both keys', async () => {
  const r = await rig();
  try {
    const domain = await verifiedDomain(r, 'shop.test');
    const accepted = await r.composer.submit({
      content: message('From: Shop <orders@mail.shop.test>\nTo: a@rcpt.test\nBcc: hidden@rcpt.test\nReturn-Path: <x@y.test>\nSubject: Your order'),
      envelopeSender: 'orders@shop.test',
      recipients: ['a@rcpt.test', 'hidden@rcpt.test'],
      source: 'smtp',
    });
    const stored = (await r.data.store.messageContent(accepted.messageId))!;
    const parsed = parseMessage(stored);
    assert.equal(fieldsNamed(parsed.headers, 'Bcc').length, 0);
    assert.equal(fieldsNamed(parsed.headers, 'Return-Path').length, 0);
    assert.match(fieldValue(fieldsNamed(parsed.headers, 'Date')[0]), /^\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/);
    assert.equal(fieldValue(fieldsNamed(parsed.headers, 'Message-ID')[0]), `<${accepted.messageId}@shop.test>`);
    const signatures = fieldsNamed(parsed.headers, 'DKIM-Signature').map(fieldValue);
    assert.equal(signatures.length, 2);
    assert.match(signatures.join(' '), /a=ed25519-sha256;.*d=shop\.test/s);
    assert.match(signatures.join(' '), /a=rsa-sha256;.*d=shop\.test/s);
    // From is over-signed: listed once more than it occurs.
    assert.match(signatures[0].replace(/\s/g, ''), /h=from:from:/i);
    assert.deepEqual(await mailauthVerdicts(stored), { [`lacre-ed-${Y}a`]: 'pass', [`lacre-rsa-${Y}a`]: 'pass' });

    const view = await r.data.store.getMessage(accepted.messageId);
    assert.match(view!.sender!, /^bounce\+[0-9a-f]{32}\.[0-9a-f]{12}@bounces\.shop\.test$/);
    assert.equal(parseReturnPath(view!.sender!, 'bounce', r.tag), accepted.messageId);
    assert.equal(parseReturnPath(view!.sender!.replace(/\.[0-9a-f]{12}@/, '.000000000000@'), 'bounce', r.tag), null);
    assert.equal(domain.returnPathDomain, 'bounces.shop.test');
  } finally {
    await r.close();
  }
});

test('signatures still verify with mailauth and dkimpy after the message travelled to the recipient over TLS; a changed byte breaks them', async () => {
  const r = await rig();
  const d = await startDeliveryRig({ resolver, ca: [ca.certPem], data: r.data, sink: { tls: 'starttls', cert: mxCert }, policies: { 'rcpt.test': 'verify' }, workerId: 'compose-test' });
  const sink = d.sink!;
  try {
    const domain = await verifiedDomain(r, 'travel.test');
    const body = 'Grüße — an 8-bit body.\r\nTrailing spaces   \r\n\r\n\r\n';
    await r.composer.submit({
      content: message('From: Travel <hello@travel.test>\nTo: someone@rcpt.test\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nMIME-Version: 1.0', body),
      envelopeSender: null,
      recipients: ['someone@rcpt.test'],
      source: 'api',
    });
    const [delivered] = await sink.waitForMessages(1, 10_000);
    assert.equal(delivered.tls, true);
    assert.match(delivered.mailFrom.address, /^bounce\+.*@bounces\.travel\.test$/);
    assert.deepEqual(await mailauthVerdicts(delivered.data), { [`lacre-ed-${Y}a`]: 'pass', [`lacre-rsa-${Y}a`]: 'pass' });
    const records = dkimRecordMap(domain.records);
    assert.deepEqual((await verifyWithDkimpy(delivered.data, records)).map((v) => [v.selector, v.ok]), [
      [`lacre-ed-${Y}a`, true],
      [`lacre-rsa-${Y}a`, true],
    ]);

    const tamperedBody = Buffer.from(delivered.data.toString('latin1').replace('8-bit body', '8-bit bodY'), 'latin1');
    const tamperedHeader = Buffer.from(delivered.data.toString('latin1').replace('From: Travel', 'From: Trave1'), 'latin1');
    for (const tampered of [tamperedBody, tamperedHeader]) {
      assert.notDeepEqual(tampered, delivered.data);
      const verdicts = await mailauthVerdicts(tampered);
      assert.deepEqual(Object.values(verdicts), ['fail', 'fail']);
      assert.deepEqual((await verifyWithDkimpy(tampered, records)).map((v) => v.ok), [false, false]);
    }
  } finally {
    await d.close();
    await r.close();
  }
});

test('a DKIM key rotation keeps every message verifiable: before, during and after the switch', async () => {
  const r = await rig();
  try {
    const added = await verifiedDomain(r, 'rotation.test');
    const send = async (subject: string) => {
      const accepted = await r.composer.submit({
        content: message(`From: news@rotation.test\nTo: a@rcpt.test\nSubject: ${subject}`),
        envelopeSender: null,
        recipients: ['a@rcpt.test'],
        source: 'api',
      });
      return (await r.data.store.messageContent(accepted.messageId))!;
    };
    const beforeRotation = await send('before');

    const rotating = await r.domains.rotateDkim('rotation.test', 'cli:test');
    const duringRotation = await send('during'); // new keys not yet published: old keys sign
    publishRecords(dns, rotating.records, (rec) => rec.purpose === 'dkim' && rec.keyState === 'pending');
    const switched = await r.domains.verify('rotation.test', { actor: 'cli:test' });
    assert.equal(switched.activated.length, 2);
    const afterSwitch = await send('after');

    const all = { ...dkimRecordMap(added.records), ...dkimRecordMap(rotating.records) };
    const expectations: Array<[Buffer, string[]]> = [
      [beforeRotation, [`lacre-ed-${Y}a`, `lacre-rsa-${Y}a`]],
      [duringRotation, [`lacre-ed-${Y}a`, `lacre-rsa-${Y}a`]],
      [afterSwitch, [`lacre-ed-${Y}b`, `lacre-rsa-${Y}b`]],
    ];
    for (const [content, selectors] of expectations) {
      assert.deepEqual(await mailauthVerdicts(content), Object.fromEntries(selectors.map((s) => [s, 'pass'])));
      assert.deepEqual((await verifyWithDkimpy(content, all)).map((v) => [v.selector, v.ok]), selectors.map((s) => [s, true]));
    }
  } finally {
    await r.close();
  }
});

test('a domain\'s keys are read and parsed once for many messages; a rotation by another process is used within the recheck interval', async () => {
  const r = await rig();
  try {
    await verifiedDomain(r, 'cached.test');
    const send = async () => {
      const composed = await r.composer.compose({
        content: message('From: news@cached.test\nSender: desk@cached.test\nTo: a@rcpt.test\nSubject: s'),
        envelopeSender: 'bounce@cached.test',
        recipients: ['a@rcpt.test'],
        source: 'api',
      });
      return composed.selectors;
    };
    const before = r.domains.stats.keyParses;
    // Concurrent messages share one read; From, Sender and the envelope sender one cache entry.
    const first = await Promise.all(Array.from({ length: 20 }, send));
    for (let i = 0; i < 20; i++) {
      r.clock.now += 10;
      assert.deepEqual(await send(), [`lacre-ed-${Y}a`, `lacre-rsa-${Y}a`]);
    }
    assert.deepEqual(new Set(first.map((s) => s.join())), new Set([`lacre-ed-${Y}a,lacre-rsa-${Y}a`]));
    assert.equal(r.domains.stats.keyParses - before, 2, 'one parse per key (Ed25519 and RSA) for 40 messages');

    // `lacre domains rotate-dkim` and `verify` run by the CLI: another process, another cache.
    const cli = new SenderDomains({ store: r.data.store, resolver, settings, rotationGraceMs: 86_400_000, clock: () => r.clock.now });
    const rotating = await cli.rotateDkim('cached.test', 'cli:test');
    publishRecords(dns, rotating.records, (rec) => rec.purpose === 'dkim' && rec.keyState === 'pending');
    assert.equal((await cli.verify('cached.test', { actor: 'cli:test' })).activated.length, 2);
    r.clock.now += SENDER_RECHECK_MS;
    assert.deepEqual(await send(), [`lacre-ed-${Y}b`, `lacre-rsa-${Y}b`]);
    assert.deepEqual(await send(), [`lacre-ed-${Y}b`, `lacre-rsa-${Y}b`]);
    assert.equal(r.domains.stats.keyParses - before, 4, 'the new pair parsed once');

    // Through this process's own SenderDomains, the switch takes effect at once.
    const again = await r.domains.rotateDkim('cached.test', 'cli:test');
    publishRecords(dns, again.records, (rec) => rec.purpose === 'dkim' && rec.keyState === 'pending');
    assert.equal((await r.domains.verify('cached.test', { actor: 'cli:test' })).activated.length, 2);
    assert.deepEqual(await send(), [`lacre-ed-${Y}c`, `lacre-rsa-${Y}c`]);

    // Removed by the CLI: refused once the interval has passed.
    await cli.remove('cached.test', 'cli:test');
    r.clock.now += SENDER_RECHECK_MS;
    await assert.rejects(send(), (err: unknown) => err instanceof SenderRefused && err.reason === 'unregistered');
  } finally {
    await r.close();
  }
});
