// Delivery events: what happened to each recipient (sent, deferred, bounce, blocked, later unsub),
// recorded in the same transaction as the verdict, refusal or remote bounce that caused it, and
// fanned out into the webhook outbox (webhook_deliveries) in that same transaction, so an event is
// never lost between the verdict and the webhook. *Which* events follow is not decided here: the
// rules (EventRules, implemented by events/derive.ts and handed to the store when it opens) turn
// the facts read here into events, and this module only inserts what they return. The store keeps
// the facts of an event (sealed: they hold the address and whatever the remote server replied);
// ../events turns them into the JSON the world sees.
// Part of the store: the only SQL for the events table.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor, SqlValue } from './engine.ts';
import { uuidv7 } from './ids.ts';
import type { AttemptResult, MessageMetadata, NewMessage } from './records.ts';
import { readEventFacts, readMessageMetadata } from './record-schemas.ts';

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
  /** bounce: reported by a DSN after the recipient's server had accepted the message. */
  afterDelivery?: boolean;
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

/** A recipient as its events describe it, read in the transaction that records them. */
export interface EventRecipient {
  id: string;
  messageId: string;
  address: string;
  attemptCount: number;
  /** recipients.public_id; undefined for rows queued before it existed. */
  publicId: number | string | undefined;
}

export interface EventMessage {
  id: string;
  source: string;
  metadata: MessageMetadata;
}

/** A failed-recipient report of a DSN that came back after delivery (RFC 3464 §2.3). */
export interface RemoteBounce {
  messageId: string;
  /** The Final-Recipient address. */
  address: string;
  /** The Status field, an enhanced status code (RFC 3463), e.g. 5.1.1. */
  status: string;
  /** The Diagnostic-Code field, e.g. `smtp; 550 5.1.1 user unknown`, when there is one. */
  diagnostic: string | null;
  /** The reply code the diagnostic names (550 when it names none). */
  replyCode: number;
  /** The reason kept on the recipient. */
  reason: string;
  /** The address itself is bad: it goes on the suppression list. */
  suppress: boolean;
  at: number;
}

/**
 * Which events a verdict, a refusal at intake or a bounce after delivery causes: pure rules,
 * implemented by events/derive.ts. The store gathers their inputs and inserts their outputs.
 */
export interface EventRules {
  verdict(input: { result: AttemptResult; suppressed: boolean; recipient: EventRecipient; message: EventMessage }): NewEvent[];
  refusals(message: NewMessage): NewEvent[];
  remoteBounce(input: { bounce: RemoteBounce; recipient: EventRecipient; message: EventMessage }): NewEvent[];
}

interface RecipientFactsRow {
  id: string;
  message_id: string;
  address_sealed: Uint8Array;
  attempt_count: number;
  public_id: number | bigint | null;
  source: string;
  metadata_sealed: Uint8Array;
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
  readonly #rules: EventRules;

  constructor(engine: SqlEngine, sealer: Sealer, rules: EventRules) {
    this.#engine = engine;
    this.#sealer = sealer;
    this.#rules = rules;
  }

  /** Records an event on its own (outside a verdict), e.g. an unsubscription. */
  async append(event: NewEvent): Promise<string> {
    return this.#engine.transaction(async (tx) => (await this.insertAll(tx, [event]))[0]);
  }

