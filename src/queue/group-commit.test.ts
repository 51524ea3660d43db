import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GroupCommit } from './group-commit.ts';

test('items submitted together are written in one flush, later ones in the next', async () => {
  const flushes: number[][] = [];
  const commits = new GroupCommit<number, string>(async (items) => {
    flushes.push(items);
    await new Promise((r) => setTimeout(r, 10));
    return items.map((n) => `ok ${n}`);
  });
  const first = [1, 2, 3].map((n) => commits.submit(n));
  await new Promise((r) => setImmediate(r));
  const second = [4, 5].map((n) => commits.submit(n));
  assert.deepEqual(await Promise.all([...first, ...second]), ['ok 1', 'ok 2', 'ok 3', 'ok 4', 'ok 5']);
  assert.deepEqual(flushes, [[1, 2, 3], [4, 5]]);
});

test('a failed flush rejects every item in it and the next flush still runs', async () => {
  let calls = 0;
  const commits = new GroupCommit<number, number>(async (items) => {
    if (calls++ === 0) throw new Error('disk full');
    return items;
  });
  const failed = [commits.submit(1), commits.submit(2)];
  await assert.rejects(failed[0], /disk full/);
  await assert.rejects(failed[1], /disk full/);
  assert.equal(await commits.submit(3), 3);
});
