// Webhooks and their durable outbox. A webhook belongs to one API key and hears of the events of
// the messages that key submitted. Its URL and signing secret are sealed (URLs often carry tokens;
// the secret must stay reversible to sign with). The outbox (webhook_deliveries) holds one row per
// (webhook, event), written in the event's own transaction (see events-table.ts); dispatchers lease
// rows through the store's lease primitive (leases.ts) like the queue leases recipients, renewing
// while a POST is in flight, so two nodes never send the same batch at once, and the lease token
// fences the verdict. Part of the store: the only SQL for these tables.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';
import { uuidv7 } from './ids.ts';
import { LEASE_CLEAR, LEASE_FENCE, LeaseTable } from './leases.ts';
import type { EventType } from './events-table.ts';

export interface NewWebhook {
  id: string;
  apiKeyId: string;
  url: string;
  events: EventType[];
  secret: string;
  createdAt: number;
}

export interface WebhookRecord {
  id: string;
  apiKeyId: string;
  url: string;
  events: EventType[];
  createdAt: number;
  disabledAt: number | null;
  disabledReason: string | null;
  /** Outbox rows by state. */
  deliveries: { pending: number; delivered: number; failed: number };
}

export interface ClaimedDelivery {
  id: string;
  eventId: string;
  attempts: number;
  createdAt: number;
}

/** Outbox rows of one webhook leased together under one token: they travel in one POST. */
export interface ClaimedBatch {
  token: string;
  /** When the lease ends unless renewed. */
  leaseUntil: number;
  webhook: { id: string; url: string; secret: string };
  deliveries: ClaimedDelivery[];
}

/** What became of one outbox row after an attempt. */
export interface DeliveryVerdict {
  id: string;
  state: 'pending' | 'delivered' | 'failed';
  /** When a pending row is due again. */
  nextAttemptAt: number;
}

const URL_CTX = 'webhooks.url_sealed';
const SECRET_CTX = 'webhooks.secret_sealed';

interface WebhookRow {
  id: string;
  api_key_id: string;
  url_sealed: Uint8Array;
  event_types: string;
  created_at: number;
  disabled_at: number | null;
  disabled_reason: string | null;
}

