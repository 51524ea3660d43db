import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyReply, enhancedCodeOf } from './replies.ts';

test('reads the enhanced status code only when its class matches the reply code', () => {
  assert.equal(enhancedCodeOf(550, '5.1.1 <a@b>: user unknown'), '5.1.1');
  assert.equal(enhancedCodeOf(451, '4.7.1 greylisted'), '4.7.1');
  assert.equal(enhancedCodeOf(550, '4.7.1 mismatched class'), null);
  assert.equal(enhancedCodeOf(550, 'no code here'), null);
});

test('2xx delivers, 4xx defers, 5xx bounces; only address failures are hard bounces', () => {
  const cases: Array<[number, string | null, string, string, boolean]> = [
    [250, '2.0.0', 'ok', 'delivered', false],
    [451, '4.3.0', 'try later', 'transient', false],
    [421, null, 'closing', 'transient', false],
    [550, '5.1.1', 'user unknown', 'permanent', true],
    [550, '5.1.10', 'null MX', 'permanent', true],
    [550, '5.2.1', 'mailbox disabled', 'permanent', true],
    [552, '5.2.2', 'mailbox full', 'permanent', false],
    [554, '5.7.1', 'rejected as spam', 'permanent', false],
    [550, '5.1.8', 'bad sender domain', 'permanent', false],
    [550, null, 'Recipient address rejected: User unknown', 'permanent', true],
    [554, null, 'Transaction failed', 'permanent', false],
    [354, null, 'unexpected', 'transient', false],
  ];
  for (const [code, enhanced, text, kind, hard] of cases) {
    assert.deepEqual(classifyReply(code, enhanced, text), { kind, hardBounce: hard }, `${code} ${enhanced} ${text}`);
  }
});
