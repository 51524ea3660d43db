// The embedded engine: one SQLite file in the data dir through node:sqlite (no native addon).
// node:sqlite is synchronous, so everything here is arranged so that nothing slow runs on the
// event loop:
//   - Durability by group commit. The connection runs WAL with synchronous=NORMAL, so a COMMIT only
//     appends its frames to the -wal file (write(), no fsync). A durable transaction then resolves
//     only once an fdatasync of the -wal file, started after its COMMIT, has completed — done in
//     libuv's thread pool, off the event loop. A commit's frames on stable storage are exactly what
//     synchronous=FULL would have waited for (https://sqlite.org/wal.html, "Durability"), so every
//     acknowledged commit survives a power cut; and since at most one sync is in flight, every commit
//     made while it runs shares the next one (how PostgreSQL's group commit works).
//   - No busy-waiting. SQLite's busy handler sleeps on the calling thread, so a CLI holding the
//     write lock would freeze the server (and /healthz) for the whole timeout. The connection has no
//     busy timeout; a SQLITE_BUSY is retried asynchronously with growing delays up to a deadline.
//   - Checkpoints off the event loop. Auto-checkpointing is off on this connection (a checkpoint
//     fsyncs the database file); a small worker thread with its own connection runs PASSIVE
//     checkpoints (which never block writers) every so many commits and on an interval.
//   - Prepared statements are cached per connection.
// BEGIN IMMEDIATE so two processes (a server and a CLI) take the write lock up front instead of
// failing mid-transaction.
import { closeSync, fdatasync, fstatSync, openSync, statSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import type { SqlEngine, SqlExecutor, SqlValue, TransactionOptions } from './engine.ts';

const STATEMENT_CACHE = 256;
const CHECKPOINT_EVERY_COMMITS = 1_000;
const CHECKPOINT_INTERVAL_MS = 30_000;
const DEFAULT_LOCK_DEADLINE_MS = 30_000;

// The checkpointer: its own connection, so a checkpoint's fsyncs happen on its thread. Plain JS
// (eval) so it loads without the TypeScript loader.
const CHECKPOINTER = `
const { DatabaseSync } = require('node:sqlite');
const { parentPort, workerData } = require('node:worker_threads');
const db = new DatabaseSync(workerData, { timeout: 5000 });
parentPort.on('message', (mode) => {
  try { db.exec('PRAGMA wal_checkpoint(' + (mode === 'TRUNCATE' ? 'TRUNCATE' : 'PASSIVE') + ')'); } catch {}
  parentPort.postMessage('done');
});
`;

export class SqliteEngine implements SqlEngine {
  readonly dialect = 'sqlite';
  readonly claimLockClause = '';
  readonly blobType = 'BLOB';
  readonly path: string;
  /** Commits made and WAL syncs done, for the benchmark and tests. */
  readonly stats = { commits: 0, syncs: 0 };
  #db: DatabaseSync;
  #lock: Promise<void> = Promise.resolve();
  #raw: SqlExecutor;
  #statements = new Map<string, StatementSync>();
  #lockDeadlineMs: number;
  // Group commit: commits numbered as they are made; a sync covers every commit made before it began.
  #committed = 0;
  #waiters: Array<{ upTo: number; resolve: () => void; reject: (err: Error) => void }> = [];
  #syncing = false;
  #wal: { fd: number; ino: number } | null = null;
  #checkpointer: Worker | null = null;
  #checkpointing = false;
  #sinceCheckpoint = 0;
  #checkpointTimer: NodeJS.Timeout | null = null;

  constructor(path: string, options: { /** For tests: how long to wait for another process's lock. */ lockDeadlineMs?: number } = {}) {
    this.path = path;
    this.#lockDeadlineMs = options.lockDeadlineMs ?? DEFAULT_LOCK_DEADLINE_MS;
    // SQLite gives the WAL and shared-memory files the main file's mode: create it owner-only.
    closeSync(openSync(path, 'a', 0o600));
    this.#db = new DatabaseSync(path, { timeout: 0 });
    this.#retrySync(() => this.#db.exec('PRAGMA journal_mode = WAL'));
    this.#db.exec('PRAGMA synchronous = NORMAL');
    this.#db.exec('PRAGMA wal_autocheckpoint = 0');
    this.#db.exec('PRAGMA foreign_keys = ON');
    // Freed pages are zeroed so erased personal data does not linger in the file (GDPR erasure).
    this.#db.exec('PRAGMA secure_delete = ON');
    const prepare = (sql: string) => this.#prepare(sql);
    this.#raw = {
      async all<T>(sql: string, params: SqlValue[] = []) {
        return prepare(sql).all(...params) as T[];
      },
      async get<T>(sql: string, params: SqlValue[] = []) {
        return prepare(sql).get(...params) as T | undefined;
      },
      async run(sql: string, params: SqlValue[] = []) {
        const result = prepare(sql).run(...params);
        return { changes: Number(result.changes) };
      },
    };
  }

  #prepare(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (statement) {
      // Most recently used last, so the first key is the one to drop.
      this.#statements.delete(sql);
    } else {
      statement = this.#db.prepare(sql);
      if (this.#statements.size >= STATEMENT_CACHE) this.#statements.delete(this.#statements.keys().next().value!);
    }
    this.#statements.set(sql, statement);
    return statement;
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

  /** Runs `fn`, retrying while another connection holds the lock, without blocking the event loop. */
  async #whenUnlocked<T>(fn: () => T): Promise<T> {
    const deadline = Date.now() + this.#lockDeadlineMs;
    for (let wait = 1; ; wait = Math.min(50, wait * 2)) {
      try {
        return fn();
      } catch (err) {
        if (!isBusy(err)) throw err;
        if (Date.now() >= deadline) {
          throw new Error(
            `the database ${this.path} has been locked by another process for ${Math.round(this.#lockDeadlineMs / 1000)} s (a long-running lacre command?); try again when it finishes`,
          );
        }
        await sleep(wait / 2 + Math.random() * wait);
      }
    }
  }

  /** Start-up only (the constructor cannot wait): a short synchronous retry of a BUSY pragma. */
  #retrySync(fn: () => void): void {
    for (let i = 0; ; i++) {
      try {
        return fn();
      } catch (err) {
        if (!isBusy(err) || i >= 200) throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
  }

  all<T>(sql: string, params?: SqlValue[]): Promise<T[]> {
    return this.#exclusive(() => this.#whenUnlocked(() => this.#prepare(sql).all(...(params ?? [])) as T[]));
  }

  get<T>(sql: string, params?: SqlValue[]): Promise<T | undefined> {
    return this.#exclusive(() => this.#whenUnlocked(() => this.#prepare(sql).get(...(params ?? [])) as T | undefined));
  }

  async run(sql: string, params?: SqlValue[]): Promise<{ changes: number }> {
    const result = await this.#exclusive(() =>
      this.#whenUnlocked(() => {
        const autocommit = !this.#db.isTransaction;
        const r = this.#prepare(sql).run(...(params ?? []));
        return { changes: Number(r.changes), wrote: autocommit };
      }),
    );
    // A statement outside a transaction commits on its own: durable like any other commit.
    if (result.wrote) await this.#afterCommit(true);
    return { changes: result.changes };
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const durable = options.durable ?? true;
    const result = await this.#exclusive(async () => {
      await this.#whenUnlocked(() => this.#db.exec('BEGIN IMMEDIATE'));
      try {
        const value = await fn(this.#raw);
        await this.#whenUnlocked(() => this.#db.exec('COMMIT'));
        return value;
      } catch (err) {
        if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
        throw err;
      }
    });
    // The connection is free for the next transaction while this one waits for its sync.
    await this.#afterCommit(durable);
    return result;
  }

  async #afterCommit(durable: boolean): Promise<void> {
    this.stats.commits++;
    this.#committed++;
    if (++this.#sinceCheckpoint >= CHECKPOINT_EVERY_COMMITS) this.#checkpointSoon();
    this.#armCheckpointTimer();
    if (!durable) return;
    const upTo = this.#committed;
    await new Promise<void>((resolve, reject) => {
      this.#waiters.push({ upTo, resolve, reject });
      this.#kickSync();
    });
  }

  #kickSync(): void {
    if (this.#syncing || this.#waiters.length === 0) return;
    this.#syncing = true;
    const upTo = this.#committed;
    let fd: number;
    try {
      fd = this.#walFd();
    } catch (err) {
      this.#settleWaiters(upTo, err as Error);
      return;
    }
    fdatasync(fd, (err) => {
      if (!err) this.stats.syncs++;
      this.#settleWaiters(upTo, err ? new Error(`syncing ${this.path}-wal failed: ${err.message}`) : null);
    });
  }

  #settleWaiters(upTo: number, err: Error | null): void {
    const covered = this.#waiters.filter((w) => w.upTo <= upTo);
    this.#waiters = this.#waiters.filter((w) => w.upTo > upTo);
    for (const w of covered) err ? w.reject(err) : w.resolve();
    this.#syncing = false;
    this.#kickSync();
  }

  /** The -wal file, opened once and again if SQLite replaced it (another inode). */
  #walFd(): number {
    const path = `${this.path}-wal`;
    const ino = statSync(path).ino;
    if (this.#wal && this.#wal.ino === ino) return this.#wal.fd;
    if (this.#wal) closeSync(this.#wal.fd);
    const fd = openSync(path, 'r');
    this.#wal = { fd, ino: fstatSync(fd).ino };
    return fd;
  }

  #armCheckpointTimer(): void {
    if (this.#checkpointTimer) return;
    this.#checkpointTimer = setTimeout(() => {
      this.#checkpointTimer = null;
      if (this.#sinceCheckpoint > 0) this.#checkpointSoon();
    }, CHECKPOINT_INTERVAL_MS);
    this.#checkpointTimer.unref();
  }

  #checkpointSoon(): void {
    if (this.#checkpointing || !this.#db.isOpen) return;
    this.#checkpointing = true;
    this.#sinceCheckpoint = 0;
    if (!this.#checkpointer) {
      this.#checkpointer = new Worker(CHECKPOINTER, { eval: true, workerData: this.path });
      this.#checkpointer.unref();
      this.#checkpointer.on('message', () => (this.#checkpointing = false));
      this.#checkpointer.on('error', () => {
        this.#checkpointer = null;
        this.#checkpointing = false;
      });
    }
    this.#checkpointer.postMessage('PASSIVE');
  }

  /** Folds the WAL back into the main file (used before backups and by tests that scan files). */
  async checkpoint(): Promise<void> {
    await this.#exclusive(() => this.#whenUnlocked(() => this.#db.exec('PRAGMA wal_checkpoint(TRUNCATE)')));
  }

  async close(): Promise<void> {
    await this.#exclusive(async () => {
      // Commits still waiting for their sync get it before the file is closed.
      while (this.#syncing || this.#waiters.length > 0) await sleep(1);
      if (this.#checkpointTimer) clearTimeout(this.#checkpointTimer);
      if (this.#checkpointer) {
        const worker = this.#checkpointer;
        this.#checkpointer = null;
        await worker.terminate();
      }
      if (this.#wal) {
        closeSync(this.#wal.fd);
        this.#wal = null;
      }
      this.#statements.clear();
      if (this.#db.isOpen) this.#db.close();
    });
  }
}

function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: number }).errcode;
  // SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included (the low byte).
  return code !== undefined ? (code & 0xff) === 5 || (code & 0xff) === 6 : /database is locked|database table is locked/.test(String((err as Error)?.message));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
