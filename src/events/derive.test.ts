// The event rules, row by row: which events each verdict, refusal and remote bounce causes, and
// the facts each carries. Pure: no store, no network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttemptResult, NewMessage } from '../store/records.ts';
import type { EventMessage, EventRecipient } from '../store/events-table.ts';
import { deriveRefusalEvents, deriveRemoteBounceEvents, deriveVerdictEvents, diagnosticText, travelFacts } from './derive.ts';
import { formatEvent } from './format.ts';

const recipient: EventRecipient = { id: 'r1', messageId: 'm1', address: 'a@rcpt.test', attemptCount: 2, publicId: 1000042 };
const message: EventMessage = { id: 'm1', source: 'api', metadata: { apiKeyId: 'k1', customId: 'order-1', eventPayload: '{"cart":42}', customCampaign: 'spring' } };

const delivered = {
  mx: 'mx.rcpt.test',
  ip: '192.0.2.25',
  policy: { level: 'verify', source: 'static:verify' },
  tls: { tls: true, protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true },
  reply: { code: 250, enhanced: '2.0.0', text: 'OK queued' },
};

function result(state: AttemptResult['state'], extra: Partial<AttemptResult> = {}): AttemptResult {
  return {
    recipientId: 'r1',
    attemptId: 'a1',
    outcome: state === 'delivered' ? 'delivered' : state === 'deferred' ? 'deferred' : state === 'failed' ? 'failed' : 'bounced',
    state,
    nextAttemptAt: 5_000_000,
    reason: state === 'delivered' ? null : 'mx.rcpt.test: 550 no such user',
    replyCode: state === 'delivered' ? 250 : 550,
    enhancedCode: state === 'delivered' ? '2.0.0' : '5.1.1',
    detail: delivered,
    endedAt: 1_767_225_600_000,
    ...extra,
  };
}

test('each verdict state causes its event type, or none', () => {
  const rows: Array<[AttemptResult['state'], string | null]> = [
    ['delivered', 'sent'],
    ['deferred', 'deferred'],
    ['bounced', 'bounce'],
    ['expired', 'bounce'],
    ['failed', 'blocked'],
    ['queued', null],
  ];
  for (const [state, type] of rows) {
    const events = deriveVerdictEvents({ result: result(state), suppressed: false, recipient, message });
    assert.deepEqual(events.map((e) => e.type), type === null ? [] : [type], state);
  }
});

test('a `sent` event carries the recipient, the message metadata and how the attempt travelled, and no reason', () => {
  const [event] = deriveVerdictEvents({ result: result('delivered'), suppressed: false, recipient, message });
  assert.deepEqual(event, {
    type: 'sent',
    at: 1_767_225_600_000,
    messageId: 'm1',
    recipientId: 'r1',
    apiKeyId: 'k1',
    facts: {
      email: 'a@rcpt.test',
      publicId: 1000042,
      source: 'api',
      customId: 'order-1',
      payload: '{"cart":42}',
      campaign: 'spring',
      attempt: 2,
      replyCode: 250,
      enhancedCode: '2.0.0',
      mx: 'mx.rcpt.test',
      ip: '192.0.2.25',
      policy: { level: 'verify', source: 'static:verify' },
      tls: { encrypted: true, protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true },
      replyText: 'OK queued',
    },
  });
});

test('bounce, deferred and blocked verdicts carry what their Mailjet fields need', () => {
  const hard = deriveVerdictEvents({ result: result('bounced'), suppressed: true, recipient, message })[0].facts;
  assert.deepEqual([hard.reason, hard.hardBounce, hard.suppressed, hard.expired], ['mx.rcpt.test: 550 no such user', true, true, false]);
  const soft = deriveVerdictEvents({ result: result('bounced'), suppressed: false, recipient, message })[0].facts;
  assert.deepEqual([soft.hardBounce, soft.suppressed], [false, false]);
  const expired = deriveVerdictEvents({ result: result('expired', { replyCode: 451, enhancedCode: '4.4.7' }), suppressed: false, recipient, message })[0].facts;
  assert.deepEqual([expired.hardBounce, expired.expired], [false, true]);
  const deferred = deriveVerdictEvents({ result: result('deferred', { replyCode: 451, enhancedCode: '4.3.0' }), suppressed: false, recipient, message })[0].facts;
  assert.equal(deferred.nextAttemptAt, 5_000_000);
  assert.equal(deferred.hardBounce, undefined);
  const blocked = deriveVerdictEvents({ result: result('failed'), suppressed: false, recipient, message })[0].facts;
  assert.equal(blocked.refusal, 'failed');
});

test('a system message (no API key) has events no webhook hears of; a recipient without a public id carries none', () => {
  const [event] = deriveVerdictEvents({
    result: result('delivered'),
    suppressed: false,
    recipient: { ...recipient, publicId: undefined },
    message: { id: 'm1', source: 'system', metadata: { kind: 'dsn', about: 'm0' } },
  });
  assert.equal(event.apiKeyId, null);
  assert.equal('publicId' in event.facts, false);
  assert.equal(event.facts.customId, undefined);
  assert.equal(event.facts.source, 'system');
});

