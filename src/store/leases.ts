// The one lease primitive over SQL, for every table whose rows workers lease (recipients, the
// webhook outbox, TLS-RPT reports): columns `lease_owner`, `lease_token`, `lease_expires_at`. A
// row is free when it has no lease or its lease has run out (its worker died or lost it); taking
// it writes a fresh token, and every later write about the row is fenced by that token, so a
// worker that lost its lease can record nothing. Lease writes are not durable (a lost lease only
// returns work to the queue: see TransactionOptions.durable); verdicts stay the caller's, durable.
// It lives in the store, not in lease/, because the store is the only module that knows SQL and
// its table modules build on it; lease/worker-loop.ts is the SQL-free loop that drives it.
import type { SqlEngine, SqlExecutor, SqlValue } from './engine.ts';

/** A lease as taken: who holds it, under which token, until when (ms since the epoch). */
export interface Lease {
  owner: string;
  token: string;
  until: number;
}

/** For the WHERE of a finish statement, with the token as its parameter: rows still ours only. */
export const LEASE_FENCE = 'lease_token = ?';
/** For the SET of a finish statement (or any write that ends a lease): the row is free again. */
export const LEASE_CLEAR = 'lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL';

// Well under SQLite's and PostgreSQL's bound-parameter limits, with room for the fixed ones.
const CHUNK = 500;
const NAME = /^[a-z_][a-z0-9_]*$/;

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

const marks = (n: number) => Array.from({ length: n }, () => '?').join(', ');

export class LeaseTable {
  readonly table: string;
  readonly fence = LEASE_FENCE;
  readonly clear = LEASE_CLEAR;
  readonly #engine: SqlEngine;
  readonly #id: string;

  constructor(engine: SqlEngine, table: string, options: { idColumn?: string } = {}) {
    const id = options.idColumn ?? 'id';
    // Names are spliced into SQL: only ever code's own constants, checked all the same.
    if (!NAME.test(table) || !NAME.test(id)) throw new Error(`not a plain SQL name: ${table}.${id}`);
    this.#engine = engine;
    this.table = table;
    this.#id = id;
  }

  /**
   * The condition (for a claim's WHERE, one `?` for now) that no live lease holds a row. `alias`
   * qualifies the columns when the claim joins tables.
   */
  free(alias?: string): string {
    const c = alias ? `${alias}.lease_expires_at` : 'lease_expires_at';
    return `(${c} IS NULL OR ${c} <= ?)`;
  }

  /**
   * Leases rows to `lease` inside the caller's claim transaction: the caller chose them (each
   * table's "due" differs) and locked them there, so they are taken unconditionally. `also` sets
   * further columns in the same statement. Returns how many rows were taken.
   */
  async take(tx: SqlExecutor, ids: readonly string[], lease: Lease, also: Record<string, SqlValue> = {}): Promise<number> {
    const extra = Object.keys(also);
    for (const column of extra) if (!NAME.test(column) || column.startsWith('lease_')) throw new Error(`cannot set ${column} with a lease`);
    const set = ['lease_owner = ?', 'lease_token = ?', 'lease_expires_at = ?', ...extra.map((c) => `${c} = ?`)].join(', ');
    const values = [lease.owner, lease.token, lease.until, ...extra.map((c) => also[c])];
    let taken = 0;
    for (const part of chunks(ids)) {
      const { changes } = await tx.run(`UPDATE ${this.table} SET ${set} WHERE ${this.#id} IN (${marks(part.length)})`, [...values, ...part]);
      taken += changes;
    }
    return taken;
  }

  /**
   * Extends `owner`'s leases under `tokens` to `until`, in one transaction. Returns the tokens
   * still held: a token is held when it still leases at least one row, or exactly `expected`
   * rows when the caller says how many it took under that token (a batch partly taken over by
   * another worker is lost, though its remaining rows are extended).
   */
  async renew(owner: string, tokens: readonly string[], until: number, expected?: ReadonlyMap<string, number>): Promise<string[]> {
    if (tokens.length === 0) return [];
    const counts = await this.#engine.transaction(
      async (tx) => {
        const n = new Map<string, number>();
        for (const part of chunks([...new Set(tokens)])) {
          const rows = await tx.all<{ lease_token: string }>(
            `UPDATE ${this.table} SET lease_expires_at = ? WHERE lease_owner = ? AND lease_token IN (${marks(part.length)}) RETURNING lease_token`,
            [until, owner, ...part],
          );
          for (const r of rows) n.set(r.lease_token, (n.get(r.lease_token) ?? 0) + 1);
        }
        return n;
      },
      { durable: false },
    );
    return tokens.filter((t) => {
      const got = counts.get(t) ?? 0;
      const want = expected?.get(t);
      return want === undefined ? got > 0 : got === want;
    });
  }

  /** Gives leases back unused (shutdown): their rows are free at once. Returns rows released. */
  async release(tokens: readonly string[]): Promise<number> {
    if (tokens.length === 0) return 0;
    return this.#engine.transaction(
      async (tx) => {
        let released = 0;
        for (const part of chunks([...new Set(tokens)])) {
          released += (await tx.run(`UPDATE ${this.table} SET ${LEASE_CLEAR} WHERE lease_token IN (${marks(part.length)})`, part)).changes;
        }
        return released;
      },
      { durable: false },
    );
  }
}