export class WebhooksTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;
  readonly #leases: LeaseTable;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
    this.#leases = new LeaseTable(engine, 'webhook_deliveries');
  }

  async insert(hook: NewWebhook): Promise<void> {
    await this.#engine.transaction((tx) =>
      tx.run(
        `INSERT INTO webhooks (id, api_key_id, url_sealed, secret_sealed, event_types, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
        [
          hook.id,
          hook.apiKeyId,
          this.#sealer.seal(hook.url, URL_CTX),
          this.#sealer.seal(hook.secret, SECRET_CTX),
          hook.events.join(','),
          hook.createdAt,
        ],
      ),
    );
  }

  async count(apiKeyId: string): Promise<number> {
    const row = await this.#engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM webhooks WHERE api_key_id = ?', [apiKeyId]);
    return Number(row?.n ?? 0);
  }

  async get(id: string): Promise<WebhookRecord | null> {
    const row = await this.#engine.get<WebhookRow>('SELECT * FROM webhooks WHERE id = ?', [id]);
    return row ? this.#view(row, await this.#counts([row.id])) : null;
  }

  /** Webhooks oldest first; only one key's when `apiKeyId` is given. */
  async list(apiKeyId?: string): Promise<WebhookRecord[]> {
    const rows = apiKeyId
      ? await this.#engine.all<WebhookRow>('SELECT * FROM webhooks WHERE api_key_id = ? ORDER BY created_at, id', [apiKeyId])
      : await this.#engine.all<WebhookRow>('SELECT * FROM webhooks ORDER BY created_at, id');
    const counts = await this.#counts(rows.map((r) => r.id));
    return rows.map((row) => this.#view(row, counts));
  }

  /** Deletes a webhook and its outbox rows; with `apiKeyId`, only if it belongs to that key. */
  async remove(id: string, apiKeyId?: string): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) =>
      apiKeyId
        ? tx.run('DELETE FROM webhooks WHERE id = ? AND api_key_id = ?', [id, apiKeyId])
        : tx.run('DELETE FROM webhooks WHERE id = ?', [id]),
    );
    return changes > 0;
  }

  /**
   * Disables a webhook (the receiver answered 410 Gone, or an operator asked): no new outbox rows
   * are made for it and its pending rows are given up, recorded with the reason.
   */
  async disable(id: string, at: number, reason: string): Promise<boolean> {
    return this.#engine.transaction(async (tx) => {
      const { changes } = await tx.run('UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE id = ? AND disabled_at IS NULL', [
        at,
        reason,
        id,
      ]);
      await tx.run(
        `UPDATE webhook_deliveries SET state = 'failed', finished_at = ?, last_error = ?, ${LEASE_CLEAR}
          WHERE webhook_id = ? AND state = 'pending'`,
        [at, `webhook disabled: ${reason}`, id],
      );
      return changes > 0;
    });
  }

  /**
   * Leases due outbox rows: at most `maxBatches` webhooks (skipping `busy` ones, already in flight
   * here), at most `batchSize` rows each, oldest events first. A row is due when pending, its next
   * attempt time has come and no live lease holds it; an expired lease means its dispatcher died.
   */
  async claimDue(options: {
    owner: string;
    now: number;
    leaseMs: number;
    maxBatches: number;
    batchSize: number;
    busy?: ReadonlySet<string>;
  }): Promise<ClaimedBatch[]> {
    const { owner, now, leaseMs, maxBatches, batchSize } = options;
    if (maxBatches <= 0) return [];
    const busy = options.busy ?? new Set<string>();
    const picked = await this.#engine.transaction(async (tx) => {
      const candidates = await tx.all<{ id: string; webhook_id: string; event_id: string; attempts: number; created_at: number }>(
        `SELECT d.id, d.webhook_id, d.event_id, d.attempts, d.created_at
           FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
          WHERE d.state = 'pending' AND d.next_attempt_at <= ?
            AND ${this.#leases.free('d')}
            AND w.disabled_at IS NULL
          ORDER BY d.next_attempt_at, d.event_id
          LIMIT ? ${this.#engine.claimLockClause}`,
        [now, now, maxBatches * batchSize * 2],
      );
      const groups = new Map<string, ClaimedDelivery[]>();
      for (const c of candidates) {
        if (busy.has(c.webhook_id)) continue;
        let group = groups.get(c.webhook_id);
        if (!group) {
          if (groups.size >= maxBatches) continue;
          group = [];
          groups.set(c.webhook_id, group);
        }
        if (group.length >= batchSize) continue;
        group.push({ id: c.id, eventId: c.event_id, attempts: Number(c.attempts), createdAt: Number(c.created_at) });
      }
      const batches: Array<{ token: string; webhookId: string; deliveries: ClaimedDelivery[] }> = [];
      for (const [webhookId, deliveries] of groups) {
        const token = uuidv7(now);
        await this.#leases.take(
          tx,
          deliveries.map((d) => d.id),
          { owner, token, until: now + leaseMs },
        );
        deliveries.sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
        batches.push({ token, webhookId, deliveries });
      }
      return batches;
    }, { durable: false });
    if (picked.length === 0) return [];
    const secrets = await this.#engine.all<{ id: string; url_sealed: Uint8Array; secret_sealed: Uint8Array }>(
      `SELECT id, url_sealed, secret_sealed FROM webhooks WHERE id IN (${picked.map(() => '?').join(', ')})`,
      picked.map((b) => b.webhookId),
    );
    const byId = new Map(secrets.map((s) => [s.id, s]));
    return picked.flatMap((b) => {
      const row = byId.get(b.webhookId);
      // Deleted between the claim and here: its outbox rows went with it.
      if (!row) return [];
      return [
        {
          token: b.token,
          leaseUntil: now + leaseMs,
          webhook: {
            id: b.webhookId,
            url: this.#sealer.openString(row.url_sealed, URL_CTX),
            secret: this.#sealer.openString(row.secret_sealed, SECRET_CTX),
          },
          deliveries: b.deliveries,
        },
      ];
    });
  }

  /**
   * Records an attempt's outcome for the rows of a batch, fenced by its lease token: rows another
   * dispatcher has since taken over are left alone. Returns how many rows were recorded.
   */
  async finish(
    token: string,
    verdicts: DeliveryVerdict[],
    attempt: { at: number; status: number | null; error: string | null },
  ): Promise<number> {
    if (verdicts.length === 0) return 0;
    return this.#engine.transaction(async (tx) => {
      let recorded = 0;
      for (const v of verdicts) {
        const { changes } = await tx.run(
          `UPDATE webhook_deliveries
              SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_attempt_at = ?, last_status = ?, last_error = ?,
                  finished_at = ?, ${LEASE_CLEAR}
            WHERE id = ? AND ${LEASE_FENCE} AND state = 'pending'`,
          [
            v.state,
            v.nextAttemptAt,
            attempt.at,
            attempt.status,
            attempt.error,
            v.state === 'pending' ? null : attempt.at,
            v.id,
            token,
          ],
        );
        recorded += changes;
      }
      return recorded;
    });
  }

  /**
   * Extends `owner`'s batch leases to `until` while their POSTs are in flight; returns the tokens
   * still holding every row of their batch (a batch partly taken over is lost: another dispatcher
   * may be sending those rows).
   */
  async renew(owner: string, batches: ReadonlyArray<{ token: string; rows: number }>, until: number): Promise<string[]> {
    return this.#leases.renew(
      owner,
      batches.map((b) => b.token),
      until,
      new Map(batches.map((b) => [b.token, b.rows])),
    );
  }

  /** Gives a batch's leases back unused (shutdown): its rows are due again at once. */
  async release(token: string): Promise<number> {
    return this.#leases.release([token]);
  }

  /** One webhook's outbox rows, oldest event first (for operators and tests). */
  async deliveries(webhookId: string): Promise<
    Array<{
      id: string;
      eventId: string;
      state: 'pending' | 'delivered' | 'failed';
      attempts: number;
      nextAttemptAt: number;
      lastStatus: number | null;
      lastError: string | null;
      finishedAt: number | null;
    }>
  > {
    const rows = await this.#engine.all<{
      id: string;
      event_id: string;
      state: 'pending' | 'delivered' | 'failed';
      attempts: number;
      next_attempt_at: number;
      last_status: number | null;
      last_error: string | null;
      finished_at: number | null;
    }>('SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY event_id', [webhookId]);
    return rows.map((r) => ({
      id: r.id,
      eventId: r.event_id,
      state: r.state,
      attempts: Number(r.attempts),
      nextAttemptAt: Number(r.next_attempt_at),
      lastStatus: r.last_status === null ? null : Number(r.last_status),
      lastError: r.last_error,
      finishedAt: r.finished_at === null ? null : Number(r.finished_at),
    }));
  }

  /**
   * When the next unleased pending row becomes due after `now` (an idle dispatcher sleeps until
   * then), or null. Leases of dead dispatchers are left to the poll, as the queue does.
   */
  async nextDueAfter(now: number): Promise<number | null> {
    const row = await this.#engine.get<{ at: number | null }>(
      `SELECT MIN(d.next_attempt_at) AS at
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
        WHERE d.state = 'pending' AND d.next_attempt_at > ? AND d.lease_expires_at IS NULL AND w.disabled_at IS NULL`,
      [now],
    );
    return row?.at == null ? null : Number(row.at);
  }

  /** When the next pending row becomes due (for an idle dispatcher's sleep), or null. */
  async nextDueAt(): Promise<number | null> {
    const row = await this.#engine.get<{ at: number | null }>(
      `SELECT MIN(CASE WHEN d.lease_expires_at IS NULL OR d.lease_expires_at < d.next_attempt_at
                       THEN d.next_attempt_at ELSE d.lease_expires_at END) AS at
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
        WHERE d.state = 'pending' AND w.disabled_at IS NULL`,
    );
    return row?.at == null ? null : Number(row.at);
  }

  async #counts(ids: string[]): Promise<Map<string, WebhookRecord['deliveries']>> {
    const counts = new Map<string, WebhookRecord['deliveries']>();
    if (ids.length === 0) return counts;
    const rows = await this.#engine.all<{ webhook_id: string; state: 'pending' | 'delivered' | 'failed'; n: number }>(
      `SELECT webhook_id, state, COUNT(*) AS n FROM webhook_deliveries
        WHERE webhook_id IN (${ids.map(() => '?').join(', ')}) GROUP BY webhook_id, state`,
      ids,
    );
    for (const r of rows) {
      const c = counts.get(r.webhook_id) ?? { pending: 0, delivered: 0, failed: 0 };
      c[r.state] = Number(r.n);
      counts.set(r.webhook_id, c);
    }
    return counts;
  }

  #view(row: WebhookRow, counts: Map<string, WebhookRecord['deliveries']>): WebhookRecord {
    return {
      id: row.id,
      apiKeyId: row.api_key_id,
      url: this.#sealer.openString(row.url_sealed, URL_CTX),
      events: row.event_types.split(',') as EventType[],
      createdAt: Number(row.created_at),
      disabledAt: row.disabled_at === null ? null : Number(row.disabled_at),
      disabledReason: row.disabled_reason,
      deliveries: counts.get(row.id) ?? { pending: 0, delivered: 0, failed: 0 },
    };
  }
}
