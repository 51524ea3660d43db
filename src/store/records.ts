// The shapes that cross the store's boundary, in plaintext: the store seals and hashes them on
// the way in and opens them on the way out, so no caller can forget to.

export const RECIPIENT_STATES = ['queued', 'deferred', 'delivered', 'bounced', 'expired', 'failed'] as const;
export type RecipientState = (typeof RECIPIENT_STATES)[number];
export const FINAL_STATES: ReadonlySet<RecipientState> = new Set(['delivered', 'bounced', 'expired', 'failed']);

/** `unknown`: the connection was lost after the final dot; the message may have arrived (RFC 1047). */
export type AttemptOutcome = 'delivered' | 'deferred' | 'unknown' | 'bounced' | 'failed' | 'abandoned' | 'released';

export interface NewMessage {
  id: string;
  createdAt: number;
  expiresAt: number;
  source: string;
  /** Envelope sender (return path); null for the null sender `<>` (bounces). */
  sender: string | null;
  content: Buffer;
  requireTls: boolean;
  metadata: Record<string, unknown>;
  recipients: Array<{ id: string; address: string }>;
  firstAttemptAt: number;
  /** Recipients refused at intake (suppressed): each gets a `blocked` event in the same transaction. */
  refused?: Array<{ id: string; address: string; reason: string }>;
}

/** A recipient leased to one worker for one attempt. */
export interface ClaimedRecipient {
  recipientId: string;
  messageId: string;
  address: string;
  domain: string;
  domainHash: string;
  /** The lease token, which is also the id of the attempt record. */
  attemptId: string;
  attemptNumber: number;
  leaseExpiresAt: number;
  sender: string | null;
  requireTls: boolean;
  createdAt: number;
  expiresAt: number;
}

export interface AttemptResult {
  recipientId: string;
  attemptId: string;
  outcome: Exclude<AttemptOutcome, 'abandoned' | 'released'>;
  state: RecipientState;
  nextAttemptAt: number;
  reason: string | null;
  replyCode: number | null;
  enhancedCode: string | null;
  /** How the attempt travelled (TLS, MX, timings): sealed, as replies can quote addresses. */
  detail: Record<string, unknown>;
  endedAt: number;
}

export interface AttemptView {
  id: string;
  worker: string;
  startedAt: string;
  endedAt: string | null;
  outcome: AttemptOutcome | null;
  replyCode: number | null;
  enhancedCode: string | null;
  detail: Record<string, unknown> | null;
}

export interface RecipientView {
  id: string;
  address: string;
  state: RecipientState;
  attemptCount: number;
  nextAttemptAt: string | null;
  reason: string | null;
  updatedAt: string;
  finalizedAt: string | null;
  attempts: AttemptView[];
}

export interface MessageView {
  id: string;
  createdAt: string;
  expiresAt: string;
  source: string;
  sender: string | null;
  size: number;
  requireTls: boolean;
  metadata: Record<string, unknown>;
  recipients: RecipientView[];
}
