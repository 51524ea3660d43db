// The checkpoint worker of the SQLite engine: a second connection to the same file on its own
// thread, so that a checkpoint's page copying and its two fsyncs (the WAL before, the main file
// after: https://www.sqlite.org/wal.html#checkpointing) never run on the event loop. It does only
// what the engine asks, one request at a time, and answers with the pragma's row.
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';

export type CheckpointMode = 'PASSIVE' | 'TRUNCATE';
export interface CheckpointRequest {
  id: number;
  mode: CheckpointMode | 'close';
}
/** `busy` 1: the checkpoint could not finish; `log`/`checkpointed`: frames in the WAL / copied. */
export type CheckpointReply =
  | { id: number; busy: number; log: number; checkpointed: number }
  | { id: number; error: string; errcode?: number };

if (!isMainThread && parentPort) {
  const port = parentPort;
  // No busy timeout: the engine retries a blocked TRUNCATE itself with its own deadline, and a
  // PASSIVE checkpoint never waits anyway (https://www.sqlite.org/c3ref/wal_checkpoint_v2.html).
  const db = new DatabaseSync((workerData as { path: string }).path, { timeout: 0 });
  // Checkpoints sync the WAL and the main file unless synchronous is OFF; say so explicitly.
  db.exec('PRAGMA synchronous = FULL');
  const statements = new Map<CheckpointMode, StatementSync>();
  port.on('message', (request: CheckpointRequest) => {
    if (request.mode === 'close') {
      // Closed before the engine's own connection, so this one is never the last to close and
      // never deletes the WAL under it.
      db.close();
      port.postMessage({ id: request.id, busy: 0, log: 0, checkpointed: 0 } satisfies CheckpointReply);
      port.close();
      return;
    }
    try {
      if (request.mode !== 'PASSIVE' && request.mode !== 'TRUNCATE') throw new Error(`unknown checkpoint mode ${String(request.mode)}`);
      let statement = statements.get(request.mode);
      if (!statement) statements.set(request.mode, (statement = db.prepare(`PRAGMA wal_checkpoint(${request.mode})`)));
      const row = statement.get() as { busy: number; log: number; checkpointed: number };
      port.postMessage({ id: request.id, busy: row.busy, log: row.log, checkpointed: row.checkpointed } satisfies CheckpointReply);
    } catch (err) {
      const { message, errcode } = err as { message: string; errcode?: number };
      port.postMessage({ id: request.id, error: message, errcode } satisfies CheckpointReply);
    }
  });
}
