// The queue actions' decision table, row by row: every action against every standing a recipient
// can have (pending and not held, held, leased by a live worker, and each final state).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideQueueAction, stateAfter, QUEUE_ACTIONS, type ActionDecision, type QueueAction, type RecipientStanding } from './actions.ts';

const queued: RecipientStanding = { state: 'queued', held: false, leased: false };
const deferred: RecipientStanding = { state: 'deferred', held: false, leased: false };
const heldQueued: RecipientStanding = { state: 'queued', held: true, leased: false };
const heldDeferred: RecipientStanding = { state: 'deferred', held: true, leased: false };
const leased: RecipientStanding = { state: 'queued', held: false, leased: true };
const leasedDeferred: RecipientStanding = { state: 'deferred', held: false, leased: true };

const ok = (change: string): ActionDecision => ({ kind: 'apply', change } as ActionDecision);
const no = (code: string, reason: string): ActionDecision => ({ kind: 'refuse', code, reason } as ActionDecision);

const ROWS: Array<[QueueAction, RecipientStanding, ActionDecision]> = [
  ['retry', queued, ok('due-now')],
  ['retry', deferred, ok('due-now')],
  ['retry', heldQueued, no('held', 'held: release it instead (release makes it due now)')],
  ['retry', heldDeferred, no('held', 'held: release it instead (release makes it due now)')],
  ['retry', leased, no('in-delivery', 'in delivery, try again')],
  ['hold', queued, ok('hold')],
  ['hold', deferred, ok('hold')],
  ['hold', heldQueued, no('already-held', 'already held')],
  ['hold', leased, no('in-delivery', 'in delivery, try again')],
  ['hold', leasedDeferred, no('in-delivery', 'in delivery, try again')],
  ['release', heldQueued, ok('release')],
  ['release', heldDeferred, ok('release')],
  ['release', queued, no('not-held', 'not held')],
  ['release', deferred, no('not-held', 'not held')],
  ['release', leased, no('in-delivery', 'in delivery, try again')],
  ['delete', queued, ok('delete')],
  ['delete', deferred, ok('delete')],
  ['delete', heldDeferred, ok('delete')],
  ['delete', leased, no('in-delivery', 'in delivery, try again')],
  ['bounce', queued, ok('bounce')],
  ['bounce', deferred, ok('bounce')],
  ['bounce', heldQueued, ok('bounce')],
  ['bounce', leasedDeferred, no('in-delivery', 'in delivery, try again')],
];

for (const [action, standing, expected] of ROWS) {
  const name = `${standing.state}${standing.held ? ', held' : ''}${standing.leased ? ', leased' : ''}`;
  test(`queue ${action} on a ${name} recipient: ${expected.kind === 'apply' ? expected.change : `refused (${expected.reason})`}`, () => {
    assert.deepEqual(decideQueueAction(action, standing), expected);
  });
}

test('every action refuses a recipient in a final state, naming the state (a lease or hold on it does not matter)', () => {
  for (const state of ['delivered', 'bounced', 'expired', 'failed'] as const) {
    for (const action of QUEUE_ACTIONS) {
      for (const extra of [{ held: false, leased: false }, { held: true, leased: true }]) {
        assert.deepEqual(decideQueueAction(action, { state, ...extra }), no('final', `already ${state}`), `${action} ${state}`);
      }
    }
  }
});

test('the state after a change: bounce makes it bounced, delete leaves none, the others keep queued or deferred', () => {
  assert.equal(stateAfter('bounce', 'deferred'), 'bounced');
  assert.equal(stateAfter('delete', 'queued'), null);
  for (const change of ['due-now', 'hold', 'release'] as const) assert.equal(stateAfter(change, 'deferred'), 'deferred');
});