test('when no hop took the message the last hop tried says where it went, and a downgrade says why', () => {
  const facts = travelFacts({
    policy: { source: 'default:may' },
    hopFailures: [
      { host: 'mx1.rcpt.test', address: '192.0.2.1', port: 25, stage: 'connect', temporary: true, reason: 'refused' },
      {
        host: 'mx2.rcpt.test',
        address: '192.0.2.2',
        port: 25,
        stage: 'rcpt',
        temporary: true,
        reason: '451',
        tls: { tls: false, downgrade: { reason: 'starttls-not-supported', detail: 'no STARTTLS' } },
      },
    ],
  });
  // A policy without a level (the hop was skipped before a plan) tells no level.
  assert.deepEqual(facts, { mx: 'mx2.rcpt.test', ip: '192.0.2.2', tls: { encrypted: false, downgrade: 'starttls-not-supported' } });
  assert.deepEqual(travelFacts({}), {});
});

test('recipients refused at intake get one `blocked` event each, at the message time', () => {
  const refusedMessage: NewMessage = {
    id: 'm2',
    createdAt: 1_000,
    expiresAt: 2_000,
    source: 'smtp',
    sender: 'app@shop.test',
    content: Buffer.from('x'),
    requireTls: false,
    metadata: { apiKeyId: 'k1' },
    recipients: [{ id: 'r3', address: 'ok@rcpt.test' }],
    firstAttemptAt: 1_000,
    refused: [
      { id: 'r4', address: 'gone@rcpt.test', reason: 'suppressed since 2026-01-01 after a hard bounce' },
      { id: 'r5', address: 'dead@rcpt.test', reason: 'suppressed since 2026-01-02 after a hard bounce' },
    ],
  };
  const events = deriveRefusalEvents(refusedMessage);
  assert.deepEqual(
    events.map((e) => [e.type, e.at, e.recipientId, e.apiKeyId, e.facts.email, e.facts.refusal]),
    [
      ['blocked', 1_000, 'r4', 'k1', 'gone@rcpt.test', 'suppressed'],
      ['blocked', 1_000, 'r5', 'k1', 'dead@rcpt.test', 'suppressed'],
    ],
  );
  assert.deepEqual(deriveRefusalEvents({ ...refusedMessage, refused: undefined }), []);
});

test('a bounce after delivery is a `bounce` event with Mailjet bounce fields: hard_bounce, blocked, error_related_to, error, smtp_reply', () => {
  const bounce = {
    messageId: 'm1',
    address: 'a@rcpt.test',
    status: '5.1.1',
    diagnostic: 'smtp; 550 5.1.1 user unknown',
    replyCode: 550,
    reason: 'bounced after delivery: 5.1.1 smtp; 550 5.1.1 user unknown',
    suppress: true,
    at: 1_767_225_700_000,
  };
  const [event] = deriveRemoteBounceEvents({ bounce, recipient, message });
  assert.equal(event.type, 'bounce');
  assert.equal(event.at, bounce.at);
  assert.equal(event.apiKeyId, 'k1');
  assert.equal(event.facts.afterDelivery, true);
  const json = formatEvent({ ...event, id: 'e1' });
  assert.equal(json.hard_bounce, true);
  assert.equal(json.blocked, true);
  assert.equal(json.error_related_to, 'recipient');
  assert.equal(json.error, 'user unknown');
  assert.equal(json.smtp_reply, '550 5.1.1 user unknown');
  assert.equal(json.comment, bounce.reason);
  assert.equal(json.CustomID, 'order-1');
  assert.equal(json.MessageID, 1000042);

  // A soft status the receiver still reported as failed: a bounce, neither hard nor suppressed.
  const [soft] = deriveRemoteBounceEvents({ bounce: { ...bounce, status: '5.2.2', diagnostic: null, suppress: false }, recipient, message });
  const softJson = formatEvent({ ...soft, id: 'e2' });
  assert.deepEqual([softJson.hard_bounce, softJson.blocked, softJson.error, softJson.smtp_reply], [false, false, 'quota exceeded', '550 5.2.2']);
});

test('a diagnostic loses its type and the codes the event carries apart, and nothing else', () => {
  const rows: Array<[string, number, string, string]> = [
    ['smtp; 550 5.1.1 user unknown', 550, '5.1.1', 'user unknown'],
    ['SMTP;550-5.1.1 user unknown', 550, '5.1.1', 'user unknown'],
    ['smtp; 550 mailbox gone', 550, '5.1.1', 'mailbox gone'],
    ['X-Postfix; host said: gone', 550, '5.0.0', 'X-Postfix; host said: gone'],
  ];
  for (const [diagnostic, code, status, text] of rows) assert.equal(diagnosticText(diagnostic, code, status), text, diagnostic);
});
