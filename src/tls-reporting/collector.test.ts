import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openTempData } from '../../test/harness/temp-data.ts';
import type { SqlEngine } from '../store/engine.ts';
import { TlsRptTable, type TlsRptCounts } from '../store/tlsrpt-table.ts';
import type { ReportPolicy, TlsSessionReport } from '../tls-policy/evidence.ts';
import { TlsReportCollector } from './collector.ts';

const DAY1 = Date.UTC(2026, 3, 1, 10, 0, 0);
const DAY2 = Date.UTC(2026, 3, 2, 0, 0, 1);
const STS: ReportPolicy = { type: 'sts', strings: ['version: STSv1', 'mode: enforce', 'mx: mx1.rcpt-probe.test', 'max_age: 86400'], mxHosts: ['mx1.rcpt-probe.test'] };
const NONE: ReportPolicy = { type: 'no-policy-found', strings: [], mxHosts: [] };

function session(over: Partial<TlsSessionReport>): TlsSessionReport {
  return { domain: 'rcpt-probe.test', policy: STS, success: true, at: DAY1, ...over };
}

const expired = (over: Partial<TlsSessionReport> = {}) =>
  session({ success: false, failure: 'certificate-expired', detail: 'certificate verification failed: CERT_HAS_EXPIRED', mxHost: 'mx1.rcpt-probe.test', receivingIp: '192.0.2.25', sendingIp: '198.51.100.4', ...over });

/** Counts engine transactions, so "one flush, one transaction" can be checked. */
function countingEngine(engine: SqlEngine): { engine: SqlEngine; transactions: () => number } {
  let n = 0;
  const wrapped: SqlEngine = {
    dialect: engine.dialect,
    claimLockClause: engine.claimLockClause,
    blobType: engine.blobType,
    all: (sql, params) => engine.all(sql, params),
    get: (sql, params) => engine.get(sql, params),
    run: (sql, params) => engine.run(sql, params),
    transaction: (fn, options) => {
      n++;
      return engine.transaction(fn, options);
    },
    writeHealth: () => engine.writeHealth(),
    close: () => engine.close(),
  };
  return { engine: wrapped, transactions: () => n };
}

test('sessions are counted per UTC day, domain and policy, and one flush is one transaction', async () => {
  const data = await openTempData();
  try {
    const counting = countingEngine(data.store.engine);
    const table = new TlsRptTable(counting.engine, data.sealer);
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
    for (let i = 0; i < 3; i++) collector.record(session({}));
    collector.record(expired());
    collector.record(session({ policy: NONE, at: DAY1 + 1000 }));
    collector.record(session({ at: DAY2 }));
    collector.record(session({ domain: 'Other-Probe.TEST.', at: DAY2 }));
    assert.equal(collector.pendingSessions, 7);
    await collector.flush();
    assert.equal(counting.transactions(), 1);
    assert.equal(collector.pendingSessions, 0);

    const day1 = await table.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.deepEqual(
      day1.map((p) => [p.policy.type, p.success, p.failure]),
      [
        ['sts', 3, 1],
        ['no-policy-found', 1, 0],
      ],
    );
    assert.deepEqual((await table.dayCounts('2026-04-02', 'rcpt-probe.test')).map((p) => [p.policy.type, p.success, p.failure]), [['sts', 1, 0]]);
    assert.deepEqual((await table.dayCounts('2026-04-02', 'other-probe.test')).map((p) => [p.success, p.failure]), [[1, 0]]);
    assert.deepEqual(await table.daysWithCounts('2026-03-01', '2026-05-01'), ['2026-04-01', '2026-04-02']);
    assert.deepEqual((await table.domainsOn('2026-04-02')).map((d) => d.domain).sort(), ['other-probe.test', 'rcpt-probe.test']);

    // A later flush adds to the same rows instead of making new ones.
    collector.record(session({}));
    collector.record(expired());
    await collector.flush();
    assert.equal(counting.transactions(), 2);
    const again = await table.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.deepEqual(again.map((p) => [p.policy.type, p.success, p.failure]), [['sts', 4, 2], ['no-policy-found', 1, 0]]);
    assert.equal(again[0].details.length, 1);
    assert.equal(again[0].details[0].count, 2);
    const rows = await data.store.engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM tlsrpt_policies');
    assert.equal(Number(rows!.n), 4);
    await collector.close();
  } finally {
    await data.close();
  }
});

