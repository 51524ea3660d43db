// The lease-worker loop over a real SQLite table leased through the store's lease primitive: a
// small job table stands in for recipients, outbox rows and reports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { LEASE_CLEAR, LEASE_FENCE, LeaseTable } from '../store/leases.ts';
import { LeaseLoop, type LeaseLoopOptions, type LeaseView } from './worker-loop.ts';
import { waitFor } from '../../test/harness/wait.ts';

interface Job {
  id: string;
  token: string;
  until: number;
}

interface Jobs {
  data: TempData;
  leases: LeaseTable;
  logs: Array<{ level: number; msg: string }>;
  claims: number;
  add(count: number): Promise<string[]>;
  /** Takes up to `limit` free jobs for `owner` until `now + leaseMs`. */
  claim(owner: string, now: number, leaseMs: number, limit: number): Promise<Job[]>;
  /** Records a job done, fenced by its token: false when the lease was lost. */
  finish(job: Job, by: string): Promise<boolean>;
  row(id: string): Promise<{ done_by: string | null; lease_token: string | null; lease_expires_at: number | null }>;
  loop(over: Partial<LeaseLoopOptions<Job>> & Pick<LeaseLoopOptions<Job>, 'run'>, owner?: string): LeaseLoop<Job>;
  close(): Promise<void>;
}

async function jobs(): Promise<Jobs> {
  const data = await openTempData();
  const engine = data.store.engine;
  await engine.run(
    `CREATE TABLE lease_jobs (id TEXT PRIMARY KEY, done_by TEXT, lease_owner TEXT, lease_token TEXT, lease_expires_at BIGINT)`,
  );
  const leases = new LeaseTable(engine, 'lease_jobs');
  const logs: Jobs['logs'] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const loops: LeaseLoop<Job>[] = [];
  const j: Jobs = {
    data,
    leases,
    logs,
    claims: 0,
    async add(count) {
      const ids = Array.from({ length: count }, (_, i) => `job-${i}`);
      for (const id of ids) await engine.run('INSERT INTO lease_jobs (id) VALUES (?)', [id]);
      return ids;
    },
    claim(owner, now, leaseMs, limit) {
      return engine.transaction(
        async (tx) => {
          const rows = await tx.all<{ id: string }>(`SELECT id FROM lease_jobs WHERE done_by IS NULL AND ${leases.free()} ORDER BY id LIMIT ?`, [now, limit]);
          const out: Job[] = [];
          for (const { id } of rows) {
            const lease = { owner, token: randomUUID(), until: now + leaseMs };
            await leases.take(tx, [id], lease);
            out.push({ id, token: lease.token, until: lease.until });
          }
          return out;
        },
        { durable: false },
      );
    },
    async finish(job, by) {
      const { changes } = await engine.transaction((tx) =>
        tx.run(`UPDATE lease_jobs SET done_by = ?, ${LEASE_CLEAR} WHERE id = ? AND ${LEASE_FENCE}`, [by, job.id, job.token]),
      );
      return changes === 1;
    },
    async row(id) {
      return (await engine.get<{ done_by: string | null; lease_token: string | null; lease_expires_at: number | null }>(
        'SELECT done_by, lease_token, lease_expires_at FROM lease_jobs WHERE id = ?',
        [id],
      ))!;
    },
    loop(over, owner = 'worker-1') {
      const leaseMs = over.leaseMs ?? 60_000;
      const loop = new LeaseLoop<Job>({
        name: 'test-jobs',
        logger,
        concurrency: 4,
        leaseMs,
        pollIntervalMs: 60_000,
        claim: async (free, now) => {
          j.claims++;
          const work = await j.claim(owner, now, leaseMs, free);
          return { work, more: work.length === free };
        },
        tokens: (job) => [job.token],
        leaseUntil: (job) => job.until,
        renew: (tokens, until) => leases.renew(owner, tokens, until),
        release: (job) => leases.release([job.token]),
        ...over,
      });
      loops.push(loop);
      return loop;
    },
    async close() {
      for (const loop of loops) await loop.stop(0);
      await data.close();
    },
  };
  return j;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a finished item frees a slot that claims again at once, without waiting for the poll', async () => {
  const j = await jobs();
  try {
    const ids = await j.add(3);
    const started = Date.now();
    // One slot and a one-minute poll: only the freed slot can bring the second and third job in.
    const loop = j.loop({ concurrency: 1, run: async (job) => void (await j.finish(job, 'worker-1')) });
    loop.start();
    await waitFor(async () => (await Promise.all(ids.map((id) => j.row(id)))).every((r) => r.done_by === 'worker-1'), { what: 'every job done', timeoutMs: 5_000 });
    assert.ok(Date.now() - started < 5_000);
  } finally {
    await j.close();
  }
});

