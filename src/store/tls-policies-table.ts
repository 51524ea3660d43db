// The operator's TLS policy table: a level per destination key (`example.com`, `.example.com`),
// set at run time beside LACRE_TLS_POLICIES. Part of the store: the only SQL for this table, and
// only storage: keys, levels and notes arrive checked and normalised by
// ../policy-lookup/static-policy-input.ts. The note is sealed (free text may name people); keys
// and levels are configuration.
import type { Sealer } from '../sealing/sealer.ts';
import type { StaticTlsLevel } from '../tls-policy/levels.ts';
import type { SqlEngine } from './engine.ts';

export interface TlsPolicyRecord {
  /** `example.com`, or `.example.com` for every subdomain of example.com. */
  domain: string;
  level: StaticTlsLevel;
  note: string | null;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  updatedBy: string;
}

const NOTE = 'tls_policies.note_sealed';

interface Row {
  domain: string;
  level: StaticTlsLevel;
  created_at: number;
  created_by: string;
  updated_at: number;
  updated_by: string;
  note_sealed: Uint8Array | null;
}

export class TlsPoliciesTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  /**
   * Sets the level of a normalised key, replacing any level it had (the first creator and time
   * are kept). Returns the entry and the one it replaced.
   */
  async set(
    key: string,
    level: StaticTlsLevel,
    actor: string,
    note: string | null = null,
    at: number = Date.now(),
  ): Promise<{ entry: TlsPolicyRecord; previous: TlsPolicyRecord | null }> {
    const sealedNote = note === null ? null : this.#sealer.seal(note, NOTE);
    const { previous, row } = await this.#engine.transaction(async (tx) => {
      const previous = await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]);
      if (previous) {
        await tx.run('UPDATE tls_policies SET level = ?, updated_at = ?, updated_by = ?, note_sealed = ? WHERE domain = ?', [
          level,
          at,
          actor,
          sealedNote,
          key,
        ]);
      } else {
        await tx.run(
          `INSERT INTO tls_policies (domain, level, created_at, created_by, updated_at, updated_by, note_sealed)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
          [key, level, at, actor, at, actor, sealedNote],
        );
      }
      return { previous, row: (await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]))! };
    });
    return { entry: this.#view(row), previous: previous ? this.#view(previous) : null };
  }

  /** Removes a normalised key; returns the entry it held, or null when the table had none. */
  async remove(key: string): Promise<TlsPolicyRecord | null> {
    const row = await this.#engine.transaction(async (tx) => {
      const row = await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]);
      if (row) await tx.run('DELETE FROM tls_policies WHERE domain = ?', [key]);
      return row;
    });
    return row ? this.#view(row) : null;
  }

  async get(key: string): Promise<TlsPolicyRecord | null> {
    const row = await this.#engine.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]);
    return row ? this.#view(row) : null;
  }

  async list(): Promise<TlsPolicyRecord[]> {
    const rows = await this.#engine.all<Row>('SELECT * FROM tls_policies ORDER BY domain');
    return rows.map((row) => this.#view(row));
  }

  /** Only the keys and levels: what deciding a policy needs, without opening every note. */
  async levels(): Promise<Map<string, StaticTlsLevel>> {
    const rows = await this.#engine.all<{ domain: string; level: StaticTlsLevel }>('SELECT domain, level FROM tls_policies');
    return new Map(rows.map((r) => [r.domain, r.level]));
  }

  #view(row: Row): TlsPolicyRecord {
    return {
      domain: row.domain,
      level: row.level,
      note: row.note_sealed ? this.#sealer.openString(row.note_sealed, NOTE) : null,
      createdAt: new Date(Number(row.created_at)).toISOString(),
      createdBy: row.created_by,
      updatedAt: new Date(Number(row.updated_at)).toISOString(),
      updatedBy: row.updated_by,
    };
  }
}
