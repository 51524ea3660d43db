import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { loadKeyring, rotateMasterKeyFile } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from './store.ts';
import { eventRules } from '../events/derive.ts';
import { TlsRptTable, type TlsRptCounts } from './tlsrpt-table.ts';

const COUNTS: TlsRptCounts = {
  day: '2026-04-01',
  domain: 'Rcpt.Test.',
  policy: { type: 'sts', strings: ['version: STSv1', 'mode: enforce'], mxHosts: ['mx.rcpt.test'] },
  success: 5,
  failure: 2,
  details: [{ detail: { resultType: 'certificate-expired', receivingIp: '192.0.2.1' }, count: 2 }],
};

const claim = (table: TlsRptTable, now: number, maxAttempts = 3, owner = 'run-1') =>
  table.claimReport({ day: '2026-04-01', domainHash: table.domainHash('rcpt.test'), now, owner, leaseMs: 60_000, maxAttempts, newReportId: () => 'r1' });

// The claim without its fresh token, for comparing.
const plain = (c: Awaited<ReturnType<typeof claim>>) => c && { reportId: c.reportId, attempt: c.attempt, delivered: c.delivered, leaseUntil: c.leaseUntil };

test('a lease keeps other runs off until it is finished or runs out; done and exhausted reports are not claimed', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    const hash = table.domainHash('rcpt.test');
    const first = await claim(table, 1000);
    assert.deepEqual(plain(first), { reportId: 'r1', attempt: 1, delivered: [], leaseUntil: 61_000 });
    assert.equal(await claim(table, 2000, 3, 'run-2'), null, 'leased a moment ago by another run');
    const second = (await claim(table, 1000 + 60_000, 3, 'run-2'))!;
    assert.deepEqual(plain(second), { reportId: 'r1', attempt: 2, delivered: [], leaseUntil: 121_000 }, 'a lease run out is taken over');
    assert.equal(await table.updateReport('2026-04-01', hash, first!.token, 'sent', { delivered: ['mailto:a@rcpt.test'] }, 62_000), false, 'the first run is fenced out');
    assert.equal(await table.updateReport('2026-04-01', hash, second.token, 'failed', { delivered: ['mailto:a@rcpt.test'], errors: [{ uri: 'https://r.rcpt.test/', error: 'the receiver answered 500' }] }, 70_000), true);
    const third = (await claim(table, 80_000))!;
    assert.deepEqual(plain(third), { reportId: 'r1', attempt: 3, delivered: ['mailto:a@rcpt.test'], leaseUntil: 140_000 }, 'a finished attempt frees the report at once');
    await table.updateReport('2026-04-01', hash, third.token, 'failed', { delivered: ['mailto:a@rcpt.test'] }, 90_000);
    assert.equal(await claim(table, 100_000), null, 'out of attempts');
    const fourth = (await claim(table, 100_000, 4))!;
    assert.ok(fourth, 'a higher bound allows another');
    await table.updateReport('2026-04-01', hash, fourth.token, 'sent', { delivered: ['mailto:a@rcpt.test', 'https://r.rcpt.test/'] }, 110_000);
    assert.equal(await claim(table, 1_000_000, 99), null, 'sent is final');
    const row = await table.report('2026-04-01', hash);
    assert.deepEqual([row!.state, row!.attempts, row!.reportId, row!.detail!.delivered.length], ['sent', 4, 'r1', 2]);
  } finally {
    await data.close();
  }
});

test('pruneBefore deletes counts and report states of older days only', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    await table.addCounts([COUNTS, { ...COUNTS, day: '2026-03-01' }]);
    await claim(table, 1);
    assert.equal(await table.pruneBefore('2026-04-01'), 2);
    assert.deepEqual(await table.daysWithCounts('2000-01-01', '2100-01-01'), ['2026-04-01']);
    assert.ok(await table.report('2026-04-01', table.domainHash('rcpt.test')));
  } finally {
    await data.close();
  }
});

test('master key rotation re-seals every TLS-RPT value and they still open', async () => {
  const dataDir = tempDir();
  const before = loadKeyring({ dataDir });
  let store = await Store.open({ dataDir, sealer: new Sealer(before), events: eventRules });
  try {
    const table = new TlsRptTable(store.engine, store.sealer);
    await table.addCounts([COUNTS]);
    const claimed = (await claim(table, 1))!;
    await table.updateReport('2026-04-01', table.domainHash('rcpt.test'), claimed.token, 'failed', { delivered: [], errors: [{ error: 'x' }] }, 2);
    await store.close();

    const after = rotateMasterKeyFile(before, dataDir);
    store = await Store.open({ dataDir, sealer: new Sealer(after), events: eventRules });
    assert.equal(await store.resealAll(), 4, 'the lookup key, the policy, the failure detail and the report detail');
    assert.deepEqual(Object.keys(await store.sealedValuesByKey()), [after.current.idHex]);
    const reopened = new TlsRptTable(store.engine, store.sealer);
    const [policy] = await reopened.dayCounts('2026-04-01', 'rcpt.test');
    assert.deepEqual([policy.policy, policy.success, policy.failure, policy.details], [COUNTS.policy, 5, 2, COUNTS.details]);
    assert.deepEqual(await reopened.domainsOn('2026-04-01'), [{ domain: 'rcpt.test', domainHash: reopened.domainHash('rcpt.test') }]);
    assert.deepEqual((await reopened.report('2026-04-01', reopened.domainHash('rcpt.test')))!.detail, { delivered: [], errors: [{ error: 'x' }] });
  } finally {
    await store.close();
  }
});
