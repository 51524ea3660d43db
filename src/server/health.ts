// Readiness, decided from facts the parts report about themselves (`GET /healthz`): a pure table,
// so every way of being unready is a row in health.test.ts. The facts are gathered without a
// write or a lock of our own: another process holding the database (a long `lacre` command) must
// not make the probe itself hang, only the failing writes it causes count.
// Part of server/ (the wiring).
import type { WriteHealth } from '../store/engine.ts';
import type { KeyringStatus } from '../sealing/sealer.ts';
import type { DeliveryStatus } from './delivery-stage.ts';

export interface ReadinessFacts {
  /** False while starting or shutting down. */
  serving: boolean;
  /** The intake thread's own connection and keyring. */
  store: WriteHealth;
  keyring: KeyringStatus;
  /** The delivery thread's answer, or why there is none. */
  delivery: { status: DeliveryStatus } | { status: null; reason: string };
  now: number;
}

export type CheckName = 'serving' | 'store' | 'keyring' | 'queue-worker';
/** `ok`, or the reason it is not, in words an operator can act on. */
export type Checks = Record<CheckName, string>;

export interface Readiness {
  ready: boolean;
  checks: Checks;
}

/** A pass for due mail runs at least every poll interval; a few missed ones mean the worker is stuck. */
export function stalePassAfterMs(pollIntervalMs: number): number {
  return Math.max(3 * pollIntervalMs, 30_000);
}

export function readiness(facts: ReadinessFacts): Readiness {
  const checks: Checks = {
    serving: facts.serving ? 'ok' : 'starting or shutting down',
    store: storeCheck(facts),
    keyring: keyringCheck(facts),
    'queue-worker': workerCheck(facts),
  };
  return { ready: Object.values(checks).every((c) => c === 'ok'), checks };
}

function storeCheck(facts: ReadinessFacts): string {
  if (!facts.store.ok) return `intake: ${facts.store.reason}`;
  if (facts.delivery.status && !facts.delivery.status.store.ok) return `delivery: ${facts.delivery.status.store.reason}`;
  return 'ok';
}

function keyringCheck(facts: ReadinessFacts): string {
  const own = facts.keyring;
  if (!own.ok) return `the keyring in the data dir cannot be read (${own.reason}); fix it, then check with: lacre sealing status`;
  const theirs = facts.delivery.status?.keyring;
  if (theirs && !theirs.ok) return `the delivery thread cannot read the keyring (${theirs.reason}); check with: lacre sealing status`;
  if (theirs && theirs.currentKeyId !== own.currentKeyId) {
    return `intake seals under key ${own.currentKeyId} and delivery under ${theirs.currentKeyId}; they should agree within seconds of a rotation`;
  }
  return 'ok';
}

function workerCheck(facts: ReadinessFacts): string {
  if (!facts.delivery.status) return facts.delivery.reason;
  const runner = facts.delivery.status.runner;
  if (!runner.running) return 'the queue runner is stopped';
  if (runner.lastPassError !== null) return `the queue runner's last look for due mail failed: ${runner.lastPassError}`;
  if (runner.lastPassAt === null) return 'the queue runner has not looked for due mail yet';
  const age = facts.now - runner.lastPassAt;
  if (age > stalePassAfterMs(runner.pollIntervalMs)) return `the queue runner last looked for due mail ${Math.round(age / 1000)} s ago`;
  return 'ok';
}
