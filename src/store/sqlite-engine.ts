// The embedded engine: one SQLite file in the data dir through node:sqlite (no native addon).
// WAL so readers never block the writer; synchronous=FULL so a committed queue write survives a
// power cut (WAL's default NORMAL can lose the last commits); BEGIN IMMEDIATE so two processes
// (a server and a CLI) take the write lock up front instead of failing mid-transaction.
import { closeSync, openSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import type { SqlEngine, SqlExecutor, SqlValue, TransactionOptions } from './engine.ts';

export class SqliteEngine implements SqlEngine {
  readonly dialect = 'sqlite';
  readonly claimLockClause = '';
  readonly blobType = 'BLOB';
  readonly path: string;
  #db: DatabaseSync;
  #lock: Promise<void> = Promise.resolve();
  #raw: SqlExecutor;

  constructor(path: string) {
    this.path = path;
    // SQLite gives the WAL and shared-memory files the main file's mode: create it owner-only.
    closeSync(openSync(path, 'a', 0o600));
    this.#db = new DatabaseSync(path, { timeout: 10_000 });
    this.#db.exec('PRAGMA journal_mode = WAL');
    this.#db.exec('PRAGMA synchronous = FULL');
    this.#db.exec('PRAGMA foreign_keys = ON');
    // Freed pages are zeroed so erased personal data does not linger in the file (GDPR erasure).
    this.#db.exec('PRAGMA secure_delete = ON');
    const db = this.#db;
    this.#raw = {
      async all<T>(sql: string, params: SqlValue[] = []) {
        return db.prepare(sql).all(...params) as T[];
      },
      async get<T>(sql: string, params: SqlValue[] = []) {
        return db.prepare(sql).get(...params) as T | undefined;
      },
      async run(sql: string, params: SqlValue[] = []) {
        const result = db.prepare(sql).run(...params);
        return { changes: Number(result.changes) };
      },
    };
  }

  /** One operation at a time on this connection: a transaction's awaits must not let others in. */
  async #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.#lock;
    let release!: () => void;
    this.#lock = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  all<T>(sql: string, params?: SqlValue[]): Promise<T[]> {
    return this.#exclusive(() => this.#raw.all<T>(sql, params));
  }

  get<T>(sql: string, params?: SqlValue[]): Promise<T | undefined> {
    return this.#exclusive(() => this.#raw.get<T>(sql, params));
  }

  run(sql: string, params?: SqlValue[]): Promise<{ changes: number }> {
    return this.#exclusive(() => this.#raw.run(sql, params));
  }

  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const durable = options.durable ?? true;
    return this.#exclusive(async () => {
      // WAL with synchronous=NORMAL still survives a crash of the process, only not of the machine.
      if (!durable) this.#db.exec('PRAGMA synchronous = NORMAL');
      try {
        return await this.#inTransaction(fn);
      } finally {
        if (!durable) this.#db.exec('PRAGMA synchronous = FULL');
      }
    });
  }

  async #inTransaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      const result = await fn(this.#raw);
      this.#db.exec('COMMIT');
      return result;
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Folds the WAL back into the main file (used before backups and by tests that scan files). */
  async checkpoint(): Promise<void> {
    await this.#exclusive(async () => {
      this.#db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    });
  }

  async close(): Promise<void> {
    await this.#exclusive(async () => {
      if (this.#db.isOpen) this.#db.close();
    });
  }
}
