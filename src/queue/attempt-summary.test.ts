import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deferralClass, statusOf, summarizeAttempt } from './attempt-summary.ts';
import type { ClaimedRecipient } from '../store/records.ts';

const recipient: ClaimedRecipient = {
  recipientId: 'r1', messageId: 'm1', address: 'bob@dest.test', domain: 'dest.test', domainHash: 'h', attemptId: 'a1',
  attemptNumber: 2, leaseExpiresAt: 0, sender: 'app@sender.test', requireTls: false, createdAt: 1_000, expiresAt: 10_000,
};

test('deferral reasons fall into a few fixed classes', () => {
  const cls = (detail: object, replyCode: number | null = null, reason: string | null = null) => deferralClass({ detail, replyCode, reason });
  assert.equal(cls({ suspended: true }), 'site-suspended');
  assert.equal(cls({ leaseLost: true }), 'lease-lost');
  assert.equal(cls({ unknownOutcome: true }), 'unknown-outcome');
  assert.equal(cls({ destination: 'unresolvable' }), 'dns');
  assert.equal(cls({}, 451), 'reply');
  assert.equal(cls({}, null, 'local error: boom'), 'local');
  const hop = { host: 'mx', address: '192.0.2.1', port: 25, temporary: true, reason: 'x' };
  assert.equal(cls({ hopFailures: [{ ...hop, stage: 'connect', unreachable: true }] }), 'connection');
  assert.equal(cls({ hopFailures: [{ ...hop, stage: 'policy', failure: 'certificate-expired' }] }), 'tls');
  assert.equal(cls({ hopFailures: [{ ...hop, stage: 'rcpt', reply: { code: 421, text: 'busy' } }] }), 'reply');
  assert.equal(cls({}), 'other');
});

test('status words are Postfix\'s: sent for delivered, the state otherwise', () => {
  assert.equal(statusOf('delivered'), 'sent');
  assert.equal(statusOf('queued'), 'deferred');
  assert.equal(statusOf('expired'), 'expired');
});

test('a failure with no session names the relay of the hop that failed, plaintext TLS as none, and no address', () => {
  const s = summarizeAttempt({
    recipient, state: 'deferred', replyCode: null, enhancedCode: null, reason: 'connect to bob@dest.test failed',
    detail: { domain: 'dest.test', hopFailures: [{ host: 'mx.dest.test', address: '192.0.2.7', port: 25, stage: 'connect', temporary: true, reason: 'refused', unreachable: true, policy: { level: 'may', source: 'default:may' } }] },
    startedAt: 3_000, endedAt: 3_500,
  });
  assert.equal(s.relay, 'mx.dest.test[192.0.2.7]:25');
  assert.deepEqual(s.tls, { version: 'none', verified: false, policy: 'may', source: 'default:may' });
  assert.equal(s.stage, 'connect');
  assert.equal(s.reasonClass, 'connection');
  assert.deepEqual(s.delays, { queuedMs: 2_000, attemptMs: 500, totalMs: 2_500 });
  assert.ok(!JSON.stringify(s).includes('bob@'));
});
