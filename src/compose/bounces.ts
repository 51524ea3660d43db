// Turns a recipient's final failure into a DSN for the message's sender, built here and committed
// by the queue together with the verdict. Never a bounce to a bounce: a message with the null
// sender gets none (RFC 5321 §4.5.5), and the DSN itself goes out with the null sender.
import { buildDsn } from './dsn.ts';
import { SubmissionError, type Queue } from '../queue/queue.ts';
import type { DeliveryBatch, FinalFailureHandler, RecipientVerdict } from '../queue/runner.ts';
import type { ClaimedRecipient, NewMessage } from '../store/records.ts';

export class BounceComposer implements FinalFailureHandler {
  #queue: Queue;
  #hostname: string;

  constructor(queue: Queue, hostname: string) {
    this.#queue = queue;
    this.#hostname = hostname;
  }

  async bounceMessage(
    batch: DeliveryBatch,
    recipient: ClaimedRecipient,
    verdict: RecipientVerdict,
    state: 'bounced' | 'expired',
    now: number,
  ): Promise<NewMessage | null> {
    if (batch.sender === null) return null;
    const status =
      state === 'expired' ? '4.4.7' : (verdict.enhancedCode && /^5\.\d{1,3}\.\d{1,3}$/.test(verdict.enhancedCode) ? verdict.enhancedCode : '5.0.0');
    const content = buildDsn({
      reportingMta: this.#hostname,
      queueId: batch.messageId,
      arrivalDate: new Date(recipient.createdAt),
      originalSender: batch.sender,
      recipients: [
        {
          address: recipient.address,
          action: 'failed',
          status,
          remoteMta: verdict.remoteMta,
          diagnostic: verdict.reason ?? undefined,
          lastAttemptAt: new Date(now),
        },
      ],
      // RFC 8689 §5: a REQUIRETLS message's content must not travel in a report that has no such guarantee.
      originalContent: batch.requireTls ? null : await batch.content(),
      now: new Date(now),
    });
    try {
      const { message } = await this.#queue.prepare({
        sender: null,
        recipients: [batch.sender],
        content,
        source: 'system',
        metadata: { kind: 'dsn', about: batch.messageId, recipientId: recipient.recipientId },
      });
      return message;
    } catch (err) {
      // The sender itself is suppressed: nobody to tell.
      if (err instanceof SubmissionError) return null;
      throw err;
    }
  }
}
