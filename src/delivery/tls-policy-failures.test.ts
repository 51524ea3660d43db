// Every RFC 8460 failure type, end to end: real DNS (the harness's, with the AD bit), real MTA-STS
// policies over HTTPS, real SMTP over real TLS to harness sinks, the real queue and store. Each
// scenario shows the message deferred (never delivered weaker) and the failure in the day's report.
// Also the engine's precedence as it plays out on the wire, and REQUIRETLS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { MtaStsHttpsServer, formatMtaStsPolicy } from '../../test/harness/https-server.ts';
import { startSmtpSink, type SmtpSink, type SmtpSinkOptions } from '../../test/harness/smtp-sink.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { startDeliveryRig, type DeliveryRig } from '../../test/harness/delivery-rig.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { createLogger } from '../log/logger.ts';
import { Resolver } from '../dns/resolver.ts';
import { buildPolicySources, type BuiltPolicySources } from '../policy-lookup/sources.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import { TlsReportCollector } from '../tls-reporting/collector.ts';
import { TlsReporter } from '../tls-reporting/reporter.ts';
import { utcDay } from '../tls-reporting/days.ts';
import type { StaticTlsLevel } from '../tls-policy/levels.ts';
import { SmtpDeliveryAgent } from './agent.ts';

const silent = createLogger({ level: 'silent' });
let ca: TestCA;
let dns: FakeDnsServer;
let https: MtaStsHttpsServer;
let data: TempData;
let sources: BuiltPolicySources;
// The DNS memo keeps TXT answers for their TTL: a test that changes a record steps past it.
const dnsClock = { skew: 0 };
let collector: TlsReportCollector;
let table: TlsRptTable;
let delivery: DeliveryRig;
let smtpPort = 0;
const sinks: SmtpSink[] = [];
let nextAddress = 10;

const STATIC: Record<string, StaticTlsLevel> = { 'dane-only.test': 'dane-only' };

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  https = await MtaStsHttpsServer.start({ ca });
  // One port for every MX (LACRE_SMTP_PORT), each sink on its own loopback address.
  const probe = await startSmtpSink({ tls: 'none', listen: { host: '127.0.3.1' } });
  smtpPort = probe.port;
  sinks.push(probe);

  data = await openTempData({ schedule: { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 } });
  const resolver = new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1, trustAd: true });
  sources = buildPolicySources({
    store: data.store,
    resolver,
    configured: STATIC,
    defaultLevel: 'may',
    ca: [ca.certPem],
    mtaStsPort: https.port,
    mtaStsFetchTimeoutMs: 2_000,
    now: () => Date.now() + dnsClock.skew,
  });
  table = new TlsRptTable(data.store.engine, data.store.sealer);
  collector = new TlsReportCollector({ table, flushIntervalMs: 3_600_000 });
  delivery = await startDeliveryRig({
    resolver,
    ca: [ca.certPem],
    data,
    smtpPort,
    hostname: 'lacre.test',
    workerId: 'policy-failures',
    destinationConcurrency: 5,
    concurrency: 10,
    agent: { sources: sources.sources, onTlsSession: (r) => collector.record(r), maxMessagesPerConnection: 100, idleTimeoutMs: 500 },
  });
});

after(async () => {
  await delivery.close();
  await collector.close();
  await data.close();
  for (const s of sinks) await s.close();
  await https.close();
  await dns.close();
});

/** A sink for `host` on its own loopback address and the shared port, with an A record. */
async function mx(host: string, options: SmtpSinkOptions): Promise<SmtpSink> {
  const address = `127.0.3.${nextAddress++}`;
  const sink = await startSmtpSink({ ...options, listen: { host: address, port: smtpPort } });
  sinks.push(sink);
  dns.add(host, { type: 'A', address });
  return sink;
}

async function cert(name: string): Promise<IssuedCert> {
  return ca.issue({ names: [name] });
}

async function stsDomain(domain: string, mode: 'enforce' | 'testing', mxPatterns: string[], id = '1'): Promise<void> {
  dns.add(`_mta-sts.${domain}`, { type: 'TXT', data: `v=STSv1; id=${id}` });
  dns.add(`mta-sts.${domain}`, { type: 'A', address: '127.0.0.1' });
  await https.setPolicy(domain, { body: formatMtaStsPolicy({ mode, mx: mxPatterns, maxAge: 86400 }) });
}

