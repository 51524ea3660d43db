// The suppression list: addresses that hard-bounced (or an operator added), keyed by the
// address's keyed hash so the list can be checked without opening anything; the reason is sealed.
// Intake consults it before queueing, the queue adds to it in the same transaction as the verdict
// that caused it (QueueTable.completeAttempts), a remote bounce likewise (Store.recordRemoteBounce).
import type { Sealer } from '../sealing/sealer.ts';
import { normalizeAddress } from '../mail/address.ts';
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
// Kept beside the hash so an operator can list the addresses (lacre suppressions list); sealed like every address at rest.
const ADDRESS = sealedContext('suppressions', 'address_sealed');

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
    await tx.run('INSERT INTO suppressions (address_hash, reason_sealed, source_message_id, created_at, address_sealed) VALUES (?, ?, ?, ?, ?)', [
      hash,
      this.#sealer.seal(entry.reason, REASON),
      entry.messageId,
      entry.at,
      this.#sealer.seal(normalizeAddress(entry.address), ADDRESS),
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
    return this.#engine.transaction((tx) => this.removeIn(tx, address));
  }

  async removeIn(tx: SqlExecutor, address: string): Promise<boolean> {
    const { changes } = await tx.run('DELETE FROM suppressions WHERE address_hash = ?', [this.#sealer.addressHash(address)]);
    return changes > 0;
  }

  /** Suppressed addresses, newest first; entries older than the address column show their hash. */
  async list(options: { limit?: number; offset?: number } = {}): Promise<{ total: number; items: SuppressionListing[] }> {
    const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
    const offset = Math.max(options.offset ?? 0, 0);
    const [count, rows] = await Promise.all([
      this.#engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM suppressions'),
      this.#engine.all<{ address_hash: string; address_sealed: Uint8Array | null; reason_sealed: Uint8Array; source_message_id: string | null; created_at: number }>(
        'SELECT address_hash, address_sealed, reason_sealed, source_message_id, created_at FROM suppressions ORDER BY created_at DESC, address_hash LIMIT ? OFFSET ?',
        [limit, offset],
      ),
    ]);
    const s = this.#sealer;
    return {
      total: Number(count?.n ?? 0),
      items: rows.map((r) => ({
        address: r.address_sealed ? s.openString(r.address_sealed, ADDRESS) : null,
        addressHash: r.address_hash,
        reason: s.openString(r.reason_sealed, REASON),
        messageId: r.source_message_id,
        since: new Date(Number(r.created_at)).toISOString(),
      })),
    };
  }
}

export interface SuppressionListing {
  /** null for entries made before addresses were kept beside the hash. */
  address: string | null;
  addressHash: string;
  reason: string;
  /** The message whose bounce caused it, or null when an operator added it. */
  messageId: string | null;
  since: string;
}
