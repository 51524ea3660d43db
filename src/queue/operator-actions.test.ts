// Operators' queue actions over a real store: what each does to the queue the runner claims from,
// how they meet a live lease (refused, and the worker's verdict still recorded exactly once) and a
// dead worker's lease (taken over), the DSN and event of a bounce-now, and the audit line of each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { BounceComposer } from '../compose/bounces.ts';
import { QueueActions, UnknownMessageError, OPERATOR_BOUNCE_REASON } from './operator-actions.ts';
import type { AttemptResult, ClaimedRecipient } from '../store/records.ts';

const content = Buffer.from('From: app@sender.test\r\nSubject: q\r\n\r\nbody\r\n');

async function setup() {
  let now = Date.UTC(2026, 0, 5, 12);
  const clock = () => now;
  const data = await openTempData({ clock });
  const actions = new QueueActions({ store: data.store, finalFailures: new BounceComposer(data.queue, 'mx.lacre.test'), clock });
  const accepted = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['ana@one.test', 'bo@two.test'], content, source: 'api' });
  return {
    data,
    actions,
    accepted,
    advance: (ms: number) => (now += ms),
    now: clock,
    claim: (owner = 'w1', leaseMs = 60_000) => data.store.claimDue({ owner, now: clock(), leaseMs, limit: 100 }),
    actor: 'cli:test',
  };
}

function verdict(r: ClaimedRecipient, state: AttemptResult['state'], at: number): AttemptResult {
  return {
    recipientId: r.recipientId,
    attemptId: r.attemptId,
    outcome: state === 'deferred' ? 'deferred' : 'delivered',
    state,
    nextAttemptAt: state === 'deferred' ? at + 3_600_000 : at,
    reason: state === 'deferred' ? '451 try later' : null,
    replyCode: state === 'deferred' ? 451 : 250,
    enhancedCode: null,
    detail: {},
    endedAt: at,
  };
}

test('hold keeps a message from every claim until release, which makes it due at once and gives back the lifetime it had left', async () => {
  const t = await setup();
  const { messageId } = t.accepted;
  const before = (await t.data.store.getMessage(messageId))!.expiresAt;
  const held = await t.actions.run('hold', messageId, { actor: t.actor });
  assert.deepEqual([held.changed, held.refused], [2, 0]);
  assert.ok(held.recipients.every((r) => r.held && r.state === 'queued'));
  t.advance(6 * 86_400_000); // past the five-day maximum age
  assert.deepEqual(await t.claim(), [], 'a held recipient is never claimed');
  const view = (await t.data.store.getMessage(messageId))!;
  assert.ok(view.recipients.every((r) => r.heldAt !== null && r.nextAttemptAt === null));
  const released = await t.actions.run('release', messageId, { actor: t.actor });
  assert.equal(released.changed, 2);
  const after = (await t.data.store.getMessage(messageId))!.expiresAt;
  assert.equal(Date.parse(after) - Date.parse(before), 6 * 86_400_000, 'the expiry moved on by the six days it was held');
  const claimed = await t.claim();
  assert.equal(claimed.length, 2, 'due at once after release');
  assert.equal(claimed[0].expiresAt, Date.parse(after));
  await t.data.close();
});

test('retry makes a deferred recipient due now; it refuses a held one and names why', async () => {
  const t = await setup();
  const [ana, bo] = await t.claim();
  await t.data.store.completeAttempts([{ result: verdict(ana, 'deferred', t.now()) }, { result: verdict(bo, 'delivered', t.now()) }]);
  assert.deepEqual(await t.claim(), [], 'deferred for an hour');
  const retried = await t.actions.run('retry', t.accepted.messageId, { actor: t.actor });
  assert.deepEqual(
    retried.recipients.map((r) => [r.address, r.result, r.reason]),
    [
      ['ana@one.test', 'done', null],
      ['bo@two.test', 'refused', 'already delivered'],
    ],
  );
  const again = await t.claim();
  assert.deepEqual(again.map((r) => r.recipientId), [ana.recipientId]);
  await t.data.store.releaseLease(again[0].recipientId, again[0].attemptId, t.now());
  await t.actions.run('hold', ana.recipientId, { actor: t.actor });
  const refused = await t.actions.run('retry', ana.recipientId, { actor: t.actor });
  assert.deepEqual([refused.changed, refused.recipients[0].reason], [0, 'held: release it instead (release makes it due now)']);
  await t.data.close();
});

test('a recipient a worker is delivering right now is refused ("in delivery, try again"); the worker\'s verdict is still recorded once', async () => {
  const t = await setup();
  const [ana] = await t.claim();
  for (const action of ['hold', 'delete', 'bounce', 'retry'] as const) {
    const r = await t.actions.run(action, ana.recipientId, { actor: t.actor });
    assert.deepEqual([r.changed, r.recipients[0].reason], [0, 'in delivery, try again'], action);
  }
  const [kept] = await t.data.store.completeAttempts([{ result: verdict(ana, 'delivered', t.now()) }]);
  assert.equal(kept, true);
  const view = (await t.data.store.getMessage(t.accepted.messageId))!;
  const recipient = view.recipients.find((r) => r.id === ana.recipientId)!;
  assert.equal(recipient.state, 'delivered');
  assert.deepEqual(recipient.attempts.map((a) => a.outcome), ['delivered'], 'one attempt, neither lost nor doubled');
  await t.data.close();
});

