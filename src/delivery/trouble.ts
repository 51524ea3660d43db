// What a failed delivery attempt means for the message, as one pure decision table (like Postfix's
// smtp_trouble.c): given where the session failed, whether the connection came from the pool, what
// the server replied and what kind of failure it was, say whether to try a fresh connection, the
// next address, the next MX, or to end the attempt (defer, bounce, or defer with an unknown
// outcome). The agent asks this table; it decides nothing inline.
import { SmtpSessionError, type SessionErrorKind } from './smtp-session.ts';
import type { SmtpStage } from '../mail/smtp-stage.ts';

/** `local`: something other than the session failed (a bug, an unreadable option). */
export type TroubleStage = SmtpStage | 'local';

export type ReplyClass = 'none' | '4xx' | '5xx';

/**
 * The session's error kinds, folded: every local refusal before MAIL (size, SMTPUTF8, 8BITMIME,
 * message format) is `local-refusal`; REQUIRETLS keeps its own kind because another MX may keep
 * the promise; `local` is a failure that is not the session's.
 */
export type TroubleKind =
  | 'connection'
  | 'timeout'
  | 'protocol'
  | 'reply'
  | 'tls-policy'
  | 'requiretls-unavailable'
  | 'local-refusal'
  | 'aborted'
  | 'local';

export interface Trouble {
  stage: TroubleStage;
  /** The session came from the pool: it had carried a transaction before this one. */
  reusedConnection: boolean;
  reply: ReplyClass;
  kind: TroubleKind;
  /** The server had accepted MAIL FROM of this transaction. */
  mailAccepted: boolean;
}

export type TroubleAction =
  /** Same address again on a new connection; the failed try is not part of the attempt. */
  | 'retry-fresh-connection'
  /** This address failed; the next one of the hop, then the next MX. */
  | 'next-address'
  /** This MX host cannot take the message at all; skip its other addresses. */
  | 'next-mx'
  /** End the attempt for every recipient: try again later. */
  | 'defer'
  /** End the attempt for every recipient: refused for good. */
  | 'bounce'
  /** End the attempt: the server may have the message, so neither this nor another MX gets it now. */
  | 'defer-unknown-outcome';

export interface TroubleDecision {
  action: TroubleAction;
  /** Recorded among the attempt's hop failures. False only for a retry on a fresh connection. */
  countsAsAttempt: boolean;
  /** The host could not be reached or would not greet: evidence that the site is down. */
  unreachable: boolean;
  /** Counts toward the RFC 8689 5.7.30 bounce when every MX of the destination ends this way. */
  policyBounce: boolean;
  why: string;
}

const PRE_SESSION: ReadonlySet<TroubleStage> = new Set(['connect', 'greeting', 'ehlo', 'starttls', 'tls', 'local']);
/** Replies at these stages answer for the whole transaction, not for one recipient. */
const TRANSACTION_REPLY: ReadonlySet<TroubleStage> = new Set(['mail', 'data', 'dot', 'message']);
const LOST: ReadonlySet<TroubleKind> = new Set(['connection', 'timeout', 'protocol']);

function decision(action: TroubleAction, why: string, extra: Partial<Omit<TroubleDecision, 'action' | 'why'>> = {}): TroubleDecision {
  return { action, countsAsAttempt: action !== 'retry-fresh-connection', unreachable: false, policyBounce: false, why, ...extra };
}

export function decideTrouble(t: Trouble): TroubleDecision {
  // RFC 1047: the final dot went out and no reply came back. The server may have committed the
  // message; sending it again (here or to another MX) would deliver it twice.
  if (t.stage === 'dot' && t.reply === 'none') {
    return decision('defer-unknown-outcome', 'the connection ended after the final dot without a reply; the message may have been delivered (RFC 1047)');
  }
  if (t.kind === 'aborted') return decision('defer', 'the attempt was aborted (shutdown)', { countsAsAttempt: false });

  // RFC 8689 §4.2.1: this MX cannot keep the REQUIRETLS promise; another MX may.
  if (t.kind === 'requiretls-unavailable') {
    return decision('next-mx', 'the MX does not offer REQUIRETLS over TLS; another MX may (RFC 8689 §4.2.1)', { policyBounce: true });
  }

  // A pooled connection the server closed (or forgot) while it sat idle: nothing of this
  // transaction was taken, and the destination is not at fault.
  if (t.reusedConnection && !t.mailAccepted && t.reply === 'none' && LOST.has(t.kind) && !PRE_SESSION.has(t.stage)) {
    return decision('retry-fresh-connection', 'a pooled connection was gone before MAIL FROM was accepted: try a new one, not counted');
  }

  // RFC 5321 §4.2.1 / §4.1.1.4: a reply to MAIL, DATA or the final dot (or our own refusal of the
  // message) speaks for the whole transaction; another MX would be asked the same.
  if (t.reply !== 'none' && TRANSACTION_REPLY.has(t.stage)) {
    return t.reply === '5xx'
      ? decision('bounce', `a ${t.reply} reply at ${t.stage} refuses the message for good`)
      : decision('defer', `a ${t.reply} reply at ${t.stage} defers the whole transaction`);
  }
  if (t.stage === 'message') return decision('defer', 'a local failure before MAIL FROM, without a reply: try later');

  if (PRE_SESSION.has(t.stage)) {
    // RFC 5321 §5.1: a host that cannot be reached or will not greet is skipped for the next.
    const unreachable =
      !t.reusedConnection &&
      ((t.stage === 'connect' && (t.kind === 'connection' || t.kind === 'timeout')) ||
        (t.stage === 'greeting' && (t.reply === '4xx' || (t.reply === 'none' && (t.kind === 'connection' || t.kind === 'timeout')))) ||
        (t.stage === 'ehlo' && t.reply === 'none' && t.kind === 'connection'));
    const what = t.kind === 'tls-policy' ? 'the TLS policy was not met' : t.reply === 'none' ? `${t.kind} failure` : `a ${t.reply} reply`;
    return decision('next-address', `${what} at ${t.stage}: try the next address or MX`, { unreachable });
  }

  // What is left: mail/rcpt/data without a reply on a fresh connection (or after MAIL was
  // accepted on a reused one), and the 421 that closes a transaction at RCPT. No message was
  // sent, so another address may take it.
  return decision('next-address', `${t.reply === 'none' ? `${t.kind} failure` : `a ${t.reply} reply`} at ${t.stage} before the message was sent: try the next address or MX`);
}

const LOCAL_REFUSALS: ReadonlySet<SessionErrorKind> = new Set(['size-exceeded', 'smtputf8-unavailable', '8bitmime-unavailable', 'message-format']);

/** The table's input for an error thrown by opening a session or by `send()`. */
export function troubleOf(err: unknown, reusedConnection: boolean): Trouble {
  if (!(err instanceof SmtpSessionError)) return { stage: 'local', reusedConnection, reply: 'none', kind: 'local', mailAccepted: false };
  const code = err.reply?.code;
  const reply: ReplyClass = code === undefined ? 'none' : code >= 500 ? '5xx' : '4xx';
  const kind: TroubleKind = LOCAL_REFUSALS.has(err.kind) ? 'local-refusal' : (err.kind as TroubleKind);
  return { stage: err.stage, reusedConnection, reply, kind, mailAccepted: err.mailAccepted };
}
