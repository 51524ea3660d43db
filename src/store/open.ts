// Opening the database: the data dir (created 0700), the embedded SQLite engine in it, the
// versioned migrations, and the lookup key the Sealer hashes addresses and domains with (made
// once, kept sealed in `settings`). The Store facade calls these and then builds its tables.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';
import { migrate } from './migrations.ts';
import { SqliteEngine } from './sqlite-engine.ts';
import { sealedContext } from './sealed-columns.ts';

/** The database file in the data dir, the directory made private first if it is new. */
export function openEngine(dataDir: string): SqlEngine {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return new SqliteEngine(join(dataDir, 'lacre.db'));
}

/**
 * Brings the schema up to date and gives the Sealer its lookup key. On failure the engine is
 * closed (its lock released) before the error goes on.
 */
export async function prepareDatabase(engine: SqlEngine, sealer: Sealer): Promise<void> {
  try {
    await migrate(engine);
    sealer.setLookupKey(await lookupKey(engine, sealer));
  } catch (err) {
    await engine.close();
    throw err;
  }
}

/** The lookup key, made on first open: hashes must stay stable across restarts (lookups by hash). */
async function lookupKey(engine: SqlEngine, sealer: Sealer): Promise<Buffer> {
  const context = sealedContext('settings', 'value_sealed');
  return engine.transaction(async (tx) => {
    const row = await tx.get<{ value_sealed: Uint8Array }>('SELECT value_sealed FROM settings WHERE name = ?', ['lookup_key']);
    if (row) return sealer.open(row.value_sealed, context);
    const key = randomBytes(32);
    await tx.run('INSERT INTO settings (name, value_sealed) VALUES (?, ?)', ['lookup_key', sealer.seal(key, context)]);
    return key;
  });
}