test('a dead worker\'s expired lease is taken over: its attempt closed as abandoned, its late verdict fenced out', async () => {
  const t = await setup();
  const [ana] = await t.claim('dead', 1_000);
  t.advance(2_000);
  const held = await t.actions.run('hold', ana.recipientId, { actor: t.actor });
  assert.equal(held.changed, 1);
  const [kept] = await t.data.store.completeAttempts([{ result: verdict(ana, 'delivered', t.now()) }]);
  assert.equal(kept, false, 'the dead worker cannot record over the hold');
  const recipient = (await t.data.store.getMessage(t.accepted.messageId))!.recipients.find((r) => r.id === ana.recipientId)!;
  assert.deepEqual([recipient.state, recipient.heldAt !== null, recipient.attempts.map((a) => a.outcome)], ['queued', true, ['abandoned']]);
  await t.data.close();
});

test('delete removes one recipient by its MessageID, then the whole message with the last one; no DSN is queued', async () => {
  const t = await setup();
  const [ana, bo] = t.accepted.recipients;
  const publicIds = await t.data.store.sendApi.publicIdsOf(t.accepted.messageId);
  const one = await t.actions.run('delete', String(publicIds.get(bo.id)), { actor: t.actor });
  assert.deepEqual([one.changed, one.messageRemoved, one.recipients[0].state], [1, false, null]);
  assert.deepEqual((await t.data.store.getMessage(t.accepted.messageId))!.recipients.map((r) => r.id), [ana.id]);
  const rest = await t.actions.run('delete', t.accepted.messageId, { actor: t.actor });
  assert.deepEqual([rest.changed, rest.messageRemoved], [1, true]);
  assert.equal(await t.data.store.getMessage(t.accepted.messageId), null);
  assert.equal(await t.data.store.messageContent(t.accepted.messageId), null);
  assert.deepEqual((await t.data.store.countByState()).queued, 0, 'no DSN queued');
  await assert.rejects(t.actions.run('delete', t.accepted.messageId, { actor: t.actor }), UnknownMessageError);
  await t.data.close();
});

test('bounce fails the recipients now with a DSN to the sender and a bounce event, committed with the verdict', async () => {
  const t = await setup();
  await t.actions.run('hold', t.accepted.recipients[1].id, { actor: t.actor });
  const bounced = await t.actions.run('bounce', t.accepted.messageId, { actor: t.actor });
  assert.deepEqual(bounced.recipients.map((r) => [r.result, r.state, r.held]), [['done', 'bounced', false], ['done', 'bounced', false]]);
  const view = (await t.data.store.getMessage(t.accepted.messageId))!;
  assert.ok(view.recipients.every((r) => r.state === 'bounced' && r.reason === OPERATOR_BOUNCE_REASON && r.heldAt === null));
  assert.deepEqual(view.recipients[0].attempts.map((a) => [a.worker, a.outcome, a.enhancedCode]), [[t.actor, 'bounced', '5.0.0']]);
  // The DSNs: queued with the null sender to the original sender, about this message.
  const dsns = await t.data.store.engine.all<{ id: string }>("SELECT id FROM messages WHERE id != ? AND source = 'system'", [t.accepted.messageId]);
  assert.equal(dsns.length, 2);
  const dsn = (await t.data.store.getMessage(dsns[0].id))!;
  assert.deepEqual([dsn.sender, dsn.recipients.map((r) => r.address), dsn.metadata.kind, dsn.metadata.about], [null, ['app@sender.test'], 'dsn', t.accepted.messageId]);
  const text = (await t.data.store.messageContent(dsn.id))!.toString();
  assert.match(text, /Status: 5\.0\.0/);
  assert.match(text, /Diagnostic-Code: smtp; bounced by the mail system operator/);
  const events = await t.data.store.events.list({ limit: 10, apiKeyId: null });
  assert.deepEqual(events.filter((e) => e.messageId === t.accepted.messageId).map((e) => e.type), ['bounce', 'bounce']);
  const again = await t.actions.run('bounce', t.accepted.messageId, { actor: t.actor });
  assert.deepEqual(again.recipients.map((r) => r.reason), ['already bounced', 'already bounced']);
  await t.data.close();
});

test('every action is in the audit log, in its transaction, with each recipient\'s result', async () => {
  const t = await setup();
  await t.actions.run('hold', t.accepted.messageId, { actor: t.actor });
  await t.actions.run('release', t.accepted.recipients[0].id, { actor: t.actor });
  await t.actions.run('release', t.accepted.recipients[0].id, { actor: t.actor });
  const entries = await t.data.store.audit.list({ subject: t.accepted.messageId });
  assert.deepEqual(entries.map((e) => [e.actor, e.action]), [[t.actor, 'queue.hold'], [t.actor, 'queue.release'], [t.actor, 'queue.release']]);
  assert.deepEqual((entries[2].detail as { recipients: unknown[] }).recipients, [
    { recipientId: t.accepted.recipients[0].id, previousState: 'queued', result: 'refused', reason: 'not held' },
  ]);
  await t.data.close();
});

test('an id that names nothing is refused with the one-line error the CLI prints', async () => {
  const t = await setup();
  for (const id of ['999999', '0190a0a0-0000-7000-8000-000000000000', 'nope']) {
    await assert.rejects(t.actions.run('retry', id, { actor: t.actor }), { message: `no message with id ${id}; find it with lacre messages list` });
  }
  await t.data.close();
});
