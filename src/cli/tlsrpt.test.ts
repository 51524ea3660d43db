// `lacre tlsrpt show` as operators run it: real processes, a real data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import { TlsReportCollector } from '../tls-reporting/collector.ts';
import { rfc8460Validator } from '../tls-reporting/rfc8460-schema.ts';
import { runLacreSync } from '../../test/harness/lacre-cli.ts';


const lacre = (args: string[], env: Record<string, string>) => runLacreSync(args, { USER: 'tester', SUDO_USER: '', ...env });

async function seededDataDir(): Promise<string> {
  const dataDir = tempDir();
  const data = await openTempData({ dataDir });
  try {
    const collector = new TlsReportCollector({ table: new TlsRptTable(data.store.engine, data.sealer), flushIntervalMs: 0 });
    const at = Date.UTC(2026, 3, 1, 8, 30);
    const policy = { type: 'sts' as const, strings: ['version: STSv1', 'mode: enforce', 'mx: mx.rcpt.test', 'max_age: 604800'], mxHosts: ['mx.rcpt.test'] };
    for (let i = 0; i < 3; i++) collector.record({ domain: 'rcpt.test', policy, success: true, at });
    collector.record({ domain: 'rcpt.test', policy, success: false, failure: 'sts-mx-mismatch', detail: 'mx.evil.test matches no mx pattern', mxHost: 'mx.evil.test', receivingIp: '192.0.2.66', at });
    await collector.close();
  } finally {
    await data.close();
  }
  return dataDir;
}

test('tlsrpt show --json prints exactly one schema-valid RFC 8460 report for a seeded day', async () => {
  const env = { LACRE_DATA_DIR: await seededDataDir(), LACRE_HOSTNAME: 'mta.lacre.test' };
  const result = lacre(['tlsrpt', 'show', '--domain', 'RCPT.test', '--date', '2026-04-01', '--json'], env);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  const validate = rfc8460Validator();
  assert.ok(validate(report), JSON.stringify(validate.errors));
  assert.deepEqual(report['date-range'], { 'start-datetime': '2026-04-01T00:00:00Z', 'end-datetime': '2026-04-01T23:59:59Z' });
  assert.equal(report.policies[0].policy['policy-domain'], 'rcpt.test');
  assert.deepEqual(report.policies[0].summary, { 'total-successful-session-count': 3, 'total-failure-session-count': 1 });
  assert.deepEqual(report.policies[0]['failure-details'], [
    {
      'result-type': 'validation-failure',
      'receiving-mx-hostname': 'mx.evil.test',
      'receiving-ip': '192.0.2.66',
      'failed-session-count': 1,
      'additional-information': 'https://www.rfc-editor.org/rfc/rfc8461#section-4.1',
      'failure-reason-code': 'sts-mx-mismatch',
    },
  ]);

  const text = lacre(['tlsrpt', 'show', '--domain', 'rcpt.test', '--date', '2026-04-01'], env);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^TLS report for rcpt\.test, 2026-04-01 \(UTC\): not sent yet\n/);
  assert.match(text.stdout, /policy sts mx mx\.rcpt\.test: 3 successful, 1 failed\n/);
  assert.match(text.stdout, /1× validation-failure {2}mx\.evil\.test \[192\.0\.2\.66\] {2}\(sts-mx-mismatch\)/);
});

test('tlsrpt show exits 2 with a clear message for a bad date, a bad domain or a day without counts', async () => {
  const env = { LACRE_DATA_DIR: await seededDataDir() };
  const cases: Array<[string[], RegExp]> = [
    [['--domain', 'rcpt.test', '--date', '2026-02-30'], /--date "2026-02-30" is not a day: expected YYYY-MM-DD/],
    [['--domain', 'rcpt.test', '--date', '01/04/2026'], /is not a day/],
    [['--domain', 'not a domain', '--date', '2026-04-01'], /--domain "not a domain" is not a domain name/],
    [['--domain', 'rcpt.test', '--date', '2026-04-02'], /no TLS sessions with rcpt\.test were counted on 2026-04-02/],
    [['--domain', 'other.test', '--date', '2026-04-01'], /no TLS sessions with other\.test/],
  ];
  for (const [args, message] of cases) {
    const result = lacre(['tlsrpt', 'show', ...args], env);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.equal(result.stdout, '');
  }
});

test('tlsrpt show says counting is off when LACRE_TLSRPT_COUNT=false, and how to turn it on', async () => {
  const result = lacre(['tlsrpt', 'show', '--domain', 'other.test', '--date', '2026-04-01'], { LACRE_DATA_DIR: await seededDataDir(), LACRE_TLSRPT_COUNT: 'false' });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /TLS session counting is off \(tlsReporting\.count, LACRE_TLSRPT_COUNT=false\).*turn it on and restart lacre serve/);
});

