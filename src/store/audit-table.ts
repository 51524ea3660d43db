// The audit log: who changed what, when. Append-only from the application's side; the detail is
// sealed because it may name people or addresses.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
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
    return this.#engine.transaction((tx) => this.appendIn(tx, entry));
  }

  /** Appends inside the caller's transaction, so a change and its audit line commit together. */
  async appendIn(tx: SqlExecutor, entry: AuditEntry): Promise<string> {
    const at = entry.at ?? Date.now();
    const id = uuidv7(at);
    await tx.run('INSERT INTO audit_log (id, at, actor, action, subject, detail_sealed) VALUES (?, ?, ?, ?, ?, ?)', [
      id,
      at,
      entry.actor,
      entry.action,
      entry.subject,
      entry.detail ? this.#sealer.seal(JSON.stringify(entry.detail), DETAIL) : null,
    ]);
    return id;
  }

  /**
   * The latest entries (the newest `limit`, 100 by default), shown in time order; optionally only
   * those about one subject, of one action, or since a time.
   */
  async list(options: { subject?: string; action?: string; since?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
    const where: string[] = [];
    const params: Array<string | number> = [];
    if (options.subject !== undefined) (where.push('subject = ?'), params.push(options.subject));
    if (options.action !== undefined) (where.push('action = ?'), params.push(options.action));
    if (options.since !== undefined) (where.push('at >= ?'), params.push(options.since));
    const rows = (
      await this.#engine.all<{
        id: string;
        at: number;
        actor: string;
        action: string;
        subject: string | null;
        detail_sealed: Uint8Array | null;
      }>(`SELECT * FROM audit_log${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`, [...params, limit])
    ).reverse();
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
