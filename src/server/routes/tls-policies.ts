// /v1/tls-policies: the `lacre policy` commands over HTTP, for keys with the `admin` scope. Thin
// over the policy table and its audited changes; bodies validated with zod, errors named.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { AuditTable } from '../../store/audit-table.ts';
import type { TlsPoliciesTable } from '../../store/tls-policies-table.ts';
import { MAX_NOTE_LENGTH } from '../../policy-lookup/static-policy-input.ts';
import type { StaticPolicies } from '../../policy-lookup/static-policies.ts';
import { StaticPolicyError, removeStaticPolicy, setStaticPolicy } from '../../policy-lookup/static-policy-changes.ts';
import { STATIC_TLS_LEVELS } from '../../tls-policy/levels.ts';
import { HttpError, keyOf, parseInput } from '../http-errors.ts';

const putBody = z
  .object({
    level: z.enum(STATIC_TLS_LEVELS),
    note: z.string().max(MAX_NOTE_LENGTH).nullable().optional(),
  })
  .strict();

export interface TlsPolicyRouteDeps {
  table: TlsPoliciesTable;
  audit: Pick<AuditTable, 'append'>;
  /** The same instance delivery decides with, so a change here applies at once in this process. */
  policies: StaticPolicies;
}

function statusOf(err: StaticPolicyError): number {
  return err.kind === 'unknown' ? 404 : err.kind === 'configured' ? 409 : 400;
}

/** A fastify plugin: its error handler applies to these routes only, and passes the rest to the root's. */
export function tlsPolicyRoutes(deps: TlsPolicyRouteDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const admin = { config: { scope: 'admin' } } as const;
    const actor = (request: FastifyRequest) => `key:${keyOf(request).id}`;
    app.setErrorHandler((err) => {
      throw err instanceof StaticPolicyError ? new HttpError(statusOf(err), err.message, { kind: err.kind }) : err;
    });

    app.get('/v1/tls-policies', admin, async () => ({ defaultLevel: deps.policies.defaultLevel, policies: await deps.policies.list() }));

    // PUT: the key names the resource; 201 when it is new, 200 when it replaced a level.
    app.put<{ Params: { domain: string } }>('/v1/tls-policies/:domain', admin, async (request, reply) => {
      const body = parseInput(putBody, request.body, 'body');
      const outcome = await setStaticPolicy(deps, { domain: request.params.domain, level: body.level, note: body.note, actor: actor(request) });
      return reply.code(outcome.previous ? 200 : 201).send(outcome);
    });

    app.delete<{ Params: { domain: string } }>('/v1/tls-policies/:domain', admin, async (request, reply) => {
      await removeStaticPolicy(deps, { domain: request.params.domain, actor: actor(request) });
      return reply.code(204).send();
    });
  };
}

/** Mounts /v1/tls-policies on the app. */
export async function registerTlsPolicyRoutes(app: FastifyInstance, deps: TlsPolicyRouteDeps): Promise<void> {
  await app.register(tlsPolicyRoutes(deps));
}
