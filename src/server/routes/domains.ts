// /v1/domains: the sender-domain commands of the CLI over HTTP, for keys with the `admin` scope.
// Thin over SenderDomains; bodies validated with zod, errors named. Authentication and the error
// shape are the root's (../http-errors.ts); this plugin maps only DomainError.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { DomainError, type SenderDomains } from '../../domains/sender-domains.ts';
import { HttpError, keyOf, parseInput } from '../http-errors.ts';

const addBody = z.object({ domain: z.string().min(1).max(253) }).strict();
const verifyBody = z.object({ force: z.boolean().optional() }).strict().optional();

function statusOf(err: DomainError): number {
  return err.kind === 'unknown' ? 404 : err.kind === 'exists' ? 409 : 400;
}

/** A fastify plugin: its error handler applies to these routes only, and passes the rest to the root's. */
export function domainRoutes(deps: { domains: SenderDomains }) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const admin = { config: { scope: 'admin' } } as const;
    const actor = (request: FastifyRequest) => `key:${keyOf(request).id}`;
    app.setErrorHandler((err) => {
      throw err instanceof DomainError ? new HttpError(statusOf(err), err.message, { kind: err.kind }) : err;
    });

    app.get('/v1/domains', admin, async () => ({ domains: (await deps.domains.list()).map(({ records: _r, ...d }) => d) }));

    app.post('/v1/domains', admin, async (request, reply) => {
      const body = parseInput(addBody, request.body, 'body');
      return reply.code(201).send(await deps.domains.add(body.domain, actor(request)));
    });

    app.get<{ Params: { domain: string } }>('/v1/domains/:domain', admin, async (request) => deps.domains.show(request.params.domain));

    app.delete<{ Params: { domain: string } }>('/v1/domains/:domain', admin, async (request, reply) => {
      await deps.domains.remove(request.params.domain, actor(request));
      return reply.code(204).send();
    });

    // 200 with the report whether or not the domain verified: the report is the answer.
    app.post<{ Params: { domain: string } }>('/v1/domains/:domain/verify', admin, async (request) => {
      const body = parseInput(verifyBody, request.body ?? undefined, 'body');
      return deps.domains.verify(request.params.domain, { actor: actor(request), force: body?.force ?? false });
    });

    app.post<{ Params: { domain: string } }>('/v1/domains/:domain/rotate-dkim', admin, async (request) =>
      deps.domains.rotateDkim(request.params.domain, actor(request)),
    );
  };
}
