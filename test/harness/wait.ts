// One bounded poll for tests, for state that announces itself with no event (rows in SQLite, a
// runner's counters). Where the code under test emits an event (a sink's recorded message, a
// socket's 'close', an EventEmitter), wait on that instead: it is exact and costs no interval.
import assert from 'node:assert/strict';

export interface WaitOptions {
  /** What is awaited, named in the failure: "timed out after 5000 ms waiting for <what>". */
  what: string;
  timeoutMs?: number;
  intervalMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_INTERVAL_MS = 10;

/**
 * Resolves with `check`'s first truthy value, checking at once and then every `intervalMs` until
 * `timeoutMs` has passed; then fails with a message naming `what`. An error thrown by `check` ends
 * the wait with that error. The loop is bounded twice: by the deadline and by a count of tries.
 */
export async function waitFor<T>(check: () => T | Promise<T>, options: WaitOptions): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const deadline = Date.now() + timeoutMs;
  const tries = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 1;
  for (let i = 0; i < tries; i++) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for ${options.what}`);
}