const message = (subject: string, extra = '') => Buffer.from(`From: <app@sender.test>\r\nSubject: ${subject}\r\n${extra}\r\nhello\r\n`);

async function send(to: string, opts: { requireTls?: boolean; headers?: string } = {}): Promise<string> {
  const { messageId } = await data.queue.enqueue({ sender: 'app@sender.test', recipients: [to], content: message(to, opts.headers), source: 'api', requireTls: opts.requireTls });
  delivery.runner.nudge();
  return messageId;
}

async function settled(messageId: string, timeoutMs = 15_000) {
  return waitFor(
    async () => {
      const r = (await data.store.getMessage(messageId))!.recipients[0];
      return r.state !== 'queued' && r.attempts.length > 0 && r.attempts[0].outcome ? r : undefined;
    },
    { what: `message ${messageId} to settle`, timeoutMs, intervalMs: 20 },
  );
}

async function reportFor(domain: string) {
  await collector.flush();
  const reporter = new TlsReporter({
    table,
    resolver: { txt: async () => ({ records: [], secure: false, canonicalName: '' }) },
    submit: async () => undefined,
    organizationName: 'Lacre test',
    submitter: 'lacre.test',
    contact: 'mailto:tlsrpt@lacre.test',
    from: 'tlsrpt@sender.test',
    ca: [],
    vetHttps: async () => {
      throw new Error('not used');
    },
    logger: silent,
  });
  const report = await reporter.buildReport(domain, utcDay(Date.now()));
  assert.ok(report, `a report for ${domain}`);
  return report as unknown as {
    policies: { policy: { 'policy-type': string; 'policy-domain': string }; summary: Record<string, number>; 'failure-details'?: { 'result-type': string; 'receiving-mx-hostname'?: string }[] }[];
  };
}

function resultTypes(report: Awaited<ReturnType<typeof reportFor>>): string[] {
  return report.policies.flatMap((p) => (p['failure-details'] ?? []).map((d) => d['result-type']));
}

function tlsa(issued: IssuedCert, usage = 3) {
  return { type: 'TLSA' as const, usage, selector: 1, matchingType: 1, data: Buffer.from(issued.spkiSha256, 'hex') };
}

async function expectDeferred(domain: string, resultType: string, policyType: string, sink?: SmtpSink) {
  const id = await send(`user@${domain}`);
  const r = await settled(id);
  assert.equal(r.state, 'deferred', `${domain}: ${r.reason}`);
  if (sink) assert.ok(sink.sessions.every((s) => !s.commands.some((c) => /^MAIL/i.test(c.line))), `${domain}: no MAIL FROM reached the sink`);
  const report = await reportFor(domain);
  assert.ok(resultTypes(report).includes(resultType), `${domain}: ${resultType} in ${JSON.stringify(resultTypes(report))}`);
  assert.ok(report.policies.some((p) => p.policy['policy-type'] === policyType), `${domain}: policy type ${policyType}`);
  return { recipient: r, report };
}

// ---- RFC 8460 §4.3.2.1: negotiation failures, under MTA-STS enforce -------------------------

test('starttls-not-supported: an MTA-STS enforce MX without STARTTLS defers', async () => {
  await stsDomain('nostarttls.test', 'enforce', ['mx.nostarttls.test']);
  dns.add('nostarttls.test', { type: 'MX', preference: 10, exchange: 'mx.nostarttls.test' });
  const sink = await mx('mx.nostarttls.test', { tls: 'none' });
  const { recipient } = await expectDeferred('nostarttls.test', 'starttls-not-supported', 'sts', sink);
  const detail = recipient.attempts[0].detail as Record<string, any>;
  assert.deepEqual([detail.policy.level, detail.policy.source], ['verify', 'mta-sts:enforce']);
});

for (const [resultType, kind, names] of [
  ['certificate-host-mismatch', 'valid', ['other.example.test']],
  ['certificate-expired', 'expired', undefined],
  ['certificate-not-trusted', 'self-signed', undefined],
] as const) {
  test(`${resultType}: MTA-STS enforce refuses the certificate and defers`, async () => {
    const domain = `${resultType}.test`;
    await stsDomain(domain, 'enforce', [`mx.${domain}`]);
    dns.add(domain, { type: 'MX', preference: 10, exchange: `mx.${domain}` });
    const sink = await mx(`mx.${domain}`, { tls: 'starttls', cert: await ca.issue({ names: names ? [...names] : [`mx.${domain}`], kind }) });
    await expectDeferred(domain, resultType, 'sts', sink);
  });
}

