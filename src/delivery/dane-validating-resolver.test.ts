// DANE end to end against a real validating resolver: Debian's unbound validating zones signed by
// ldns-signzone (test/harness/validating-resolver.ts), Lacre trusting its AD bit, real SMTP over
// real TLS to harness sinks. The fake DNS server proves the logic; this proves it holds against
// real DNSSEC answers (signed, unsigned, and bogus).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { startValidatingResolver, type ZoneRecord } from '../../test/harness/validating-resolver.ts';
import { startSmtpSink, type SmtpSink } from '../../test/harness/smtp-sink.ts';
import { startDeliveryRig, type DeliveryRig } from '../../test/harness/delivery-rig.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { Resolver } from '../dns/resolver.ts';

let ca: TestCA;
let unbound: Awaited<ReturnType<typeof startValidatingResolver>>;
let rig: DeliveryRig;
const sinks: Record<string, SmtpSink> = {};
const certs: Record<string, IssuedCert> = {};

function mxZone(domain: string, address: string, cert: IssuedCert | null, tlsaCert?: IssuedCert): ZoneRecord[] {
  const records: ZoneRecord[] = [
    { name: `${domain}.`, type: 'MX', preference: 10, exchange: `mx.${domain}.` },
    { name: `mx.${domain}.`, type: 'A', address },
  ];
  const forTlsa = tlsaCert ?? cert;
  if (forTlsa) records.push({ name: `_25._tcp.mx.${domain}.`, type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: Buffer.from(forTlsa.spkiSha256, 'hex') });
  return records;
}

before(async () => {
  ca = await TestCA.create();
  // Expired and misnamed on purpose: only DANE-EE (which ignores both, RFC 7672 §3.1.1) accepts it.
  for (const d of ['signed.test', 'bogus.test', 'unsigned.test', 'mismatch.test']) {
    certs[d] = await ca.issue({ names: [`wrong-name.${d}`], kind: 'expired' });
  }
  const probe = await startSmtpSink({ tls: 'none', listen: { host: '127.0.5.1' } });
  const port = probe.port;
  await probe.close();
  const addresses: Record<string, string> = { 'signed.test': '127.0.5.2', 'bogus.test': '127.0.5.3', 'unsigned.test': '127.0.5.4', 'mismatch.test': '127.0.5.5' };
  for (const [d, address] of Object.entries(addresses)) {
    sinks[d] = await startSmtpSink({ tls: 'starttls', cert: certs[d], listen: { host: address, port } });
  }
  unbound = await startValidatingResolver({
    zones: [
      { origin: 'signed.test', records: mxZone('signed.test', addresses['signed.test'], certs['signed.test']) },
      { origin: 'bogus.test', records: mxZone('bogus.test', addresses['bogus.test'], certs['bogus.test']), tamper: 'bogus-tlsa' },
      { origin: 'unsigned.test', records: mxZone('unsigned.test', addresses['unsigned.test'], certs['unsigned.test']), sign: false },
      { origin: 'mismatch.test', records: mxZone('mismatch.test', addresses['mismatch.test'], null, await ca.issue({ names: ['other.test'] })) },
    ],
  });
  rig = await startDeliveryRig({
    resolver: new Resolver({ servers: [unbound.server], timeoutMs: 2_000, tries: 1, trustAd: true }),
    ca: [ca.certPem],
    schedule: { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 },
    smtpPort: port,
    hostname: 'lacre.test',
    workerId: 'dane-unbound',
    destinationConcurrency: 5,
    agent: { idleTimeoutMs: 500 },
  });
});

after(async () => {
  await rig?.close();
  for (const s of Object.values(sinks)) await s.close();
  await unbound?.stop();
});

async function deliver(domain: string) {
  const { messageId } = await rig.data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: [`user@${domain}`],
    content: Buffer.from(`From: <app@sender.test>\r\nSubject: ${domain}\r\n\r\nhello\r\n`),
    source: 'api',
  });
  rig.runner.nudge();
  const recipient = await waitFor(
    async () => {
      const r = (await rig.data.store.getMessage(messageId))!.recipients[0];
      return r.attempts[0]?.outcome ? r : undefined;
    },
    { what: `${domain}: a finished attempt`, timeoutMs: 15_000, intervalMs: 20 },
  );
  return { recipient, detail: recipient.attempts[0].detail as Record<string, any> };
}

test('a signed zone with a matching DANE-EE record delivers under DANE, despite an expired, misnamed certificate', async () => {
  const { recipient, detail } = await deliver('signed.test');
  assert.equal(recipient.state, 'delivered', recipient.reason ?? '');
  assert.equal(detail.policy.source, 'dane');
  assert.equal(detail.policyEvidence.mxSecure, true);
  assert.equal(detail.tls.dane.matched, true);
  assert.equal(detail.tls.verified, false, 'the WebPKI would have refused it');
});

test('a signed zone whose TLSA does not match the certificate defers, and the sink sees no MAIL FROM', async () => {
  const { recipient, detail } = await deliver('mismatch.test');
  assert.equal(recipient.state, 'deferred');
  assert.equal(detail.hopFailures[0].failure, 'validation-failure');
  assert.ok(sinks['mismatch.test'].sessions.every((s) => !s.commands.some((c) => /^MAIL/i.test(c.line))));
});

test('a bogus TLSA signature is SERVFAIL from the validator: deferred as dnssec-invalid, no connection', async () => {
  const { recipient, detail } = await deliver('bogus.test');
  assert.equal(recipient.state, 'deferred');
  assert.equal(detail.hopFailures[0].failure, 'dnssec-invalid');
  assert.equal(sinks['bogus.test'].sessions.length, 0);
});

test('an unsigned zone gets no DANE: its TLSA records are ignored and the default policy applies', async () => {
  const { recipient, detail } = await deliver('unsigned.test');
  assert.equal(recipient.state, 'delivered');
  assert.equal(detail.policy.source, 'default:may');
  assert.equal(detail.policyEvidence.mxSecure, false);
});
