// The JSON an event is told to the world in: Mailjet's event field names where Mailjet has the
// field (event, time, MessageID, Message_GUID, email, CustomID, Payload, customcampaign,
// smtp_reply, blocked, hard_bounce, error_related_to, error, comment), so receivers written for
// Mailjet's event API read it, plus what Lacre adds: event_id (to deduplicate: webhooks deliver at
// least once), message_uuid, the MX host and address, and a `tls` object saying how the message
// travelled. Pure.
import type { EventFacts, EventRecord, EventType } from '../store/events-table.ts';

export interface EventTlsJson {
  /** Commands after the handshake were protected by TLS. */
  encrypted: boolean;
  /** Negotiated protocol, e.g. TLSv1.3. */
  version?: string;
  cipher?: string;
  /** The certificate chain verified and names the MX host. */
  verified?: boolean;
  verification_error?: string;
  /** Why a `may` delivery went out in plaintext although TLS was wanted. */
  downgrade?: string;
  /** The TLS level the delivery was held to: none, may, encrypt, verify. */
  policy?: string;
  /** Where the level came from, e.g. `static:verify` or `default:may`. */
  policy_source?: string;
}

export interface EventJson {
  event: EventType;
  /** Unix time in seconds, as Mailjet sends it. */
  time: number;
  /** Lacre's id of this event: the same event delivered twice has the same id. */
  event_id: string;
  /** The numeric message id the send API returned for this recipient, when there is one. */
  MessageID?: number | string;
  /** The recipient's id (the MessageUUID of the send API). */
  Message_GUID: string;
  /** Lacre's id of the whole message (`lacre messages show ID`). */
  message_uuid: string;
  email: string;
  CustomID: string;
  Payload: string;
  customcampaign?: string;
  /** The remote server's reply, e.g. `250 2.0.0 OK`. */
  smtp_reply?: string;
  /** bounce: later sends to this address are refused (it was suppressed). */
  blocked?: boolean;
  /** bounce: the address itself is bad (permanent, RFC 3463 X.1.x). */
  hard_bounce?: boolean;
  error_related_to?: string;
  error?: string;
  /** The reason in words, as Lacre recorded it. */
  comment?: string;
  /** deferred: unix time in seconds of the next attempt. */
  next_attempt?: number;
  /** Which delivery attempt this was (1 for the first). */
  attempt?: number;
  mx?: string;
  mx_ip?: string;
  tls?: EventTlsJson;
}

export function formatEvent(record: EventRecord): EventJson {
  const f = record.facts;
  const json: EventJson = {
    event: record.type,
    time: Math.floor(record.at / 1000),
    event_id: record.id,
    ...(f.publicId !== undefined ? { MessageID: f.publicId } : {}),
    Message_GUID: record.recipientId ?? '',
    message_uuid: record.messageId,
    email: f.email,
    CustomID: f.customId ?? '',
    Payload: f.payload ?? '',
  };
  if (f.campaign !== undefined) json.customcampaign = f.campaign;
  if (f.replyCode !== undefined && f.replyCode !== null) {
    // The session keeps the enhanced code apart from the text; put it back where the server sent it.
    const text = f.replyText ?? '';
    const enhanced = f.enhancedCode && !text.startsWith(f.enhancedCode) ? f.enhancedCode : '';
    json.smtp_reply = [String(f.replyCode), enhanced, text].filter((p) => p !== '').join(' ');
  }
  if (record.type === 'bounce') {
    json.blocked = f.suppressed === true;
    json.hard_bounce = f.hardBounce === true;
  }
  if (record.type === 'bounce' || record.type === 'deferred' || record.type === 'blocked') {
    const { relatedTo, error } = classifyError(record.type, f);
    json.error_related_to = relatedTo;
    json.error = error;
    if (f.reason) json.comment = f.reason;
  }
  if (record.type === 'deferred' && f.nextAttemptAt !== undefined) json.next_attempt = Math.floor(f.nextAttemptAt / 1000);
  if (f.attempt !== undefined && f.attempt > 0) json.attempt = f.attempt;
  if (f.mx !== undefined) json.mx = f.mx;
  if (f.ip !== undefined) json.mx_ip = f.ip;
  if (f.tls || f.policy) {
    const tls: EventTlsJson = { encrypted: f.tls?.encrypted ?? false };
    if (f.tls?.protocol) tls.version = f.tls.protocol;
    if (f.tls?.cipher) tls.cipher = f.tls.cipher;
    if (f.tls?.verified !== undefined) tls.verified = f.tls.verified;
    if (f.tls?.verificationError) tls.verification_error = f.tls.verificationError;
    if (f.tls?.downgrade) tls.downgrade = f.tls.downgrade;
    if (f.policy) {
      tls.policy = f.policy.level;
      tls.policy_source = f.policy.source;
    }
    json.tls = tls;
  }
  return json;
}

/**
 * Mailjet's error vocabulary (error_related_to: recipient, domain, content, system, …; error:
 * "user unknown", "no mail host", …) from the enhanced status code (RFC 3463) where there is one,
 * else from the reply code and wording. A best effort: `comment` keeps the exact reason.
 */
export function classifyError(type: EventType, f: EventFacts): { relatedTo: string; error: string } {
  if (type === 'blocked') {
    return f.refusal === 'suppressed' ? { relatedTo: 'recipient', error: 'preblocked' } : { relatedTo: 'system', error: 'system issue' };
  }
  const reason = f.reason ?? '';
  if (/gr[ae]y ?list/i.test(reason) || /gr[ae]y ?list/i.test(f.replyText ?? '')) return { relatedTo: 'domain', error: 'greylisted' };
  const m = /^[245]\.(\d{1,3})\.(\d{1,3})$/.exec(f.enhancedCode ?? '');
  if (m) {
    const [subject, detail] = [Number(m[1]), Number(m[2])];
    switch (subject) {
      case 1: // addressing (RFC 3463 §3.2)
        if (detail === 2) return { relatedTo: 'domain', error: 'invalid domain' };
        if (detail === 10) return { relatedTo: 'domain', error: 'no mail host' };
        return { relatedTo: 'recipient', error: 'user unknown' };
      case 2: // mailbox (§3.3)
        if (detail === 2) return { relatedTo: 'recipient', error: 'quota exceeded' };
        if (detail === 3) return { relatedTo: 'content', error: 'policy issue' };
        return { relatedTo: 'recipient', error: 'mailbox inactive' };
      case 3: // mail system (§3.4)
        return { relatedTo: 'system', error: 'system issue' };
      case 4: // network and routing (§3.5)
        if (detail === 3 || detail === 4) return { relatedTo: 'domain', error: 'no mail host' };
        return { relatedTo: 'system', error: 'connection issue' };
      case 5: // mail delivery protocol (§3.6)
        return { relatedTo: 'system', error: 'protocol issue' };
      case 6: // message content or media (§3.7)
        return { relatedTo: 'content', error: 'content blocked' };
      case 7: // security or policy (§3.8), TLS requirements among them
        if (detail === 1) return { relatedTo: 'domain', error: 'relay/access denied' };
        return { relatedTo: 'domain', error: 'policy issue' };
    }
  }
  if (f.replyCode === null || f.replyCode === undefined) return { relatedTo: 'system', error: 'connection issue' };
  if (f.hardBounce) return { relatedTo: 'recipient', error: 'user unknown' };
  if (f.replyCode >= 500) return { relatedTo: 'domain', error: 'relay/access denied' };
  return { relatedTo: 'system', error: 'system issue' };
}