  /**
   * The events a batch of verdicts causes (called by the queue inside the verdicts' transaction):
   * the recipients and their messages are read together, the rules say which events follow, and
   * those are inserted together.
   */
  async recordVerdicts(tx: SqlExecutor, verdicts: ReadonlyArray<{ result: AttemptResult; suppressed: boolean }>): Promise<void> {
    if (verdicts.length === 0) return;
    const facts = await this.#recipientFacts(tx, verdicts.map((v) => v.result.recipientId));
    const events: NewEvent[] = [];
    for (const { result, suppressed } of verdicts) {
      const found = facts.get(result.recipientId);
      if (found) events.push(...this.#rules.verdict({ result, suppressed, ...found }));
    }
    await this.insertAll(tx, events);
  }

  /** The `blocked` events of the recipients a message was refused for at intake (suppressed). */
  async recordRefused(tx: SqlExecutor, message: NewMessage): Promise<void> {
    if (!message.refused || message.refused.length === 0) return;
    await this.insertAll(tx, this.#rules.refusals(message));
  }

  /** The events of a bounce that came back after delivery, for the recipient it just bounced. */
  async recordRemoteBounce(tx: SqlExecutor, bounce: RemoteBounce, recipientId: string): Promise<void> {
    const found = (await this.#recipientFacts(tx, [recipientId])).get(recipientId);
    if (found) await this.insertAll(tx, this.#rules.remoteBounce({ bounce, ...found }));
  }

  /**
   * Inserts events and one outbox row per enabled webhook of each event's API key that
   * subscribed to its type, in the caller's transaction: a few multi-row statements however many
   * events there are. Returns the event ids, in order.
   */
  async insertAll(tx: SqlExecutor, events: readonly NewEvent[]): Promise<string[]> {
    if (events.length === 0) return [];
    // Date.now(), not event.at: the id is the paging cursor and must follow commit order.
    const rows = events.map((event) => ({ id: uuidv7(), event }));
    for (const slice of shapedSlices(rows)) {
      const params: SqlValue[] = [];
      for (const { id, event } of slice) {
        params.push(id, event.at, event.type, event.messageId, event.recipientId, event.apiKeyId, this.#sealer.seal(JSON.stringify(event.facts), PAYLOAD));
      }
      await tx.run(
        `INSERT INTO events (id, at, type, message_id, recipient_id, api_key_id, payload_sealed) VALUES ${slice.map(() => '(?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
        params,
      );
    }
    const hooks = await this.#webhooksOf(tx, events);
    const outbox: Array<{ webhookId: string; eventId: string }> = [];
    for (const { id, event } of rows) {
      for (const hook of (event.apiKeyId === null ? undefined : hooks.get(event.apiKeyId)) ?? []) {
        if (hook.types.includes(event.type)) outbox.push({ webhookId: hook.id, eventId: id });
      }
    }
    const now = Date.now();
    for (const slice of shapedSlices(outbox)) {
      const params: SqlValue[] = [];
      for (const row of slice) params.push(uuidv7(), row.webhookId, row.eventId, now, now);
      await tx.run(
        `INSERT INTO webhook_deliveries (id, webhook_id, event_id, state, attempts, created_at, next_attempt_at)
         VALUES ${slice.map(() => "(?, ?, ?, 'pending', 0, ?, ?)").join(', ')}`,
        params,
      );
    }
    return rows.map((r) => r.id);
  }

  /** The enabled webhooks of the events' API keys, by key. */
  async #webhooksOf(tx: SqlExecutor, events: readonly NewEvent[]): Promise<Map<string, Array<{ id: string; types: string[] }>>> {
    const keys = [...new Set(events.map((e) => e.apiKeyId).filter((k): k is string => k !== null))];
    const hooks = new Map<string, Array<{ id: string; types: string[] }>>();
    for (const slice of shapedSlices(keys)) {
      const found = await tx.all<{ id: string; api_key_id: string; event_types: string }>(
        `SELECT id, api_key_id, event_types FROM webhooks WHERE api_key_id IN (${slice.map(() => '?').join(', ')}) AND disabled_at IS NULL`,
        slice,
      );
      for (const hook of found) {
        const list = hooks.get(hook.api_key_id) ?? [];
        list.push({ id: hook.id, types: hook.event_types.split(',') });
        hooks.set(hook.api_key_id, list);
      }
    }
    return hooks;
  }

  /** Recipients with their messages, as events describe them, by recipient id. */
  async #recipientFacts(tx: SqlExecutor, ids: string[]): Promise<Map<string, { recipient: EventRecipient; message: EventMessage }>> {
    const out = new Map<string, { recipient: EventRecipient; message: EventMessage }>();
    // A batch is one message: its metadata is opened once, not once per recipient.
    const messages = new Map<string, EventMessage>();
    for (const slice of shapedSlices([...new Set(ids)])) {
      const rows = await tx.all<RecipientFactsRow>(
        `SELECT r.id, r.message_id, r.address_sealed, r.attempt_count, r.public_id, m.source, m.metadata_sealed
           FROM recipients r JOIN messages m ON m.id = r.message_id
          WHERE r.id IN (${slice.map(() => '?').join(', ')})`,
        slice,
      );
      for (const row of rows) {
        let message = messages.get(row.message_id);
        if (!message) {
          const metadata = readMessageMetadata(this.#sealer.openString(row.metadata_sealed, METADATA), row.message_id);
          message = { id: row.message_id, source: row.source, metadata };
          messages.set(row.message_id, message);
        }
        out.set(row.id, {
          recipient: {
            id: row.id,
            messageId: row.message_id,
            address: this.#sealer.openString(row.address_sealed, ADDRESS),
            attemptCount: Number(row.attempt_count),
            publicId: publicIdOf(row.public_id),
          },
          message,
        });
      }
    }
    return out;
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
      facts: readEventFacts(this.#sealer.openString(row.payload_sealed, PAYLOAD), row.id),
    };
  }
}

/** recipients.public_id as events carry it: a number, or its text past 2^53; absent for old rows. */
function publicIdOf(value: number | bigint | null): number | string | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  return Number(value);
}

/**
 * Splits rows into slices of 64, then 32, 16, …, 1 for the rest, so a statement with a placeholder
 * group per row has one of seven shapes (and cached plans) however many rows there are.
 */
export function* shapedSlices<T>(items: readonly T[]): Generator<T[]> {
  let i = 0;
  for (; items.length - i >= 64; i += 64) yield items.slice(i, i + 64);
  for (let size = 32; size >= 1; size >>= 1) {
    if (items.length - i < size) continue;
    yield items.slice(i, i + size);
    i += size;
  }
}
