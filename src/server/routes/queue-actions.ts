// Operators' queue actions over HTTP: POST /v1/messages/{id}/retry|hold|release|delete|bounce, the
// API twin of `lacre queue …` (the same service, queue/operator-actions.ts, and the same audit
// line, with the API key as the actor). {id} is any id the API returned: the message id acts on
// every recipient, a MessageUUID or MessageID on that one. `admin` scope: these change mail that
// is not the caller's own. The answer is Mailjet's REST envelope {Count, Data, Total}, one Data
// item per recipient; 404 when the id names nothing, 409 when no recipient could be acted on (the
// refusal reasons in the message). A retry, a release or a bounce (its DSN) wakes this server's delivery stage at once.
import type { FastifyInstance } from 'fastify';
import type { QueueActions, QueueActionResult } from '../../queue/operator-actions.ts';
import { UnknownMessageError } from '../../queue/operator-actions.ts';
import { QUEUE_ACTIONS } from '../../queue/actions.ts';
import { HttpError, keyOf } from '../http-errors.ts';

export interface QueueActionRoutesDeps {
  actions: QueueActions;
}

/** One recipient's result, in Mailjet's field style (MessageUUID and MessageID as in the send API's answer). */
function dataOf(result: QueueActionResult) {
  return result.recipients.map((r) => ({
    Action: result.action,
    MessageUUID: r.recipientId,
    MessageID: r.publicId,
    MessageGroupID: result.messageId,
    Email: r.address,
    Result: r.result,
    // The recipient's state after the action; null once deleted.
    State: r.state,
    Held: r.held,
    ...(r.reason === null ? {} : { Reason: r.reason }),
    ...(result.messageRemoved ? { MessageRemoved: true } : {}),
  }));
}

export function queueActionRoutes(deps: QueueActionRoutesDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    for (const action of QUEUE_ACTIONS) {
      app.post<{ Params: { id: string } }>(`/v1/messages/:id/${action}`, { config: { scope: 'admin' } }, async (request) => {
        let result: QueueActionResult;
        try {
          result = await deps.actions.run(action, request.params.id, { actor: `key:${keyOf(request).id}` });
        } catch (err) {
          if (err instanceof UnknownMessageError) {
            throw new HttpError(404, `no message with id ${request.params.id}; find it with GET /v1/messages`, { kind: 'not-found' });
          }
          throw err;
        }
        if (result.changed === 0) {
          const reasons = [...new Set(result.recipients.map((r) => r.reason))].join('; ');
          throw new HttpError(409, `nothing to ${action} in message ${result.messageId}: ${reasons}`, { kind: 'conflict' });
        }
        const data = dataOf(result);
        return { Count: data.length, Data: data, Total: data.length };
      });
    }
  };
}
