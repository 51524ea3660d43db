// /v1/domains: the sender-domain commands of the CLI over HTTP, for keys with the `admin` scope.
// Thin over SenderDomains; bodies validated with zod, errors named.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ApiKeys } from '../../access/api-keys.ts';
import { requireScope, keyOf } from '../../access/http-auth.ts';
import { DomainError, type SenderDomains } from '../../domains/sender-domains.ts';

const addBody = z.object({ domain: z.string().min(1).max(253) }).strict();
const verifyBody = z.object({ force: z.boolean().optional() }).strict().optional();

function statusOf(err: DomainError): number {
  return err.kind === 'unknown' ? 404 : err.kind === 'exists' ? 409 : 400;
}

/** A fastify plugin: its error handler applies to these routes only. */
export function domainRoutes(deps: { keys: ApiKeys; domains: SenderDomains }) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const admin = { preHandler: requireScope(deps.keys, 'admin') };
    const actor = (request: Parameters<typeof keyOf>[0]) => `key:${keyOf(request).id}`;

    app.setErrorHandler((err, _request, reply) => {
      if (err instanceof DomainError) return reply.code(statusOf(err)).send({ error: err.kind, message: err.message });
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

    app.get('/v1/domains', admin, async () => ({ domains: (await deps.domains.list()).map(({ records: _r, ...d }) => d) }));

    app.post('/v1/domains', admin, async (request, reply) => {
      const body = addBody.parse(request.body);
      return reply.code(201).send(await deps.domains.add(body.domain, actor(request)));
    });

    app.get<{ Params: { domain: string } }>('/v1/domains/:domain', admin, async (request) => deps.domains.show(request.params.domain));

    app.delete<{ Params: { domain: string } }>('/v1/domains/:domain', admin, async (request, reply) => {
      await deps.domains.remove(request.params.domain, actor(request));
      return reply.code(204).send();
    });

    // 200 with the report whether or not the domain verified: the report is the answer.
    app.post<{ Params: { domain: string } }>('/v1/domains/:domain/verify', admin, async (request) => {
      const body = verifyBody.parse(request.body ?? undefined);
      return deps.domains.verify(request.params.domain, { actor: actor(request), force: body?.force ?? false });
    });

    app.post<{ Params: { domain: string } }>('/v1/domains/:domain/rotate-dkim', admin, async (request) =>
      deps.domains.rotateDkim(request.params.domain, actor(request)),
    );
  };
}
