// The report mail as the lead wires it (submit → Composer.submit, source 'system'): compose takes
// it as it is, DKIM-signs it (RFC 8460 §5.3.1 requires a signature, without l=) and queues it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { openTempData } from '../../test/harness/temp-data.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { Composer } from '../compose/outgoing.ts';
import { fieldValue, fieldsNamed, parseMessage } from '../compose/message-headers.ts';
import { Resolver } from '../dns/resolver.ts';
import { nodeStyleResolver } from '../dns/node-style.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import { TlsReportCollector } from './collector.ts';
import { TlsReporter } from './reporter.ts';

test('a report mail passes compose unchanged in shape and carries a DKIM signature that verifies', async () => {
  const dns = await FakeDnsServer.start();
  const data = await openTempData();
  try {
    const resolver = new Resolver({ servers: [dns.address], timeoutMs: 1000, tries: 1 });
    const domains = new SenderDomains({
      store: data.store,
      resolver,
      settings: { hostname: 'mta.lacre.test', returnPathSubdomain: 'bounces', returnPathLocalPart: 'bounce', spfIp4: [], spfIp6: [], dmarcRua: 'mailto:dmarc@{domain}', tlsRptRua: 'mailto:tlsrpt@{domain}' },
      rotationGraceMs: 86_400_000,
    });
    const view = await domains.add('lacre.test', 'cli:test');
    publishRecords(dns, view.records);
    assert.equal((await domains.verify('lacre.test', { actor: 'cli:test' })).domain.status, 'verified');
    const composer = new Composer({ queue: data.queue, domains, tag: (id) => data.sealer.lookupHash('return-path', id) });

    const table = new TlsRptTable(data.store.engine, data.sealer);
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
    collector.record({ domain: 'rcpt.test', policy: { type: 'no-policy-found', strings: [], mxHosts: [] }, success: true, at: Date.UTC(2026, 3, 1, 9) });
    await collector.close();
    dns.add('_smtp._tls.rcpt.test', { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt.test' });

    const queued: string[] = [];
    const reporter = new TlsReporter({
      table,
      resolver,
      submit: async (m) => queued.push((await composer.submit({ ...m, source: 'system' })).messageId),
      organizationName: 'Lacre test',
      submitter: 'mta.lacre.test',
      contact: 'mailto:tlsrpt@lacre.test',
      from: 'tlsrpt@lacre.test',
      ca: [],
      vetHttps: async () => {
        throw new Error('no https rua in this test');
      },
      clock: () => Date.UTC(2026, 3, 2, 1),
      logger: { info() {}, warn() {}, debug() {} },
    });
    const [outcome] = await reporter.runDay('2026-04-01');
    assert.equal(outcome.state, 'sent', JSON.stringify(outcome));
    assert.equal(queued.length, 1);

    const stored = (await data.store.messageContent(queued[0]))!;
    const headers = parseMessage(stored).headers;
    assert.match(fieldValue(fieldsNamed(headers, 'Content-Type')[0]), /^multipart\/report; report-type="?tlsrpt"?;/);
    const signatures = fieldsNamed(headers, 'DKIM-Signature').map(fieldValue);
    assert.ok(signatures.length > 0);
    for (const signature of signatures) {
      assert.match(signature, /d=lacre\.test/);
      assert.doesNotMatch(signature.replace(/\s/g, ''), /(^|;)l=/, 'no body length limit (RFC 8460 §5.3.1)');
    }
    const result = await dkimVerify(stored, { resolver: nodeStyleResolver(resolver) as never, strict: true });
    const verdicts = result.results.map((r: { status: { result: string } }) => r.status.result);
    assert.ok(verdicts.length > 0 && verdicts.every((v: string) => v === 'pass'), JSON.stringify(verdicts));
    const message = await data.store.getMessage(queued[0]);
    assert.equal(message!.source, 'system');
    assert.deepEqual(message!.recipients.map((r) => r.address), ['tls@rcpt.test']);
  } finally {
    await data.close();
    await dns.close();
  }
});
