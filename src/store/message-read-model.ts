// The message read model: what `lacre messages show`, the HTTP message routes and the tests see of a
// message — its recipients with their states and every attempt, opened from the sealed columns and
// with the attempt detail and metadata checked by their schemas (record-schemas.ts) — and the
// queue's counts by state. Reads only; the queue's writes are in queue-table.ts.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';
import { readAttemptDetail, readMessageMetadata } from './record-schemas.ts';
import { sealedContext as ctx } from './sealed-columns.ts';
import type { AttemptView, MessageView, RecipientState, RecipientView } from './records.ts';

export class MessageReadModel {
  #engine: SqlEngine;
  #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  async countByState(): Promise<Record<RecipientState, number>> {
    const counts: Record<RecipientState, number> = { queued: 0, deferred: 0, delivered: 0, bounced: 0, expired: 0, failed: 0 };
    const rows = await this.#engine.all<{ state: RecipientState; n: number }>('SELECT state, COUNT(*) AS n FROM recipients GROUP BY state');
    for (const row of rows) counts[row.state] = Number(row.n);
    return counts;
  }

  /**
   * When the oldest message that still has a queued or deferred recipient was accepted, or null
   * when nothing waits (the metrics' oldest queued age, postfix_exporter's queue age).
   */
  async oldestPendingCreatedAt(): Promise<number | null> {
    const row = await this.#engine.get<{ at: number | null }>(
      "SELECT MIN(m.created_at) AS at FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.state IN ('queued', 'deferred')",
    );
    return row?.at == null ? null : Number(row.at);
  }

  async getMessage(id: string): Promise<MessageView | null> {
    const s = this.#sealer;
    const message = await this.#engine.get<MessageRow>('SELECT * FROM messages WHERE id = ?', [id]);
    if (!message) return null;
    const recipients = await this.#engine.all<RecipientRow>('SELECT * FROM recipients WHERE message_id = ? ORDER BY position', [id]);
    const attempts = await this.#engine.all<AttemptRow>('SELECT * FROM attempts WHERE message_id = ? ORDER BY started_at, id', [id]);
    const iso = (ms: number | null) => (ms === null ? null : new Date(Number(ms)).toISOString());
    const attemptView = (a: AttemptRow): AttemptView => ({
      id: a.id,
      worker: a.worker,
      startedAt: iso(a.started_at)!,
      endedAt: iso(a.ended_at),
      outcome: a.outcome,
      replyCode: a.reply_code === null ? null : Number(a.reply_code),
      enhancedCode: a.enhanced_code,
      detail: a.detail_sealed ? readAttemptDetail(s.openString(a.detail_sealed, ctx('attempts', 'detail_sealed')), a.id) : null,
    });
    const recipientViews: RecipientView[] = recipients.map((r) => ({
      id: r.id,
      address: s.openString(r.address_sealed, ctx('recipients', 'address_sealed')),
      state: r.state,
      attemptCount: Number(r.attempt_count),
      // A held recipient has no next attempt until it is released.
      nextAttemptAt: (r.state === 'queued' || r.state === 'deferred') && r.held_at === null ? iso(r.next_attempt_at) : null,
      heldAt: iso(r.held_at),
      reason: r.reason_sealed ? s.openString(r.reason_sealed, ctx('recipients', 'reason_sealed')) : null,
      updatedAt: iso(r.updated_at)!,
      finalizedAt: iso(r.finalized_at),
      attempts: attempts.filter((a) => a.recipient_id === r.id).map(attemptView),
    }));
    return {
      id: message.id,
      createdAt: iso(message.created_at)!,
      expiresAt: iso(message.expires_at)!,
      source: message.source,
      sender: message.sender_sealed ? s.openString(message.sender_sealed, ctx('messages', 'sender_sealed')) : null,
      size: Number(message.content_size),
      requireTls: Number(message.require_tls) === 1,
      metadata: readMessageMetadata(s.openString(message.metadata_sealed, ctx('messages', 'metadata_sealed')), message.id),
      recipients: recipientViews,
    };
  }
}

interface MessageRow {
  id: string;
  created_at: number;
  expires_at: number;
  source: string;
  sender_sealed: Uint8Array | null;
  metadata_sealed: Uint8Array;
  content_size: number;
  require_tls: number;
}

interface RecipientRow {
  id: string;
  address_sealed: Uint8Array;
  state: RecipientState;
  attempt_count: number;
  next_attempt_at: number;
  held_at: number | null;
  reason_sealed: Uint8Array | null;
  updated_at: number;
  finalized_at: number | null;
}

interface AttemptRow {
  id: string;
  recipient_id: string;
  worker: string;
  started_at: number;
  ended_at: number | null;
  outcome: AttemptView['outcome'];
  reply_code: number | null;
  enhanced_code: string | null;
  detail_sealed: Uint8Array | null;
}
