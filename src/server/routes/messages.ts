// Reading what became of sent messages: GET /v3/REST/message/{MessageID} in Mailjet's shape (one
// recipient, by the numeric id the send API returned) and GET /v1/messages/{id} in Lacre's (the
// whole message: every recipient's state and every attempt with its TLS details). Least
// privilege: a `read` key reads every message; a key with only `send` reads the messages it sent
// and nothing else (404, as if they did not exist). The root's guard (../http-errors.ts) lets a key
// with either scope in; which messages it may see is decided per message here.
import type { FastifyInstance } from 'fastify';
import type { AuthenticatedKey } from '../../access/api-keys.ts';
import type { Store } from '../../store/store.ts';
import type { MessageView, RecipientState } from '../../store/records.ts';
import { FINAL_STATES } from '../../store/records.ts';
import { HttpError, keyOf } from '../http-errors.ts';

export interface MessageRoutesDeps {
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

function mayRead(key: AuthenticatedKey, message: MessageView): boolean {
  return key.scopes.includes('read') || (key.scopes.includes('send') && message.metadata.apiKeyId === key.id);
}

/** Mailjet's date format: seconds, UTC, `Z`. */
const mailjetDate = (iso: string) => `${iso.slice(0, 19)}Z`;

export function messageRoutes(deps: MessageRoutesDeps) {
  return async function routes(app: FastifyInstance): Promise<void> {
    // `read` or `send`: a send-only key reads its own messages.
    const reader = { config: { scope: ['read', 'send'] } } as const;

    app.get<{ Params: { id: string } }>('/v3/REST/message/:id', reader, async (request, reply) => {
      const notFound = () => reply.code(404).send({ ErrorInfo: '', ErrorMessage: 'Object not found', StatusCode: 404 });
      if (!/^[1-9]\d{0,15}$/.test(request.params.id) || !Number.isSafeInteger(Number(request.params.id))) return notFound();
      const ref = await deps.store.sendApi.byPublicId(Number(request.params.id));
      const message = ref ? await deps.store.getMessage(ref.messageId) : null;
      if (!ref || !message || !mayRead(keyOf(request), message)) return notFound();
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

    app.get<{ Params: { id: string } }>('/v1/messages/:id', reader, async (request) => {
      const notFound = () => {
        throw new HttpError(404, `no message ${request.params.id} (or not one this API key may read)`, { kind: 'not-found' });
      };
      const id = request.params.id;
      if (!UUID.test(id)) return notFound();
      // The message id, or one of its recipients' ids (the MessageUUID of the send API).
      let message = await deps.store.getMessage(id);
      if (!message) {
        const ref = await deps.store.sendApi.byRecipientId(id);
        if (ref) message = await deps.store.getMessage(ref.messageId);
      }
      if (!message || !mayRead(keyOf(request), message)) return notFound();
      const publicIds = await deps.store.sendApi.publicIdsOf(message.id);
      return { ...message, recipients: message.recipients.map((r) => ({ ...r, publicId: publicIds.get(r.id) ?? null })) };
    });
  };
}
