// The main thread's handle on the delivery thread (delivery-worker.ts): starts it, wakes it when
// intake commits (coalesced: one message however many commits a tick makes), forwards policy
// changes, and stops it in order. A delivery thread that dies takes the server down with a clear
// error rather than leaving a server that accepts mail and never delivers it.
// Part of server/ (the wiring).
import { Worker } from 'node:worker_threads';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { DeliveryWorkerData, FromDeliveryWorker, ToDeliveryWorker } from './delivery-worker.ts';

export interface DeliveryThread {
  nudge(): void;
  staticPoliciesChanged(): void;
  stop(graceMs: number): Promise<{ finished: number; released: number }>;
}

export async function startDeliveryThread(options: {
  config: Config;
  ca: string[];
  workerId: string;
  logger: Logger;
  /** Called when the thread dies on its own (not by stop). */
  onDeath: (err: Error) => void;
}): Promise<DeliveryThread> {
  const data: DeliveryWorkerData = { config: options.config, ca: options.ca, workerId: options.workerId };
  const worker = new Worker(new URL('./delivery-worker.ts', import.meta.url), { workerData: data });
  let stopping = false;
  let stopped: ((result: { finished: number; released: number }) => void) | null = null;
  let failStop: ((err: Error) => void) | null = null;
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: FromDeliveryWorker) => {
      if (m.type === 'ready') {
        worker.off('message', onMessage);
        worker.off('error', reject);
        resolve();
      } else if (m.type === 'failed') reject(new Error(m.message));
    };
    worker.on('message', onMessage);
    worker.once('error', reject);
  });
  worker.on('message', (m: FromDeliveryWorker) => {
    if (m.type === 'stopped') stopped?.(m.result);
    else if (m.type === 'failed') {
      if (stopping) failStop?.(new Error(m.message));
      else options.onDeath(new Error(`the delivery thread failed: ${m.message}`));
    }
  });
  worker.on('error', (err) => {
    if (stopping) failStop?.(err);
    else options.onDeath(new Error(`the delivery thread failed: ${err.message}`));
  });
  worker.on('exit', (code) => {
    if (!stopping) options.onDeath(new Error(`the delivery thread exited (code ${code})`));
  });
  const post = (m: ToDeliveryWorker) => worker.postMessage(m);
  let nudgePending = false;
  return {
    nudge() {
      if (nudgePending || stopping) return;
      nudgePending = true;
      setImmediate(() => {
        nudgePending = false;
        post({ type: 'nudge' });
      });
    },
    staticPoliciesChanged: () => post({ type: 'static-policies-changed' }),
    stop(graceMs: number) {
      stopping = true;
      return new Promise((resolve, reject) => {
        stopped = resolve;
        failStop = reject;
        post({ type: 'stop', graceMs });
      });
    },
  };
}
