// The webhook dispatcher: on the shared lease-worker loop (lease/worker-loop.ts), it leases due
// rows of the durable outbox (webhook_deliveries), POSTs each webhook's batch as one signed JSON
// array, and records the outcome fenced by the lease token. The loop renews a batch's lease while
// its POST is in flight, so a slow receiver never lets another dispatcher send the same batch. 2xx is success; 410 Gone disables the webhook; anything else
// (other statuses, timeouts, refused connections, a host that now resolves somewhere it must not)
// is retried with exponential backoff until the row is `webhooks.maxAge` (24 h) old, then given up
// and recorded as failed. Deliveries are at least once and unordered: receivers deduplicate on
// `event_id`. Every delivery re-vets the URL and connects only to the address it vetted (see
// url-guard.ts), with TLS 1.2 at least, verified against the system CAs plus tls.caFile.
import { pinnedRequest } from '../net/https-client.ts';
import type { Logger } from '../log/logger.ts';
import type { Config } from '../config/schema.ts';
import { LeaseLoop, type LeaseView } from '../lease/worker-loop.ts';
import type { Store } from '../store/store.ts';
import type { ClaimedBatch, DeliveryVerdict } from '../store/webhooks-table.ts';
import { formatEvent } from './format.ts';
import { SIGNATURE_HEADER, signWebhookBody } from './signature.ts';
import { vetWebhookUrl, type HostLookup, type VettedUrl } from './url-guard.ts';

export interface WebhookSchedule {
  /** Wait after the first failed attempt; doubles after each further one. */
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Give a row up this long after its event (the last try is made at that age). */
  maxAgeMs: number;
}

export const DEFAULT_WEBHOOK_SCHEDULE: WebhookSchedule = { minBackoffMs: 30_000, maxBackoffMs: 3_600_000, maxAgeMs: 86_400_000 };

/** What becomes of an outbox row after its `attempts`-th failed attempt at `now`. Pure. */
export function webhookRetry(
  attempts: number,
  createdAt: number,
  now: number,
  schedule: WebhookSchedule,
): { state: 'pending' | 'failed'; nextAttemptAt: number } {
  const giveUpAt = createdAt + schedule.maxAgeMs;
  if (now >= giveUpAt) return { state: 'failed', nextAttemptAt: now };
  const delay = Math.min(schedule.maxBackoffMs, schedule.minBackoffMs * 2 ** Math.max(0, Math.min(attempts - 1, 40)));
  return { state: 'pending', nextAttemptAt: Math.min(now + delay, giveUpAt) };
}

/** The dispatcher's settings from the configuration (webhooks.*). */
export function dispatcherSettingsFrom(webhooks: Config['webhooks']): Pick<
  WebhookDispatcherOptions,
  'allowLoopback' | 'concurrency' | 'batchSize' | 'timeoutMs' | 'pollIntervalMs' | 'schedule'
> {
  return {
    allowLoopback: webhooks.allowLoopback,
    concurrency: webhooks.concurrency,
    batchSize: webhooks.batchSize,
    timeoutMs: webhooks.timeout,
    pollIntervalMs: webhooks.pollInterval,
    schedule: { minBackoffMs: webhooks.minBackoff, maxBackoffMs: webhooks.maxBackoff, maxAgeMs: webhooks.maxAge },
  };
}

export interface WebhookDispatcherOptions {
  store: Store;
  logger: Logger;
  /** Lease owner name, unique per process (the queue runner's worker id will do). */
  workerId: string;
  /** How webhook hosts are resolved (resolverLookup(resolver) in the server). */
  lookup: HostLookup;
  /** Extra trusted CA certificates (PEM), on top of the system store (tls.caFile). */
  ca?: string[];
  /** Allow loopback receivers. Default true. */
  allowLoopback?: boolean;
  /** Batches (POSTs) in flight at once, each to a different webhook. Default 4. */
  concurrency?: number;
  /** Events per POST at most. Default 100. */
  batchSize?: number;
  /** Whole-request timeout, connect to last byte. Default 10 s. */
  timeoutMs?: number;
  pollIntervalMs?: number;
  /** How long a claimed batch is ours unless renewed (every third of it, while its POST is in flight). Default max(60 s, 3 × timeout). */
  leaseMs?: number;
  schedule?: WebhookSchedule;
  clock?: () => number;
}

const USER_AGENT = 'Lacre-Webhooks/1';

