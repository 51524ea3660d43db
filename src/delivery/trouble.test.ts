// The trouble table, row by row: every stage × reused connection × reply class, then the kinds
// that change the answer (timeouts, protocol breakage, TLS policy, REQUIRETLS, aborts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideTrouble, type ReplyClass, type TroubleAction, type TroubleKind, type TroubleStage } from './trouble.ts';

interface Row {
  stage: TroubleStage;
  reused: boolean;
  reply: ReplyClass;
  kind: TroubleKind;
  mailAccepted: boolean;
  action: TroubleAction;
  /** Expected flags beyond the defaults (counts: true, unreachable: false, policyBounce: false). */
  counts?: boolean;
  unreachable?: boolean;
  policyBounce?: boolean;
}

const A = (stage: TroubleStage, reused: boolean, reply: ReplyClass, kind: TroubleKind, mailAccepted: boolean, action: TroubleAction, flags: Partial<Row> = {}): Row => ({
  stage,
  reused,
  reply,
  kind,
  mailAccepted,
  action,
  ...flags,
});
const F = false;
const T = true;
const down = { unreachable: true };

const ROWS: Row[] = [
  // Opening a session: every failure moves on to the next address (RFC 5321 §5.1). Not reaching
  // the host or not being greeted (4xx) is evidence the site is down; a 5xx greeting is not.
  A('connect', F, 'none', 'connection', F, 'next-address', down),
  A('connect', F, '4xx', 'reply', F, 'next-address'),
  A('connect', F, '5xx', 'reply', F, 'next-address'),
  A('connect', T, 'none', 'connection', F, 'next-address'),
  A('connect', T, '4xx', 'reply', F, 'next-address'),
  A('connect', T, '5xx', 'reply', F, 'next-address'),
  A('greeting', F, 'none', 'connection', F, 'next-address', down),
  A('greeting', F, '4xx', 'reply', F, 'next-address', down),
  A('greeting', F, '5xx', 'reply', F, 'next-address'),
  A('greeting', T, 'none', 'connection', F, 'next-address'),
  A('greeting', T, '4xx', 'reply', F, 'next-address'),
  A('greeting', T, '5xx', 'reply', F, 'next-address'),
  A('ehlo', F, 'none', 'connection', F, 'next-address', down),
  A('ehlo', F, '4xx', 'reply', F, 'next-address'),
  A('ehlo', F, '5xx', 'reply', F, 'next-address'),
  A('ehlo', T, 'none', 'connection', F, 'next-address'),
  A('ehlo', T, '4xx', 'reply', F, 'next-address'),
  A('ehlo', T, '5xx', 'reply', F, 'next-address'),
  A('starttls', F, 'none', 'connection', F, 'next-address'),
  A('starttls', F, '4xx', 'tls-policy', F, 'next-address'),
  A('starttls', F, '5xx', 'tls-policy', F, 'next-address'),
  A('starttls', T, 'none', 'connection', F, 'next-address'),
  A('starttls', T, '4xx', 'tls-policy', F, 'next-address'),
  A('starttls', T, '5xx', 'tls-policy', F, 'next-address'),
  A('tls', F, 'none', 'tls-policy', F, 'next-address'),
  A('tls', F, '4xx', 'reply', F, 'next-address'),
  A('tls', F, '5xx', 'reply', F, 'next-address'),
  A('tls', T, 'none', 'tls-policy', F, 'next-address'),
  A('tls', T, '4xx', 'reply', F, 'next-address'),
  A('tls', T, '5xx', 'reply', F, 'next-address'),
  // MAIL: a reply speaks for the transaction; a pooled connection found dead is retried afresh.
  A('mail', F, 'none', 'connection', F, 'next-address'),
  A('mail', F, '4xx', 'reply', F, 'defer'),
  A('mail', F, '5xx', 'reply', F, 'bounce'),
  A('mail', T, 'none', 'connection', F, 'retry-fresh-connection', { counts: false }),
  A('mail', T, '4xx', 'reply', F, 'defer'),
  A('mail', T, '5xx', 'reply', F, 'bounce'),
  // RCPT: after MAIL was accepted nothing is retried on a fresh connection; the 421 that ends a
  // transaction at RCPT sends the message to the next address, nothing was sent yet.
  A('rcpt', F, 'none', 'connection', T, 'next-address'),
  A('rcpt', F, '4xx', 'reply', T, 'next-address'),
  A('rcpt', F, '5xx', 'reply', T, 'next-address'),
  A('rcpt', T, 'none', 'connection', T, 'next-address'),
  A('rcpt', T, '4xx', 'reply', T, 'next-address'),
  A('rcpt', T, '5xx', 'reply', T, 'next-address'),
  // DATA (the command, its 354, the blocks before the final dot): no message taken yet.
  A('data', F, 'none', 'connection', T, 'next-address'),
  A('data', F, '4xx', 'reply', T, 'defer'),
  A('data', F, '5xx', 'reply', T, 'bounce'),
  A('data', T, 'none', 'connection', T, 'next-address'),
  A('data', T, '4xx', 'reply', T, 'defer'),
  A('data', T, '5xx', 'reply', T, 'bounce'),
  // The final dot went out (RFC 1047): without a reply the outcome is unknown, pooled or not.
  A('dot', F, 'none', 'connection', T, 'defer-unknown-outcome'),
  A('dot', F, '4xx', 'reply', T, 'defer'),
  A('dot', F, '5xx', 'reply', T, 'bounce'),
  A('dot', T, 'none', 'connection', T, 'defer-unknown-outcome'),
  A('dot', T, '4xx', 'reply', T, 'defer'),
  A('dot', T, '5xx', 'reply', T, 'bounce'),
  // Local refusals before MAIL carry the reply a server would have given.
  A('message', F, 'none', 'local-refusal', F, 'defer'),
  A('message', F, '4xx', 'local-refusal', F, 'defer'),
  A('message', F, '5xx', 'local-refusal', F, 'bounce'),
  A('message', T, 'none', 'local-refusal', F, 'defer'),
  A('message', T, '4xx', 'local-refusal', F, 'defer'),
  A('message', T, '5xx', 'local-refusal', F, 'bounce'),
  // Kinds that change the answer.
  A('connect', F, 'none', 'timeout', F, 'next-address', down),
  A('greeting', F, 'none', 'timeout', F, 'next-address', down),
  A('greeting', F, 'none', 'protocol', F, 'next-address'),
  A('ehlo', F, 'none', 'timeout', F, 'next-address'),
  A('mail', T, 'none', 'timeout', F, 'retry-fresh-connection', { counts: false }),
  A('mail', T, 'none', 'protocol', F, 'retry-fresh-connection', { counts: false }),
  A('rcpt', T, 'none', 'connection', F, 'retry-fresh-connection', { counts: false }),
  A('data', T, 'none', 'timeout', T, 'next-address'),
  A('dot', F, 'none', 'timeout', T, 'defer-unknown-outcome'),
  A('dot', T, 'none', 'protocol', T, 'defer-unknown-outcome'),
  A('dot', F, 'none', 'aborted', T, 'defer-unknown-outcome'),
  A('mail', F, 'none', 'aborted', F, 'defer', { counts: false }),
  A('message', F, '5xx', 'requiretls-unavailable', F, 'next-mx', { policyBounce: true }),
  A('message', T, '5xx', 'requiretls-unavailable', F, 'next-mx', { policyBounce: true }),
  A('local', F, 'none', 'local', F, 'next-address'),
];