test('validation-failure: a certificate that matches none of the DANE TLSA records defers', async () => {
  dns.secure('danemismatch.test');
  dns.add('danemismatch.test', { type: 'MX', preference: 10, exchange: 'mx.danemismatch.test' });
  const sink = await mx('mx.danemismatch.test', { tls: 'starttls', cert: await cert('mx.danemismatch.test') });
  dns.add('_25._tcp.mx.danemismatch.test', tlsa(await cert('someone-else.test')));
  const { recipient } = await expectDeferred('danemismatch.test', 'validation-failure', 'tlsa', sink);
  assert.equal((recipient.attempts[0].detail as any).policy.source, 'dane');
});

// ---- RFC 8460 §4.3.2.2: DANE policy failures ------------------------------------------------

test('tlsa-invalid: only unusable TLSA records make TLS mandatory; an MX without STARTTLS defers', async () => {
  dns.secure('tlsainvalid.test');
  dns.add('tlsainvalid.test', { type: 'MX', preference: 10, exchange: 'mx.tlsainvalid.test' });
  const sink = await mx('mx.tlsainvalid.test', { tls: 'none' });
  dns.add('_25._tcp.mx.tlsainvalid.test', tlsa(await cert('mx.tlsainvalid.test'), 1)); // PKIX-EE: unusable for SMTP
  await expectDeferred('tlsainvalid.test', 'tlsa-invalid', 'tlsa', sink);
});

test('dnssec-invalid: a TLSA lookup that fails on a signed zone defers, never read as "no DANE"', async () => {
  dns.secure('dnssecinvalid.test');
  dns.add('dnssecinvalid.test', { type: 'MX', preference: 10, exchange: 'mx.dnssecinvalid.test' });
  const sink = await mx('mx.dnssecinvalid.test', { tls: 'starttls', cert: await cert('mx.dnssecinvalid.test') });
  dns.fail('_25._tcp.mx.dnssecinvalid.test', 'SERVFAIL', 'TLSA');
  await expectDeferred('dnssecinvalid.test', 'dnssec-invalid', 'tlsa');
  assert.equal(sink.sessions.length, 0, 'no connection was made');
});

test('dane-required: a dane-only destination whose MX has no secure TLSA records defers', async () => {
  dns.add('dane-only.test', { type: 'MX', preference: 10, exchange: 'mx.dane-only.test' });
  const sink = await mx('mx.dane-only.test', { tls: 'starttls', cert: await cert('mx.dane-only.test') });
  await expectDeferred('dane-only.test', 'dane-required', 'no-policy-found');
  assert.equal(sink.sessions.length, 0);
});

// ---- RFC 8460 §4.3.2.3: MTA-STS policy failures ---------------------------------------------
// With nothing cached, RFC 8461 §5 delivers as if there were no policy (shown below). With a cached
// enforce policy, a failed refresh keeps it in force (§5.1): the message to an MX with an untrusted
// certificate is deferred, and the refresh failure is what the report names.

for (const [resultType, script] of [
  ['sts-policy-fetch-error', { status: 404 }],
  ['sts-policy-invalid', { body: 'version: STSv1\r\nmode: sometimes\r\n' }],
  ['sts-webpki-invalid', { cert: 'expired' }],
] as const) {
  test(`${resultType}: a failed refresh keeps the cached enforce policy, which defers; the report names the failure`, async () => {
    const domain = `${resultType}.test`;
    await stsDomain(domain, 'enforce', [`mx.${domain}`], 'first');
    dns.add(domain, { type: 'MX', preference: 10, exchange: `mx.${domain}` });
    const sink = await mx(`mx.${domain}`, { tls: 'starttls', cert: await ca.issue({ names: [`mx.${domain}`], kind: 'self-signed' }) });
    assert.equal((await sources.mtaSts.lookup(domain)).kind, 'policy'); // cached
    dns.remove(`_mta-sts.${domain}`, 'TXT');
    dns.add(`_mta-sts.${domain}`, { type: 'TXT', data: 'v=STSv1; id=second' });
    // As a resolver would, the memo sees the new id once the old answer's TTL has run out.
    dnsClock.skew += 3_600_000;
    await https.setPolicy(domain, script.body ? { body: script.body } : { ...script, body: formatMtaStsPolicy({ mode: 'none', mx: ['*'], maxAge: 60 }) });
    const { recipient } = await expectDeferred(domain, resultType, 'sts', sink);
    const detail = recipient.attempts[0].detail as Record<string, any>;
    assert.equal(detail.policy.source, 'mta-sts:enforce');
    assert.equal(detail.policyEvidence.mtaSts.refreshFailure, resultType);
  });
}