export class WebhookDispatcher {
  readonly #o: Required<Omit<WebhookDispatcherOptions, 'ca' | 'clock'>> & { ca: string[] };
  readonly #clock: () => number;
  readonly #loop: LeaseLoop<ClaimedBatch>;
  /** Webhook id → batches in flight here: one POST per webhook at a time keeps its events in order of tries. */
  readonly #busy = new Map<string, number>();
  /** Token → rows leased under it, so a batch partly taken over counts as lost. */
  readonly #rows = new Map<string, number>();

  constructor(options: WebhookDispatcherOptions) {
    const timeoutMs = options.timeoutMs ?? 10_000;
    this.#o = {
      store: options.store,
      logger: options.logger,
      workerId: options.workerId,
      lookup: options.lookup,
      ca: options.ca ?? [],
      allowLoopback: options.allowLoopback ?? true,
      concurrency: Math.max(1, options.concurrency ?? 4),
      batchSize: Math.max(1, options.batchSize ?? 100),
      timeoutMs,
      pollIntervalMs: options.pollIntervalMs ?? 1_000,
      leaseMs: options.leaseMs ?? Math.max(60_000, 3 * timeoutMs),
      schedule: options.schedule ?? DEFAULT_WEBHOOK_SCHEDULE,
    };
    this.#clock = options.clock ?? Date.now;
    const webhooks = this.#o.store.webhooks;
    this.#loop = new LeaseLoop<ClaimedBatch>({
      name: 'webhooks',
      logger: this.#o.logger,
      concurrency: this.#o.concurrency,
      leaseMs: this.#o.leaseMs,
      pollIntervalMs: this.#o.pollIntervalMs,
      clock: this.#clock,
      claim: (free, now) => this.#claim(free, now),
      run: (batch, signal, lease) => this.#run(batch, signal, lease),
      tokens: (batch) => [batch.token],
      leaseUntil: (batch) => batch.leaseUntil,
      renew: (tokens, until) =>
        webhooks.renew(
          this.#o.workerId,
          tokens.map((token) => ({ token, rows: this.#rows.get(token) ?? 1 })),
          until,
        ),
      release: (batch) => webhooks.release(batch.token),
      nextDueAfter: (now) => webhooks.nextDueAfter(now),
    });
  }

  get inFlightCount(): number {
    return this.#loop.inFlightCount;
  }

  start(): void {
    this.#loop.start();
  }

  /** Looks for due deliveries now (e.g. right after events were recorded). */
  nudge(): void {
    this.#loop.nudge();
  }

  /**
   * Stops claiming, lets in-flight POSTs finish for `graceMs`, then aborts the rest and gives
   * their leases back (an aborted POST is not counted as an attempt).
   */
  stop(graceMs: number): Promise<{ finished: number; released: number }> {
    return this.#loop.stop(graceMs);
  }

