// Delivery events: what happened to each recipient (sent, deferred, bounce, blocked, later unsub),
// recorded in the same transaction as the verdict that caused it, and fanned out into the webhook
// outbox (webhook_deliveries) in that same transaction, so an event is never lost between the
// verdict and the webhook. The store keeps the *facts* of an event (sealed: they hold the address
// and whatever the remote server replied); ../events turns them into the JSON the world sees.
// Part of the store: the only SQL for the events table. May import: ../sealing, ./engine, ./ids.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { uuidv7 } from './ids.ts';
import type { AttemptResult, NewMessage } from './records.ts';

/** Mailjet's event names where it has them; `deferred` is Lacre's (Mailjet reports none). */
export const EVENT_TYPES = ['sent', 'deferred', 'bounce', 'blocked', 'unsub'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export function isEventType(value: string): value is EventType {
  return (EVENT_TYPES as readonly string[]).includes(value);
}

/** How the attempt travelled, as far as an event tells it (a subset of the attempt's detail). */
export interface EventTlsFacts {
  /** Commands after the handshake were protected by TLS. */
  encrypted: boolean;
  protocol?: string;
  cipher?: string;
  verified?: boolean;
  verificationError?: string;
  /** A `may` delivery went out in plaintext although TLS was wanted, and why. */
  downgrade?: string;
}

/** Everything an event says, in plaintext (sealed at rest). */
export interface EventFacts {
  email: string;
  /** recipients.public_id (the numeric MessageID of the send API); absent for rows queued before it existed. */
  publicId?: number | string;
  source?: string;
  customId?: string;
  payload?: string;
  campaign?: string;
  attempt?: number;
  replyCode?: number | null;
  enhancedCode?: string | null;
  replyText?: string;
  reason?: string | null;
  mx?: string;
  ip?: string;
  policy?: { level: string; source: string };
  tls?: EventTlsFacts;
  /** bounce: the address itself is bad (RFC 3463 X.1.x); it was added to the suppression list. */
  hardBounce?: boolean;
  /** bounce: later sends to the address are refused (it was suppressed by this bounce). */
  suppressed?: boolean;
  /** bounce: the recipient expired after transient failures rather than being refused. */
  expired?: boolean;
  /** deferred: when the next attempt is due (ms). */
  nextAttemptAt?: number;
  /** blocked: why Lacre did not send at all. */
  refusal?: 'suppressed' | 'failed';
}

export interface NewEvent {
  type: EventType;
  /** When it happened (ms): the verdict's time. */
  at: number;
  messageId: string;
  recipientId: string | null;
  /** The API key that submitted the message (its webhooks hear of it), or null. */
  apiKeyId: string | null;
  facts: EventFacts;
}

export interface EventRecord extends NewEvent {
  /** uuidv7, made inside the inserting transaction: ids sort in commit order on SQLite. */
  id: string;
}

interface EventRow {
  id: string;
  at: number;
  type: EventType;
  message_id: string;
  recipient_id: string | null;
  api_key_id: string | null;
  payload_sealed: Uint8Array;
}

const PAYLOAD = 'events.payload_sealed';
const METADATA = 'messages.metadata_sealed';
const ADDRESS = 'recipients.address_sealed';

export class EventsTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  /** Records an event on its own (outside a verdict), e.g. an unsubscription. */
  async append(event: NewEvent): Promise<string> {
    return this.#engine.transaction((tx) => this.insert(tx, event));
  }

  /**
   * Inserts an event and one outbox row per enabled webhook of its API key that subscribed to
   * its type, in the caller's transaction. Returns the event id.
   */
  async insert(tx: SqlExecutor, event: NewEvent): Promise<string> {
    // Date.now(), not event.at: the id is the paging cursor and must follow commit order.
    const id = uuidv7();
    await tx.run(
      `INSERT INTO events (id, at, type, message_id, recipient_id, api_key_id, payload_sealed) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      [id, event.at, event.type, event.messageId, event.recipientId, event.apiKeyId, this.#sealer.seal(JSON.stringify(event.facts), PAYLOAD)],
    );
    if (event.apiKeyId === null) return id;
    const hooks = await tx.all<{ id: string; event_types: string }>(
      'SELECT id, event_types FROM webhooks WHERE api_key_id = ? AND disabled_at IS NULL',
      [event.apiKeyId],
    );
    for (const hook of hooks) {
      if (!hook.event_types.split(',').includes(event.type)) continue;
      await tx.run(
        `INSERT INTO webhook_deliveries (id, webhook_id, event_id, state, attempts, created_at, next_attempt_at)
         VALUES (?, ?, ?, 'pending', 0, ?, ?)`,
        [uuidv7(), hook.id, id, Date.now(), Date.now()],
      );
    }
    return id;
  }

  /** The event a recorded verdict causes (called by the store inside the verdict's transaction). */
  async recordVerdict(
    tx: SqlExecutor,
    result: AttemptResult,
    effects: { suppress?: unknown },
  ): Promise<string | null> {
    const type: EventType | null =
      result.state === 'delivered' ? 'sent'
      : result.state === 'deferred' ? 'deferred'
      : result.state === 'bounced' || result.state === 'expired' ? 'bounce'
      : result.state === 'failed' ? 'blocked'
      : null;
    if (!type) return null;
    const recipient = await tx.get<Record<string, unknown>>(
      'SELECT message_id, address_sealed, attempt_count, public_id FROM recipients WHERE id = ?',
      [result.recipientId],
    );
    if (!recipient) return null;
    const messageId = String(recipient.message_id);
    const message = await this.#message(tx, messageId);
    const travel = travelFacts(result.detail);
    const facts: EventFacts = {
      email: this.#sealer.openString(recipient.address_sealed as Uint8Array, ADDRESS),
      ...publicIdOf(recipient),
      ...message.facts,
      attempt: Number(recipient.attempt_count),
      replyCode: result.replyCode,
      enhancedCode: result.enhancedCode,
      ...travel,
    };
    if (type !== 'sent') facts.reason = result.reason;
    if (type === 'deferred') facts.nextAttemptAt = result.nextAttemptAt;
    if (type === 'bounce') {
      facts.hardBounce = result.state === 'bounced' && effects.suppress !== undefined;
      facts.suppressed = effects.suppress !== undefined;
      facts.expired = result.state === 'expired';
    }
    if (type === 'blocked') facts.refusal = 'failed';
    return this.insert(tx, { type, at: result.endedAt, messageId, recipientId: result.recipientId, apiKeyId: message.apiKeyId, facts });
  }

  /** `blocked` events for the recipients a message was refused for at intake (suppressed). */
  async recordRefused(tx: SqlExecutor, message: NewMessage): Promise<void> {
    if (!message.refused || message.refused.length === 0) return;
    const meta = metadataFacts(message.metadata, message.source);
    for (const refused of message.refused) {
      await this.insert(tx, {
        type: 'blocked',
        at: message.createdAt,
        messageId: message.id,
        recipientId: refused.id,
        apiKeyId: meta.apiKeyId,
        facts: { email: refused.address, ...meta.facts, reason: refused.reason, refusal: 'suppressed' },
      });
    }
  }

  async #message(tx: SqlExecutor, messageId: string): Promise<ReturnType<typeof metadataFacts>> {
    const row = await tx.get<{ metadata_sealed: Uint8Array; source: string }>(
      'SELECT metadata_sealed, source FROM messages WHERE id = ?',
      [messageId],
    );
    if (!row) return { apiKeyId: null, facts: {} };
    return metadataFacts(JSON.parse(this.#sealer.openString(row.metadata_sealed, METADATA)), row.source);
  }

  /**
   * Events after the cursor `after` (an event id; '' from the start), oldest first. `apiKeyId`:
   * only that key's events; null: every event.
   */
  async list(options: { after?: string; limit: number; apiKeyId: string | null; types?: EventType[] }): Promise<EventRecord[]> {
    const where = ['id > ?'];
    const params: Array<string | number> = [options.after ?? ''];
    if (options.apiKeyId !== null) {
      where.push('api_key_id = ?');
      params.push(options.apiKeyId);
    }
    if (options.types && options.types.length > 0) {
      where.push(`type IN (${options.types.map(() => '?').join(', ')})`);
      params.push(...options.types);
    }
    const rows = await this.#engine.all<EventRow>(
      `SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY id LIMIT ?`,
      [...params, options.limit],
    );
    return rows.map((row) => this.#view(row));
  }

  /** These events, in id order (missing ids are skipped: erased since). */
  async byIds(ids: string[]): Promise<EventRecord[]> {
    if (ids.length === 0) return [];
    const rows = await this.#engine.all<EventRow>(
      `SELECT * FROM events WHERE id IN (${ids.map(() => '?').join(', ')}) ORDER BY id`,
      ids,
    );
    return rows.map((row) => this.#view(row));
  }

  /** A message's events, in order (for `messages show` and tests). */
  async forMessage(messageId: string): Promise<EventRecord[]> {
    const rows = await this.#engine.all<EventRow>('SELECT * FROM events WHERE message_id = ? ORDER BY id', [messageId]);
    return rows.map((row) => this.#view(row));
  }

  #view(row: EventRow): EventRecord {
    return {
      id: row.id,
      at: Number(row.at),
      type: row.type,
      messageId: row.message_id,
      recipientId: row.recipient_id,
      apiKeyId: row.api_key_id,
      facts: JSON.parse(this.#sealer.openString(row.payload_sealed, PAYLOAD)) as EventFacts,
    };
  }
}

/** What the message's metadata (set by intake) contributes to its events. */
function metadataFacts(meta: Record<string, unknown>, source: string): { apiKeyId: string | null; facts: Partial<EventFacts> } {
  const text = (value: unknown): string | undefined =>
    value === undefined || value === null ? undefined : typeof value === 'string' ? value : JSON.stringify(value);
  const facts: Partial<EventFacts> = { source };
  const customId = text(meta.customId ?? meta.CustomID);
  const payload = text(meta.eventPayload ?? meta.EventPayload);
  const campaign = text(meta.campaign ?? meta.customCampaign);
  if (customId !== undefined) facts.customId = customId;
  if (payload !== undefined) facts.payload = payload;
  if (campaign !== undefined) facts.campaign = campaign;
  return { apiKeyId: typeof meta.apiKeyId === 'string' ? meta.apiKeyId : null, facts };
}

function publicIdOf(recipient: Record<string, unknown>): Pick<EventFacts, 'publicId'> {
  const value = recipient.public_id;
  if (value === undefined || value === null) return {};
  if (typeof value === 'bigint') return { publicId: Number.isSafeInteger(Number(value)) ? Number(value) : value.toString() };
  if (typeof value === 'number' || typeof value === 'string') return { publicId: value };
  return {};
}

/** The part of an attempt's detail (see delivery/agent.ts) an event carries: where and how it travelled. */
export function travelFacts(detail: Record<string, unknown>): Pick<EventFacts, 'mx' | 'ip' | 'policy' | 'tls' | 'replyText'> {
  const out: Pick<EventFacts, 'mx' | 'ip' | 'policy' | 'tls' | 'replyText'> = {};
  const d = detail as {
    mx?: unknown;
    ip?: unknown;
    policy?: { level?: unknown; source?: unknown };
    tls?: Record<string, unknown>;
    reply?: { text?: unknown } | unknown;
    hopFailures?: Array<{ host?: unknown; address?: unknown; tls?: Record<string, unknown> }>;
  };
  const lastHop = Array.isArray(d.hopFailures) && d.hopFailures.length > 0 ? d.hopFailures[d.hopFailures.length - 1] : undefined;
  const mx = typeof d.mx === 'string' ? d.mx : typeof lastHop?.host === 'string' ? lastHop.host : undefined;
  const ip = typeof d.ip === 'string' ? d.ip : typeof lastHop?.address === 'string' ? lastHop.address : undefined;
  if (mx !== undefined) out.mx = mx;
  if (ip !== undefined) out.ip = ip;
  if (d.policy && typeof d.policy.level === 'string' && typeof d.policy.source === 'string') {
    out.policy = { level: d.policy.level, source: d.policy.source };
  }
  const tls = d.tls && typeof d.tls === 'object' ? d.tls : lastHop?.tls;
  if (tls && typeof tls === 'object') {
    const t: EventTlsFacts = { encrypted: tls.tls === true };
    if (typeof tls.protocol === 'string') t.protocol = tls.protocol;
    if (typeof tls.cipher === 'string') t.cipher = tls.cipher;
    if (typeof tls.verified === 'boolean') t.verified = tls.verified;
    if (typeof tls.verificationError === 'string') t.verificationError = tls.verificationError;
    const downgrade = tls.downgrade as { reason?: unknown } | undefined;
    if (downgrade && typeof downgrade.reason === 'string') t.downgrade = downgrade.reason;
    out.tls = t;
  }
  const reply = d.reply as { text?: unknown } | undefined;
  if (reply && typeof reply === 'object' && typeof reply.text === 'string') out.replyText = reply.text;
  return out;
}