test('sts-policy-fetch-error without a cached policy: delivered as if there were none (RFC 8461 §5), and reported', async () => {
  dns.add('_mta-sts.nocache.test', { type: 'TXT', data: 'v=STSv1; id=1' });
  dns.add('mta-sts.nocache.test', { type: 'A', address: '127.0.0.1' });
  await https.setPolicy('nocache.test', { status: 500 });
  dns.add('nocache.test', { type: 'MX', preference: 10, exchange: 'mx.nocache.test' });
  await mx('mx.nocache.test', { tls: 'starttls', cert: await cert('mx.nocache.test') });
  const r = await settled(await send('user@nocache.test'));
  assert.equal(r.state, 'delivered');
  assert.deepEqual(resultTypes(await reportFor('nocache.test')), ['sts-policy-fetch-error']);
});

// ---- Precedence on the wire -----------------------------------------------------------------

test('DANE outranks MTA-STS: an MX outside the STS patterns is used when DANE authenticates it', async () => {
  dns.secure('both.test');
  await stsDomain('both.test', 'enforce', ['mx.elsewhere.test']);
  dns.add('both.test', { type: 'MX', preference: 10, exchange: 'mx.both.test' });
  // Expired and misnamed: only DANE-EE can accept this certificate.
  const issued = await ca.issue({ names: ['wrong.example.test'], kind: 'expired' });
  await mx('mx.both.test', { tls: 'starttls', cert: issued });
  dns.add('_25._tcp.mx.both.test', tlsa(issued));
  const r = await settled(await send('user@both.test'));
  assert.equal(r.state, 'delivered', r.reason ?? '');
  const detail = r.attempts[0].detail as Record<string, any>;
  assert.equal(detail.policy.source, 'dane');
  assert.equal(detail.tls.dane.matched, true);
  const report = await reportFor('both.test');
  assert.equal(report.policies[0].policy['policy-type'], 'tlsa');
  assert.equal(report.policies[0].summary['total-successful-session-count'], 1);
});

test('MTA-STS testing reports a failure but delivers under the default policy', async () => {
  await stsDomain('testing.test', 'testing', ['mx.testing.test']);
  dns.add('testing.test', { type: 'MX', preference: 10, exchange: 'mx.testing.test' });
  await mx('mx.testing.test', { tls: 'starttls', cert: await ca.issue({ names: ['mx.testing.test'], kind: 'self-signed' }) });
  const r = await settled(await send('user@testing.test'));
  assert.equal(r.state, 'delivered');
  assert.equal((r.attempts[0].detail as any).policy.source, 'default:may');
  assert.deepEqual(resultTypes(await reportFor('testing.test')), ['certificate-not-trusted']);
});

// ---- REQUIRETLS -----------------------------------------------------------------------------

test('REQUIRETLS goes out with the MAIL parameter over a verified MTA-STS path', async () => {
  await stsDomain('rt-ok.test', 'testing', ['mx.rt-ok.test']);
  dns.add('rt-ok.test', { type: 'MX', preference: 10, exchange: 'mx.rt-ok.test' });
  const sink = await mx('mx.rt-ok.test', { tls: 'starttls', cert: await cert('mx.rt-ok.test'), advertise: { requireTls: true } });
  const r = await settled(await send('user@rt-ok.test', { requireTls: true }));
  assert.equal(r.state, 'delivered', r.reason ?? '');
  assert.equal((r.attempts[0].detail as any).policy.source, 'requiretls:mta-sts');
  const mail = sink.sessions.flatMap((s) => s.commands).find((c) => /^MAIL FROM/i.test(c.line));
  assert.match(mail!.line, / REQUIRETLS$/);
});

