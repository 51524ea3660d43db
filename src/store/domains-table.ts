// Sender domains and their DKIM keys. Private keys are sealed; public keys and selectors are
// what the world sees in DNS anyway. Part of the store: the only SQL for these tables.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';

export type DkimAlgorithm = 'ed25519' | 'rsa';
export type DkimKeyState = 'pending' | 'active' | 'retiring' | 'retired';
export type DomainStatus = 'pending' | 'verified';

export interface NewDkimKey {
  id: string;
  selector: string;
  algorithm: DkimAlgorithm;
  /** The `p=` value of the DKIM record (base64). */
  publicKey: string;
  privateKeyPem: string;
  state: DkimKeyState;
  createdAt: number;
}

export interface DkimKeyRecord {
  id: string;
  selector: string;
  algorithm: DkimAlgorithm;
  publicKey: string;
  state: DkimKeyState;
  createdAt: number;
  activatedAt: number | null;
  retireAt: number | null;
}

export interface DomainRecord {
  name: string;
  createdAt: number;
  status: DomainStatus;
  verifiedAt: number | null;
  /** `dns`, or `force` when an operator marked it verified without DNS. */
  verifiedBy: string | null;
  checkedAt: number | null;
  lastCheck: unknown;
  keys: DkimKeyRecord[];
}

export interface SigningKey {
  selector: string;
  algorithm: DkimAlgorithm;
  privateKeyPem: string;
}

export class DuplicateError extends Error {
  override name = 'DuplicateError';
}

const PRIVATE_KEY = 'dkim_keys.private_key_sealed';
const CHECK = 'domains.check_sealed';

interface DomainRow {
  name: string;
  created_at: number;
  status: DomainStatus;
  verified_at: number | null;
  verified_by: string | null;
  checked_at: number | null;
  check_sealed: Uint8Array | null;
}

interface KeyRow {
  id: string;
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  public_key: string;
  state: DkimKeyState;
  created_at: number;
  activated_at: number | null;
  retire_at: number | null;
}

