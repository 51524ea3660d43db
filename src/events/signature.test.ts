import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { generateWebhookSecret, signWebhookBody, verifyWebhookSignature } from './signature.ts';

const body = JSON.stringify([{ event: 'sent', email: 'a@rcpt.test', time: 1_700_000_000 }]);
const now = 1_700_000_000_000;

test('a signature is HMAC-SHA256 over "<t>.<body>" in the Stripe-like header, and verifies', () => {
  const secret = generateWebhookSecret();
  assert.match(secret, /^whsec_[A-Za-z0-9_-]{43}$/);
  const header = signWebhookBody(secret, body, now);
  const expected = createHmac('sha256', secret).update(`1700000000.${body}`).digest('hex');
  assert.equal(header, `t=1700000000,v1=${expected}`);
  assert.deepEqual(verifyWebhookSignature(secret, header, body, now), { valid: true, timestamp: 1_700_000_000 });
  assert.equal(verifyWebhookSignature(secret, header, Buffer.from(body), now + 299_000).valid, true);
});

test('a tampered body, a wrong secret, a stale or future timestamp and malformed headers are refused, each for its reason', () => {
  const secret = generateWebhookSecret();
  const header = signWebhookBody(secret, body, now);
  const reason = (check: ReturnType<typeof verifyWebhookSignature>) => (check.valid ? 'valid' : check.reason);
  assert.equal(reason(verifyWebhookSignature(secret, header, body.replace('a@rcpt', 'b@rcpt'), now)), 'mismatch');
  assert.equal(reason(verifyWebhookSignature(generateWebhookSecret(), header, body, now)), 'mismatch');
  assert.equal(reason(verifyWebhookSignature(secret, header, body, now + 301_000)), 'stale');
  assert.equal(reason(verifyWebhookSignature(secret, header, body, now - 301_000)), 'stale');
  assert.equal(reason(verifyWebhookSignature(secret, header, body, now + 60_000, 30)), 'stale');
  // A replay with a fresh timestamp but the old signature does not verify: the timestamp is signed.
  const replayed = header.replace('t=1700000000', 't=1700000500');
  assert.equal(reason(verifyWebhookSignature(secret, replayed, body, now + 500_000)), 'mismatch');
  for (const bad of [undefined, '', 'v1=abc', `t=1700000000`, 't=x,v1=' + 'a'.repeat(64), 'garbage']) {
    assert.equal(reason(verifyWebhookSignature(secret, bad, body, now)), 'malformed', String(bad));
  }
});

test('any one of several v1 signatures may match (secret rotation)', () => {
  const oldSecret = generateWebhookSecret();
  const newSecret = generateWebhookSecret();
  const signedNew = signWebhookBody(newSecret, body, now);
  const signedOld = signWebhookBody(oldSecret, body, now);
  const both = `${signedOld},${signedNew.split(',')[1]}`;
  assert.equal(verifyWebhookSignature(newSecret, both, body, now).valid, true);
  assert.equal(verifyWebhookSignature(oldSecret, both, body, now).valid, true);
  assert.equal(verifyWebhookSignature(generateWebhookSecret(), both, body, now).valid, false);
});
