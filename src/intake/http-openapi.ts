// The OpenAPI 3.1 description served at GET /openapi.json, generated from the same zod schemas that
// validate send requests (z.toJSONSchema), so the document cannot drift from what is enforced.
import { z } from 'zod';
import { LIMITS, openApiSchemas } from './mailjet-schema.ts';
import { IDEMPOTENCY_TTL_MS } from './http-idempotency.ts';

let cached: string | undefined;

/** The document as JSON text (built once). */
export function openApiJson(version: string): string {
  cached ??= JSON.stringify(openApiDocument(version));
  return cached;
}

export function openApiDocument(version: string): Record<string, unknown> {
  const generated = z.toJSONSchema(openApiSchemas, {
    uri: (id) => `#/components/schemas/${id}`,
    io: 'input',
    unrepresentable: 'any',
  }) as { schemas: Record<string, Record<string, unknown>> };
  // Components are plain schemas inside the document: no $schema or $id of their own.
  const schemas = Object.fromEntries(
    Object.entries(generated.schemas).map(([id, schema]) => {
      const { $schema: _s, $id: _i, ...rest } = schema;
      return [id, rest];
    }),
  );
  const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` });
  const json = (schema: unknown, description: string) => ({ description, content: { 'application/json': { schema } } });
  const globalError = (description: string) => json(ref('Error'), description);
  const restError = {
    type: 'object',
    properties: { ErrorInfo: { type: 'string' }, ErrorMessage: { type: 'string' }, StatusCode: { type: 'integer' } },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'Lacre HTTP API',
      version,
      description:
        'Mailjet Send API v3.1 compatible sending, and message status. Authenticate with HTTP Basic: API key as user name, secret key as password.',
    },
    components: {
      securitySchemes: { basic: { type: 'http', scheme: 'basic' } },
      schemas,
    },
    security: [{ basic: [] }],
    paths: {
      '/v3.1/send': {
        post: {
          summary: 'Send messages (Mailjet Send API v3.1)',
          description:
            `Each message is validated and queued on its own; one bad message does not stop the others. ` +
            `At most ${LIMITS.messages} messages, ${LIMITS.recipients} recipients per message, ` +
            `${LIMITS.attachmentBytes / 1024 / 1024} MB of attachments per message. Needs the "send" scope.`,
          parameters: [
            {
              name: 'Idempotency-Key',
              in: 'header',
              required: false,
              schema: { type: 'string', minLength: 1, maxLength: 255 },
              description: `A retry with the same key and body within ${IDEMPOTENCY_TTL_MS / 3_600_000} h gets the first answer again and sends nothing.`,
            },
          ],
          requestBody: { required: true, content: { 'application/json': { schema: ref('SendRequest') } } },
          responses: {
            '200': json(ref('SendResponse'), 'Every message was queued.'),
            '400': json({ oneOf: [ref('SendResponse'), ref('Error')] }, 'At least one message failed (the others are listed as queued), or the request itself is malformed.'),
            '401': globalError('Missing or wrong credentials.'),
            '403': json({ oneOf: [ref('SendResponse'), ref('Error')] }, 'The key lacks the "send" scope, or the sender is not authorized.'),
            '409': globalError('A request with this Idempotency-Key is still running.'),
            '413': globalError('The request body is too large.'),
            '415': globalError('The body is not application/json.'),
            '422': globalError('This Idempotency-Key was used with a different request.'),
          },
        },
      },
      '/v3/REST/message/{MessageID}': {
        get: {
          summary: 'One recipient\'s message status (Mailjet message resource)',
          description: 'Needs the "read" scope, or "send" for messages the same key sent.',
          parameters: [{ name: 'MessageID', in: 'path', required: true, schema: { type: 'integer', minimum: 1 } }],
          responses: {
            '200': json(
              {
                type: 'object',
                properties: { Count: { type: 'integer' }, Data: { type: 'array', items: { type: 'object' } }, Total: { type: 'integer' } },
              },
              'The message as Mailjet describes it.',
            ),
            '404': json(restError, 'No such message (or not one this key may read).'),
          },
        },
      },
      '/v1/messages/{id}': {
        get: {
          summary: 'A message with every recipient\'s state and delivery attempts (TLS details included)',
          description: 'The id is the message id or any of its MessageUUIDs. Needs the "read" scope, or "send" for messages the same key sent.',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }],
          responses: { '200': json({ type: 'object' }, 'The message.'), '404': json({ type: 'object' }, 'No such message (or not one this key may read).') },
        },
      },
      '/openapi.json': {
        get: { summary: 'This document', security: [], responses: { '200': json({ type: 'object' }, 'OpenAPI 3.1') } },
      },
    },
  };
}