export class DomainsTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  async insert(domain: { name: string; createdAt: number; keys: NewDkimKey[] }): Promise<void> {
    await this.#engine.transaction(async (tx) => {
      const existing = await tx.get('SELECT name FROM domains WHERE name = ?', [domain.name]);
      if (existing) throw new DuplicateError(`domain ${domain.name} is already registered`);
      await tx.run('INSERT INTO domains (name, created_at, status) VALUES (?, ?, ?)', [domain.name, domain.createdAt, 'pending']);
      await this.#insertKeys(tx, domain.name, domain.keys);
    });
  }

  /** Adds a new pending key pair, dropping any pending pair it supersedes. */
  async replacePending(name: string, keys: NewDkimKey[]): Promise<void> {
    await this.#engine.transaction(async (tx) => {
      await tx.run(`DELETE FROM dkim_keys WHERE domain = ? AND state = 'pending'`, [name]);
      await this.#insertKeys(tx, name, keys);
    });
  }

  async #insertKeys(tx: SqlExecutor, domain: string, keys: NewDkimKey[]): Promise<void> {
    for (const key of keys) {
      await tx.run(
        `INSERT INTO dkim_keys (id, domain, selector, algorithm, public_key, private_key_sealed, state, created_at, activated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          key.id,
          domain,
          key.selector,
          key.algorithm,
          key.publicKey,
          this.#sealer.seal(key.privateKeyPem, PRIVATE_KEY),
          key.state,
          key.createdAt,
          key.state === 'active' ? key.createdAt : null,
        ],
      );
    }
  }

  async get(name: string): Promise<DomainRecord | null> {
    const row = await this.#engine.get<DomainRow>('SELECT * FROM domains WHERE name = ?', [name]);
    if (!row) return null;
    const keys = await this.#engine.all<KeyRow>(
      'SELECT id, domain, selector, algorithm, public_key, state, created_at, activated_at, retire_at FROM dkim_keys WHERE domain = ? ORDER BY created_at, algorithm',
      [name],
    );
    return this.#view(row, keys);
  }

  async list(): Promise<DomainRecord[]> {
    const rows = await this.#engine.all<DomainRow>('SELECT * FROM domains ORDER BY name');
    const keys = await this.#engine.all<KeyRow>(
      'SELECT id, domain, selector, algorithm, public_key, state, created_at, activated_at, retire_at FROM dkim_keys ORDER BY created_at, algorithm',
    );
    return rows.map((row) => this.#view(row, keys.filter((k) => k.domain === row.name)));
  }

  async remove(name: string): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) => tx.run('DELETE FROM domains WHERE name = ?', [name]));
    return changes > 0;
  }

  /** The private keys a domain signs with now (state `active`). */
  async signingKeys(name: string): Promise<SigningKey[]> {
    const rows = await this.#engine.all<{ selector: string; algorithm: DkimAlgorithm; private_key_sealed: Uint8Array }>(
      `SELECT selector, algorithm, private_key_sealed FROM dkim_keys
        WHERE domain = ? AND state = 'active' AND private_key_sealed IS NOT NULL ORDER BY algorithm`,
      [name],
    );
    return rows.map((r) => ({
      selector: r.selector,
      algorithm: r.algorithm,
      privateKeyPem: this.#sealer.openString(r.private_key_sealed, PRIVATE_KEY),
    }));
  }

  /** Stores a verification report and the domain status it leads to. */
  async recordCheck(name: string, check: { at: number; report: unknown; status: DomainStatus; verifiedBy: string | null }): Promise<void> {
    await this.#engine.transaction((tx) =>
      tx.run(
        `UPDATE domains SET checked_at = ?, check_sealed = ?, status = ?,
           verified_at = CASE WHEN ? = 'verified' AND status <> 'verified' THEN ? WHEN ? = 'verified' THEN verified_at ELSE NULL END,
           verified_by = ?
         WHERE name = ?`,
        [
          check.at,
          this.#sealer.seal(JSON.stringify(check.report), CHECK),
          check.status,
          check.status,
          check.at,
          check.status,
          check.verifiedBy,
          name,
        ],
      ),
    );
  }

  /**
   * Switches signing to the given pending keys: they become active, and the keys active until now
   * start retiring (still published, no longer used) until `retireAt`.
   */
  async activateKeys(name: string, keyIds: string[], at: number, retireAt: number): Promise<void> {
    if (keyIds.length === 0) return;
    await this.#engine.transaction(async (tx) => {
      await tx.run(`UPDATE dkim_keys SET state = 'retiring', retire_at = ? WHERE domain = ? AND state = 'active'`, [retireAt, name]);
      for (const id of keyIds) {
        await tx.run(`UPDATE dkim_keys SET state = 'active', activated_at = ? WHERE domain = ? AND id = ? AND state = 'pending'`, [
          at,
          name,
          id,
        ]);
      }
    });
  }

  /** Retires keys whose grace period ended: their private keys are erased. Returns how many. */
  async retireDue(now: number): Promise<number> {
    const { changes } = await this.#engine.transaction((tx) =>
      tx.run(`UPDATE dkim_keys SET state = 'retired', private_key_sealed = NULL WHERE state = 'retiring' AND retire_at <= ?`, [now]),
    );
    return changes;
  }

  #view(row: DomainRow, keys: KeyRow[]): DomainRecord {
    return {
      name: row.name,
      createdAt: row.created_at,
      status: row.status,
      verifiedAt: row.verified_at,
      verifiedBy: row.verified_by,
      checkedAt: row.checked_at,
      lastCheck: row.check_sealed ? JSON.parse(this.#sealer.openString(row.check_sealed, CHECK)) : null,
      keys: keys.map((k) => ({
        id: k.id,
        selector: k.selector,
        algorithm: k.algorithm,
        publicKey: k.public_key,
        state: k.state,
        createdAt: k.created_at,
        activatedAt: k.activated_at,
        retireAt: k.retire_at,
      })),
    };
  }
}
