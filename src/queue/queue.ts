// The queue (like Postfix's qmgr): owns message and per-recipient delivery state. Accepting a
// message means it is committed to the store; nobody is told "accepted" before that.
import { Store } from '../store/store.ts';
import { uuidv7 } from '../store/ids.ts';
import type { MessageMetadata, NewMessage } from '../store/records.ts';
import { normalizeAddress } from '../mail/address.ts';
import type { RetrySchedule } from './retry-policy.ts';

export interface Submission {
  /** Envelope sender; null is the null sender `<>`, used by bounces so they never bounce back. */
  sender: string | null;
  recipients: string[];
  /** The exact bytes that will travel (already composed and signed). */
  content: Buffer;
  requireTls?: boolean;
  source: 'api' | 'smtp' | 'system' | 'cli';
  metadata?: MessageMetadata;
  /** Chosen by compose when the id must appear in the content or return path; a uuidv7. */
  messageId?: string;
}

export interface Accepted {
  messageId: string;
  recipients: Array<{ id: string; address: string }>;
  /** Recipients not queued, with why (a suppressed address after a hard bounce). */
  refused: Array<{ address: string; reason: string }>;
}

export class SubmissionError extends Error {
  override name = 'SubmissionError';
}

// RFC 5321 §4.5.3.1.3: a forward-path is at most 256 octets.
const MAX_PATH = 256;

export function checkEnvelopeAddress(address: string, role: string): void {
  if (/[\r\n\0]/.test(address)) throw new SubmissionError(`${role} contains a line break or NUL`);
  if (address.length > MAX_PATH) throw new SubmissionError(`${role} is longer than ${MAX_PATH} octets (RFC 5321 §4.5.3.1.3)`);
  const at = address.lastIndexOf('@');
  if (at < 1 || at === address.length - 1) throw new SubmissionError(`${role} is not an address of the form local@domain`);
  if (/[\s<>]/.test(address)) throw new SubmissionError(`${role} contains spaces or angle brackets`);
}

export class Queue {
  readonly store: Store;
  readonly schedule: RetrySchedule;
  #clock: () => number;

  constructor(store: Store, schedule: RetrySchedule, clock: () => number = Date.now) {
    this.store = store;
    this.schedule = schedule;
    this.#clock = clock;
  }

  /** Validates and durably commits a message; resolves only once it is on disk. */
  async enqueue(submission: Submission): Promise<Accepted> {
    const { message, accepted } = await this.prepare(submission);
    await this.store.insertMessage(message);
    return accepted;
  }

  /**
   * Validates a submission and builds the record to commit, without committing it (bounces are
   * committed together with the verdict that caused them). Suppressed recipients are refused;
   * if none is left the whole submission is refused.
   */
  async prepare(submission: Submission): Promise<{ message: NewMessage; accepted: Accepted }> {
    if (submission.sender !== null) checkEnvelopeAddress(submission.sender, 'sender');
    if (submission.recipients.length === 0) throw new SubmissionError('a message needs at least one recipient');
    if (submission.content.length === 0) throw new SubmissionError('message content is empty');
    const seen = new Set<string>();
    const recipients: Accepted['recipients'] = [];
    const now = this.#clock();
    for (const address of submission.recipients) {
      checkEnvelopeAddress(address, `recipient ${recipients.length + 1}`);
      // The same mailbox twice in one message gets one copy, as every MTA does.
      const key = normalizeAddress(address);
      if (seen.has(key)) continue;
      seen.add(key);
      recipients.push({ id: uuidv7(now), address });
    }
    const suppressed = await this.store.findSuppressed(recipients.map((r) => r.address));
    const refused = [...suppressed].map(([address, entry]) => ({
      address,
      reason: `suppressed since ${entry.since} after a hard bounce: ${entry.reason}`,
    }));
    const queued = recipients.filter((r) => !suppressed.has(r.address));
    if (queued.length === 0) {
      throw new SubmissionError(`every recipient is suppressed: ${refused.map((r) => r.reason).join('; ')}`);
    }
    const messageId = submission.messageId ?? uuidv7(now);
    const message: NewMessage = {
      id: messageId,
      createdAt: now,
      expiresAt: now + this.schedule.maxAgeMs,
      source: submission.source,
      sender: submission.sender,
      content: submission.content,
      requireTls: submission.requireTls ?? false,
      metadata: submission.metadata ?? {},
      recipients: queued,
      firstAttemptAt: now,
      // Committed with the message as `blocked` events (see store/events-table.ts).
      refused: recipients
        .filter((r) => suppressed.has(r.address))
        .map((r) => ({ id: r.id, address: r.address, reason: refused.find((x) => x.address === r.address)!.reason })),
    };
    return { message, accepted: { messageId, recipients: queued, refused } };
  }
}
