// The embedded engine: one SQLite file in the data dir through node:sqlite (no native addon).
// node:sqlite is synchronous, so the engine is arranged so that the event loop never waits for
// the disk or for another process's lock.
//
// Durability by group commit. The connection runs WAL with synchronous=NORMAL, so a COMMIT
// write()s its frames to the -wal file and returns without an fsync
// (https://www.sqlite.org/pragma.html#pragma_synchronous). A durable transaction's promise then
// resolves only once an fdatasync of the -wal file, issued after its COMMIT returned, has completed
// in libuv's thread pool. That is as durable as synchronous=FULL for every acknowledged commit:
//   - FULL differs from NORMAL in WAL mode only by an fsync of the WAL at each commit; this is that
//     fsync, made later and shared, and nothing is acknowledged before it completes.
//   - fdatasync flushes every modified page of the file, whichever descriptor wrote it (fsync(2)),
//     so a sync issued after a COMMIT covers its frames and those of every commit before it.
//   - Recovery replays WAL frames only up to the last valid commit frame, checked by cumulative
//     checksums and salts (https://www.sqlite.org/walformat.html), so a power cut that tears the
//     unsynced tail loses only commits nobody was told about, never an earlier one.
//   - What NORMAL still leaves to SQLite stays: the WAL is synced before every checkpoint, the main
//     file after it, and the WAL header when the file is reused (pragma doc above), so frames are
//     never overwritten before they are safe in the main file.
// At most one sync is in flight; commits made while it runs wait for the next one, so a burst of
// commits shares one fsync (PostgreSQL's group commit: https://www.postgresql.org/docs/current/wal-configuration.html).
// The connection is handed to the next operation right after COMMIT, so a commit is visible to the
// next reader up to one fsync before it is durable. Nothing acknowledges it meanwhile (a durable
// commit made on it waits for a sync that covers both); at worst work done from it (a delivery) is
// repeated after a power cut, which at-least-once delivery already allows.
// If fdatasync fails the engine refuses all further work: after a failed fsync the kernel may have
// dropped the dirty pages, so retrying could "succeed" over lost data (PostgreSQL's fsync-gate).
// Restarting lets SQLite recover from what is really on disk.
//
// Checkpoints off the event loop. Auto-checkpoints are off on this connection (they would fsync
// the main file inline); a worker thread with its own connection runs PASSIVE checkpoints, which
// never block readers or writers, when the WAL has grown by ~4 MiB and on an interval. The WAL's
// size comes from the stat the sync already does (or every STAT_EVERY_COMMITS commits when nothing
// is durable); journal_size_limit makes SQLite truncate it when it starts reusing it after a full
// checkpoint, so its size tracks what was written since (https://www.sqlite.org/pragma.html#pragma_journal_size_limit).
// Left on the event loop: SQLite's sync of the WAL header when the file is reused (once per
// checkpoint cycle), and the checkpoint SQLite makes when the last connection to the file closes.
//
// No busy-waiting. SQLite's busy handler sleeps on the calling thread, so a CLI holding the write
// lock would freeze the server, /healthz included. The connection has no busy timeout; SQLITE_BUSY
// at BEGIN IMMEDIATE, at COMMIT (the transaction stays open and COMMIT may be retried:
// https://www.sqlite.org/lang_transaction.html) or on a statement outside a transaction is retried
// on timers until a deadline. BEGIN IMMEDIATE, so two processes (a server and a CLI) take the write
// lock up front; in WAL mode nothing inside the transaction then waits for a lock.
//
// Never open and close a descriptor on the main file or on -shm while SQLite has them open: closing
// any descriptor of a file drops every POSIX lock the process holds on it
// (https://www.sqlite.org/howtocorrupt.html#_posix_advisory_locks_canceled_by_a_separate_thread_doing_close_).
// The -wal file carries no locks, which is why it is the one opened here.
import { closeSync, openSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import type { SqlEngine, SqlExecutor, SqlValue, TransactionOptions, WriteHealth } from './engine.ts';
import type { CheckpointMode, CheckpointReply, CheckpointRequest } from './sqlite-checkpointer.ts';

const STATEMENT_CACHE_SIZE = 256;
const LOCK_DEADLINE_MS = 30_000;
const CHECKPOINT_BYTES = 4 * 1024 * 1024;
const CHECKPOINT_INTERVAL_MS = 30_000;
const STAT_EVERY_COMMITS = 100;
const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

/** For tests only: the product runs with the defaults. */
export interface SqliteEngineOptions {
  /** How long an operation waits for another connection's lock before failing. */
  lockDeadlineMs?: number;
  /** WAL growth that triggers a background checkpoint. */
  checkpointBytes?: number;
  checkpointIntervalMs?: number;
}

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SqliteEngine implements SqlEngine {
  readonly dialect = 'sqlite';
  readonly claimLockClause = '';
  readonly blobType = 'BLOB';
  readonly path: string;
  /**
   * Commits made, WAL syncs and checkpoints completed, statements run and statements prepared (a
   * miss of the statement cache) by this connection: what the bench reports per message.
   */
  readonly stats = { commits: 0, syncs: 0, checkpoints: 0, statements: 0, prepares: 0 };
  #db: DatabaseSync;
  #statements = new Map<string, StatementSync>();
  #raw: SqlExecutor;
  #lock: Promise<void> = Promise.resolve();
  #ready: Promise<void>;
  #closing: Promise<void> | undefined;
  #failed: Error | undefined;
  /** Set when BEGIN or COMMIT itself failed (locked past the deadline, read-only, disk full, I/O); cleared by the next commit. */
  #writeError: string | undefined;
  #lockDeadlineMs: number;
  #checkpointBytes: number;
  // Group commit: commits are numbered; a sync covers every commit numbered before it was issued.
  #walSync = true;
  #committed = 0;
  #synced = 0;
  #waiters: Waiter[] = [];
  #syncing: Promise<void> | undefined;
  #wal: { handle: FileHandle; dev: number; ino: number } | undefined;
  // Checkpoints.
  #checkpointer: Checkpointer | undefined;
  #checkpointRunning = false;
  #commitsSinceCheckpoint = 0;
  #commitsSinceStat = 0;
  #statting = false;
  #walSize = 0;
  #nextCheckpointAt: number;
  #interval: NodeJS.Timeout;

  constructor(path: string, options: SqliteEngineOptions = {}) {
    this.path = path;
    this.#lockDeadlineMs = options.lockDeadlineMs ?? LOCK_DEADLINE_MS;
    this.#checkpointBytes = options.checkpointBytes ?? CHECKPOINT_BYTES;
    this.#nextCheckpointAt = this.#checkpointBytes;
    // SQLite gives the WAL and shared-memory files the main file's mode: create it owner-only.
    // (Before SQLite opens it, so closing this descriptor drops no lock.)
    closeSync(openSync(path, 'a', 0o600));
    this.#db = new DatabaseSync(path, { timeout: 0 });
    this.#db.exec('PRAGMA synchronous = NORMAL');
    this.#db.exec('PRAGMA wal_autocheckpoint = 0');
    // Half the checkpoint size: a reused WAL is overwritten in place up to here, then grows until
    // the next checkpoint is due.
    this.#db.exec(`PRAGMA journal_size_limit = ${Math.floor(this.#checkpointBytes / 2)}`);
    this.#db.exec('PRAGMA foreign_keys = ON');
    // Freed pages are zeroed so erased personal data does not linger in the file (GDPR erasure).
    this.#db.exec('PRAGMA secure_delete = ON');
    const statement = (sql: string) => this.#statement(sql);
    this.#raw = {
      async all<T>(sql: string, params: SqlValue[] = []) {
        return statement(sql).all(...params) as T[];
      },
      async get<T>(sql: string, params: SqlValue[] = []) {
        return statement(sql).get(...params) as T | undefined;
      },
      async run(sql: string, params: SqlValue[] = []) {
        return { changes: Number(statement(sql).run(...params).changes) };
      },
    };
    // Switching to WAL reads the file, so it can meet a lock: the first operation waits for it.
    this.#ready = this.#whenUnlocked(() => this.#db.prepare('PRAGMA journal_mode = WAL').get() as { journal_mode: string }).then(
      ({ journal_mode }) => {
        // Without WAL (a file system without shared memory) there is no -wal file to sync: let
        // SQLite sync each commit itself.
        if (journal_mode !== 'wal') {
          this.#walSync = false;
          this.#db.exec('PRAGMA synchronous = FULL');
        }
      },
    );
    this.#ready.catch(() => {});
    this.#interval = setInterval(() => {
      if (this.#commitsSinceCheckpoint > 0) this.#checkpointInBackground();
    }, options.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS);
    this.#interval.unref();
  }

  all<T>(sql: string, params: SqlValue[] = []): Promise<T[]> {
    return this.#exclusive(() => this.#whenUnlocked(() => this.#statement(sql).all(...params) as T[]));
  }

  get<T>(sql: string, params: SqlValue[] = []): Promise<T | undefined> {
    return this.#exclusive(() => this.#whenUnlocked(() => this.#statement(sql).get(...params) as T | undefined));
  }

  /** Outside a transaction a statement commits on its own, so run() is durable like a transaction. */
  async run(sql: string, params: SqlValue[] = []): Promise<{ changes: number }> {
    const { changes, synced } = await this.#exclusive(async () => {
      const result = await this.#whenUnlocked(() => this.#statement(sql).run(...params));
      return { changes: Number(result.changes), synced: this.#durable(this.#noteCommit()) };
    });
    await synced;
    return { changes };
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const durable = options.durable ?? true;
    const { result, synced } = await this.#exclusive(async () => {
      const result = await this.#inTransaction(fn);
      const seq = this.#noteCommit();
      // Registered before the connection is released, so close() sees the pending sync.
      return { result, synced: durable ? this.#durable(seq) : undefined };
    });
    await synced;
    return result;
  }

  /** Folds the WAL into the main file and empties it (before backups; tests that scan files). */
  async checkpoint(): Promise<void> {
    await this.#exclusive(() =>
      // This connection is idle meanwhile, so only another process can keep TRUNCATE from finishing.
      this.#whenUnlocked(async () => {
        const result = await this.#worker().run('TRUNCATE');
        if (result.busy) throw Object.assign(new Error('checkpoint blocked by another connection'), { errcode: SQLITE_BUSY });
        this.stats.checkpoints++;
        this.#walSize = 0;
        this.#nextCheckpointAt = this.#checkpointBytes;
      }),
    );
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    return this.#closing;
  }

  async #shutDown(): Promise<void> {
    clearInterval(this.#interval);
    // Operations queued before close() run to the end; new ones are refused by #exclusive.
    await this.#lock;
    while (this.#syncing) await this.#syncing;
    if (this.#wal) {
      await this.#wal.handle.close().catch(() => {});
      this.#wal = undefined;
    }
    if (this.#checkpointer) {
      // Idle now, so the WAL can be emptied here rather than by SQLite's own checkpoint when the
      // last connection closes, which would fsync the main file on the event loop.
      if (!this.#failed) await this.#checkpointer.run('TRUNCATE').catch(() => {});
      await this.#checkpointer.close();
      this.#checkpointer = undefined;
    }
    // Closing the connection finalizes every statement prepared on it; drop ours first.
    this.#statements.clear();
    if (this.#db.isOpen) this.#db.close();
  }

  /** One operation at a time on this connection: a transaction's awaits must not let others in. */
  async #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing) throw new Error(`the database ${this.path} is closed`);
    const previous = this.#lock;
    let release!: () => void;
    this.#lock = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      await this.#ready;
      if (this.#failed) throw this.#failed;
      return await fn();
    } finally {
      release();
    }
  }

  writeHealth(): WriteHealth {
    if (this.#closing) return { ok: false, reason: `the database ${this.path} is closed` };
    if (this.#failed) return { ok: false, reason: this.#failed.message };
    if (this.#writeError) return { ok: false, reason: `the last write to ${this.path} failed: ${this.#writeError}` };
    return { ok: true };
  }

  async #inTransaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    await this.#whenUnlocked(() => {
      try {
        this.#db.exec('BEGIN IMMEDIATE');
      } catch (err) {
        // Nothing of the callback has run, so an open transaction left by a busy BEGIN can be
        // rolled back and the whole thing retried.
        if (isBusy(err)) this.#rollback();
        throw err;
      }
    }).catch((err: Error) => {
      this.#writeError = err.message;
      throw err;
    });
    let result: T;
    try {
      // A BUSY from a statement in here surfaces: the callback has run and may have had effects.
      result = await fn(this.#raw);
    } catch (err) {
      this.#rollback();
      throw err;
    }
    try {
      await this.#whenUnlocked(() => this.#db.exec('COMMIT'));
    } catch (err) {
      this.#writeError = (err as Error).message;
      this.#rollback();
      throw err;
    }
    this.#writeError = undefined;
    return result;
  }

  #rollback(): void {
    if (this.#db.isOpen && this.#db.isTransaction) this.#db.exec('ROLLBACK');
  }

  /** Runs `attempt`, retrying on timers while another connection holds the lock. */
  async #whenUnlocked<T>(attempt: () => T | Promise<T>): Promise<T> {
    let started: number | undefined;
    for (let delay = 1; ; delay = Math.min(50, delay * 2)) {
      try {
        return await attempt();
      } catch (err) {
        if (!isBusy(err)) throw err;
        const now = performance.now();
        started ??= now;
        const left = started + this.#lockDeadlineMs - now;
        if (left <= 0) {
          throw Object.assign(
            new Error(
              `the database ${this.path} has been locked by another process for ${this.#lockDeadlineMs / 1000} s (a long-running lacre command?); try again when it finishes`,
              { cause: err },
            ),
            { code: 'ERR_LACRE_DATABASE_LOCKED' },
          );
        }
        // Jittered so that two waiting processes do not retry in step.
        await sleep(Math.min(left, delay * (0.5 + Math.random())));
      }
    }
  }

  /** The statement for `sql`, from a least-recently-used cache (a Map iterates in insertion order). */
  #statement(sql: string): StatementSync {
    this.stats.statements++;
    let statement = this.#statements.get(sql);
    if (statement) {
      this.#statements.delete(sql);
    } else {
      this.stats.prepares++;
      statement = this.#db.prepare(sql);
      // An evicted statement is finalized when collected, or at the latest when the connection closes.
      if (this.#statements.size >= STATEMENT_CACHE_SIZE) this.#statements.delete(this.#statements.keys().next().value!);
    }
    this.#statements.set(sql, statement);
    return statement;
  }

  #noteCommit(): number {
    this.stats.commits++;
    this.#commitsSinceCheckpoint++;
    if (++this.#commitsSinceStat >= STAT_EVERY_COMMITS) this.#statWal();
    return ++this.#committed;
  }

  // ---- group commit ----------------------------------------------------------------------------

  /** Resolves once commit `seq` is on stable storage; undefined when it already is. */
  #durable(seq: number): Promise<void> | undefined {
    if (!this.#walSync || seq <= this.#synced) return undefined;
    const synced = new Promise<void>((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
    // Awaited by the caller only once the connection is released; a failure must not count as
    // unhandled meanwhile.
    synced.catch(() => {});
    this.#syncing ??= this.#syncLoop();
    return synced;
  }

  async #syncLoop(): Promise<void> {
    // Yield once so that #syncing is set before the loop can finish.
    await undefined;
    while (this.#waiters.length > 0) {
      const covers = this.#committed;
      try {
        await this.#syncWal();
      } catch (err) {
        this.#failed = new Error(
          `syncing ${this.path}-wal failed (${(err as Error).message}); recent commits may not be on disk, so this engine stops: restart lacre`,
          { cause: err },
        );
        for (const w of this.#waiters) w.reject(this.#failed);
        this.#waiters = [];
        break;
      }
      this.#synced = covers;
      this.stats.syncs++;
      const waiting: Waiter[] = [];
      for (const w of this.#waiters) {
        if (w.seq <= covers) w.resolve();
        else waiting.push(w);
      }
      this.#waiters = waiting;
    }
    // Synchronously after the last check of #waiters, so no waiter is left without a loop.
    this.#syncing = undefined;
  }

  async #syncWal(): Promise<void> {
    const path = `${this.path}-wal`;
    this.#wal ??= await openWal(path);
    const wal = this.#wal;
    // The stat runs alongside the sync: it is only there to notice a replaced file (rare) and to
    // measure the WAL for checkpoints.
    const [now] = await Promise.all([stat(path), wal.handle.datasync()]);
    if (now.ino !== wal.ino || now.dev !== wal.dev) {
      // The commits went to the file now at the path.
      this.#wal = undefined;
      await wal.handle.close().catch(() => {});
      this.#wal = await openWal(path);
      await this.#wal.handle.datasync();
    }
    this.#commitsSinceStat = 0;
    this.#observeWalSize(now.size);
  }

  // ---- checkpoints -----------------------------------------------------------------------------

  /** For non-durable commits, which do not sync and so do not measure the WAL. */
  #statWal(): void {
    if (this.#statting) return;
    this.#statting = true;
    this.#commitsSinceStat = 0;
    stat(`${this.path}-wal`).then(
      (s) => {
        this.#statting = false;
        this.#observeWalSize(s.size);
      },
      () => (this.#statting = false),
    );
  }

  #observeWalSize(size: number): void {
    // Shrunk: SQLite reused the WAL after a full checkpoint and truncated it to journal_size_limit.
    if (size < this.#walSize) this.#nextCheckpointAt = this.#checkpointBytes;
    this.#walSize = size;
    if (size >= this.#nextCheckpointAt) {
      // If a reader in another process keeps the checkpoint from finishing, try again only after
      // as much growth again, not after every commit.
      this.#nextCheckpointAt = size + this.#checkpointBytes;
      this.#checkpointInBackground(size >= 4 * this.#checkpointBytes);
    }
  }

  /**
   * A passive checkpoint copies the frames that were in the WAL when it began; SQLite starts the
   * WAL over only once a checkpoint has copied all of it (https://www.sqlite.org/wal.html#avoiding_excessively_large_wal_files).
   * Under a steady stream of commits that never happens, so once the WAL is several checkpoints
   * long, `holdWriters` runs one while holding this connection: commits wait (the event loop does
   * not), the checkpoint catches up, and the next commit starts the WAL over.
   */
  #checkpointInBackground(holdWriters = false): void {
    if (this.#checkpointRunning || this.#closing || this.#failed) return;
    this.#checkpointRunning = true;
    this.#commitsSinceCheckpoint = 0;
    const passive = () => this.#worker().run('PASSIVE');
    (holdWriters ? this.#exclusive(passive) : passive())
      .then(
        () => this.stats.checkpoints++,
        // A failed passive checkpoint loses nothing: the frames stay in the WAL for the next one.
        () => {},
      )
      .finally(() => (this.#checkpointRunning = false));
  }

  /** Started on first use: a short CLI command that writes little never pays for a thread. */
  #worker(): Checkpointer {
    if (!this.#checkpointer || this.#checkpointer.dead) this.#checkpointer = new Checkpointer(this.path);
    return this.#checkpointer;
  }
}

/** The engine's side of the checkpoint worker (sqlite-checkpointer.ts). */
class Checkpointer {
  #worker: Worker;
  #pending = new Map<number, { resolve: (r: { busy: number }) => void; reject: (err: Error) => void }>();
  #nextId = 0;
  #dead: Error | undefined;

  constructor(path: string) {
    this.#worker = new Worker(new URL('./sqlite-checkpointer.ts', import.meta.url), { workerData: { path } });
    // Referenced only while a request is pending: an idle worker must not keep the process alive,
    // and a pending checkpoint() must not let it exit with the promise unsettled.
    this.#worker.unref();
    this.#worker.on('message', (reply: CheckpointReply) => {
      const pending = this.#pending.get(reply.id);
      if (!pending) return;
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if ('error' in reply) pending.reject(Object.assign(new Error(reply.error), { errcode: reply.errcode }));
      else pending.resolve(reply);
    });
    this.#worker.on('error', (err) => this.#die(err));
    this.#worker.on('exit', (code) => this.#die(new Error(`the checkpoint worker exited with code ${code}`)));
  }

  get dead(): boolean {
    return this.#dead !== undefined;
  }

  run(mode: CheckpointMode | 'close'): Promise<{ busy: number }> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) this.#worker.ref();
      this.#worker.postMessage({ id, mode } satisfies CheckpointRequest);
    });
  }

  async close(): Promise<void> {
    // The worker closes its connection first; terminate() then ends the thread whatever it does.
    await this.run('close').catch(() => {});
    await this.#worker.terminate();
  }

  #die(err: Error): void {
    this.#dead ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

async function openWal(path: string): Promise<{ handle: FileHandle; dev: number; ino: number }> {
  // r+ rather than r: some systems refuse to sync a descriptor opened read-only (Windows).
  const handle = await open(path, 'r+');
  const { dev, ino } = await handle.stat();
  return { handle, dev, ino };
}

function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | null)?.errcode;
  // Extended result codes (SQLITE_BUSY_RECOVERY, ...) keep the primary code in the low byte:
  // https://www.sqlite.org/rescode.html
  return typeof code === 'number' && ((code & 0xff) === SQLITE_BUSY || (code & 0xff) === SQLITE_LOCKED);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