test('REQUIRETLS without a verifiable path bounces at once (5.7.30), with no connection and no content in the DSN', async () => {
  dns.add('rt-plain.test', { type: 'MX', preference: 10, exchange: 'mx.rt-plain.test' });
  const sink = await mx('mx.rt-plain.test', { tls: 'starttls', cert: await cert('mx.rt-plain.test'), advertise: { requireTls: true } });
  const r = await settled(await send('user@rt-plain.test', { requireTls: true }));
  assert.equal(r.state, 'bounced');
  assert.match(r.reason!, /REQUIRETLS/);
  assert.equal(r.attempts[0].enhancedCode, '5.7.30');
  assert.equal(sink.sessions.length, 0);
});

test('REQUIRETLS to a next hop that does not offer it bounces, never sent without it', async () => {
  await stsDomain('rt-noext.test', 'enforce', ['mx.rt-noext.test']);
  dns.add('rt-noext.test', { type: 'MX', preference: 10, exchange: 'mx.rt-noext.test' });
  const sink = await mx('mx.rt-noext.test', { tls: 'starttls', cert: await cert('mx.rt-noext.test') });
  const r = await settled(await send('user@rt-noext.test', { requireTls: true }));
  assert.equal(r.state, 'bounced', r.reason ?? '');
  assert.equal(r.attempts[0].enhancedCode, '5.7.30');
  assert.ok(sink.sessions.every((s) => !s.commands.some((c) => /^MAIL/i.test(c.line))));
});

test('TLS-Required: No is not honoured unless the operator allows it', async () => {
  await stsDomain('trn.test', 'enforce', ['mx.trn.test']);
  dns.add('trn.test', { type: 'MX', preference: 10, exchange: 'mx.trn.test' });
  await mx('mx.trn.test', { tls: 'none' });
  const r = await settled(await send('user@trn.test', { headers: 'TLS-Required: No\r\n' }));
  assert.equal(r.state, 'deferred');
  const detail = r.attempts[0].detail as Record<string, any>;
  assert.equal(detail.policyEvidence.tlsRequiredNo, true);
  assert.equal(detail.policy.source, 'mta-sts:enforce');
});

test('TLS-Required: No, when the operator allows it, delivers despite MTA-STS enforce and is recorded', async () => {
  await stsDomain('trn-allowed.test', 'enforce', ['mx.trn-allowed.test']);
  dns.add('trn-allowed.test', { type: 'MX', preference: 10, exchange: 'mx.trn-allowed.test' });
  const sink = await mx('mx.trn-allowed.test', { tls: 'none' });
  const lenient = new SmtpDeliveryAgent({
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1, trustAd: true }),
    routes: new Map(),
    smtpPort,
    policies: new Map(),
    defaultPolicy: 'may',
    sources: sources.sources,
    allowTlsRequiredNo: true,
    ehloName: 'lacre.test',
    ca: [ca.certPem],
    timeouts: { connect: 2_000, greeting: 3_000, command: 3_000, dataInit: 3_000, dataBlock: 3_000, dataDone: 3_000 },
    destinationConcurrency: 1,
    maxMessagesPerConnection: 1,
    idleTimeoutMs: 100,
    logger: silent,
  });
  try {
    const content = message('lenient', 'TLS-Required: No\r\n');
    const verdicts = await lenient.deliver(
      {
        messageId: 'm-trn',
        domain: 'trn-allowed.test',
        sender: 'app@sender.test',
        requireTls: false,
        recipients: [{ recipientId: 'r-trn', address: 'user@trn-allowed.test' } as never],
        content: async () => content,
        leaseHeld: () => true,
      },
      new AbortController().signal,
    );
    const verdict = verdicts.get('r-trn')!;
    assert.equal(verdict.kind, 'delivered', verdict.reason ?? '');
    const detail = verdict.detail as Record<string, any>;
    assert.deepEqual([detail.policy.level, detail.policy.source], ['may', 'tls-required-no']);
    assert.equal(detail.policyEvidence.tlsRequiredNo, true);
    assert.equal(sink.sessions.flatMap((s) => s.transactions).length, 1);
  } finally {
    await lenient.close();
  }
});
