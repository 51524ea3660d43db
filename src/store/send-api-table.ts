// What the Mailjet-compatible send API needs from the database beyond the queue: numeric public
// message ids (one per recipient, a safe JS integer) and the Idempotency-Key records that let a
// retried request get its first answer back instead of sending again. The only SQL for them.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';

const COUNTER = 'recipient_public_id';
const RESPONSE = 'idempotency_keys.response_sealed';

/**
 * Reserves `count` consecutive public ids in the caller's transaction and returns the first.
 * A counter row rather than random ids: unique without retries, and always below 2^53, so the
 * ids stay exact in every JSON parser (Mailjet's own MessageIDs need big-number parsing).
 */
export async function allocatePublicIds(tx: SqlExecutor, count: number): Promise<number> {
  if (count <= 0) return 0;
  const row = await tx.get<{ value: number | bigint }>(`UPDATE counters SET value = value + ? WHERE name = ? RETURNING value`, [count, COUNTER]);
  if (!row) throw new Error('counters: recipient_public_id is missing (migration 4 not applied)');
  const last = Number(row.value);
  if (!Number.isSafeInteger(last)) throw new Error('counters: recipient_public_id left the safe integer range');
  return last - count + 1;
}

export interface RecipientRef {
  recipientId: string;
  messageId: string;
  publicId: number | null;
}

/** The outcome of claiming an Idempotency-Key for a request. */
export type IdempotencyClaim =
  | { kind: 'claimed' }
  /** The same key was used before with the same request: its answer, to send back as it was. */
  | { kind: 'replay'; status: number; body: Buffer }
  /** The same key was used before with a different request. */
  | { kind: 'mismatch' }
  /** The first request with this key has not answered yet (or its process died while it ran). */
  | { kind: 'in-progress'; since: number };

export class SendApiTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  // ---- public ids --------------------------------------------------------------------------

  async byPublicId(publicId: number): Promise<RecipientRef | null> {
    const row = await this.#engine.get<{ id: string; message_id: string; public_id: number | null }>(
      'SELECT id, message_id, public_id FROM recipients WHERE public_id = ?',
      [publicId],
    );
    return row ? { recipientId: row.id, messageId: row.message_id, publicId: row.public_id === null ? null : Number(row.public_id) } : null;
  }

  async byRecipientId(recipientId: string): Promise<RecipientRef | null> {
    const row = await this.#engine.get<{ id: string; message_id: string; public_id: number | null }>(
      'SELECT id, message_id, public_id FROM recipients WHERE id = ?',
      [recipientId],
    );
    return row ? { recipientId: row.id, messageId: row.message_id, publicId: row.public_id === null ? null : Number(row.public_id) } : null;
  }

  /** recipient id → public id, for the recipients of one message. */
  async publicIdsOf(messageId: string): Promise<Map<string, number>> {
    const rows = await this.#engine.all<{ id: string; public_id: number | null }>(
      'SELECT id, public_id FROM recipients WHERE message_id = ? ORDER BY position',
      [messageId],
    );
    return new Map(rows.filter((r) => r.public_id !== null).map((r) => [r.id, Number(r.public_id)]));
  }

  // ---- idempotency keys --------------------------------------------------------------------

  /**
   * Claims `id` (a keyed hash of API key and Idempotency-Key) for a request, in one transaction:
   * exactly one of several concurrent requests with the same key gets `claimed`; the others see
   * it `in-progress`, or its answer once it has one. Expired records are dropped on the way.
   */
  async claimIdempotencyKey(claim: { id: string; apiKeyId: string; requestHash: string; now: number; ttlMs: number }): Promise<IdempotencyClaim> {
    return this.#engine.transaction(async (tx) => {
      await tx.run('DELETE FROM idempotency_keys WHERE expires_at <= ?', [claim.now]);
      const { changes } = await tx.run(
        `INSERT INTO idempotency_keys (id, api_key_id, request_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING`,
        [claim.id, claim.apiKeyId, claim.requestHash, claim.now, claim.now + claim.ttlMs],
      );
      if (changes === 1) return { kind: 'claimed' } as const;
      const row = await tx.get<{ request_hash: string; response_status: number | null; response_sealed: Uint8Array | null; created_at: number }>(
        'SELECT request_hash, response_status, response_sealed, created_at FROM idempotency_keys WHERE id = ?',
        [claim.id],
      );
      if (!row) throw new Error('idempotency key vanished inside its transaction');
      if (row.request_hash !== claim.requestHash) return { kind: 'mismatch' } as const;
      if (row.response_status === null || row.response_sealed === null) return { kind: 'in-progress', since: Number(row.created_at) } as const;
      return { kind: 'replay', status: Number(row.response_status), body: this.#sealer.open(row.response_sealed, RESPONSE) } as const;
    });
  }

  /** Stores the answer of a claimed key, durably, before the client is sent it. */
  async completeIdempotencyKey(id: string, status: number, body: Buffer): Promise<void> {
    await this.#engine.transaction((tx) =>
      tx.run('UPDATE idempotency_keys SET response_status = ?, response_sealed = ? WHERE id = ?', [status, this.#sealer.seal(body, RESPONSE), id]),
    );
  }

  /** Gives a claimed key back (its request failed before doing anything), so a retry runs anew. */
  async releaseIdempotencyKey(id: string): Promise<void> {
    await this.#engine.transaction((tx) => tx.run('DELETE FROM idempotency_keys WHERE id = ? AND response_status IS NULL', [id]));
  }
}
