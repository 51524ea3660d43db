// The audit log: who changed what, when. Append-only from the application's side; the detail is
// sealed because it may name people or addresses.
// May import: ../sealing, ./engine, ./ids.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';
import { uuidv7 } from './ids.ts';

export interface AuditEntry {
  /** Who: `cli:<os user>`, `key:<api key id>`, `system`. */
  actor: string;
  /** What, as `noun.verb`: `domain.add`, `domain.force-verify`, `key.create`… */
  action: string;
  /** What it was done to (a domain name, a key id). */
  subject: string | null;
  detail?: Record<string, unknown>;
  at?: number;
}

export interface AuditRecord {
  id: string;
  at: string;
  actor: string;
  action: string;
  subject: string | null;
  detail: Record<string, unknown> | null;
}

const DETAIL = 'audit_log.detail_sealed';

export class AuditTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  async append(entry: AuditEntry): Promise<string> {
    const at = entry.at ?? Date.now();
    const id = uuidv7(at);
    await this.#engine.transaction((tx) =>
      tx.run('INSERT INTO audit_log (id, at, actor, action, subject, detail_sealed) VALUES (?, ?, ?, ?, ?, ?)', [
        id,
        at,
        entry.actor,
        entry.action,
        entry.subject,
        entry.detail ? this.#sealer.seal(JSON.stringify(entry.detail), DETAIL) : null,
      ]),
    );
    return id;
  }

  /** Entries in time order, optionally only those about one subject. */
  async list(options: { subject?: string; limit?: number } = {}): Promise<AuditRecord[]> {
    const limit = Math.min(options.limit ?? 100, 1000);
    const rows = await this.#engine.all<{
      id: string;
      at: number;
      actor: string;
      action: string;
      subject: string | null;
      detail_sealed: Uint8Array | null;
    }>(
      options.subject === undefined
        ? 'SELECT * FROM audit_log ORDER BY id LIMIT ?'
        : 'SELECT * FROM audit_log WHERE subject = ? ORDER BY id LIMIT ?',
      options.subject === undefined ? [limit] : [options.subject, limit],
    );
    return rows.map((r) => ({
      id: r.id,
      at: new Date(r.at).toISOString(),
      actor: r.actor,
      action: r.action,
      subject: r.subject,
      detail: r.detail_sealed ? JSON.parse(this.#sealer.openString(r.detail_sealed, DETAIL)) : null,
    }));
  }
}
