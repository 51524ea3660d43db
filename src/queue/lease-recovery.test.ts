// A worker process that holds leases is killed with SIGKILL (no chance to clean up): once its
// leases expire, another worker claims the work, and every recipient is delivered exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { openTempData } from '../../test/harness/temp-data.ts';
import { QueueRunner, type DeliveryAgent, type RecipientVerdict } from './runner.ts';
import { createLogger } from '../log/logger.ts';
import { waitFor } from '../../test/harness/wait.ts';

const holderScript = fileURLToPath(new URL('../../test/fixtures/lease-holder.ts', import.meta.url));
const content = Buffer.from('Subject: lease test\r\n\r\nbody\r\n');

test('work held by a SIGKILLed worker is claimed again after its lease expires; no recipient lost or finalised twice', async () => {
  const data = await openTempData();
  const leaseMs = 1_500;
  const recipientIds: string[] = [];
  for (let m = 0; m < 5; m++) {
    const accepted = await data.queue.enqueue({
      sender: 'app@sender.test',
      recipients: [`a${m}@one.test`, `b${m}@one.test`, `c${m}@two.test`, `d${m}@three.test`],
      content,
      source: 'api',
    });
    recipientIds.push(...accepted.recipients.map((r) => r.id));
  }

  const child = spawn(process.execPath, [holderScript, data.dataDir, String(recipientIds.length), String(leaseMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  try {
    await waitFor(() => output.includes('HOLDING'), { what: 'the worker to hold every recipient', timeoutMs: 20_000 });
    const leased = await data.store.engine.all<{ lease_owner: string }>(
      'SELECT lease_owner FROM recipients WHERE lease_expires_at > ?',
      [Date.now()],
    );
    assert.equal(leased.length, recipientIds.length);
    assert.ok(leased.every((r) => r.lease_owner === `lease-holder-${child.pid}`));
  } finally {
    child.kill('SIGKILL');
  }
  await once(child, 'exit');
  const killedAt = Date.now();
  const leaseEnds = new Map(
    (await data.store.engine.all<{ id: string; until: number }>('SELECT id, lease_expires_at AS until FROM recipients')).map(
      (r) => [r.id, Number(r.until)],
    ),
  );

  // Still leased: nobody may take the work before the lease runs out.
  assert.deepEqual(await data.store.claimDue({ owner: 'early', now: killedAt, leaseMs, limit: 100 }), []);

  const deliveries = new Map<string, number>();
  const agent: DeliveryAgent = {
    async deliver(batch) {
      const verdicts = new Map<string, RecipientVerdict>();
      for (const r of batch.recipients) {
        deliveries.set(r.recipientId, (deliveries.get(r.recipientId) ?? 0) + 1);
        verdicts.set(r.recipientId, { kind: 'delivered', reason: null, replyCode: 250, enhancedCode: '2.0.0' });
      }
      return verdicts;
    },
  };
  const runner = new QueueRunner({
    store: data.store.queue,
    agent,
    logger: createLogger({ level: 'silent' }),
    workerId: 'rescuer',
    leaseMs,
    pollIntervalMs: 20,
    concurrency: 50,
    schedule: data.queue.schedule,
  });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).delivered === recipientIds.length, { what: 'every recipient to be delivered', timeoutMs: 20_000 });
  } finally {
    await runner.stop(1_000);
  }
  const takeovers = await data.store.engine.all<{ recipient_id: string; started_at: number }>(
    `SELECT recipient_id, started_at FROM attempts WHERE worker = 'rescuer'`,
  );
  for (const t of takeovers) {
    assert.ok(Number(t.started_at) >= leaseEnds.get(t.recipient_id)!, 'work is taken over only once its lease has run out');
  }
  assert.deepEqual([...deliveries.keys()].sort(), [...recipientIds].sort(), 'no recipient lost');
  assert.ok([...deliveries.values()].every((n) => n === 1), 'no recipient delivered twice');
  const attempts = await data.store.engine.all<{ recipient_id: string; worker: string; outcome: string }>(
    'SELECT recipient_id, worker, outcome FROM attempts ORDER BY started_at',
  );
  for (const id of recipientIds) {
    const mine = attempts.filter((a) => a.recipient_id === id).map((a) => `${a.worker === 'rescuer' ? 'rescuer' : 'killed'}:${a.outcome}`);
    assert.deepEqual(mine, ['killed:abandoned', 'rescuer:delivered']);
  }
  await data.close();
});
