// The SQLite engine against real files and real second processes: durable commits wait for a WAL
// sync that covers them and share it, another process's lock is waited for without blocking the
// event loop, acknowledged commits survive SIGKILL, and checkpoints fold the WAL off the loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import { tempDir } from '../../test/harness/temp-data.ts';
import { SqliteEngine, type SqliteEngineOptions } from './sqlite-engine.ts';

const lockHolder = fileURLToPath(new URL('../../test/fixtures/sqlite-lock-holder.ts', import.meta.url));
const durableWriter = fileURLToPath(new URL('../../test/fixtures/sqlite-durable-writer.ts', import.meta.url));

async function withEngine(options: SqliteEngineOptions, fn: (engine: SqliteEngine, path: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const path = join(dir, 'lacre.db');
  const engine = new SqliteEngine(path, options);
  try {
    await engine.run('CREATE TABLE t (v TEXT)');
    await fn(engine, path);
  } finally {
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Spawns a process that holds the write lock on `path` for `holdMs`; resolves once it holds it. */
async function holdLock(path: string, holdMs: number): Promise<{ child: ChildProcess; exited: Promise<unknown>; output: () => string }> {
  const child = spawn(process.execPath, [lockHolder, path, String(holdMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  const deadline = Date.now() + 10_000;
  while (!output.includes('LOCKED')) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      assert.fail(`the lock holder did not take the lock: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { child, exited, output: () => output };
}

/** Counts timer ticks every 10 ms and the longest gap between two, to see whether the loop stalls. */
function watchEventLoop(): { stop: () => { ticks: number; maxGapMs: number } } {
  let ticks = 0;
  let maxGapMs = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return { ticks, maxGapMs };
    },
  };
}

test('a durable transaction resolves only after a WAL sync; a non-durable one does not wait for it', async () => {
  await withEngine({}, async (engine) => {
    let syncsAtCommit = -1;
    await engine.transaction(async (tx) => {
      await tx.run('INSERT INTO t VALUES (?)', ['durable']);
      syncsAtCommit = engine.stats.syncs;
    });
    assert.ok(engine.stats.syncs > syncsAtCommit, 'a sync completed after the commit and before the promise resolved');

    const syncs = engine.stats.syncs;
    const commits = engine.stats.commits;
    await engine.transaction((tx) => tx.run('INSERT INTO t VALUES (?)', ['lease-like']), { durable: false });
    assert.equal(engine.stats.commits, commits + 1);
    assert.equal(engine.stats.syncs, syncs, 'a non-durable commit is acknowledged without a sync');
  });
});

test('200 durable transactions started in one tick commit separately and share a handful of WAL syncs', async () => {
  await withEngine({}, async (engine) => {
    const commits = engine.stats.commits;
    const syncs = engine.stats.syncs;
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        engine.transaction(async (tx) => {
          await tx.run('INSERT INTO t VALUES (?)', [`row ${i}`]);
          return engine.stats.syncs;
        }).then((syncsAtCommit) => engine.stats.syncs > syncsAtCommit),
      ),
    );
    assert.ok(results.every(Boolean), 'each transaction resolved after a sync that completed after its commit');
    assert.equal(engine.stats.commits - commits, 200);
    const used = engine.stats.syncs - syncs;
    // The first commit's sync is already running when the others commit: they need a second one.
    assert.ok(used >= 2 && used <= 20, `200 commits used ${used} syncs`);
    assert.equal((await engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM t'))!.n, 200);
  });
});

test('a transaction waits for another process to release the write lock without blocking the event loop, then commits', async () => {
  await withEngine({}, async (engine, path) => {
    const holder = await holdLock(path, 2_000);
    const loop = watchEventLoop();
    const started = performance.now();
    await engine.transaction((tx) => tx.run('INSERT INTO t VALUES (?)', ['after the lock']));
    const waitedMs = performance.now() - started;
    const { ticks, maxGapMs } = loop.stop();
    await holder.exited;
    assert.ok(holder.output().includes('RELEASED'));
    assert.ok(waitedMs >= 1_000, `waited ${waitedMs} ms for a lock held ~2 s`);
    assert.ok(ticks >= 50, `the interval fired ${ticks} times while waiting`);
    assert.ok(maxGapMs < 500, `the event loop stalled for ${maxGapMs} ms`);
    assert.equal((await engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM holder'))!.n, 1);
    assert.equal((await engine.get<{ v: string }>('SELECT v FROM t'))!.v, 'after the lock');
  });
});

test('a lock held past the deadline fails transactions and statements with a one-line error naming the file', async () => {
  await withEngine({ lockDeadlineMs: 500 }, async (engine, path) => {
    const holder = await holdLock(path, 30_000);
    try {
      for (const attempt of [
        () => engine.transaction((tx) => tx.run('INSERT INTO t VALUES (?)', ['blocked'])),
        () => engine.run('INSERT INTO t VALUES (?)', ['blocked too']),
      ]) {
        const started = performance.now();
        await assert.rejects(attempt(), (err: Error) => {
          assert.equal(
            err.message,
            `the database ${path} has been locked by another process for 0.5 s (a long-running lacre command?); try again when it finishes`,
          );
          return true;
        });
        const waitedMs = performance.now() - started;
        assert.ok(waitedMs >= 450 && waitedMs < 5_000, `gave up after ${waitedMs} ms`);
      }
    } finally {
      holder.child.kill('SIGKILL');
      await holder.exited;
    }
    // The failed transaction was rolled back: the connection is usable and nothing of it remains.
    await engine.transaction((tx) => tx.run('INSERT INTO t VALUES (?)', ['after the holder died']));
    assert.deepEqual((await engine.all<{ v: string }>('SELECT v FROM t')).map((r) => r.v), ['after the holder died']);
  });
});

test('every durably acknowledged commit survives a SIGKILL of the writer process', async () => {
  const dir = tempDir();
  const path = join(dir, 'lacre.db');
  try {
    const child = spawn(process.execPath, [durableWriter, path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'exit');
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    const deadline = Date.now() + 20_000;
    while ((output.match(/^ACK /gm)?.length ?? 0) < 300 && Date.now() < deadline && child.exitCode === null) {
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await exited;
    const acked = [...output.matchAll(/^ACK (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(acked.length >= 300, `the writer acknowledged only ${acked.length} commits`);

    const engine = new SqliteEngine(path);
    try {
      const present = new Set((await engine.all<{ n: number }>('SELECT n FROM acked')).map((r) => Number(r.n)));
      const lost = acked.filter((n) => !present.has(n));
      assert.deepEqual(lost, [], 'acknowledged rows missing after the crash');
    } finally {
      await engine.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the checkpoint worker folds a growing WAL into the main file and keeps it bounded; checkpoint() empties it', async () => {
  const checkpointBytes = 256 * 1024;
  await withEngine({ checkpointBytes }, async (engine, path) => {
    await engine.run('CREATE TABLE blobs (n INTEGER PRIMARY KEY, b BLOB)');
    const size = 64 * 1024;
    let n = 0;
    const write = () => engine.transaction((tx) => tx.run('INSERT INTO blobs VALUES (?, ?)', [n, new Uint8Array(size).fill(n++ % 256)]));
    for (let i = 0; i < 16; i++) await write();
    // The worker thread starts on the first checkpoint, which then runs in the background.
    const deadline = Date.now() + 10_000;
    while (engine.stats.checkpoints === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(engine.stats.checkpoints >= 1, 'the worker ran a checkpoint');
    // In WAL mode only a checkpoint writes pages into the main file.
    assert.ok(statSync(path).size >= 8 * size, `main file ${statSync(path).size} bytes after ${n * size} written`);

    // A steady stream of commits: the WAL is started over again and again instead of growing.
    let largestWal = 0;
    for (let i = 0; i < 96; i++) {
      await write();
      largestWal = Math.max(largestWal, statSync(`${path}-wal`).size);
    }
    assert.ok(largestWal < 12 * checkpointBytes, `the WAL reached ${largestWal} bytes while ${96 * size} were written`);

    await engine.checkpoint();
    assert.equal(statSync(`${path}-wal`).size, 0);
    // The main file alone (what a backup copies) holds everything.
    const copyDir = tempDir();
    copyFileSync(path, join(copyDir, 'copy.db'));
    const db = new DatabaseSync(join(copyDir, 'copy.db'), { readOnly: true });
    try {
      const row = db.prepare('SELECT COUNT(*) AS n, SUM(length(b)) AS bytes FROM blobs').get() as { n: number; bytes: number };
      assert.deepEqual({ n: row.n, bytes: row.bytes }, { n, bytes: n * size });
    } finally {
      db.close();
      rmSync(copyDir, { recursive: true, force: true });
    }
  });
});
