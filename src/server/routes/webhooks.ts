// /v1/webhooks: the authenticated key's own webhooks (register, list, show, remove). Needs the
// `read` scope, the scope for events: a webhook is a way of reading the key's own events, so a
// send-only key cannot point them anywhere. Registration vets the URL (SSRF) and returns the
// signing secret once.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { WebhookError, type Webhooks } from '../../events/webhooks.ts';
import { HttpError, keyOf, parseInput } from '../http-errors.ts';

const addBody = z
  .object({
    url: z.string().min(1).max(2048),
    events: z.union([z.string().min(1), z.array(z.string()).min(1)]),
  })
  .strict();

function statusOf(err: WebhookError): number {
  return err.kind === 'unknown' ? 404 : err.kind === 'limit' ? 409 : 400;
}

/** A fastify plugin: its error handler maps WebhookError and passes the rest to the root's. */
export function webhookRoutes(deps: { webhooks: Webhooks }) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const read = { config: { scope: 'read' } } as const;
    const unknown = (id: string) => new HttpError(404, `no webhook ${id} for this API key`, { kind: 'unknown' });
    app.setErrorHandler((err) => {
      throw err instanceof WebhookError ? new HttpError(statusOf(err), err.message, { kind: err.kind }) : err;
    });

    app.get('/v1/webhooks', read, async (request) => ({ webhooks: await deps.webhooks.list(keyOf(request).id) }));

    app.post('/v1/webhooks', read, async (request, reply) => {
      const body = parseInput(addBody, request.body, 'body');
      const key = keyOf(request);
      const created = await deps.webhooks.add({ apiKey: key.id, url: body.url, events: body.events, actor: `key:${key.id}` });
      return reply.code(201).send(created);
    });

    app.get<{ Params: { id: string } }>('/v1/webhooks/:id', read, async (request) => {
      const found = (await deps.webhooks.list(keyOf(request).id)).find((w) => w.id === request.params.id);
      if (!found) throw unknown(request.params.id);
      return found;
    });

    app.delete<{ Params: { id: string } }>('/v1/webhooks/:id', read, async (request, reply) => {
      const key = keyOf(request);
      const removed = await deps.webhooks.remove(request.params.id, { apiKey: key.id, actor: `key:${key.id}` });
      if (!removed) throw unknown(request.params.id);
      return reply.code(204).send();
    });
  };
}