  /** One claim: a batch per free slot, each to a webhook not already in flight here. */
  async #claim(free: number, now: number): Promise<{ work: ClaimedBatch[]; more: boolean }> {
    const batches = await this.#o.store.webhooks.claimDue({
      owner: this.#o.workerId,
      now,
      leaseMs: this.#o.leaseMs,
      maxBatches: free,
      batchSize: this.#o.batchSize,
      busy: new Set(this.#busy.keys()),
    });
    // Marked busy here, before the next claim can run: the loop starts them right after this.
    for (const b of batches) {
      this.#busy.set(b.webhook.id, (this.#busy.get(b.webhook.id) ?? 0) + 1);
      this.#rows.set(b.token, b.deliveries.length);
    }
    return { work: batches, more: batches.length === free };
  }

  async #run(batch: ClaimedBatch, signal: AbortSignal, lease: LeaseView): Promise<void> {
    try {
      await this.#deliver(batch, signal, lease);
    } finally {
      this.#rows.delete(batch.token);
      const n = (this.#busy.get(batch.webhook.id) ?? 1) - 1;
      if (n > 0) this.#busy.set(batch.webhook.id, n);
      else this.#busy.delete(batch.webhook.id);
    }
  }

  async #deliver(batch: ClaimedBatch, signal: AbortSignal, lease: LeaseView): Promise<void> {
    const log = this.#o.logger;
    const store = this.#o.store;
    const events = await store.events.byIds(batch.deliveries.map((d) => d.eventId));
    const body = Buffer.from(JSON.stringify(events.map(formatEvent)), 'utf8');
    if (!lease.held()) {
      // Another dispatcher may own these rows now: sending would duplicate its POST.
      log.warn({ webhook: batch.webhook.id, events: batch.deliveries.length }, 'webhook batch lease lost before sending; left to its new holder');
      return;
    }
    let status: number | null = null;
    let error: string | null = null;
    try {
      const vetted = await vetWebhookUrl(batch.webhook.url, { lookup: this.#o.lookup, allowLoopback: this.#o.allowLoopback });
      status = await post(vetted, body, {
        headers: {
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          [SIGNATURE_HEADER.toLowerCase()]: signWebhookBody(batch.webhook.secret, body, this.#clock()),
          'x-lacre-webhook-id': batch.webhook.id,
          'x-lacre-delivery-id': batch.token,
        },
        ca: this.#o.ca,
        timeoutMs: this.#o.timeoutMs,
        signal,
      });
    } catch (err) {
      // Shutting down: not an attempt; the loop gives the lease back.
      if (signal.aborted) return;
      error = (err as Error).message;
    }
    const at = this.#clock();
    const fields = { webhook: batch.webhook.id, events: batch.deliveries.length, status: status ?? undefined };
    if (status !== null && status >= 200 && status < 300) {
      await this.#finish(batch, batch.deliveries.map((d) => ({ id: d.id, state: 'delivered', nextAttemptAt: at })), {
        at,
        status,
        error: null,
      });
      log.info(fields, 'webhook batch delivered');
      return;
    }
    if (status === 410) {
      // The receiver says it is gone for good: stop sending there (RFC 9110 §15.5.11).
      const reason = 'the receiver answered 410 Gone';
      await this.#finish(batch, batch.deliveries.map((d) => ({ id: d.id, state: 'failed', nextAttemptAt: at })), {
        at,
        status,
        error: reason,
      });
      await store.webhooks.disable(batch.webhook.id, at, reason);
      await store.audit.append({ actor: 'system', action: 'webhook.disable', subject: batch.webhook.id, detail: { reason }, at });
      log.warn(fields, 'webhook disabled: its receiver answered 410 Gone');
      return;
    }
    const verdicts: DeliveryVerdict[] = batch.deliveries.map((d) => ({
      id: d.id,
      ...webhookRetry(d.attempts + 1, d.createdAt, at, this.#o.schedule),
    }));
    await this.#finish(batch, verdicts, { at, status, error: error ?? `the receiver answered ${status}` });
    const gaveUp = verdicts.filter((v) => v.state === 'failed').length;
    log.warn({ ...fields, error: error ?? undefined, gaveUp: gaveUp || undefined }, gaveUp ? 'webhook delivery given up' : 'webhook delivery failed; will retry');
  }

  /** Records the verdicts, fenced by the batch's token; rows taken over meanwhile are their new holder's. */
  async #finish(batch: ClaimedBatch, verdicts: DeliveryVerdict[], attempt: { at: number; status: number | null; error: string | null }): Promise<void> {
    const recorded = await this.#o.store.webhooks.finish(batch.token, verdicts, attempt);
    if (recorded < verdicts.length) {
      this.#o.logger.warn({ webhook: batch.webhook.id, events: verdicts.length, recorded }, 'webhook batch lease lost before its outcome was recorded');
    }
  }
}

// The answer's body means nothing to us; a receiver sending more than this is cut off.
const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * POSTs `body` to the vetted URL, connecting only to its first vetted address, with SNI and
 * certificate checks for the URL's own host name (../net/https-client.ts). Resolves with the
 * status code; the response body is read (bounded) and discarded.
 */
export async function post(
  vetted: VettedUrl,
  body: Buffer,
  options: { headers: Record<string, string>; ca: string[]; timeoutMs: number; signal?: AbortSignal },
): Promise<number> {
  const { url, host } = vetted;
  const https = url.protocol === 'https:';
  const response = await pinnedRequest(
    // url-guard allows http: only when every address is loopback.
    { host, address: vetted.addresses[0], port: url.port ? Number(url.port) : https ? 443 : 80, scheme: https ? 'https' : 'http' },
    {
      method: 'POST',
      path: `${url.pathname}${url.search}`,
      headers: options.headers,
      body,
      ca: options.ca,
      timeoutMs: options.timeoutMs,
      maxBodyBytes: MAX_ANSWER_BYTES,
      discardBody: true,
      signal: options.signal,
    },
  );
  return response.status;
}
