// Operators' queue actions, as the CLI (`lacre queue retry|hold|release|delete|bounce ID`) and the
// API (`POST /v1/messages/{id}/…`) run them: any id the API returned names the target (the message
// id: every recipient of it; a MessageUUID or MessageID: that one recipient), the decision table
// (./actions.ts) judges each recipient, and the store applies the changes and the audit line in
// one transaction. A bounce-now builds its DSN with the same handler the runner's bounces use and
// commits it with the verdict; a bounce event (and its webhooks) follows as for a real bounce.
import type { Store } from '../store/store.ts';
import type { ActionTarget, OperatorBounce } from '../store/queue-table.ts';
import type { ClaimedRecipient, RecipientState } from '../store/records.ts';
import { decideQueueAction, stateAfter, type QueueAction } from './actions.ts';
import type { DeliveryBatch, FinalFailureHandler } from './runner.ts';

export class UnknownMessageError extends Error {
  override name = 'UnknownMessageError';
  constructor(id: string) {
    super(`no message with id ${id}; find it with lacre messages list`);
  }
}

export interface RecipientActionResult {
  recipientId: string;
  /** MessageID in the send API (null for mail that did not come through it, e.g. DSNs). */
  publicId: number | null;
  address: string;
  /** The state before the action, and whether it was held. */
  previousState: RecipientState;
  wasHeld: boolean;
  result: 'done' | 'refused';
  /** After the action: null once deleted. */
  state: RecipientState | null;
  held: boolean;
  /** Why it was refused ("already delivered", "in delivery, try again"…). */
  reason: string | null;
}

export interface QueueActionResult {
  action: QueueAction;
  messageId: string;
  /** Delete removed the whole message (no recipient was left). */
  messageRemoved: boolean;
  changed: number;
  refused: number;
  recipients: RecipientActionResult[];
}

/** What the sender's DSN says about an operator's bounce (RFC 3463 §3.1: X.0.0, other status). */
export const OPERATOR_BOUNCE_REASON = 'bounced by the mail system operator before delivery';
const OPERATOR_BOUNCE_STATUS = '5.0.0';

export interface QueueActionsOptions {
  store: Store;
  /** Builds the DSN of a bounce-now (compose/bounces.ts's BounceComposer); no DSN without it. */
  finalFailures?: FinalFailureHandler;
  clock?: () => number;
  /** After a retry or release made mail due, or a bounce queued DSNs: wake a runner in this process. */
  onDue?: () => void;
}

export class QueueActions {
  readonly #o: QueueActionsOptions;
  readonly #clock: () => number;

  constructor(options: QueueActionsOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
  }

  /** Runs `action` on whatever `id` names. Throws UnknownMessageError when it names nothing. */
  async run(action: QueueAction, id: string, options: { actor: string }): Promise<QueueActionResult> {
    const store = this.#o.store;
    const ref = await store.search.resolve(id);
    if (!ref) throw new UnknownMessageError(id);
    const now = this.#clock();
    const targets = await store.queue.actionTargets(ref.messageId, ref.recipientId, now);
    if (targets.length === 0) throw new UnknownMessageError(id);
    const bounces = action === 'bounce' ? await this.#prepareBounces(targets, now) : undefined;
    const decide = (standing: Parameters<typeof decideQueueAction>[1]) => decideQueueAction(action, standing);
    const { outcomes, messageRemoved } = await store.engine.transaction(async (tx) => {
      const applied = await store.queue.applyActionIn(tx, {
        messageId: ref.messageId,
        recipientIds: targets.map((t) => t.recipientId),
        now,
        actor: options.actor,
        decide,
        bounces,
      });
      // In the same transaction as the change: an audited queue never misses an action.
      await store.audit.appendIn(tx, {
        actor: options.actor,
        action: `queue.${action}`,
        subject: ref.messageId,
        detail: {
          id,
          messageRemoved: applied.messageRemoved,
          recipients: applied.outcomes.map((o) => ({
            recipientId: o.recipientId,
            previousState: o.before.state,
            result: o.verdict.kind === 'apply' ? 'done' : 'refused',
            ...(o.verdict.kind === 'refuse' ? { reason: o.verdict.reason } : {}),
          })),
        },
        at: now,
      });
      return applied;
    });
    const byId = new Map(targets.map((t) => [t.recipientId, t]));
    const recipients = outcomes.map((o): RecipientActionResult => {
      const t = byId.get(o.recipientId)!;
      const done = o.verdict.kind === 'apply';
      const change = o.verdict.kind === 'apply' ? o.verdict.change : null;
      return {
        recipientId: o.recipientId,
        publicId: t.publicId,
        address: t.address,
        previousState: o.before.state,
        wasHeld: o.before.held,
        result: done ? 'done' : 'refused',
        state: change ? stateAfter(change, o.before.state) : o.before.state,
        held: change === 'hold' ? true : change ? false : o.before.held,
        reason: o.verdict.kind === 'refuse' ? o.verdict.reason : null,
      };
    });
    const changed = recipients.filter((r) => r.result === 'done').length;
    // Retry and release made mail due; a bounce queued DSNs.
    if (changed > 0 && (action === 'retry' || action === 'release' || action === 'bounce')) this.#o.onDue?.();
    return { action, messageId: ref.messageId, messageRemoved, changed, refused: recipients.length - changed, recipients };
  }

  /**
   * The DSN for each recipient a bounce will take, built before the transaction (it reads the
   * content and the suppression list) and committed with the verdict, as the runner does.
   */
  async #prepareBounces(targets: ActionTarget[], now: number): Promise<Map<string, OperatorBounce>> {
    const out = new Map<string, OperatorBounce>();
    const store = this.#o.store;
    for (const t of targets) {
      if (decideQueueAction('bounce', t).kind !== 'apply') continue;
      const recipient: ClaimedRecipient = {
        recipientId: t.recipientId,
        messageId: t.messageId,
        address: t.address,
        domain: t.domain,
        domainHash: t.domainHash,
        attemptId: '',
        attemptNumber: t.attemptCount,
        leaseExpiresAt: now,
        sender: t.sender,
        requireTls: t.requireTls,
        createdAt: t.createdAt,
        expiresAt: t.expiresAt,
      };
      const batch: DeliveryBatch = {
        messageId: t.messageId,
        domain: t.domain,
        sender: t.sender,
        requireTls: t.requireTls,
        recipients: [recipient],
        content: async () => {
          const content = await store.messageContent(t.messageId);
          if (!content) throw new Error(`message ${t.messageId} has no content`);
          return content;
        },
        leaseHeld: () => false,
      };
      const dsn =
        t.sender !== null && this.#o.finalFailures
          ? await this.#o.finalFailures.bounceMessage(batch, recipient, { kind: 'permanent', reason: OPERATOR_BOUNCE_REASON, enhancedCode: OPERATOR_BOUNCE_STATUS }, 'bounced', now)
          : null;
      out.set(t.recipientId, { reason: OPERATOR_BOUNCE_REASON, enhancedCode: OPERATOR_BOUNCE_STATUS, dsn });
    }
    return out;
  }
}
