// The operators' queue actions wired as `lacre serve` and the CLI both use them: the DSN of a
// bounce-now is built by the same BounceComposer the delivery stage hands the runner, so an
// operator's bounce reads like any other to the sender.
import { BounceComposer } from '../compose/bounces.ts';
import type { Config } from '../config/schema.ts';
import { Queue } from '../queue/queue.ts';
import { QueueActions } from '../queue/operator-actions.ts';
import type { Store } from '../store/store.ts';
import { scheduleOf } from './delivery-stage.ts';

export { QUEUE_ACTIONS, type QueueAction } from '../queue/actions.ts';
export { UnknownMessageError, type QueueActionResult } from '../queue/operator-actions.ts';

export function queueActionsFrom(store: Store, config: Config, onDue?: () => void): QueueActions {
  return new QueueActions({ store, finalFailures: new BounceComposer(new Queue(store, scheduleOf(config)), config.hostname), onDue });
}
