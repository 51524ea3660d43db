// /v1/webhooks: the authenticated key's own webhooks (register, list, show, remove). Needs the
// `read` scope, the scope for events: a webhook is a way of reading the key's own events, so a
// send-only key cannot point them anywhere. Registration vets the URL (SSRF) and returns the
// signing secret once.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiKeys } from '../../access/api-keys.ts';
import { requireScope, keyOf } from '../../access/http-auth.ts';
import { WebhookError, type Webhooks } from '../../events/webhooks.ts';

const addBody = z
  .object({
    url: z.string().min(1).max(2048),
    events: z.union([z.string().min(1), z.array(z.string()).min(1)]),
  })
  .strict();

function statusOf(err: WebhookError): number {
  return err.kind === 'unknown' ? 404 : err.kind === 'limit' ? 409 : 400;
}

export function webhookRoutes(deps: { keys: ApiKeys; webhooks: Webhooks }) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const read = { preHandler: requireScope(deps.keys, 'read') };

    app.setErrorHandler((err, _request, reply) => {
      if (err instanceof WebhookError) return reply.code(statusOf(err)).send({ error: err.kind, message: err.message });
      if (err instanceof z.ZodError) {
        return reply.code(400).send({
          error: 'invalid-request',
          message: err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
        });
      }
      const status = (err as { statusCode?: number }).statusCode;
      if (status && status < 500) return reply.code(status).send({ error: 'invalid-request', message: (err as Error).message });
      throw err;
    });

    app.get('/v1/webhooks', read, async (request) => ({ webhooks: await deps.webhooks.list(keyOf(request).id) }));

    app.post('/v1/webhooks', read, async (request, reply) => {
      const body = addBody.parse(request.body);
      const key = keyOf(request);
      const created = await deps.webhooks.add({ apiKey: key.id, url: body.url, events: body.events, actor: `key:${key.id}` });
      return reply.code(201).send(created);
    });

    app.get<{ Params: { id: string } }>('/v1/webhooks/:id', read, async (request, reply) => {
      const found = (await deps.webhooks.list(keyOf(request).id)).find((w) => w.id === request.params.id);
      if (!found) return reply.code(404).send({ error: 'unknown', message: `no webhook ${request.params.id} for this API key` });
      return found;
    });

    app.delete<{ Params: { id: string } }>('/v1/webhooks/:id', read, async (request, reply) => {
      const key = keyOf(request);
      const removed = await deps.webhooks.remove(request.params.id, { apiKey: key.id, actor: `key:${key.id}` });
      if (!removed) return reply.code(404).send({ error: 'unknown', message: `no webhook ${request.params.id} for this API key` });
      return reply.code(204).send();
    });
  };
}
