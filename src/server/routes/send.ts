// POST /v3.1/send (Mailjet Send API v3.1, HTTP Basic auth, `send` scope) and GET /openapi.json.
// Owns the HTTP side only: credentials checked before the body is read, the JSON body parsed here
// (so its exact bytes are at hand for Idempotency-Key) with Mailjet-shaped errors for malformed,
// oversize or non-JSON bodies; the sending itself is intake/mailjet-send.
// May import: ../../intake, ../../access, ../../compose and ../../store (types), fastify.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ApiKeys } from '../../access/api-keys.ts';
import { keyOf, requireScope } from '../../access/http-auth.ts';
import type { Composer } from '../../compose/outgoing.ts';
import type { Store } from '../../store/store.ts';
import type { Logger } from '../../log/logger.ts';
import { MailjetSend } from '../../intake/mailjet-send.ts';
import { LIMITS } from '../../intake/mailjet-schema.ts';
import { globalError } from '../../intake/mailjet-errors.ts';
import { IDEMPOTENCY_HEADER, IdempotencyKeys, parseIdempotencyHeader } from '../../intake/http-idempotency.ts';
import { openApiJson } from '../../intake/http-openapi.ts';

export interface SendRoutesDeps {
  keys: ApiKeys;
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

class MalformedJson extends Error {
  readonly statusCode = 400;
  readonly code = 'LACRE_MALFORMED_JSON';
}

const rawBodies = new WeakMap<FastifyRequest, Buffer>();

export function sendRoutes(deps: SendRoutesDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const service = new MailjetSend({ composer: deps.composer, store: deps.store, logger: deps.logger ?? (app.log as unknown as Logger), onQueued: deps.onQueued });
    const idempotency = new IdempotencyKeys(deps.store, deps.clock);

    // This plugin's own JSON parser: keeps the bytes, and reports bad JSON in Mailjet's terms.
    // Nothing but JSON here: any other body is refused with 415 (fastify's text/plain parser goes too).
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit: LIMITS.requestBytes }, (request, body, done) => {
      const bytes = body as Buffer;
      rawBodies.set(request, bytes);
      if (bytes.length === 0) return done(new MalformedJson('the request body is empty'), undefined);
      try {
        done(null, JSON.parse(bytes.toString('utf8')));
      } catch (err) {
        done(new MalformedJson((err as Error).message), undefined);
      }
    });

    app.setErrorHandler((err, _request, reply) => {
      const e = err as { code?: string; statusCode?: number; message: string };
      const send = (error: ReturnType<typeof globalError>) => reply.code(error.StatusCode).type(JSON_TYPE).send(JSON.stringify(error));
      if (e.code === 'LACRE_MALFORMED_JSON') {
        return send(globalError('mj-0002', `Malformed JSON, please review the syntax and properties types. (${e.message})`, 400));
      }
      if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        return send(globalError('mj-0011', `The request body is larger than ${LIMITS.requestBytes / 1024 / 1024} MB.`, 413));
      }
      if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || e.code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
        return send(globalError('mj-0002', 'The request body must be JSON sent as Content-Type: application/json.', 415));
      }
      if (e.statusCode !== undefined && e.statusCode < 500) return send(globalError('mj-0002', e.message, e.statusCode));
      const error = globalError('lacre-0500', 'Internal server error: nothing was sent by this request unless its response said so. Retry later.', 500);
      app.log.error({ err, errorIdentifier: error.ErrorIdentifier }, 'send API request failed');
      return send(error);
    });

    app.get('/openapi.json', async (_request, reply) => reply.type(JSON_TYPE).send(openApiJson(deps.version ?? '0')));

    app.post('/v3.1/send', { onRequest: requireScope(deps.keys, 'send'), bodyLimit: LIMITS.requestBytes }, async (request, reply) => {
      const key = keyOf(request);
      const header = parseIdempotencyHeader(request.headers[IDEMPOTENCY_HEADER]);
      if (!header.ok) {
        const error = globalError('mj-0005', `Idempotency-Key header: ${header.message}.`, 400);
        return reply.code(400).type(JSON_TYPE).send(JSON.stringify(error));
      }
      let claim: string | null = null;
      if (header.key !== null) {
        const begun = await idempotency.begin(key.id, header.key, rawBodies.get(request) ?? Buffer.alloc(0));
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
