// The main thread's handle on the delivery thread (delivery-worker.ts): starts it, wakes it when
// intake commits (coalesced: one message however many commits a tick makes), forwards policy
// changes, and stops it in order. A delivery thread that dies takes the server down with a clear
// error rather than leaving a server that accepts mail and never delivers it.
// Part of server/ (the wiring).
import { Worker } from 'node:worker_threads';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import type { DeliveryWorkerData, FromDeliveryWorker, ToDeliveryWorker } from './delivery-worker.ts';
import type { DeliveryStatus } from './delivery-stage.ts';

export interface DeliveryThread {
  nudge(): void;
  staticPoliciesChanged(): void;
  /**
   * The thread's metrics and readiness, or why there are none: a thread that does not answer
   * within `timeoutMs` (its event loop blocked, or it is gone) is reported as such.
   */
  status(timeoutMs: number): Promise<{ status: DeliveryStatus } | { status: null; reason: string }>;
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
  let nextStatusId = 1;
  const statusWaiters = new Map<number, (answer: { status: DeliveryStatus } | { status: null; reason: string }) => void>();
  worker.on('message', (m: FromDeliveryWorker) => {
    if (m.type === 'status') {
      statusWaiters.get(m.id)?.(m.status ? { status: m.status } : { status: null, reason: `the delivery thread could not report: ${m.error}` });
      statusWaiters.delete(m.id);
    } else if (m.type === 'stopped') stopped?.(m.result);
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
    status(timeoutMs: number) {
      if (stopping) return Promise.resolve({ status: null, reason: 'the delivery thread is stopping' });
      const id = nextStatusId++;
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          statusWaiters.delete(id);
          resolve({ status: null, reason: `the delivery thread did not answer within ${timeoutMs} ms` });
        }, timeoutMs);
        timer.unref();
        statusWaiters.set(id, (answer) => {
          clearTimeout(timer);
          resolve(answer);
        });
        post({ type: 'status', id });
      });
    },
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
