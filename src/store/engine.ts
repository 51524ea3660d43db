// The seam between Lacre's stores and a SQL database. Two engines implement it: SQLite
// (node:sqlite, the embedded default) and PostgreSQL (scale-out). SQL written against it uses `?`
// placeholders and portable types; dialect differences are named here, not scattered.

export type SqlValue = string | number | bigint | null | Uint8Array;

export interface SqlExecutor {
  all<T = Record<string, unknown>>(sql: string, params?: SqlValue[]): Promise<T[]>;
  get<T = Record<string, unknown>>(sql: string, params?: SqlValue[]): Promise<T | undefined>;
  run(sql: string, params?: SqlValue[]): Promise<{ changes: number }>;
}

export interface TransactionOptions {
  /**
   * false for writes whose loss in a power cut costs nothing but time (leases: lost leases only
   * return work to the queue). Such commits skip the fsync; the next durable commit flushes them
   * too. Acceptance and verdicts are always durable. Default true.
   */
  durable?: boolean;
}

export type WriteHealth = { ok: true } | { ok: false; reason: string };

export interface SqlEngine extends SqlExecutor {
  readonly dialect: 'sqlite' | 'postgres';
  /**
   * Runs `fn` in one write transaction, committed durably before the promise resolves; rolled
   * back if `fn` throws. Nothing else runs on this connection meanwhile.
   */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Appended to the SELECT that picks rows to lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL). */
  readonly claimLockClause: string;
  /** Column type for binary data (sealed values): BLOB or BYTEA. */
  readonly blobType: string;
  /** What this connection did so far (commits, syncs, statements, …), for benchmarks and logs. */
  readonly stats?: Readonly<Record<string, number>>;
  /**
   * Whether this connection can still write, from what its own writes met (readiness): never a
   * write of its own, so asking never waits on a lock another process holds.
   */
  writeHealth(): WriteHealth;
  close(): Promise<void>;
}
