import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { QueueRunner, type DeliveryAgent, type RecipientVerdict } from './runner.ts';
import { createLogger } from '../log/logger.ts';
import type { RetrySchedule } from './retry-policy.ts';
import { waitFor } from '../../test/harness/wait.ts';

const content = Buffer.from('Subject: runner\r\n\r\nbody\r\n');
const quick: RetrySchedule = { minBackoffMs: 30, maxBackoffMs: 60, maxAgeMs: 400 };

function runnerFor(data: TempData, agent: DeliveryAgent, schedule = quick): QueueRunner {
  return new QueueRunner({
    store: data.store.queue,
    agent,
    logger: createLogger({ level: 'silent' }),
    workerId: 'test-runner',
    leaseMs: 5_000,
    pollIntervalMs: 10,
    concurrency: 4,
    schedule,
  });
}

const byLocalPart = (verdicts: Record<string, RecipientVerdict>): DeliveryAgent => ({
  async deliver(batch) {
    return new Map(batch.recipients.map((r) => [r.recipientId, verdicts[r.address.split('@')[0]]]));
  },
});

test('records each verdict: 2xx delivered, 5xx bounced, 4xx deferred with backoff', async () => {
  const data = await openTempData({ schedule: { ...quick, minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 } });
  const runner = runnerFor(
    data,
    byLocalPart({
      ok: { kind: 'delivered', reason: null, replyCode: 250, enhancedCode: '2.0.0', detail: { tls: { tls: true, protocol: 'TLSv1.3' } } },
      gone: { kind: 'permanent', reason: '550 5.1.1 no such user', replyCode: 550, enhancedCode: '5.1.1' },
      busy: { kind: 'transient', reason: '451 4.3.0 try later', replyCode: 451, enhancedCode: '4.3.0' },
    }),
    { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 },
  );
  const { messageId } = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['ok@a.test', 'gone@a.test', 'busy@b.test'],
    content,
    source: 'api',
  });
  const started = Date.now();
  runner.start();
  try {
    await waitFor(async () => {
      const counts = await data.store.countByState();
      return counts.delivered === 1 && counts.bounced === 1 && counts.deferred === 1;
    }, { what: 'three recorded attempts' });
  } finally {
    await runner.stop(1_000);
  }
  const view = (await data.store.getMessage(messageId))!;
  const [ok, gone, busy] = view.recipients;
  assert.equal(ok.state, 'delivered');
  assert.deepEqual(ok.attempts.map((a) => [a.outcome, a.replyCode, a.detail]), [['delivered', 250, { tls: { tls: true, protocol: 'TLSv1.3' } }]]);
  assert.equal(gone.state, 'bounced');
  assert.equal(gone.reason, '550 5.1.1 no such user');
  assert.equal(gone.attempts[0].enhancedCode, '5.1.1');
  assert.equal(busy.state, 'deferred');
  const retryIn = Date.parse(busy.nextAttemptAt!) - started;
  assert.ok(retryIn >= 59_000 && retryIn <= 61_000 + (Date.now() - started), `retry in ${retryIn} ms`);
  await data.close();
});

test('keeps retrying a deferred recipient and expires it after the maximum age', async () => {
  const data = await openTempData({ schedule: quick });
  const runner = runnerFor(data, byLocalPart({ busy: { kind: 'transient', reason: '421 4.4.2 timeout' } }));
  const { messageId } = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['busy@b.test'], content, source: 'api' });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).expired === 1, { what: 'expiry' });
  } finally {
    await runner.stop(1_000);
  }
  const [recipient] = (await data.store.getMessage(messageId))!.recipients;
  assert.ok(recipient.attempts.length >= 3, `only ${recipient.attempts.length} attempts`);
  assert.ok(recipient.attempts.every((a) => a.outcome === 'deferred'));
  assert.match(recipient.reason!, /^expired after \d+ attempts: 421 4\.4\.2 timeout$/);
  assert.ok(recipient.finalizedAt);
  await data.close();
});

test('stop lets an in-flight batch finish within the grace period', async () => {
  const data = await openTempData();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started = false;
  const runner = runnerFor(data, {
    async deliver(batch) {
      started = true;
      await gate;
      return new Map(batch.recipients.map((r) => [r.recipientId, { kind: 'delivered', reason: null }]));
    },
  });
  await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['x@a.test'], content, source: 'api' });
  runner.start();
  await waitFor(async () => started, { what: 'the batch to start' });
  const stopping = runner.stop(5_000);
  setTimeout(release, 100);
  assert.deepEqual(await stopping, { finished: 1, released: 0 });
  assert.equal((await data.store.countByState()).delivered, 1);
  await data.close();
});

