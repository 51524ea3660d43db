// API keys: the only SQL for the api_keys table. The secret is stored only as a slow hash
// (computed by ../access/secret-hash.ts before it gets here), never sealed or reversible; names and
// scopes are operator configuration, kept in plaintext. Part of the store.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';

export interface NewApiKey {
  /** The public API key (Basic auth user name). */
  id: string;
  name: string;
  scopes: string[];
  /** The secret key's slow hash, as produced by hashSecret. */
  secretHash: string;
  createdAt: number;
}

export interface ApiKeyRecord extends NewApiKey {
  disabledAt: number | null;
  lastUsedAt: number | null;
}

/** last_used_at is written at most this often per key: it is for operators, not for auditing. */
export const TOUCH_INTERVAL_MS = 60_000;

interface ApiKeyRow {
  id: string;
  name: string;
  scopes: string;
  secret_hash: string;
  created_at: number;
  disabled_at: number | null;
  last_used_at: number | null;
}

export class ApiKeysTable {
  readonly #engine: SqlEngine;

  // The sealer is taken like the other tables' but unused: nothing in this table is sealed.
  constructor(engine: SqlEngine, _sealer: Sealer) {
    this.#engine = engine;
  }

  async insert(key: NewApiKey): Promise<void> {
    await this.#engine.transaction((tx) =>
      tx.run('INSERT INTO api_keys (id, name, scopes, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)', [
        key.id,
        key.name,
        key.scopes.join(','),
        key.secretHash,
        key.createdAt,
      ]),
    );
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const row = await this.#engine.get<ApiKeyRow>('SELECT * FROM api_keys WHERE id = ?', [id]);
    return row ? view(row) : null;
  }

  /** Every key, oldest first. */
  async list(): Promise<ApiKeyRecord[]> {
    const rows = await this.#engine.all<ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at, id');
    return rows.map(view);
  }

  /** Disables the key at `at`, or enables it again with null. False when there is no such key. */
  async setDisabled(id: string, at: number | null): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) => tx.run('UPDATE api_keys SET disabled_at = ? WHERE id = ?', [at, id]));
    return changes > 0;
  }

  async delete(id: string): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) => tx.run('DELETE FROM api_keys WHERE id = ?', [id]));
    return changes > 0;
  }

  /**
   * Records that the key was used at `at`, unless that was already recorded less than
   * TOUCH_INTERVAL_MS before (so busy keys cost one write a minute, not one per request). Not
   * durable: a lost last-used time costs nothing. True when the row was written.
   */
  async touch(id: string, at: number): Promise<boolean> {
    const { changes } = await this.#engine.transaction(
      (tx) =>
        tx.run('UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)', [
          at,
          id,
          at - TOUCH_INTERVAL_MS,
        ]),
      { durable: false },
    );
    return changes > 0;
  }
}

function view(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    scopes: row.scopes === '' ? [] : row.scopes.split(','),
    secretHash: row.secret_hash,
    createdAt: Number(row.created_at),
    disabledAt: row.disabled_at === null ? null : Number(row.disabled_at),
    lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
  };
}
