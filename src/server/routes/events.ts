// GET /v1/events: pages through delivery events, oldest first, with a cursor (the last event id
// seen; ids are uuidv7 and sort in commit order). Needs the `read` scope: a send-only key gets 403,
// so a leaked sending key cannot list who was mailed. A key sees the events of the messages it
// submitted; a key that also has `admin` sees every event (other keys', system messages').
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Store } from '../../store/store.ts';
import { formatEvent } from '../../events/format.ts';
import { EVENT_TYPES, isEventType, type EventType } from '../../store/events-table.ts';
import { keyOf, parseInput } from '../http-errors.ts';

export const MAX_EVENTS_PAGE = 1000;

const query = z
  .object({
    since: z
      .string()
      .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'expected an event id (the `next` cursor of the previous page)')
      .optional(),
    limit: z.coerce.number({ error: 'expected a number' }).int().min(1).max(MAX_EVENTS_PAGE).default(100),
    type: z
      .string()
      .transform((value, ctx) => {
        const names = value.split(',').map((s) => s.trim()).filter(Boolean);
        const bad = names.find((n) => !isEventType(n));
        if (bad !== undefined) {
          ctx.addIssue({ code: 'custom', message: `unknown event type "${bad}": expected one of ${EVENT_TYPES.join(', ')}` });
          return z.NEVER;
        }
        return names as EventType[];
      })
      .optional(),
  })
  .strict();

export function eventRoutes(deps: { store: Store }) {
  return async function routes(app: FastifyInstance): Promise<void> {
    app.get('/v1/events', { config: { scope: 'read' } }, async (request) => {
      const q = parseInput(query, request.query ?? {}, 'query');
      const key = keyOf(request);
      const rows = await deps.store.events.list({
        after: q.since,
        // One more than asked tells whether another page follows.
        limit: q.limit + 1,
        apiKeyId: key.scopes.includes('admin') ? null : key.id,
        types: q.type,
      });
      const page = rows.slice(0, q.limit);
      return {
        events: page.map(formatEvent),
        count: page.length,
        // Always usable as the next `since`: an empty page keeps the cursor where it was.
        next: page.length > 0 ? page[page.length - 1].id : (q.since ?? null),
        hasMore: rows.length > q.limit,
      };
    });
  };
}