test('stop aborts a batch that outlives the grace period and releases its lease at once', async () => {
  const data = await openTempData();
  let started = false;
  const runner = runnerFor(data, {
    deliver(_batch, signal) {
      started = true;
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    },
  });
  const { messageId } = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['x@a.test'], content, source: 'api' });
  runner.start();
  await waitFor(async () => started, { what: 'the batch to start' });
  await runner.stop(50);
  const [recipient] = (await data.store.getMessage(messageId))!.recipients;
  assert.equal(recipient.state, 'queued');
  assert.deepEqual(recipient.attempts.map((a) => a.outcome), ['released']);
  const [claim] = await data.store.claimDue({ owner: 'next', now: Date.now(), leaseMs: 1_000, limit: 1 });
  assert.equal(claim?.recipientId, recipient.id, 'due again without waiting for a lease to expire');
  await data.close();
});

test('a delivery agent that throws defers the batch instead of losing it', async () => {
  const data = await openTempData({ schedule: { ...quick, maxAgeMs: 3_600_000 } });
  const runner = runnerFor(
    data,
    {
      async deliver() {
        throw new Error('resolver exploded');
      },
    },
    { ...quick, minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 },
  );
  const { messageId } = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['x@a.test'], content, source: 'api' });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).deferred === 1, { what: 'deferral' });
  } finally {
    await runner.stop(1_000);
  }
  const [recipient] = (await data.store.getMessage(messageId))!.recipients;
  assert.equal(recipient.reason, 'local error: resolver exploded');
  await data.close();
});

test('a hard bounce queues a DSN to the sender and suppresses the address; later sends to it are refused', async () => {
  const { BounceComposer } = await import('../compose/bounces.ts');
  const data = await openTempData({ schedule: { ...quick, maxAgeMs: 3_600_000 } });
  const runner = new QueueRunner({
    store: data.store.queue,
    agent: byLocalPart({
      gone: { kind: 'permanent', reason: '550 5.1.1 no such user', replyCode: 550, enhancedCode: '5.1.1', hardBounce: true, remoteMta: 'mx.a.test' },
      ok: { kind: 'delivered', reason: null, replyCode: 250 },
    }),
    logger: createLogger({ level: 'silent' }),
    workerId: 'test-runner',
    leaseMs: 5_000,
    pollIntervalMs: 10,
    concurrency: 4,
    schedule: data.queue.schedule,
    finalFailures: new BounceComposer(data.queue, 'mta.lacre.test'),
  });
  const { messageId } = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['gone@a.test', 'ok@a.test'],
    content: Buffer.from('Subject: Invoice\r\n\r\nbody\r\n'),
    source: 'api',
  });
  runner.start();
  try {
    await waitFor(async () => {
      const c = await data.store.countByState();
      return c.bounced === 1 && c.delivered === 1;
    }, { what: 'the original to be settled' });
  } finally {
    await runner.stop(1_000);
  }
  const dsnRow = await data.store.engine.get<{ id: string }>('SELECT id FROM messages WHERE id <> ?', [messageId]);
  assert.ok(dsnRow, 'a DSN was queued');
  const dsn = (await data.store.getMessage(dsnRow.id))!;
  assert.equal(dsn.sender, null, 'the DSN has the null sender');
  assert.deepEqual(dsn.recipients.map((r) => r.address), ['app@sender.test']);
  const text = (await data.store.messageContent(dsn.id))!.toString();
  assert.match(text, /Final-Recipient: rfc822; gone@a\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.a\.test/);
  assert.match(text, /Subject: Invoice/);

  const again = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['Gone@A.test', 'ok@a.test'],
    content: Buffer.from('Subject: again\r\n\r\nbody\r\n'),
    source: 'api',
  });
  assert.deepEqual(again.recipients.map((r) => r.address), ['ok@a.test']);
  assert.match(again.refused[0].reason, /^suppressed since .* after a hard bounce: 550 5\.1\.1 no such user$/);
  await assert.rejects(
    data.queue.enqueue({ sender: 'app@sender.test', recipients: ['gone@a.test'], content: Buffer.from('x'), source: 'api' }),
    /every recipient is suppressed/,
  );
  await data.close();
});

test('a bounce of a message with the null sender produces no DSN (never a bounce to a bounce)', async () => {
  const { BounceComposer } = await import('../compose/bounces.ts');
  const data = await openTempData();
  const runner = new QueueRunner({
    store: data.store.queue,
    agent: byLocalPart({ gone: { kind: 'permanent', reason: '550 5.1.1 no such user', hardBounce: true } }),
    logger: createLogger({ level: 'silent' }),
    workerId: 'test-runner',
    leaseMs: 5_000,
    pollIntervalMs: 10,
    concurrency: 4,
    schedule: data.queue.schedule,
    finalFailures: new BounceComposer(data.queue, 'mta.lacre.test'),
  });
  await data.queue.enqueue({ sender: null, recipients: ['gone@a.test'], content: Buffer.from('Subject: dsn\r\n\r\nx\r\n'), source: 'system' });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).bounced === 1, { what: 'the bounce' });
  } finally {
    await runner.stop(1_000);
  }
  const count = await data.store.engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM messages');
  assert.equal(Number(count!.n), 1);
  await data.close();
});
