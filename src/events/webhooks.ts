// Registering webhooks: per API key, a URL (vetted against SSRF, see url-guard.ts), the event
// types it wants and a signing secret made here and shown once. Used by the CLI and the HTTP API;
// each change is audited.
import type { Store } from '../store/store.ts';
import { EVENT_TYPES, isEventType, type EventType } from '../store/events-table.ts';
import type { WebhookRecord } from '../store/webhooks-table.ts';
import { uuidv7 } from '../store/ids.ts';
import { vetWebhookUrl, type UrlGuardOptions } from './url-guard.ts';
import { generateWebhookSecret } from './signature.ts';

/** A key may have this many webhooks: each one multiplies the outbox. */
export const MAX_WEBHOOKS_PER_KEY = 10;

export class WebhookError extends Error {
  override name = 'WebhookError';
  readonly kind: 'invalid' | 'unknown' | 'limit';
  constructor(kind: 'invalid' | 'unknown' | 'limit', message: string) {
    super(message);
    this.kind = kind;
  }
}

export interface WebhookView {
  id: string;
  apiKey: string;
  url: string;
  events: EventType[];
  createdAt: string;
  disabledAt: string | null;
  disabledReason: string | null;
  deliveries: { pending: number; delivered: number; failed: number };
}

export interface CreatedWebhook extends WebhookView {
  /** The signing secret, shown here once. */
  secret: string;
}

/** Parses `sent,bounce` (or a list); throws WebhookError naming an unknown type. */
export function parseEventTypes(value: string | string[]): EventType[] {
  const names = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new WebhookError('invalid', `no event types given: expected a comma-separated list of ${EVENT_TYPES.join(', ')}`);
  for (const name of names) {
    if (!isEventType(name)) throw new WebhookError('invalid', `unknown event type "${name}": expected one of ${EVENT_TYPES.join(', ')}`);
  }
  return EVENT_TYPES.filter((t) => names.includes(t));
}

export class Webhooks {
  readonly #store: Store;
  readonly #guard: UrlGuardOptions;
  readonly #now: () => number;

  constructor(store: Store, guard: UrlGuardOptions, now: () => number = Date.now) {
    this.#store = store;
    this.#guard = guard;
    this.#now = now;
  }

  async add(input: { apiKey: string; url: string; events: string | string[]; actor: string }): Promise<CreatedWebhook> {
    const events = parseEventTypes(input.events);
    const key = await this.#store.apiKeys.get(input.apiKey);
    if (!key) throw new WebhookError('unknown', `no API key ${input.apiKey}`);
    if ((await this.#store.webhooks.count(key.id)) >= MAX_WEBHOOKS_PER_KEY) {
      throw new WebhookError('limit', `API key ${key.id} already has ${MAX_WEBHOOKS_PER_KEY} webhooks: remove one first`);
    }
    let url: string;
    try {
      url = (await vetWebhookUrl(input.url, this.#guard)).url.toString();
    } catch (err) {
      throw new WebhookError('invalid', `webhook URL refused: ${(err as Error).message}`);
    }
    const id = uuidv7(this.#now());
    const secret = generateWebhookSecret();
    await this.#store.webhooks.insert({ id, apiKeyId: key.id, url, events, secret, createdAt: this.#now() });
    await this.#store.audit.append({
      actor: input.actor,
      action: 'webhook.add',
      subject: id,
      // The origin only: a path or query may carry the receiver's token.
      detail: { apiKey: key.id, origin: new URL(url).origin, events },
    });
    const view = await this.#store.webhooks.get(id);
    return { ...toView(view!), secret };
  }

  async list(apiKey?: string): Promise<WebhookView[]> {
    return (await this.#store.webhooks.list(apiKey)).map(toView);
  }

  /** Removes a webhook; with `apiKey`, only one of that key's (others are "not found"). */
  async remove(id: string, options: { apiKey?: string; actor: string }): Promise<boolean> {
    const removed = await this.#store.webhooks.remove(id, options.apiKey);
    if (removed) await this.#store.audit.append({ actor: options.actor, action: 'webhook.remove', subject: id });
    return removed;
  }
}

export function toView(record: WebhookRecord): WebhookView {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: record.id,
    apiKey: record.apiKeyId,
    url: record.url,
    events: record.events,
    createdAt: iso(record.createdAt)!,
    disabledAt: iso(record.disabledAt),
    disabledReason: record.disabledReason,
    deliveries: record.deliveries,
  };
}
