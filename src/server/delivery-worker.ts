// The thread the delivery stage runs on (see delivery-stage.ts). It speaks to the main thread in a
// few small messages: `nudge` and `static-policies-changed` in, `status` in and out (metrics and readiness), `stop` in and `stopped` out, and
// `ready` or `failed` once at start. Part of server/ (the wiring).
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/schema.ts';
import { createLogger } from '../log/logger.ts';
import { startDeliveryStage, type DeliveryStage, type DeliveryStatus } from './delivery-stage.ts';

export interface DeliveryWorkerData {
  config: Config;
  ca: string[];
  workerId: string;
}

export type ToDeliveryWorker =
  | { type: 'nudge' }
  | { type: 'static-policies-changed' }
  | { type: 'status'; id: number }
  | { type: 'stop'; graceMs: number };
export type FromDeliveryWorker =
  | { type: 'ready' }
  | { type: 'status'; id: number; status: DeliveryStatus | null; error?: string }
  | { type: 'failed'; message: string; stack?: string }
  | { type: 'stopped'; result: { finished: number; released: number } };

const port = parentPort!;
const data = workerData as DeliveryWorkerData;
const logger = createLogger({ level: data.config.log.level });
const post = (message: FromDeliveryWorker) => port.postMessage(message);

let stage: DeliveryStage;
try {
  stage = await startDeliveryStage({ config: data.config, logger, ca: data.ca, workerId: data.workerId });
} catch (err) {
  post({ type: 'failed', message: (err as Error).message, stack: (err as Error).stack });
  process.exit(1);
}
port.on('message', (message: ToDeliveryWorker) => {
  if (message.type === 'nudge') stage.nudge();
  else if (message.type === 'static-policies-changed') stage.staticPoliciesChanged();
  else if (message.type === 'status') {
    stage.status().then(
      (status) => post({ type: 'status', id: message.id, status }),
      (err) => post({ type: 'status', id: message.id, status: null, error: (err as Error).message }),
    );
  }
  else if (message.type === 'stop') {
    stage.stop(message.graceMs).then(
      (result) => {
        post({ type: 'stopped', result });
        port.close();
      },
      (err) => {
        post({ type: 'failed', message: (err as Error).message, stack: (err as Error).stack });
        port.close();
      },
    );
  }
});
post({ type: 'ready' });
