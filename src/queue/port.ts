// What the queue runner needs from durable storage, and nothing more: the store's QueueTable
// implements it (store/queue-table.ts), and the runner never sees SQL or the rest of the store.
import type { AttemptEffects, ClaimOptions } from '../store/queue-table.ts';
import type { AttemptResult, ClaimedRecipient } from '../store/records.ts';

export interface QueuePort {
  claimDue(options: ClaimOptions): Promise<ClaimedRecipient[]>;
  renewLeases(owner: string, attemptIds: string[], until: number): Promise<string[]>;
  completeAttempts(items: Array<{ result: AttemptResult; effects?: AttemptEffects }>): Promise<boolean[]>;
  releaseLease(recipientId: string, attemptId: string, now: number): Promise<boolean>;
  messageContent(messageId: string): Promise<Buffer | null>;
  nextDueAfter(now: number): Promise<number | null>;
}