test('renewal keeps a lease alive past its original expiry: a rival finds nothing to take', async () => {
  const j = await jobs();
  try {
    const [id] = await j.add(1);
    const leaseMs = 600;
    let view: LeaseView | undefined;
    let claimedUntil = 0;
    let recorded: boolean | undefined;
    const loop = j.loop({
      leaseMs,
      run: async (job, _signal, lease) => {
        view = lease;
        claimedUntil = job.until;
        await sleep(3 * leaseMs);
        recorded = await j.finish(job, 'worker-1');
      },
    });
    loop.start();
    await waitFor(() => view !== undefined, { what: 'the job to be claimed', timeoutMs: 5_000 });
    await sleep(2 * leaseMs);
    assert.ok(Date.now() > claimedUntil, 'the lease as claimed has run out');
    assert.ok(view!.held());
    assert.ok((await j.row(id)).lease_expires_at! > Date.now(), 'renewed in the store');
    assert.deepEqual(await j.claim('worker-2', Date.now(), leaseMs, 10), []);
    await waitFor(() => recorded !== undefined, { what: 'the job to be recorded', timeoutMs: 5_000 });
    assert.equal(recorded, true);
    assert.equal((await j.row(id)).done_by, 'worker-1');
  } finally {
    await j.close();
  }
});

test('a lease taken over by another worker flips held() and fences out the first worker', async () => {
  const j = await jobs();
  try {
    const [id] = await j.add(1);
    let view: LeaseView | undefined;
    let recorded: boolean | undefined;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const loop = j.loop({
      leaseMs: 600,
      run: async (job, _signal, lease) => {
        view = lease;
        await gate;
        recorded = await j.finish(job, 'worker-1');
      },
    });
    loop.start();
    await waitFor(() => view !== undefined, { what: 'the job to be claimed', timeoutMs: 5_000 });
    assert.equal(view!.held(), true);
    // A rival whose clock is past the lease sees it expired and takes the job.
    const [stolen] = await j.claim('worker-2', Date.now() + 60_000, 60_000, 1);
    assert.equal(stolen.id, id);
    await waitFor(() => view!.held() === false, { what: 'the next renewal to find the lease lost', timeoutMs: 5_000 });
    assert.ok(j.logs.some((l) => /lease was lost/.test(l.msg)));
    release();
    await waitFor(() => recorded !== undefined, { what: 'the first worker to try recording', timeoutMs: 5_000 });
    assert.equal(recorded, false);
    assert.equal(await j.finish(stolen, 'worker-2'), true);
    assert.equal((await j.row(id)).done_by, 'worker-2');
  } finally {
    await j.close();
  }
});

test('stop lets work finish within the grace, then aborts the rest and releases its leases', async () => {
  const j = await jobs();
  try {
    const ids = await j.add(2);
    let aborted = 0;
    const loop = j.loop({
      run: async (job, signal) => {
        if (job.id === ids[0]) {
          await sleep(50);
          await j.finish(job, 'worker-1');
          return;
        }
        // Records nothing once aborted: the loop gives the lease back.
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
        aborted++;
      },
    });
    loop.start();
    await waitFor(() => loop.inFlightCount === 2, { what: 'both jobs in flight', timeoutMs: 5_000 });
    const result = await loop.stop(300);
    assert.deepEqual(result, { finished: 1, released: 1 });
    assert.equal(aborted, 1);
    assert.equal(loop.inFlightCount, 0);
    assert.equal((await j.row(ids[0])).done_by, 'worker-1');
    assert.deepEqual({ ...(await j.row(ids[1])) }, { done_by: null, lease_token: null, lease_expires_at: null });
    // Free at once for the next worker: no lease left to run out.
    assert.equal((await j.claim('worker-2', Date.now(), 60_000, 10)).length, 1);
  } finally {
    await j.close();
  }
});

test('a claim that says more is due is followed by another at once', async () => {
  const j = await jobs();
  try {
    await j.add(5);
    const loop = j.loop({
      concurrency: 10,
      // Two at a time, as a claim window that filled up would.
      claim: async (_free, now) => {
        j.claims++;
        const work = await j.claim('worker-1', now, 60_000, 2);
        return { work, more: work.length === 2 };
      },
      run: (_job, signal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
    });
    loop.start();
    await waitFor(() => loop.inFlightCount === 5, { what: 'all five in flight', timeoutMs: 2_000 });
    // 2 + 2 + 1: the short third claim said no more, and the one-minute poll has not come.
    await sleep(100);
    assert.equal(j.claims, 3);
  } finally {
    await j.close();
  }
});

test('a failing claim is logged and retried at the next wake; the loop keeps going', async () => {
  const j = await jobs();
  try {
    const [id] = await j.add(1);
    let calls = 0;
    const loop = j.loop({
      pollIntervalMs: 30,
      claim: async (free, now) => {
        if (++calls === 1) throw new Error('database is locked');
        return { work: await j.claim('worker-1', now, 60_000, free), more: false };
      },
      run: async (job) => void (await j.finish(job, 'worker-1')),
    });
    loop.start();
    await waitFor(async () => (await j.row(id)).done_by === 'worker-1', { what: 'the job done after the retry', timeoutMs: 5_000 });
    assert.ok(calls >= 2);
    assert.ok(j.logs.some((l) => l.level === 50 && /claiming work failed/.test(l.msg)));
  } finally {
    await j.close();
  }
});
