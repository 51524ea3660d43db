// How the runner schedules: woken by events rather than its poll, fair across sites, and gentle
// with dead sites. The poll interval is set to a minute in every test here, so anything that
// happens sooner was caused by an event (a nudge, a freed slot, a due time), not by polling.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { QueueRunner, type DeliveryAgent, type DeliveryBatch, type RecipientVerdict, type RunnerOptions } from './runner.ts';
import { createLogger } from '../log/logger.ts';
import type { RetrySchedule } from './retry-policy.ts';
import { waitFor } from '../../test/harness/wait.ts';

const content = Buffer.from('Subject: scheduling\r\n\r\nbody\r\n');
const schedule: RetrySchedule = { minBackoffMs: 300, maxBackoffMs: 600, maxAgeMs: 3_600_000 };
const delivered: RecipientVerdict = { kind: 'delivered', reason: null, replyCode: 250 };

function runnerFor(data: TempData, agent: DeliveryAgent, extra: Partial<RunnerOptions> = {}): QueueRunner {
  return new QueueRunner({
    store: data.store.queue,
    agent,
    logger: createLogger({ level: 'silent' }),
    workerId: 'scheduling-test',
    leaseMs: 30_000,
    pollIntervalMs: 60_000,
    concurrency: 10,
    destinationConcurrency: 5,
    schedule,
    ...extra,
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const all = (batch: DeliveryBatch, verdict: RecipientVerdict) => new Map(batch.recipients.map((r) => [r.recipientId, verdict]));

test('a finished batch claims the next at once: 40 messages through one slot without a poll', async () => {
  const data = await openTempData({ schedule });
  for (let i = 0; i < 40; i++) await data.queue.enqueue({ sender: 'app@sender.test', recipients: [`r${i}@one.test`], content, source: 'api' });
  let calls = 0;
  const runner = runnerFor(data, { async deliver(batch) { calls++; await sleep(2); return all(batch, delivered); } }, { concurrency: 1 });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).delivered === 40, { what: '40 deliveries', timeoutMs: 8_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
  assert.equal(calls, 40);
});

test('a message committed while the runner sleeps is delivered on the nudge, not on the next poll', async () => {
  const data = await openTempData({ schedule });
  const runner = runnerFor(data, { async deliver(batch) { return all(batch, delivered); } });
  runner.start();
  try {
    await sleep(100);
    await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['late@one.test'], content, source: 'api' });
    runner.nudge();
    await waitFor(async () => (await data.store.countByState()).delivered === 1, { what: 'the delivery', timeoutMs: 5_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
});

test('a deferred recipient is retried when it comes due, woken by its due time', async () => {
  const data = await openTempData({ schedule });
  const times: number[] = [];
  const runner = runnerFor(data, {
    async deliver(batch) {
      times.push(Date.now());
      return all(batch, times.length === 1 ? { kind: 'transient', reason: '451 try later', replyCode: 451 } : delivered);
    },
  });
  await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['retry@one.test'], content, source: 'api' });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).delivered === 1, { what: 'the retry', timeoutMs: 5_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
  assert.equal(times.length, 2);
  assert.ok(times[1] - times[0] >= schedule.minBackoffMs - 5, `retried after ${times[1] - times[0]} ms`);
});

test('a 1-recipient message to domain B is delivered within a second while 1,000 recipients of domain A drain', async () => {
  const data = await openTempData({ schedule });
  // One message with 1,000 recipients at A, and a slow A: 300 ms per transaction.
  const big = Array.from({ length: 1_000 }, (_, i) => `a${i}@a.test`);
  await data.queue.enqueue({ sender: 'app@sender.test', recipients: big, content, source: 'api' });
  const sizes: number[] = [];
  const deliveredAt = new Map<string, number>();
  const runner = runnerFor(data, {
    async deliver(batch) {
      if (batch.domain === 'a.test') {
        sizes.push(batch.recipients.length);
        await sleep(300);
      }
      for (const r of batch.recipients) deliveredAt.set(r.address, Date.now());
      return all(batch, delivered);
    },
    siteOf: (domain) => `site-of-${domain}`,
  }, { concurrency: 4, destinationConcurrency: 4 });
  runner.start();
  try {
    await waitFor(() => sizes.length > 0, { what: 'A to start draining', timeoutMs: 5_000 });
    // More A work is queued behind B's message too: B must not wait for it.
    await data.queue.enqueue({ sender: 'app@sender.test', recipients: Array.from({ length: 200 }, (_, i) => `late${i}@a.test`), content, source: 'api' });
    const queuedAt = Date.now();
    await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['b@b.test'], content, source: 'api' });
    runner.nudge();
    await waitFor(() => deliveredAt.has('b@b.test'), { what: 'B delivered', timeoutMs: 5_000 });
    assert.ok(deliveredAt.get('b@b.test')! - queuedAt < 1_000, `B took ${deliveredAt.get('b@b.test')! - queuedAt} ms`);
    const aLeft = big.filter((a) => !deliveredAt.has(a)).length;
    assert.ok(aLeft > 0, 'B was delivered while A was still draining');
    await waitFor(async () => (await data.store.countByState()).delivered === 1_201, { what: 'A drained', timeoutMs: 20_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
  // RFC 5321 §4.5.3.1.8: up to 100 recipients per transaction.
  assert.equal(Math.max(...sizes), 100);
});

test('domains of one site share its limit: once learnt, many domains on one provider never take more than its slots', async () => {
  const data = await openTempData({ schedule });
  const domains = Array.from({ length: 10 }, (_, i) => `d${i}.test`);
  let active = 0;
  let peak = 0;
  const known = new Set<string>();
  const runner = runnerFor(data, {
    async deliver(batch) {
      active++;
      peak = Math.max(peak, active);
      await sleep(30);
      active--;
      known.add(batch.domain);
      return all(batch, delivered);
    },
    // Like the SMTP agent: a domain's site is known once its MX set was resolved for a delivery.
    siteOf: (domain) => (known.has(domain) ? 'mx.provider.test' : undefined),
  }, { concurrency: 20, destinationConcurrency: 3, initialSiteConcurrency: 3 });
  runner.start();
  try {
    for (const d of domains) await data.queue.enqueue({ sender: 'app@sender.test', recipients: [`first@${d}`], content, source: 'api' });
    runner.nudge();
    await waitFor(async () => (await data.store.countByState()).delivered === 10, { what: 'first contact with every domain', timeoutMs: 10_000 });
    peak = 0;
    for (let i = 0; i < 60; i++) await data.queue.enqueue({ sender: 'app@sender.test', recipients: [`x${i}@${domains[i % 10]}`], content, source: 'api' });
    runner.nudge();
    await waitFor(async () => (await data.store.countByState()).delivered === 70, { what: '60 more deliveries', timeoutMs: 10_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
  assert.ok(peak <= 3, `peak ${peak} batches in flight to one site`);
});

test('a dead site costs one probe per retry, not one timeout per message', async () => {
  const data = await openTempData({ schedule });
  for (let i = 0; i < 20; i++) await data.queue.enqueue({ sender: 'app@sender.test', recipients: [`r${i}@dead.test`], content, source: 'api' });
  let connects = 0;
  let up = false;
  const runner = runnerFor(data, {
    async deliver(batch) {
      connects++;
      await sleep(50); // a connect timeout, shortened
      if (up) return all(batch, delivered);
      return all(batch, { kind: 'transient', reason: 'mx.dead.test[127.0.0.1]: connection timed out', siteDown: true });
    },
    siteOf: () => 'mx.dead.test',
  }, { concurrency: 10, destinationConcurrency: 10, initialSiteConcurrency: 2, siteSuspendMs: 400 });
  runner.start();
  try {
    // Every message gets an attempt: the first wave by connecting, the rest deferred at once.
    await waitFor(async () => (await data.store.countByState()).deferred === 20, { what: 'every recipient deferred', timeoutMs: 5_000 });
    assert.ok(connects <= 2, `${connects} connections for the first wave (initial site concurrency 2)`);
    const view = await data.store.engine.all<{ n: number }>(`SELECT COUNT(*) AS n FROM attempts WHERE outcome = 'deferred'`);
    assert.equal(Number(view[0].n), 20);
    // The suspension runs out before the retries come due: one probe, the rest wait for it.
    const beforeProbe = connects;
    await waitFor(() => connects === beforeProbe + 1, { what: 'the probe', timeoutMs: 5_000 });
    await sleep(150);
    assert.equal(connects, beforeProbe + 1, 'one probe at a time while the site is down');
    up = true;
    await waitFor(async () => (await data.store.countByState()).delivered === 20, { what: 'everything delivered once the site is back', timeoutMs: 10_000 });
  } finally {
    await runner.stop(1_000);
    await data.close();
  }
});

test('a lost reply to the final dot is recorded as an unknown outcome and deferred with backoff, not resent at once', async () => {
  const data = await openTempData({ schedule });
  const { messageId } = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['once@one.test'], content, source: 'api' });
  let calls = 0;
  const runner = runnerFor(data, {
    async deliver(batch) {
      calls++;
      return all(batch, { kind: 'unknown', reason: 'mx.one.test[127.0.0.1]: connection lost after the final dot; the message may have been delivered (RFC 1047)', detail: { unknownOutcome: true, stage: 'dot' } });
    },
  });
  runner.start();
  try {
    await waitFor(async () => (await data.store.countByState()).deferred === 1, { what: 'the attempt recorded', timeoutMs: 5_000 });
  } finally {
    await runner.stop(1_000);
  }
  const view = (await data.store.getMessage(messageId))!;
  await data.close();
  assert.equal(calls, 1);
  const [r] = view.recipients;
  assert.equal(r.state, 'deferred');
  assert.equal(r.attempts[0].outcome, 'unknown');
  assert.match(r.reason!, /may have been delivered/);
  assert.ok(Date.parse(r.nextAttemptAt!) - Date.parse(r.attempts[0].endedAt!) >= schedule.minBackoffMs - 5);
});
