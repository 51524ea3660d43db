// One attempt, summed up for the operator: the fields of the log line the runner writes per
// recipient attempt (like Postfix's `status=sent` line from smtp(8)) and of the delivery metrics.
// Pure. Nothing here is personal: ids, the destination domain, the relay, TLS facts, codes and
// timings — never the address, and never the reply text, which can quote it (RFC 5321 §4.2 lets a
// server say anything after the code).
import type { AttemptDetail, AttemptHopFailure, AttemptTls, ClaimedRecipient, RecipientState } from '../store/records.ts';

/** Postfix's status words: `sent` for delivered, the state's own name otherwise. */
export type AttemptStatus = 'sent' | 'deferred' | 'bounced' | 'expired' | 'failed';

/**
 * Why an attempt was deferred, as a small fixed set (the metrics' `reason` label): what an
 * operator acts on differently, not the reply text.
 */
export const DEFERRAL_CLASSES = [
  'connection',
  'dns',
  'tls',
  'reply',
  'unknown-outcome',
  'site-suspended',
  'lease-lost',
  'local',
  'other',
] as const;
export type DeferralClass = (typeof DEFERRAL_CLASSES)[number];

export interface AttemptTlsSummary {
  /** Negotiated protocol (`TLSv1.3`), or `none` when the transaction went in plaintext or never started. */
  version: string;
  cipher?: string;
  verified: boolean;
  /** Why the peer was not verified (Node/OpenSSL code), when it was not. */
  unverified?: string;
  /** The level the hop was held to and where that came from (`static:verify`, `dane`, `mta-sts:enforce`). */
  policy?: string;
  source?: string;
}

export interface AttemptSummary {
  messageId: string;
  recipientId: string;
  attempt: number;
  domain: string;
  /** `mx.example[192.0.2.1]:25`, like Postfix's relay=; `none` when no host was reached. */
  relay: string;
  relayHost?: string;
  relayAddress?: string;
  relayPort?: number;
  /** The connection came from the pool. */
  reused?: boolean;
  tls: AttemptTlsSummary;
  status: AttemptStatus;
  replyCode?: number;
  enhancedCode?: string;
  /** For a deferral (and an expiry, whose last try failed transiently): why, as a class. */
  reasonClass?: DeferralClass;
  /** Where the attempt stopped, when it failed (`connect`, `rcpt`, `policy`…). */
  stage?: string;
  delays: {
    /** Message accepted → this attempt started (Postfix's delays= first field, roughly). */
    queuedMs: number;
    /** TCP connect of the connection that carried the attempt; absent for a pooled one. */
    connectMs?: number;
    /** This attempt, start to verdict. */
    attemptMs: number;
    /** Message accepted → verdict (Postfix's delay=). */
    totalMs: number;
  };
}

export interface AttemptFacts {
  recipient: ClaimedRecipient;
  state: RecipientState;
  replyCode: number | null;
  enhancedCode: string | null;
  reason: string | null;
  detail: AttemptDetail;
  startedAt: number;
  endedAt: number;
}

export function statusOf(state: RecipientState): AttemptStatus {
  if (state === 'delivered') return 'sent';
  if (state === 'queued') return 'deferred';
  return state;
}

export function summarizeAttempt(f: AttemptFacts): AttemptSummary {
  const d = f.detail;
  // Where no hop took the message the detail names no relay; the failure that explains it does.
  const last: AttemptHopFailure | undefined = d.hopFailures?.at(-1);
  const host = d.mx ?? last?.host;
  const address = d.ip ?? (last?.address || undefined);
  const port = d.port ?? last?.port;
  const tls = d.tls ?? last?.tls;
  const policy = d.policy ?? last?.policy;
  const status = statusOf(f.state);
  const connectMs = (tls as (AttemptTls & { timings?: { connectMs?: number } }) | undefined)?.timings?.connectMs;
  const summary: AttemptSummary = {
    messageId: f.recipient.messageId,
    recipientId: f.recipient.recipientId,
    attempt: f.recipient.attemptNumber,
    domain: d.domain ?? f.recipient.domain,
    relay: host ? `${host}${address ? `[${address}]` : ''}${port ? `:${port}` : ''}` : 'none',
    ...(host ? { relayHost: host } : {}),
    ...(address ? { relayAddress: address } : {}),
    ...(port ? { relayPort: port } : {}),
    ...(d.reused !== undefined ? { reused: d.reused } : {}),
    tls: tlsSummary(tls, policy),
    status,
    ...(f.replyCode !== null ? { replyCode: f.replyCode } : {}),
    ...(f.enhancedCode ? { enhancedCode: f.enhancedCode } : {}),
    delays: {
      queuedMs: Math.max(0, f.startedAt - f.recipient.createdAt),
      ...(connectMs !== undefined && !d.reused ? { connectMs } : {}),
      attemptMs: Math.max(0, f.endedAt - f.startedAt),
      totalMs: Math.max(0, f.endedAt - f.recipient.createdAt),
    },
  };
  const stage = d.stage ?? last?.stage;
  if (status !== 'sent' && stage) summary.stage = stage;
  if (status === 'deferred' || status === 'expired') summary.reasonClass = deferralClass(f, last);
  return summary;
}

function tlsSummary(tls: AttemptTls | undefined, policy: { level?: string; source: string } | undefined): AttemptTlsSummary {
  const out: AttemptTlsSummary = { version: tls?.tls && tls.protocol ? tls.protocol : 'none', verified: tls?.verified === true };
  if (tls?.tls && tls.cipher) out.cipher = tls.cipher;
  if (tls?.tls && tls.verified !== true) out.unverified = tls.verificationError ?? 'not verified';
  if (policy?.level) out.policy = policy.level;
  if (policy?.source) out.source = policy.source;
  return out;
}

/** The class of a transient failure, from what the delivery stage recorded about it. */
export function deferralClass(f: Pick<AttemptFacts, 'detail' | 'replyCode' | 'reason'>, last = f.detail.hopFailures?.at(-1)): DeferralClass {
  const d = f.detail;
  if (d.suspended) return 'site-suspended';
  if (d.leaseLost) return 'lease-lost';
  if (d.unknownOutcome) return 'unknown-outcome';
  if (d.destination === 'unresolvable') return 'dns';
  if (f.replyCode !== null && f.replyCode >= 400) return 'reply';
  if (f.reason?.startsWith('local error')) return 'local';
  if (last) {
    if (last.reply) return 'reply';
    if (last.failure || last.stage === 'policy' || last.stage === 'starttls' || last.stage === 'tls') return 'tls';
    if (last.unreachable || last.stage === 'connect' || last.stage === 'greeting') return 'connection';
    if (last.stage === 'local') return 'local';
  }
  return 'other';
}
