import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, nextTransition, retryTimeline, type RetrySchedule } from './retry-policy.ts';

const MIN = 60_000;
const postfix: RetrySchedule = { minBackoffMs: 300_000, maxBackoffMs: 4_000_000, maxAgeMs: 5 * 86_400_000 };

test('backoff doubles from five minutes and is capped near 67 minutes, like Postfix', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelay(n, postfix)),
    [5 * MIN, 10 * MIN, 20 * MIN, 40 * MIN, 4_000_000, 4_000_000, 4_000_000],
  );
});

test('a 2xx verdict delivers, 5xx bounces, local refusal fails: all final', () => {
  const attempt = { number: 1, now: 1000, expiresAt: 10_000 };
  assert.deepEqual(nextTransition('delivered', attempt, postfix), { state: 'delivered', outcome: 'delivered', nextAttemptAt: 1000 });
  assert.equal(nextTransition('permanent', attempt, postfix).state, 'bounced');
  assert.equal(nextTransition('failed', attempt, postfix).state, 'failed');
});

test('a transient failure defers with backoff', () => {
  const t = nextTransition('transient', { number: 2, now: 0, expiresAt: postfix.maxAgeMs }, postfix);
  assert.deepEqual(t, { state: 'deferred', outcome: 'deferred', nextAttemptAt: 10 * MIN });
});

test('the last retry is scheduled at the expiry time, and a failure then expires the recipient', () => {
  const expiresAt = 7 * MIN;
  const last = nextTransition('transient', { number: 2, now: 1 * MIN, expiresAt }, postfix);
  assert.deepEqual(last, { state: 'deferred', outcome: 'deferred', nextAttemptAt: expiresAt });
  const after = nextTransition('transient', { number: 3, now: expiresAt, expiresAt }, postfix);
  assert.equal(after.state, 'expired');
  assert.equal(after.outcome, 'deferred');
});

test('the default timeline retries about 110 times over five days', () => {
  const timeline = retryTimeline(postfix);
  assert.equal(timeline[0], 5 * MIN);
  assert.ok(timeline.at(-1)! < postfix.maxAgeMs);
  assert.ok(timeline.length > 100 && timeline.length < 120, String(timeline.length));
});
