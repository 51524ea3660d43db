// `lacre domains …` as operators run it: a real process, a real data dir, DNS from the harness.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { tempDir } from '../../test/harness/temp-data.ts';
import { runLacre } from '../../test/harness/lacre-cli.ts';

/** Selectors carry the year they were made in. */
const Y = new Date().getUTCFullYear();

let dns: FakeDnsServer;
before(async () => {
  dns = await FakeDnsServer.start();
});
after(async () => {
  await dns.close();
});

// Asynchronous: the fake DNS server in this process must keep answering while the CLI runs.
const lacre = (args: string[], env: Record<string, string>) =>
  runLacre(args, { LACRE_DNS_SERVERS: dns.address, LACRE_DNS_TIMEOUT: '1s', LACRE_HOSTNAME: 'mta.lacre.test', USER: 'tester', ...env });

test('domains add --json prints every record; verify exits 1 until they are published, then 0', async () => {
  const env = { LACRE_DATA_DIR: tempDir() };
  const added = await lacre(['domains', 'add', 'cli.test', '--json'], env);
  assert.equal(added.code, 0, added.stderr);
  const view = JSON.parse(added.stdout);
  assert.deepEqual(view.records.map((r: { purpose: string }) => r.purpose), ['dkim', 'dkim', 'spf', 'return-path-mx', 'dmarc', 'mta-sts', 'mta-sts-policy', 'tls-rpt']);

  const table = await lacre(['domains', 'show', 'cli.test'], env);
  assert.match(table.stdout, new RegExp(`TXT\\s+lacre-ed-${Y}a\\._domainkey\\.cli\\.test\\s+\\(required\\)`));
  assert.match(table.stdout, /v=spf1 a:mta\.lacre\.test -all/);

  const missing = await lacre(['domains', 'verify', 'cli.test'], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stdout, new RegExp(`missing\\s+TXT\\s+lacre-ed-${Y}a\\._domainkey\\.cli\\.test`));

  publishRecords(dns, view.records);
  dns.remove('bounces.cli.test', 'TXT');
  dns.add('bounces.cli.test', { type: 'TXT', data: 'v=spf1 include:other.test -all' });
  const wrongSpf = await lacre(['domains', 'verify', 'cli.test'], env);
  assert.equal(wrongSpf.code, 1);
  assert.match(wrongSpf.stdout, /wrong\s+TXT\s+bounces\.cli\.test[\s\S]*found:\s+v=spf1 include:other\.test -all/);

  dns.remove('bounces.cli.test', 'TXT');
  publishRecords(dns, view.records, (r) => r.purpose === 'spf');
  const ok = await lacre(['domains', 'verify', 'cli.test', '--json'], env);
  assert.equal(ok.code, 0, ok.stdout);
  const outcome = JSON.parse(ok.stdout);
  assert.equal(outcome.domain.status, 'verified');
  assert.equal(outcome.report.dmarc.policy, 'none');

  const list = await lacre(['domains', 'list', '--json'], env);
  assert.deepEqual(JSON.parse(list.stdout).map((d: { domain: string; status: string }) => [d.domain, d.status]), [['cli.test', 'verified']]);
});

test('domains verify --force verifies without DNS and the audit log names the operator; unknown domains exit 2', async () => {
  const env = { LACRE_DATA_DIR: tempDir() };
  assert.equal((await lacre(['domains', 'add', 'trial.test'], env)).code, 0);
  const forced = await lacre(['domains', 'verify', 'trial.test', '--force', '--json'], env);
  assert.equal(forced.code, 0, forced.stderr);
  assert.equal(JSON.parse(forced.stdout).forced, true);
  const unknown = await lacre(['domains', 'verify', 'nope.test'], env);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /domain nope\.test is not registered/);
  const invalid = await lacre(['domains', 'add', 'not a domain'], env);
  assert.equal(invalid.code, 2);
  assert.match(invalid.stderr, /not a valid domain name/);
  const rotated = await lacre(['domains', 'rotate-dkim', 'trial.test', '--json'], env);
  assert.deepEqual(JSON.parse(rotated.stdout).dkimKeys.map((k: { selector: string; state: string }) => `${k.selector}:${k.state}`), [
    `lacre-ed-${Y}a:active`,
    `lacre-rsa-${Y}a:active`,
    `lacre-ed-${Y}b:pending`,
    `lacre-rsa-${Y}b:pending`,
  ]);
  const removed = await lacre(['domains', 'remove', 'trial.test', '--json'], env);
  assert.deepEqual(JSON.parse(removed.stdout), { domain: 'trial.test', removed: true });

  // The audit trail, read the way an operator's tooling would: straight from the store.
  const { openTempData } = await import('../../test/harness/temp-data.ts');
  const data = await openTempData({ dataDir: env.LACRE_DATA_DIR });
  try {
    const audit = await data.store.audit.list({ subject: 'trial.test' });
    assert.deepEqual(audit.map((a) => `${a.actor} ${a.action}`), [
      'cli:tester domain.add',
      'cli:tester domain.force-verify',
      'cli:tester domain.rotate-dkim',
      'cli:tester domain.remove',
    ]);
  } finally {
    await data.close();
  }
});
