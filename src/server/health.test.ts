// Readiness decided row by row: every way a part can be unwell names itself, and only all-ok is ready.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readiness, stalePassAfterMs, type ReadinessFacts } from './health.ts';
import type { DeliveryStatus } from './delivery-stage.ts';

const NOW = 1_000_000_000;
const KEY = { ok: true as const, currentKeyId: 'aaaa' };

function deliveryStatus(over: Partial<DeliveryStatus> = {}, runner: Partial<DeliveryStatus['runner']> = {}): ReadinessFacts['delivery'] {
  return {
    status: {
      metrics: [],
      runner: { running: true, pollIntervalMs: 5_000, lastPassAt: NOW - 1_000, lastPassError: null, ...runner },
      store: { ok: true },
      keyring: KEY,
      ...over,
    },
  };
}

function facts(over: Partial<ReadinessFacts> = {}): ReadinessFacts {
  return { serving: true, store: { ok: true }, keyring: KEY, delivery: deliveryStatus(), now: NOW, ...over };
}

const rows: Array<{ name: string; facts: ReadinessFacts; failing: Partial<Record<string, RegExp>> }> = [
  { name: 'everything well', facts: facts(), failing: {} },
  { name: 'starting or stopping', facts: facts({ serving: false }), failing: { serving: /starting or shutting down/ } },
  { name: 'intake write failed', facts: facts({ store: { ok: false, reason: 'disk I/O error' } }), failing: { store: /^intake: disk I\/O error/ } },
  {
    name: 'delivery write failed',
    facts: facts({ delivery: deliveryStatus({ store: { ok: false, reason: 'database is locked' } }) }),
    failing: { store: /^delivery: database is locked/ },
  },
  {
    name: 'keyring unreadable here',
    facts: facts({ keyring: { ok: false, currentKeyId: 'aaaa', reason: 'master.key is readable by other users' } }),
    failing: { keyring: /readable by other users.*lacre sealing status/ },
  },
  {
    name: 'keyring unreadable in the delivery thread',
    facts: facts({ delivery: deliveryStatus({ keyring: { ok: false, currentKeyId: 'aaaa', reason: 'truncated' } }) }),
    failing: { keyring: /delivery thread cannot read the keyring \(truncated\)/ },
  },
  {
    name: 'threads seal under different keys',
    facts: facts({ delivery: deliveryStatus({ keyring: { ok: true, currentKeyId: 'bbbb' } }) }),
    failing: { keyring: /aaaa.*bbbb/ },
  },
  {
    name: 'delivery thread silent',
    facts: facts({ delivery: { status: null, reason: 'the delivery thread did not answer within 2000 ms' } }),
    failing: { 'queue-worker': /did not answer within 2000 ms/ },
  },
  { name: 'runner stopped', facts: facts({ delivery: deliveryStatus({}, { running: false }) }), failing: { 'queue-worker': /stopped/ } },
  {
    name: 'last pass failed',
    facts: facts({ delivery: deliveryStatus({}, { lastPassError: 'database is locked' }) }),
    failing: { 'queue-worker': /last look for due mail failed: database is locked/ },
  },
  { name: 'no pass yet', facts: facts({ delivery: deliveryStatus({}, { lastPassAt: null }) }), failing: { 'queue-worker': /not looked for due mail yet/ } },
  {
    name: 'last pass too old',
    facts: facts({ delivery: deliveryStatus({}, { lastPassAt: NOW - stalePassAfterMs(5_000) - 1 }) }),
    failing: { 'queue-worker': /last looked for due mail 30 s ago/ },
  },
  { name: 'last pass just within the limit', facts: facts({ delivery: deliveryStatus({}, { lastPassAt: NOW - stalePassAfterMs(5_000) }) }), failing: {} },
];

for (const row of rows) {
  test(`readiness: ${row.name}`, () => {
    const result = readiness(row.facts);
    assert.equal(result.ready, Object.keys(row.failing).length === 0);
    for (const [name, value] of Object.entries(result.checks)) {
      const expected = row.failing[name];
      if (expected) assert.match(value, expected, name);
      else assert.equal(value, 'ok', name);
    }
  });
}

test('a stale pass is three poll intervals, and never under 30 s', () => {
  assert.equal(stalePassAfterMs(100), 30_000);
  assert.equal(stalePassAfterMs(60_000), 180_000);
});
