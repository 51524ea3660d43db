import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { SubmissionError } from './queue.ts';

const content = Buffer.from('Subject: hi\r\n\r\nhello\r\n');

test('enqueue commits the message and one recipient per distinct mailbox', async () => {
  const data = await openTempData();
  try {
    const accepted = await data.queue.enqueue({
      sender: 'app@sender.test',
      recipients: ['a@one.test', 'A@One.test', 'b@two.test'],
      content,
      source: 'api',
    });
    assert.equal(accepted.recipients.length, 2);
    const view = await data.store.getMessage(accepted.messageId);
    assert.deepEqual(view?.recipients.map((r) => [r.address, r.state]), [['a@one.test', 'queued'], ['b@two.test', 'queued']]);
    assert.equal(view?.sender, 'app@sender.test');
    assert.deepEqual(await data.store.messageContent(accepted.messageId), content);
    assert.deepEqual((await data.store.countByState()).queued, 2);
  } finally {
    await data.close();
  }
});

test('enqueue refuses bad envelopes with a reason naming what is wrong, and stores nothing', async () => {
  const data = await openTempData();
  try {
    const base = { sender: 'app@sender.test', recipients: ['a@one.test'], content, source: 'api' as const };
    await assert.rejects(data.queue.enqueue({ ...base, recipients: [] }), /at least one recipient/);
    await assert.rejects(data.queue.enqueue({ ...base, recipients: ['no-at-sign'] }), /recipient 1 is not an address/);
    await assert.rejects(data.queue.enqueue({ ...base, recipients: ['a@one.test\r\nRCPT TO:<x@y>'] }), /line break/);
    await assert.rejects(data.queue.enqueue({ ...base, sender: 'x'.repeat(300) + '@a.test' }), SubmissionError);
    await assert.rejects(data.queue.enqueue({ ...base, content: Buffer.alloc(0) }), /empty/);
    assert.deepEqual(await data.store.countByState(), { queued: 0, deferred: 0, delivered: 0, bounced: 0, expired: 0, failed: 0 });
  } finally {
    await data.close();
  }
});

test('a leased recipient is not claimed again until its lease expires, then its attempt is closed as abandoned', async () => {
  const data = await openTempData();
  try {
    const { messageId } = await data.queue.enqueue({ sender: null, recipients: ['a@one.test'], content, source: 'system' });
    const now = Date.now();
    const [first] = await data.store.claimDue({ owner: 'w1', now, leaseMs: 30_000, limit: 10 });
    assert.equal(first.attemptNumber, 1);
    assert.equal(first.sender, null);
    assert.deepEqual(await data.store.claimDue({ owner: 'w2', now: now + 29_999, leaseMs: 30_000, limit: 10 }), []);
    const [second] = await data.store.claimDue({ owner: 'w2', now: now + 30_000, leaseMs: 30_000, limit: 10 });
    assert.equal(second.recipientId, first.recipientId);
    assert.equal(second.attemptNumber, 2);
    const view = await data.store.getMessage(messageId);
    assert.deepEqual(view?.recipients[0].attempts.map((a) => [a.worker, a.outcome]), [['w1', 'abandoned'], ['w2', null]]);
  } finally {
    await data.close();
  }
});

test('a worker that lost its lease cannot finalise the recipient (fencing), the new holder can, once', async () => {
  const data = await openTempData();
  try {
    await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['a@one.test'], content, source: 'api' });
    const now = Date.now();
    const [stale] = await data.store.claimDue({ owner: 'w1', now, leaseMs: 1_000, limit: 1 });
    const [fresh] = await data.store.claimDue({ owner: 'w2', now: now + 1_000, leaseMs: 1_000, limit: 1 });
    const result = (attemptId: string) => ({
      recipientId: stale.recipientId,
      attemptId,
      outcome: 'delivered' as const,
      state: 'delivered' as const,
      nextAttemptAt: now,
      reason: null,
      replyCode: 250,
      enhancedCode: '2.0.0',
      detail: {},
      endedAt: now + 1_500,
    });
    assert.equal(await data.store.completeAttempt(result(stale.attemptId)), false);
    assert.equal(await data.store.completeAttempt(result(fresh.attemptId)), true);
    assert.equal(await data.store.completeAttempt(result(fresh.attemptId)), false, 'a final recipient is never finalised twice');
    assert.deepEqual((await data.store.countByState()).delivered, 1);
  } finally {
    await data.close();
  }
});

test('a released lease makes the recipient due again at once, without counting an attempt', async () => {
  const data = await openTempData();
  try {
    await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['a@one.test'], content, source: 'api' });
    const now = Date.now();
    const [claim] = await data.store.claimDue({ owner: 'w1', now, leaseMs: 60_000, limit: 1 });
    assert.equal(await data.store.releaseLease(claim.recipientId, claim.attemptId, now), true);
    const [again] = await data.store.claimDue({ owner: 'w2', now, leaseMs: 60_000, limit: 1 });
    assert.equal(again.recipientId, claim.recipientId);
    assert.equal(again.attemptNumber, 1);
  } finally {
    await data.close();
  }
});

test('past a window full of a saturated destination, the other destinations take turns, and the backlog is never leased', async () => {
  const data = await openTempData();
  try {
    for (let i = 0; i < 5; i++) await data.queue.enqueue({ sender: null, recipients: [`r${i}@big.test`], content, source: 'system' });
    for (const domain of ['b.test', 'c.test', 'd.test']) {
      await data.queue.enqueue({ sender: null, recipients: [`x@${domain}`, `y@${domain}`], content, source: 'system' });
    }
    const big = data.sealer.domainHash('big.test');
    const names = new Map(['b.test', 'c.test', 'd.test'].map((d) => [data.sealer.domainHash(d), d]));
    const seen: string[] = [];
    const now = Date.now() + 1_000;
    for (let i = 0; i < 3; i++) {
      await data.store.claimDue({
        owner: 'w',
        now,
        leaseMs: 60_000,
        limit: 5,
        beyond: 1,
        exclude: [big],
        pick: (candidates, full) => {
          assert.equal(full, true);
          assert.ok(candidates.every((c) => c.domainHash !== big), 'an excluded destination is never a candidate');
          seen.push(...candidates.map((c) => names.get(c.domainHash)!));
          return [];
        },
      });
    }
    assert.deepEqual([...seen].sort(), ['b.test', 'c.test', 'd.test']);
    const [taken] = await data.store.claimDue({ owner: 'w', now, leaseMs: 60_000, limit: 5, exclude: [big], beyond: 10 });
    assert.notEqual(taken.domain, 'big.test');
  } finally {
    await data.close();
  }
});
