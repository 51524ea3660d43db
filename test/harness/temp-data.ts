// A throwaway data dir with an opened store and queue, for tests and benchmarks that need real
// SQLite files. Everything goes through the same keyring, sealer and store code the server uses.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadKeyring } from '../../src/sealing/keyring.ts';
import { Sealer } from '../../src/sealing/sealer.ts';
import { Store } from '../../src/store/store.ts';
import { eventRules } from '../../src/events/derive.ts';
import { Queue } from '../../src/queue/queue.ts';
import type { RetrySchedule } from '../../src/queue/retry-policy.ts';

export const FAST_SCHEDULE: RetrySchedule = { minBackoffMs: 300_000, maxBackoffMs: 4_000_000, maxAgeMs: 5 * 86_400_000 };

export function tempDir(prefix = 'lacre-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface TempData {
  dataDir: string;
  store: Store;
  queue: Queue;
  sealer: Sealer;
  close(): Promise<void>;
}

export async function openTempData(
  options: { dataDir?: string; schedule?: RetrySchedule; clock?: () => number; keep?: boolean } = {},
): Promise<TempData> {
  const dataDir = options.dataDir ?? tempDir();
  const sealer = new Sealer(loadKeyring({ dataDir }));
  const store = await Store.open({ dataDir, sealer, events: eventRules });
  const queue = new Queue(store, options.schedule ?? FAST_SCHEDULE, options.clock);
  return {
    dataDir,
    store,
    queue,
    sealer,
    async close() {
      await store.close();
      if (!options.keep && !options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
