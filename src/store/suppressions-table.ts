// The suppression list: addresses that hard-bounced (or an operator added), keyed by the
// address's keyed hash so the list can be checked without opening anything; the reason is sealed.
// Intake consults it before queueing, the queue adds to it in the same transaction as the verdict
// that caused it (QueueTable.completeAttempts), a remote bounce likewise (Store.recordRemoteBounce).
// May import: ../sealing, ./engine, ./sealed-columns.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { sealedContext } from './sealed-columns.ts';

export interface SuppressionEntry {
  address: string;
  reason: string;
  /** The message whose bounce caused it, if any. */
  messageId: string | null;
  at: number;
}

const REASON = sealedContext('suppressions', 'reason_sealed');

export class SuppressionsTable {
  #engine: SqlEngine;
  #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  async add(entry: SuppressionEntry): Promise<void> {
    await this.#engine.transaction((tx) => this.addIn(tx, entry));
  }

  /** Adds inside the caller's transaction; an address already listed keeps its first reason. */
  async addIn(tx: SqlExecutor, entry: SuppressionEntry): Promise<void> {
    const hash = this.#sealer.addressHash(entry.address);
    const exists = await tx.get('SELECT address_hash FROM suppressions WHERE address_hash = ?', [hash]);
    if (exists) return;
    await tx.run('INSERT INTO suppressions (address_hash, reason_sealed, source_message_id, created_at) VALUES (?, ?, ?, ?)', [
      hash,
      this.#sealer.seal(entry.reason, REASON),
      entry.messageId,
      entry.at,
    ]);
  }

  /** The entries among these addresses, keyed by the address as given. */
  async find(addresses: string[]): Promise<Map<string, { reason: string; since: string }>> {
    const found = new Map<string, { reason: string; since: string }>();
    for (const address of addresses) {
      const row = await this.#engine.get<{ reason_sealed: Uint8Array; created_at: number }>(
        'SELECT reason_sealed, created_at FROM suppressions WHERE address_hash = ?',
        [this.#sealer.addressHash(address)],
      );
      if (row) {
        found.set(address, {
          reason: this.#sealer.openString(row.reason_sealed, REASON),
          since: new Date(Number(row.created_at)).toISOString(),
        });
      }
    }
    return found;
  }

  async remove(address: string): Promise<boolean> {
    const { changes } = await this.#engine.run('DELETE FROM suppressions WHERE address_hash = ?', [this.#sealer.addressHash(address)]);
    return changes > 0;
  }
}
