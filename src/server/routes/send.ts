// POST /v3.1/send (Mailjet Send API v3.1, HTTP Basic auth, `send` scope) and GET /openapi.json.
// Owns the HTTP side only; the root (../http-errors.ts) checks credentials before the body is read,
// keeps the body's exact bytes (for Idempotency-Key) and answers malformed, oversize or non-JSON
// bodies in Mailjet's shape; the sending itself is intake/mailjet-send.
import type { FastifyInstance } from 'fastify';
import type { Composer } from '../../compose/outgoing.ts';
import type { Store } from '../../store/store.ts';
import type { Logger } from '../../log/logger.ts';
import { MailjetSend } from '../../intake/mailjet-send.ts';
import { LIMITS } from '../../intake/mailjet-schema.ts';
import { globalError } from '../../intake/mailjet-errors.ts';
import { IDEMPOTENCY_HEADER, IdempotencyKeys, parseIdempotencyHeader } from '../../intake/http-idempotency.ts';
import { openApiJson } from '../../intake/http-openapi.ts';
import { keyOf } from '../http-errors.ts';

export interface SendRoutesDeps {
  composer: Composer;
  store: Store;
  /** Base of MessageHref (e.g. https://mail.example.com); the request's own origin when absent. */
  publicBaseUrl?: string | (() => string);
  /** Called after a request queued at least one message: wire to runner.nudge(). */
  onQueued?: () => void;
  /** Version shown in /openapi.json. */
  version?: string;
  clock?: () => number;
  /** Defaults to the HTTP server's logger. */
  logger?: Logger;
}

const JSON_TYPE = 'application/json; charset=utf-8';

export function sendRoutes(deps: SendRoutesDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const service = new MailjetSend({ composer: deps.composer, store: deps.store, logger: deps.logger ?? (app.log as unknown as Logger), onQueued: deps.onQueued });
    const idempotency = new IdempotencyKeys(deps.store, deps.clock);

    app.get('/openapi.json', { config: { scope: 'public' } }, async (_request, reply) => reply.type(JSON_TYPE).send(openApiJson(deps.version ?? '0')));

    app.post('/v3.1/send', { config: { scope: 'send' }, bodyLimit: LIMITS.requestBytes }, async (request, reply) => {
      const key = keyOf(request);
      const header = parseIdempotencyHeader(request.headers[IDEMPOTENCY_HEADER]);
      if (!header.ok) {
        const error = globalError('mj-0005', `Idempotency-Key header: ${header.message}.`, 400);
        return reply.code(400).type(JSON_TYPE).send(JSON.stringify(error));
      }
      let claim: string | null = null;
      if (header.key !== null) {
        const begun = await idempotency.begin(key.id, header.key, request.rawBody ?? Buffer.alloc(0));
        if (begun.kind === 'replay') return reply.code(begun.status).type(JSON_TYPE).header('Idempotent-Replayed', 'true').send(begun.body);
        if (begun.kind === 'mismatch') {
          const error = globalError('mj-0005', 'This Idempotency-Key was already used with a different request body: use a new key for a new request.', 422);
          return reply.code(422).type(JSON_TYPE).send(JSON.stringify(error));
        }
        if (begun.kind === 'in-progress') {
          const error = globalError(
            'mj-0005',
            `A request with this Idempotency-Key started at ${new Date(begun.since).toISOString()} has not answered yet; its answer is replayed once it has one. ` +
              'If the server stopped while handling it, some of its messages may have been queued: look them up before sending them again with a new key.',
            409,
          );
          return reply.code(409).type(JSON_TYPE).send(JSON.stringify(error));
        }
        claim = begun.id;
      }
      try {
        const baseUrl = (typeof deps.publicBaseUrl === 'function' ? deps.publicBaseUrl() : deps.publicBaseUrl) ?? `${request.protocol}://${request.host}`;
        const outcome = await service.send(request.body, { apiKeyId: key.id, baseUrl: baseUrl.replace(/\/+$/, '') });
        const bytes = Buffer.from(JSON.stringify(outcome.body));
        if (claim !== null) {
          // Nothing queued and the server at fault: let a retry run again instead of replaying it.
          if (outcome.status >= 500 && outcome.queued === 0) await idempotency.abandon(claim);
          else await idempotency.finish(claim, outcome.status, bytes);
          claim = null;
        }
        return reply.code(outcome.status).type(JSON_TYPE).send(bytes);
      } finally {
        if (claim !== null) await idempotency.abandon(claim);
      }
    });
  };
}
