import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { LeaseTable } from './leases.ts';

test('renew holds a token only while it still leases every row taken under it; release frees them at once', async () => {
  const data = await openTempData();
  try {
    const engine = data.store.engine;
    await engine.run('CREATE TABLE lease_rows (id TEXT PRIMARY KEY, note TEXT, lease_owner TEXT, lease_token TEXT, lease_expires_at BIGINT)');
    for (const id of ['a', 'b', 'c']) await engine.run('INSERT INTO lease_rows (id) VALUES (?)', [id]);
    const leases = new LeaseTable(engine, 'lease_rows');
    const taken = await engine.transaction((tx) => leases.take(tx, ['a', 'b'], { owner: 'w1', token: 't1', until: 1_000 }, { note: 'claimed' }));
    assert.equal(taken, 2);
    await engine.transaction((tx) => leases.take(tx, ['c'], { owner: 'w1', token: 't2', until: 1_000 }));
    const free = await engine.all<{ id: string }>(`SELECT id FROM lease_rows WHERE ${leases.free()} ORDER BY id`, [999]);
    assert.deepEqual(free.map((r) => r.id), []);

    assert.deepEqual(await leases.renew('w1', ['t1', 't2'], 2_000, new Map([['t1', 2]])), ['t1', 't2']);
    assert.deepEqual(await leases.renew('w2', ['t1'], 3_000), [], 'another owner renews nothing');
    // A rival took row b over once the lease ran out: t1 is lost, though row a is still extended.
    await engine.transaction((tx) => leases.take(tx, ['b'], { owner: 'w2', token: 't3', until: 5_000 }));
    assert.deepEqual(await leases.renew('w1', ['t1'], 4_000, new Map([['t1', 2]])), []);
    assert.deepEqual(await leases.renew('w1', ['t1'], 4_000), ['t1'], 'without a count, one row is enough');

    assert.equal(await leases.release(['t1', 't2']), 2);
    const rows = await engine.all<{ id: string; note: string | null; lease_token: string | null }>('SELECT id, note, lease_token FROM lease_rows ORDER BY id');
    assert.deepEqual(rows.map((r) => [r.id, r.note, r.lease_token]), [['a', 'claimed', null], ['b', 'claimed', 't3'], ['c', null, null]]);
    assert.throws(() => new LeaseTable(engine, 'lease_rows; DROP TABLE x'), /not a plain SQL name/);
  } finally {
    await data.close();
  }
});
