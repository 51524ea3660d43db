// The MTA-STS policy cache (RFC 8461 §3.3, §5.1): the last policy fetched for each recipient domain,
// kept until its max_age runs out. Recipient domains are personal data, so a row is found by the
// domain's keyed hash (the same one the queue keeps) and the policy, domain name included, is
// sealed. Part of the store: the only SQL for this table.
import type { Sealer } from '../sealing/sealer.ts';
import type { StsPolicy } from '../tls-policy/evidence.ts';
import type { SqlEngine } from './engine.ts';
import { domainKey } from '../mail/domain.ts';

export interface CachedStsPolicy {
  /** Lower-case A-label. */
  domain: string;
  policy: StsPolicy;
  /** Epoch ms. */
  fetchedAt: number;
  /** fetchedAt + max_age. */
  expiresAt: number;
  /** The last fetch attempt for this domain, successful or not. */
  checkedAt: number;
}

/** What policy-lookup/ needs of the cache; MtaStsTable is the real one. */
export interface MtaStsCache {
  get(domain: string): Promise<CachedStsPolicy | undefined>;
  /** Replaces whatever was cached for the domain (RFC 8461 §3.3: a new policy fully replaces the old). */
  put(entry: { domain: string; policy: StsPolicy; fetchedAt: number; expiresAt: number }): Promise<void>;
  /** Records a failed fetch attempt without touching the cached policy. */
  markChecked(domain: string, at: number): Promise<void>;
  /** Unexpired entries (expires_at > now) expiring at or before `before`, soonest first. */
  expiring(now: number, before: number, limit: number): Promise<CachedStsPolicy[]>;
  /** Drops entries that expired at or before `now`; returns how many. */
  deleteExpired(now: number): Promise<number>;
  delete(domain: string): Promise<boolean>;
}

const POLICY = 'mta_sts_policies.policy_sealed';

interface Row {
  domain_hash: string;
  policy_sealed: Uint8Array;
  fetched_at: number | bigint;
  expires_at: number | bigint;
  checked_at: number | bigint;
}

interface Sealed {
  domain: string;
  policy: StsPolicy;
}

function isStsPolicy(value: unknown): value is StsPolicy {
  const p = value as StsPolicy;
  return (
    typeof p === 'object' &&
    p !== null &&
    typeof p.id === 'string' &&
    (p.mode === 'enforce' || p.mode === 'testing' || p.mode === 'none') &&
    Array.isArray(p.mx) &&
    p.mx.every((m) => typeof m === 'string') &&
    Number.isSafeInteger(p.maxAge) &&
    Array.isArray(p.lines) &&
    p.lines.every((l) => typeof l === 'string')
  );
}

export class MtaStsTable implements MtaStsCache {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  #hash(domain: string): string {
    // The queue's recipients.domain_hash is the same function, so the two can be joined.
    return this.#sealer.domainHash(domain);
  }

  #read(row: Row): CachedStsPolicy | undefined {
    let sealed: Sealed;
    try {
      sealed = JSON.parse(this.#sealer.openString(row.policy_sealed, POLICY)) as Sealed;
    } catch {
      // A row that fails authentication or parsing is no policy; the next fetch replaces it.
      return undefined;
    }
    if (typeof sealed?.domain !== 'string' || !isStsPolicy(sealed.policy)) return undefined;
    // A row sealed for one domain but found under another's hash would be a swapped row.
    if (this.#hash(sealed.domain) !== row.domain_hash) return undefined;
    return {
      domain: sealed.domain,
      policy: sealed.policy,
      fetchedAt: Number(row.fetched_at),
      expiresAt: Number(row.expires_at),
      checkedAt: Number(row.checked_at),
    };
  }

  async get(domain: string): Promise<CachedStsPolicy | undefined> {
    const row = await this.#engine.get<Row>('SELECT * FROM mta_sts_policies WHERE domain_hash = ?', [this.#hash(domain)]);
    return row ? this.#read(row) : undefined;
  }

  async put(entry: { domain: string; policy: StsPolicy; fetchedAt: number; expiresAt: number }): Promise<void> {
    const domain = domainKey(entry.domain);
    const sealed = this.#sealer.seal(JSON.stringify({ domain, policy: entry.policy } satisfies Sealed), POLICY);
    await this.#engine.transaction((tx) =>
      tx.run(
        `INSERT INTO mta_sts_policies (domain_hash, policy_sealed, fetched_at, expires_at, checked_at)
         VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (domain_hash) DO UPDATE SET
           policy_sealed = excluded.policy_sealed,
           fetched_at = excluded.fetched_at,
           expires_at = excluded.expires_at,
           checked_at = excluded.checked_at`,
        [this.#hash(domain), sealed, entry.fetchedAt, entry.expiresAt, entry.fetchedAt],
      ),
    );
  }

  async markChecked(domain: string, at: number): Promise<void> {
    await this.#engine.transaction((tx) =>
      tx.run('UPDATE mta_sts_policies SET checked_at = ? WHERE domain_hash = ?', [at, this.#hash(domain)]),
    );
  }

  async expiring(now: number, before: number, limit: number): Promise<CachedStsPolicy[]> {
    const rows = await this.#engine.all<Row>(
      'SELECT * FROM mta_sts_policies WHERE expires_at > ? AND expires_at <= ? ORDER BY expires_at LIMIT ?',
      [now, before, Math.max(0, Math.min(limit, 10_000))],
    );
    return rows.map((r) => this.#read(r)).filter((r): r is CachedStsPolicy => r !== undefined);
  }

  async deleteExpired(now: number): Promise<number> {
    const { changes } = await this.#engine.transaction((tx) => tx.run('DELETE FROM mta_sts_policies WHERE expires_at <= ?', [now]));
    return changes;
  }

  async delete(domain: string): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) =>
      tx.run('DELETE FROM mta_sts_policies WHERE domain_hash = ?', [this.#hash(domain)]),
    );
    return changes > 0;
  }
}
