// The operator's TLS policy table: a level per destination key (`example.com`, `.example.com`),
// set at run time beside LACRE_TLS_POLICIES. Keys are normalised exactly as LACRE_TLS_POLICIES
// is, so the same domain written either way is the same key. Part of the store: the only SQL for
// this table. The note is sealed (free text may name people); keys and levels are configuration.
// May import: ../sealing, ../tls-policy/levels (key syntax, levels), ./engine.
import type { Sealer } from '../sealing/sealer.ts';
import { STATIC_TLS_LEVELS, isStaticTlsLevel, normalisePolicyKey, type StaticTlsLevel } from '../tls-policy/levels.ts';
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

/** Long enough for a ticket reference and a sentence; a note is not a document store. */
export const MAX_NOTE_LENGTH = 500;

/** Input an operator can fix: the message names the bad value and what is allowed. */
export class TlsPolicyInputError extends Error {
  override name = 'TlsPolicyInputError';
  readonly field: 'domain' | 'level' | 'note';
  constructor(field: 'domain' | 'level' | 'note', message: string) {
    super(message);
    this.field = field;
  }
}

/** The stored form of a key, or TlsPolicyInputError naming it. */
export function policyKeyOf(raw: string): string {
  const key = normalisePolicyKey(raw);
  if (key === undefined) {
    throw new TlsPolicyInputError('domain', `"${raw}" is not a domain name (use example.com, or .example.com for its subdomains)`);
  }
  return key;
}

/** The level, lower-cased, or TlsPolicyInputError naming it and the allowed levels. */
export function policyLevelOf(raw: string): StaticTlsLevel {
  const level = raw.trim().toLowerCase();
  if (!isStaticTlsLevel(level)) {
    throw new TlsPolicyInputError('level', `unknown TLS level "${raw}" (allowed levels: ${STATIC_TLS_LEVELS.join(', ')})`);
  }
  return level;
}

function noteOf(raw: string | null | undefined): string | null {
  const note = raw?.trim() ?? '';
  if (note === '') return null;
  if (note.length > MAX_NOTE_LENGTH) throw new TlsPolicyInputError('note', `the note is ${note.length} characters; at most ${MAX_NOTE_LENGTH}`);
  // Notes are printed on terminals by `lacre policy list`: no escape sequences or line breaks.
  if (/[\u0000-\u001f\u007f]/.test(note)) throw new TlsPolicyInputError('note', 'the note may not contain control characters or line breaks');
  return note;
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
   * Sets the level of a key, replacing any level it had (the first creator and time are kept).
   * Returns the entry and the one it replaced. Throws TlsPolicyInputError on a bad key, level or note.
   */
  async set(
    domainKey: string,
    level: string,
    actor: string,
    note?: string | null,
    at: number = Date.now(),
  ): Promise<{ entry: TlsPolicyRecord; previous: TlsPolicyRecord | null }> {
    const key = policyKeyOf(domainKey);
    const checkedLevel = policyLevelOf(level);
    const checkedNote = noteOf(note);
    const sealedNote = checkedNote === null ? null : this.#sealer.seal(checkedNote, NOTE);
    const { previous, row } = await this.#engine.transaction(async (tx) => {
      const previous = await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]);
      if (previous) {
        await tx.run('UPDATE tls_policies SET level = ?, updated_at = ?, updated_by = ?, note_sealed = ? WHERE domain = ?', [
          checkedLevel,
          at,
          actor,
          sealedNote,
          key,
        ]);
      } else {
        await tx.run(
          `INSERT INTO tls_policies (domain, level, created_at, created_by, updated_at, updated_by, note_sealed)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
          [key, checkedLevel, at, actor, at, actor, sealedNote],
        );
      }
      return { previous, row: (await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]))! };
    });
    return { entry: this.#view(row), previous: previous ? this.#view(previous) : null };
  }

  /** Removes a key; returns the entry it held, or null when the table had none. */
  async remove(domainKey: string): Promise<TlsPolicyRecord | null> {
    const key = policyKeyOf(domainKey);
    const row = await this.#engine.transaction(async (tx) => {
      const row = await tx.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [key]);
      if (row) await tx.run('DELETE FROM tls_policies WHERE domain = ?', [key]);
      return row;
    });
    return row ? this.#view(row) : null;
  }

  async get(domainKey: string): Promise<TlsPolicyRecord | null> {
    const row = await this.#engine.get<Row>('SELECT * FROM tls_policies WHERE domain = ?', [policyKeyOf(domainKey)]);
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