test('failure details are grouped by every RFC 8460 field: same facts add up, different facts stay apart', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
    collector.record(expired());
    collector.record(expired());
    collector.record(expired({ receivingIp: '192.0.2.26' }));
    collector.record(expired({ receivingHelo: 'mx1.internal' }));
    collector.record(session({ success: false, failure: 'starttls-refused', detail: 'STARTTLS refused: 454 4.7.0 try later', mxHost: 'mx1.rcpt-probe.test' }));
    collector.record(session({ success: false, failure: 'starttls-not-supported', detail: 'the server did not offer STARTTLS', mxHost: 'mx1.rcpt-probe.test' }));
    // Not the domain's failure: not counted at all.
    collector.record(session({ success: false, failure: 'requiretls-unverifiable', detail: 'no DNSSEC or MTA-STS' }));
    await collector.close();
    const [sts] = await table.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.equal(sts.success, 0);
    assert.equal(sts.failure, 6);
    const byKey = sts.details.map((d) => [d.detail.resultType, d.detail.receivingIp ?? '-', d.detail.receivingMxHelo ?? '-', d.detail.failureReasonCode ?? '-', d.count]).sort();
    assert.deepEqual(byKey, [
      ['certificate-expired', '192.0.2.25', '-', 'CERT_HAS_EXPIRED', 2],
      ['certificate-expired', '192.0.2.25', 'mx1.internal', 'CERT_HAS_EXPIRED', 1],
      ['certificate-expired', '192.0.2.26', '-', 'CERT_HAS_EXPIRED', 1],
      ['starttls-not-supported', '-', '-', '-', 1],
      ['starttls-not-supported', '-', '-', 'starttls-refused 454 4.7.0', 1],
    ]);
    assert.deepEqual(sts.details.find((d) => d.detail.receivingIp === '192.0.2.26')!.detail, {
      resultType: 'certificate-expired',
      receivingMxHostname: 'mx1.rcpt-probe.test',
      receivingIp: '192.0.2.26',
      sendingMtaIp: '198.51.100.4',
      failureReasonCode: 'CERT_HAS_EXPIRED',
    });
  } finally {
    await data.close();
  }
});

test('recipient domains and policies are at rest only as keyed hashes and sealed values', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
    collector.record(session({}));
    collector.record(expired());
    await collector.close();
    const row = await data.store.engine.get<{ domain_hash: string }>('SELECT domain_hash FROM tlsrpt_policies');
    assert.equal(row!.domain_hash, data.sealer.domainHash('rcpt-probe.test'));
    await data.store.close();
    for (const name of readdirSync(data.dataDir).filter((n) => n.startsWith('lacre.db'))) {
      const bytes = readFileSync(join(data.dataDir, name));
      for (const needle of ['rcpt-probe', '192.0.2.25', 'CERT_HAS_EXPIRED']) {
        assert.ok(!bytes.includes(Buffer.from(needle)), `${needle} in ${name}`);
        assert.ok(!bytes.includes(Buffer.from(needle, 'utf16le')), `${needle} (utf16) in ${name}`);
      }
    }
  } finally {
    await data.close().catch(() => {});
  }
});

test('a failed flush keeps its counts for the next one', async () => {
  const data = await openTempData();
  try {
    const real = new TlsRptTable(data.store.engine, data.sealer);
    let fail = true;
    const table = {
      addCounts: async (batch: TlsRptCounts[]) => {
        if (fail) throw new Error('disk full');
        return real.addCounts(batch);
      },
    };
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
    collector.record(session({}));
    collector.record(expired());
    await assert.rejects(collector.flush(), /disk full/);
    collector.record(expired());
    assert.equal(collector.pendingSessions, 3);
    fail = false;
    await collector.flush();
    const [sts] = await real.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.deepEqual([sts.success, sts.failure, sts.details[0].count], [1, 2, 2]);
  } finally {
    await data.close();
  }
});

test('the timer flushes on its own; close() flushes the rest and later sessions are not counted', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    const errors: unknown[] = [];
    const collector = new TlsReportCollector({ table, flushIntervalMs: 20, onError: (e) => errors.push(e) });
    collector.record(session({}));
    // Bounded wait for the periodic flush (no timing asserted, only that it happens).
    for (let i = 0; i < 200 && collector.pendingSessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(collector.pendingSessions, 0);
    for (let i = 0; i < 200 && (await table.dayCounts('2026-04-01', 'rcpt-probe.test')).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    collector.record(expired());
    await collector.close();
    collector.record(session({}));
    assert.equal(collector.pendingSessions, 0);
    const [sts] = await table.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.deepEqual([sts.success, sts.failure], [1, 1]);
    assert.deepEqual(errors, []);
  } finally {
    await data.close();
  }
});

test('many distinct failures trigger an early flush instead of growing memory', async () => {
  const data = await openTempData();
  try {
    const table = new TlsRptTable(data.store.engine, data.sealer);
    const collector = new TlsReportCollector({ table, flushIntervalMs: 0, maxPendingGroups: 10 });
    for (let i = 0; i < 25; i++) collector.record(expired({ receivingIp: `192.0.2.${i}` }));
    assert.ok(collector.pendingSessions < 25);
    await collector.close();
    const [sts] = await table.dayCounts('2026-04-01', 'rcpt-probe.test');
    assert.equal(sts.failure, 25);
    assert.equal(sts.details.length, 25);
  } finally {
    await data.close();
  }
});
