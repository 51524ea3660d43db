// Reading what became of sent messages: GET /v3/REST/message/{MessageID} in Mailjet's shape (one
// recipient, by the numeric id the send API returned) and GET /v1/messages/{id} in Lacre's (the
// whole message: every recipient's state and every attempt with its TLS details). Least
// privilege: a `read` key reads every message; a key with only `send` reads the messages it sent
// and nothing else (404, as if they did not exist).
// May import: ../../access, ../../store (types and views), fastify.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiKeys, AuthenticatedKey } from '../../access/api-keys.ts';
import { UNAUTHORIZED_MESSAGE, parseBasicAuth } from '../../access/http-auth.ts';
import type { Store } from '../../store/store.ts';
import type { MessageView, RecipientState } from '../../store/records.ts';
import { FINAL_STATES } from '../../store/records.ts';

export interface MessageRoutesDeps {
  keys: ApiKeys;
  store: Store;
}

/** Lacre's recipient states in Mailjet's message Status vocabulary. */
const MAILJET_STATUS: Record<RecipientState, string> = {
  queued: 'queued',
  deferred: 'deferred',
  delivered: 'sent',
  bounced: 'hardbounced',
  expired: 'softbounced',
  failed: 'blocked',
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const readers = new WeakMap<FastifyRequest, AuthenticatedKey>();

/** `read` or `send`; which messages a `send`-only key may see is decided per message. */
function requireReader(keys: ApiKeys) {
  return async function checkReader(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const credentials = parseBasicAuth(request.headers.authorization);
    const key = credentials ? await keys.authenticate(credentials.apiKey, credentials.secretKey) : null;
    if (!key) {
      return reply
        .code(401)
        .header('WWW-Authenticate', 'Basic realm="lacre"')
        .send({ StatusCode: 401, ErrorIdentifier: randomUUID(), ErrorMessage: UNAUTHORIZED_MESSAGE });
    }
    if (!key.scopes.includes('read') && !key.scopes.includes('send')) {
      return reply.code(403).send({ StatusCode: 403, ErrorIdentifier: randomUUID(), ErrorMessage: 'this API key lacks the "read" scope' });
    }
    readers.set(request, key);
    return undefined;
  };
}

function mayRead(key: AuthenticatedKey, message: MessageView): boolean {
  return key.scopes.includes('read') || (key.scopes.includes('send') && message.metadata.apiKeyId === key.id);
}

/** Mailjet's date format: seconds, UTC, `Z`. */
const mailjetDate = (iso: string) => `${iso.slice(0, 19)}Z`;

export function messageRoutes(deps: MessageRoutesDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    const reader = { onRequest: requireReader(deps.keys) };

    app.get<{ Params: { id: string } }>('/v3/REST/message/:id', reader, async (request, reply) => {
      const notFound = () => reply.code(404).send({ ErrorInfo: '', ErrorMessage: 'Object not found', StatusCode: 404 });
      if (!/^[1-9]\d{0,15}$/.test(request.params.id) || !Number.isSafeInteger(Number(request.params.id))) return notFound();
      const ref = await deps.store.sendApi.byPublicId(Number(request.params.id));
      const message = ref ? await deps.store.getMessage(ref.messageId) : null;
      if (!ref || !message || !mayRead(readers.get(request)!, message)) return notFound();
      const recipient = message.recipients.find((r) => r.id === ref.recipientId);
      if (!recipient) return notFound();
      const data = {
        ArrivedAt: mailjetDate(message.createdAt),
        AttemptCount: recipient.attemptCount,
        ContactAlt: recipient.address,
        CustomID: message.metadata.customId ?? '',
        ID: ref.publicId,
        IsClickTracked: false,
        IsOpenTracked: false,
        MessageSize: message.size,
        StatePermanent: FINAL_STATES.has(recipient.state),
        Status: MAILJET_STATUS[recipient.state],
        UUID: recipient.id,
      };
      return { Count: 1, Data: [data], Total: 1 };
    });

    app.get<{ Params: { id: string } }>('/v1/messages/:id', reader, async (request, reply) => {
      const notFound = () => reply.code(404).send({ error: 'not-found', message: `no message ${request.params.id} (or not one this API key may read)` });
      const id = request.params.id;
      if (!UUID.test(id)) return notFound();
      // The message id, or one of its recipients' ids (the MessageUUID of the send API).
      let message = await deps.store.getMessage(id);
      if (!message) {
        const ref = await deps.store.sendApi.byRecipientId(id);
        if (ref) message = await deps.store.getMessage(ref.messageId);
      }
      if (!message || !mayRead(readers.get(request)!, message)) return notFound();
      const publicIds = await deps.store.sendApi.publicIdsOf(message.id);
      return { ...message, recipients: message.recipients.map((r) => ({ ...r, publicId: publicIds.get(r.id) ?? null })) };
    });
  };
}
