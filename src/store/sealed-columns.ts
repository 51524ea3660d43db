// The registry of sealed columns and the maintenance that walks it. Every column that holds a
// Sealer-sealed value is listed here with its key column, and each value is bound to the context
// `table.column` (see Sealer.seal), so a value moved to another column does not open. Key
// rotation (`lacre keys rotate-master`, docs/sealing.md) counts and re-seals through this list:
// a sealed column missing from it would keep its old key id forever.
import { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';

/** Every sealed column, with the context its values are bound to (see Sealer.seal). */
export const SEALED_COLUMNS = [
  { table: 'settings', key: 'name', column: 'value_sealed' },
  { table: 'messages', key: 'id', column: 'sender_sealed' },
  { table: 'messages', key: 'id', column: 'metadata_sealed' },
  { table: 'message_contents', key: 'message_id', column: 'content_sealed' },
  { table: 'recipients', key: 'id', column: 'reason_sealed' },
  { table: 'recipients', key: 'id', column: 'address_sealed' },
  { table: 'attempts', key: 'id', column: 'detail_sealed' },
  { table: 'suppressions', key: 'address_hash', column: 'reason_sealed' },
  { table: 'suppressions', key: 'address_hash', column: 'address_sealed' },
  { table: 'domains', key: 'name', column: 'check_sealed' },
  { table: 'dkim_keys', key: 'id', column: 'private_key_sealed' },
  { table: 'audit_log', key: 'id', column: 'detail_sealed' },
  { table: 'idempotency_keys', key: 'id', column: 'response_sealed' },
  { table: 'events', key: 'id', column: 'payload_sealed' },
  { table: 'webhooks', key: 'id', column: 'url_sealed' },
  { table: 'webhooks', key: 'id', column: 'secret_sealed' },
  { table: 'tls_policies', key: 'domain', column: 'note_sealed' },
  { table: 'mta_sts_policies', key: 'domain_hash', column: 'policy_sealed' },
  { table: 'tlsrpt_policies', key: 'id', column: 'policy_sealed' },
  { table: 'tlsrpt_failures', key: 'id', column: 'detail_sealed' },
  { table: 'tlsrpt_reports', key: 'id', column: 'detail_sealed' },
] as const;

export type SealedColumn = (typeof SEALED_COLUMNS)[number];

/** The context a column's values are sealed under: `table.column`. */
export const sealedContext = (table: string, column: string): string => `${table}.${column}`;

/** Rows re-sealed per transaction: small, so a running server is never blocked for long. */
const BATCH = 200;

export class SealedColumns {
  #engine: SqlEngine;
  #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  /** How many stored values each key id seals. */
  async valuesByKey(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    await this.#eachValue(async (_tx, _col, _key, value) => {
      const id = Sealer.keyIdOf(value);
      counts[id] = (counts[id] ?? 0) + 1;
    });
    return counts;
  }

  /**
   * Re-seals every value not sealed under the current key, in small transactions so a running
   * server is never blocked for long; safe to interrupt and run again.
   */
  async resealAll(): Promise<number> {
    let resealed = 0;
    await this.#eachValue(async (tx, col, key, value) => {
      const next = this.#sealer.reseal(value, sealedContext(col.table, col.column));
      if (!next) return;
      await tx.run(`UPDATE ${col.table} SET ${col.column} = ? WHERE ${col.key} = ?`, [next, key]);
      resealed++;
    });
    return resealed;
  }

  /** Visits every sealed value, column by column, in key order, one page per transaction. */
  async #eachValue(visit: (tx: SqlExecutor, col: SealedColumn, key: string, value: Uint8Array) => Promise<void>): Promise<void> {
    for (const col of SEALED_COLUMNS) {
      let after = '';
      // Bounded by the table: each page starts past the last key of the one before.
      for (;;) {
        const rows = await this.#engine.transaction(async (tx) => {
          const page = await tx.all<{ k: string; v: Uint8Array }>(
            `SELECT ${col.key} AS k, ${col.column} AS v FROM ${col.table}
              WHERE ${col.key} > ? AND ${col.column} IS NOT NULL ORDER BY ${col.key} LIMIT ?`,
            [after, BATCH],
          );
          for (const row of page) await visit(tx, col, row.k, row.v);
          return page;
        });
        if (rows.length < BATCH) break;
        after = rows[rows.length - 1].k;
      }
    }
  }
}
