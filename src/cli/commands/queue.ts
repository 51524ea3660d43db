// `lacre queue retry|hold|release|delete|bounce ID` (Postfix's `postqueue -f` and `postsuper -h`,
// `-H`, `-d`, plus bounce now), beside `queue status`. ID is any id the API returned: the message
// id acts on every recipient of the message, a MessageUUID or MessageID on that one recipient.
// Beside a running server the command opens the same data dir; its one short write transaction
// waits for the database lock without stalling the server, and the server's runner sees a retry
// or release at its next look at the queue (within `queue.pollInterval`).
import type { Command } from 'commander';
import { QUEUE_ACTIONS, UnknownMessageError, queueActionsFrom, type QueueAction, type QueueActionResult } from '../../server/queue-actions.ts';
import { cliActor, print, withStore } from '../context.ts';

const WHAT: Record<QueueAction, string> = {
  retry: 'Make deferred mail due now (Postfix: postqueue -f, for one message). Audited.',
  hold: 'Hold mail: not delivered, and its expiry clock stopped, until released (postsuper -h). Audited.',
  release: 'Release held mail: due now, its expiry moved on by the time it was held (postsuper -H). Audited.',
  delete: 'Delete queued or held mail without telling the sender (postsuper -d). Audited.',
  bounce: 'Fail queued or held mail now, with a DSN to the sender and a bounce event. Audited.',
};

const DONE: Record<QueueAction, string> = { retry: 'due now', hold: 'held', release: 'released, due now', delete: 'deleted', bounce: 'bounced' };

export function registerQueueCommands(program: Command): void {
  // `queue status` is registered in main.ts; the actions go beside it.
  const queue = program.commands.find((c) => c.name() === 'queue') ?? program.command('queue').description('Queue commands.');
  for (const action of QUEUE_ACTIONS) {
    queue
      .command(`${action} <id>`)
      .description(`${WHAT[action]} ID: the message id (every recipient), a MessageUUID or a MessageID (that recipient).`)
      .option('--json', 'print JSON: the message id and each recipient\'s result')
      .action(async (id: string, opts: { json?: boolean }) => {
        const outcome = await withStore(async (store, cfg) => {
          try {
            return await queueActionsFrom(store, cfg).run(action, id, { actor: cliActor() });
          } catch (err) {
            if (err instanceof UnknownMessageError) return err;
            throw err;
          }
        }, 'existing');
        if (outcome instanceof UnknownMessageError) {
          // A runtime failure (exit 1), not a usage error: the id is well formed, nothing has it.
          process.stderr.write(`lacre: ${outcome.message}\n`);
          process.exitCode = 1;
          return;
        }
        print(!!opts.json, outcome, () => describe(outcome));
        // Nothing could be done (every recipient refused): say so in the exit status too.
        if (outcome.changed === 0) process.exitCode = 1;
      });
  }
}

function describe(r: QueueActionResult): string {
  return [
    ...r.recipients.map((x) =>
      x.result === 'done'
        ? `${x.recipientId}  ${x.address}  ${DONE[r.action]}`
        : `${x.recipientId}  ${x.address}  not ${DONE[r.action].split(',')[0]}: ${x.reason}`,
    ),
    `message ${r.messageId}: ${r.changed} ${DONE[r.action].split(',')[0]}, ${r.refused} refused${r.messageRemoved ? '; the message is gone' : ''}`,
  ].join('\n');
}
