// The shapes that cross the store's boundary, in plaintext: the store seals and hashes them on
// the way in and opens them on the way out, so no caller can forget to. The JSON kept in sealed
// columns (a message's metadata, an attempt's detail) has a declared shape here, checked by
// ./record-schemas.ts when it is read back.
import type { AttemptStage } from '../mail/smtp-stage.ts';

export const RECIPIENT_STATES = ['queued', 'deferred', 'delivered', 'bounced', 'expired', 'failed'] as const;
export type RecipientState = (typeof RECIPIENT_STATES)[number];
export const FINAL_STATES: ReadonlySet<RecipientState> = new Set(['delivered', 'bounced', 'expired', 'failed']);

/** `unknown`: the connection was lost after the final dot; the message may have arrived (RFC 1047). */
export type AttemptOutcome = 'delivered' | 'deferred' | 'unknown' | 'bounced' | 'failed' | 'abandoned' | 'released';

/**
 * What intake and compose record about a message beside its bytes. `apiKeyId` decides who may
 * read the message and whose webhooks hear of its events; the Mailjet fields come back in every
 * event (CustomID, Payload, customcampaign).
 */
export interface MessageMetadata {
  /** The API key that submitted the message; absent for system messages (DSNs, TLS reports). */
  apiKeyId?: string;
  /** Mailjet's CustomID. */
  customId?: string;
  /** Mailjet's EventPayload, as the client gave it. */
  eventPayload?: string;
  /** Mailjet's CustomCampaign. */
  customCampaign?: string;
  /** A message Lacre made itself: a DSN, or a TLS report (RFC 8460 §5.3). */
  kind?: 'dsn' | 'tlsrpt';
  /** dsn: the message and recipient the DSN reports on. */
  about?: string;
  recipientId?: string;
  /** compose: the domain whose DKIM key signed the message, and the selectors used. */
  signingDomain?: string;
  dkimSelectors?: string[];
}

/** The TLS facts of one connection an attempt keeps (delivery's TlsFacts; the fields read downstream). */
export interface AttemptTls {
  /** Commands after the handshake were protected by TLS. */
  tls: boolean;
  protocol?: string;
  cipher?: string;
  verified?: boolean;
  verificationError?: string;
  /** A `may` delivery went out in plaintext although TLS was wanted, and why. */
  downgrade?: { reason: string; detail: string; retried?: boolean };
}

/** The TLS level a hop was held to and where it came from (`static:verify`, `dane`, …). */
export interface AttemptPolicy {
  level?: string;
  source: string;
  why?: string;
}

export interface AttemptReply {
  code: number;
  enhanced?: string | null;
  text: string;
}

/** What the attempt keeps of the TLS policy evidence: enough to explain the decision, nothing personal. */
export interface AttemptPolicyEvidence {
  requireTls: boolean;
  tlsRequiredNo: boolean;
  mxSecure: boolean;
  static: { level: string; source: string; match?: string };
  mtaSts: { mode: string; id: string; fromCache: boolean; refreshFailure?: string } | { failure: string; detail: string } | null;
}

/** One next-hop address that did not take the message, and why. */
export interface AttemptHopFailure {
  host: string;
  address: string;
  port: number;
  stage: AttemptStage;
  temporary: boolean;
  reason: string;
  failure?: string;
  permanentPolicy?: boolean;
  unreachable?: boolean;
  policy?: AttemptPolicy;
  reply?: AttemptReply;
  tls?: AttemptTls;
}

/**
 * How an attempt travelled, as the delivery stage records it (sealed: replies can quote
 * addresses). Events read `mx`, `ip`, `policy`, `tls`, `reply` and, when no hop took the
 * message, the last of `hopFailures`.
 */
export interface AttemptDetail {
  domain?: string;
  /** The next-hop set (MX hosts or a static route) the destination belongs to. */
  site?: string | null;
  /** Set when there was no next hop: the domain has a null MX, or could not be resolved. */
  destination?: 'null-mx' | 'unresolvable';
  policyEvidence?: AttemptPolicyEvidence;
  policy?: AttemptPolicy;
  mx?: string;
  ip?: string;
  port?: number;
  hopSource?: string;
  /** The connection came from the pool rather than being opened for this attempt. */
  reused?: boolean;
  tls?: AttemptTls;
  hopFailures?: AttemptHopFailure[];
  reply?: AttemptReply;
  durationMs?: number;
  /** The lease was lost before DATA: nothing was sent. */
  leaseLost?: boolean;
  /** RFC 1047: the connection was lost after the final dot. */
  unknownOutcome?: boolean;
  stage?: AttemptStage;
  error?: string;
  /** The site was suspended by the dead-site throttle: deferred without a connection. */
  suspended?: boolean;
}

export interface NewMessage {
  id: string;
  createdAt: number;
  expiresAt: number;
  source: string;
  /** Envelope sender (return path); null for the null sender `<>` (bounces). */
  sender: string | null;
  content: Buffer;
  requireTls: boolean;
  metadata: MessageMetadata;
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
  detail: AttemptDetail;
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
  detail: AttemptDetail | null;
}

export interface RecipientView {
  id: string;
  address: string;
  state: RecipientState;
  attemptCount: number;
  nextAttemptAt: string | null;
  /** Set while an operator holds it (`lacre queue hold`): not delivered until released. */
  heldAt: string | null;
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
  metadata: MessageMetadata;
  recipients: RecipientView[];
}
