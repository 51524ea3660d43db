// Which events follow from what happened to a recipient: the one place that decides it. A verdict
// of the queue (sent, deferred, bounce, blocked), a refusal at intake (blocked: the address is
// suppressed) and a bounce that came back after delivery (a DSN to the return path, RFC 3464)
// each become the events to record, with the facts they carry (Mailjet's event vocabulary, see
// docs/events.md). Pure: the store reads the inputs and inserts what these return, in the
// transaction of the change that caused them.
import type { AttemptDetail, AttemptResult, AttemptTls, MessageMetadata, NewMessage } from '../store/records.ts';
import type {
  EventFacts,
  EventMessage,
  EventRecipient,
  EventRules,
  EventTlsFacts,
  EventType,
  NewEvent,
  RemoteBounce,
} from '../store/events-table.ts';

/** The event type a recipient's new state causes; none for a state that is no verdict. */
const VERDICT_EVENTS: Partial<Record<AttemptResult['state'], EventType>> = {
  delivered: 'sent',
  deferred: 'deferred',
  bounced: 'bounce',
  expired: 'bounce',
  failed: 'blocked',
};

export function deriveVerdictEvents(input: {
  result: AttemptResult;
  /** The verdict put the address on the suppression list. */
  suppressed: boolean;
  recipient: EventRecipient;
  message: EventMessage;
}): NewEvent[] {
  const { result, suppressed, recipient, message } = input;
  const type = VERDICT_EVENTS[result.state];
  if (!type) return [];
  const facts: EventFacts = {
    ...recipientFacts(recipient, message),
    replyCode: result.replyCode,
    enhancedCode: result.enhancedCode,
    ...travelFacts(result.detail),
  };
  if (type !== 'sent') facts.reason = result.reason;
  if (type === 'deferred') facts.nextAttemptAt = result.nextAttemptAt;
  if (type === 'bounce') {
    facts.hardBounce = result.state === 'bounced' && suppressed;
    facts.suppressed = suppressed;
    facts.expired = result.state === 'expired';
  }
  if (type === 'blocked') facts.refusal = 'failed';
  return [{ type, at: result.endedAt, messageId: recipient.messageId, recipientId: recipient.id, apiKeyId: apiKeyOf(message.metadata), facts }];
}

/** A `blocked` event for each recipient refused at intake, at the message's acceptance. */
export function deriveRefusalEvents(message: NewMessage): NewEvent[] {
  const facts = messageFacts(message.metadata, message.source);
  return (message.refused ?? []).map((refused) => ({
    type: 'blocked',
    at: message.createdAt,
    messageId: message.id,
    recipientId: refused.id,
    apiKeyId: apiKeyOf(message.metadata),
    facts: { email: refused.address, ...facts, reason: refused.reason, refusal: 'suppressed' },
  }));
}

/**
 * A `bounce` for a recipient whose server accepted the message and later sent a DSN saying it
 * failed (RFC 3464 §2.3.3 `Action: failed`). Hard (and suppressed) when the status says the
 * address itself is bad.
 */
export function deriveRemoteBounceEvents(input: { bounce: RemoteBounce; recipient: EventRecipient; message: EventMessage }): NewEvent[] {
  const { bounce, recipient, message } = input;
  const facts: EventFacts = {
    ...recipientFacts(recipient, message),
    replyCode: bounce.replyCode,
    enhancedCode: bounce.status,
    ...(bounce.diagnostic === null ? {} : { replyText: diagnosticText(bounce.diagnostic, bounce.replyCode, bounce.status) }),
    reason: bounce.reason,
    hardBounce: bounce.suppress,
    suppressed: bounce.suppress,
    expired: false,
    afterDelivery: true,
  };
  return [{ type: 'bounce', at: bounce.at, messageId: recipient.messageId, recipientId: recipient.id, apiKeyId: apiKeyOf(message.metadata), facts }];
}

/** The rules as the store takes them (Store.open's `events`). */
export const eventRules: EventRules = {
  verdict: deriveVerdictEvents,
  refusals: deriveRefusalEvents,
  remoteBounce: deriveRemoteBounceEvents,
};

/** The API key whose webhooks hear of the message's events: the one that submitted it. */
function apiKeyOf(metadata: MessageMetadata): string | null {
  return metadata.apiKeyId ?? null;
}

/** What the message's metadata (set by intake) contributes to each of its events. */
function messageFacts(metadata: MessageMetadata, source: string): Pick<EventFacts, 'source' | 'customId' | 'payload' | 'campaign'> {
  return {
    source,
    ...(metadata.customId !== undefined ? { customId: metadata.customId } : {}),
    ...(metadata.eventPayload !== undefined ? { payload: metadata.eventPayload } : {}),
    ...(metadata.customCampaign !== undefined ? { campaign: metadata.customCampaign } : {}),
  };
}

/** What every event of a queued recipient says about whom it concerns. */
function recipientFacts(recipient: EventRecipient, message: EventMessage): EventFacts {
  return {
    email: recipient.address,
    ...(recipient.publicId === undefined ? {} : { publicId: recipient.publicId }),
    ...messageFacts(message.metadata, message.source),
    attempt: recipient.attemptCount,
  };
}

/**
 * Where and how the attempt travelled: the host that answered, or when none took the message the
 * last one tried (the hop failures are in the order they happened).
 */
export function travelFacts(detail: AttemptDetail): Pick<EventFacts, 'mx' | 'ip' | 'policy' | 'tls' | 'replyText'> {
  const out: Pick<EventFacts, 'mx' | 'ip' | 'policy' | 'tls' | 'replyText'> = {};
  const lastHop = detail.hopFailures?.at(-1);
  const mx = detail.mx ?? lastHop?.host;
  const ip = detail.ip ?? lastHop?.address;
  if (mx !== undefined) out.mx = mx;
  if (ip !== undefined) out.ip = ip;
  if (detail.policy?.level !== undefined) out.policy = { level: detail.policy.level, source: detail.policy.source };
  const tls = detail.tls ?? lastHop?.tls;
  if (tls) out.tls = tlsFacts(tls);
  if (detail.reply) out.replyText = detail.reply.text;
  return out;
}

function tlsFacts(tls: AttemptTls): EventTlsFacts {
  const t: EventTlsFacts = { encrypted: tls.tls === true };
  if (tls.protocol !== undefined) t.protocol = tls.protocol;
  if (tls.cipher !== undefined) t.cipher = tls.cipher;
  if (tls.verified !== undefined) t.verified = tls.verified;
  if (tls.verificationError !== undefined) t.verificationError = tls.verificationError;
  if (tls.downgrade !== undefined) t.downgrade = tls.downgrade.reason;
  return t;
}

/**
 * The text of a DSN's Diagnostic-Code without its type and the codes the event carries apart
 * (RFC 3464 §2.3.6: `smtp; 550 5.1.1 user unknown` → `user unknown`).
 */
export function diagnosticText(diagnostic: string, replyCode: number, status: string): string {
  let text = diagnostic.replace(/^\s*smtp\s*;\s*/i, '');
  if (text.startsWith(String(replyCode))) text = text.slice(3).replace(/^[ -]/, '');
  if (text.startsWith(status)) text = text.slice(status.length).trimStart();
  return text;
}
