import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLimiter } from './limiter.ts';

test('allows at most N holders per key and hands slots over in order', async () => {
  const limiter = new KeyedLimiter(2);
  const a = await limiter.acquire('x');
  const b = await limiter.acquire('x');
  const order: string[] = [];
  const c = limiter.acquire('x').then((release) => (order.push('c'), release));
  const d = limiter.acquire('x').then((release) => (order.push('d'), release));
  const other = await limiter.acquire('y');
  assert.equal(limiter.active('x'), 2);
  assert.equal(limiter.active('y'), 1);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, []);
  a();
  const releaseC = await c;
  assert.deepEqual(order, ['c']);
  assert.equal(limiter.active('x'), 2);
  b();
  (await d)();
  releaseC();
  other();
  assert.equal(limiter.active('x'), 0);
  assert.equal(limiter.active('y'), 0);
});

test('a waiter whose signal aborts gives up its place', async () => {
  const limiter = new KeyedLimiter(1);
  const held = await limiter.acquire('x');
  const controller = new AbortController();
  const waiting = limiter.acquire('x', controller.signal);
  controller.abort(new Error('stop'));
  await assert.rejects(waiting, /stop/);
  held();
  assert.equal(limiter.active('x'), 0);
  (await limiter.acquire('x'))();
});
