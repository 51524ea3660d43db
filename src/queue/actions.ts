// What an operator's queue action does to one recipient (Postfix's `postqueue -f`, `postsuper -h`,
// `-H` and `-d`, plus bounce now): a pure table, action × the recipient's standing → the change
// to make or why it is refused. The store asks it again inside the transaction that applies the
// change (store/queue-table.ts, like the claim's `pick`), so a recipient that changed since it was
// read is judged as it is now.
//
// Leases: a recipient leased by a live worker is being delivered right now. Every action refuses it
// ("in delivery, try again") rather than racing the worker: the worker's verdict is fenced by its
// lease token and will be recorded, so nothing the operator does can lose or double that attempt.
// A lease that has run out (its worker died) is no delivery: the action takes the recipient over,
// closing the dead worker's attempt as `abandoned`, as a claim would.
import type { RecipientState } from '../store/records.ts';

export const QUEUE_ACTIONS = ['retry', 'hold', 'release', 'delete', 'bounce'] as const;
export type QueueAction = (typeof QUEUE_ACTIONS)[number];

/** How a recipient stands when an action is judged. */
export interface RecipientStanding {
  state: RecipientState;
  /** Held by an operator (store column held_at). */
  held: boolean;
  /** A live lease: a worker is delivering it now. */
  leased: boolean;
}

/**
 * - due-now: due at once (retry; deferred or queued, not held).
 * - hold: held: never claimed, its expiry clock stopped.
 * - release: not held any more, due at once, its expiry moved by the time it was held.
 * - delete: removed with its attempts, without a DSN.
 * - bounce: failed for good now, with a DSN to the sender and a `bounce` event.
 */
export type QueueChange = 'due-now' | 'hold' | 'release' | 'delete' | 'bounce';

export type RefusalCode = 'final' | 'in-delivery' | 'held' | 'already-held' | 'not-held';

export type ActionDecision = { kind: 'apply'; change: QueueChange } | { kind: 'refuse'; code: RefusalCode; reason: string };

const refuse = (code: RefusalCode, reason: string): ActionDecision => ({ kind: 'refuse', code, reason });
const apply = (change: QueueChange): ActionDecision => ({ kind: 'apply', change });

export function decideQueueAction(action: QueueAction, r: RecipientStanding): ActionDecision {
  // Final states are history: nothing is left to retry, hold, delete or bounce.
  if (r.state !== 'queued' && r.state !== 'deferred') return refuse('final', `already ${r.state}`);
  if (r.leased) return refuse('in-delivery', 'in delivery, try again');
  switch (action) {
    case 'retry':
      return r.held ? refuse('held', 'held: release it instead (release makes it due now)') : apply('due-now');
    case 'hold':
      return r.held ? refuse('already-held', 'already held') : apply('hold');
    case 'release':
      return r.held ? apply('release') : refuse('not-held', 'not held');
    case 'delete':
      return apply('delete');
    case 'bounce':
      return apply('bounce');
  }
}

/** The state a recipient is in after a change (deleted: none). */
export function stateAfter(change: QueueChange, before: RecipientState): RecipientState | null {
  switch (change) {
    case 'delete':
      return null;
    case 'bounce':
      return 'bounced';
    default:
      return before;
  }
}