for (const row of ROWS) {
  const name = `${row.stage}, ${row.reused ? 'reused' : 'fresh'} connection, reply ${row.reply}, ${row.kind}${row.mailAccepted ? ', MAIL accepted' : ''} → ${row.action}${row.unreachable ? ' (unreachable)' : ''}`;
  test(name, () => {
    const d = decideTrouble({ stage: row.stage, reusedConnection: row.reused, reply: row.reply, kind: row.kind, mailAccepted: row.mailAccepted });
    assert.deepEqual(
      { action: d.action, countsAsAttempt: d.countsAsAttempt, unreachable: d.unreachable, policyBounce: d.policyBounce },
      { action: row.action, countsAsAttempt: row.counts ?? true, unreachable: row.unreachable ?? false, policyBounce: row.policyBounce ?? false },
      d.why,
    );
  });
}

test('the table has a row for every stage × reused × reply class', () => {
  const stages: TroubleStage[] = ['connect', 'greeting', 'ehlo', 'starttls', 'tls', 'mail', 'rcpt', 'data', 'dot', 'message'];
  const missing = stages.flatMap((stage) =>
    [false, true].flatMap((reused) =>
      (['none', '4xx', '5xx'] as const).filter((reply) => !ROWS.some((r) => r.stage === stage && r.reused === reused && r.reply === reply)).map((reply) => `${stage}/${reused}/${reply}`),
    ),
  );
  assert.deepEqual(missing, []);
});
