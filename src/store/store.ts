// The store: the only module that knows SQL. It owns the schema, seals personal data and content
// on the way in (through the Sealer) and opens it on the way out. Each group of tables has its own
// module (queue-table.ts for the queue's acceptance, leases and verdicts; domains, audit, API keys,
// events, webhooks); this class opens the database and hands them out.
// May import: ../sealing, ./engine and its implementations, its table modules.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Sealer } from '../sealing/sealer.ts';
import { domainOf } from '../mail/address.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { migrate } from './migrations.ts';
import { readAttemptDetail, readMessageMetadata } from './record-schemas.ts';
import { SqliteEngine } from './sqlite-engine.ts';
import { uuidv7 } from './ids.ts';
import { DomainsTable } from './domains-table.ts';
import { AuditTable } from './audit-table.ts';
import { ApiKeysTable } from './api-keys-table.ts';
import { SendApiTable, allocatePublicIds } from './send-api-table.ts';
import { EventsTable, type EventRules, type RemoteBounce } from './events-table.ts';
import { WebhooksTable } from './webhooks-table.ts';
import { QueueTable, type AttemptEffects, type ClaimOptions } from './queue-table.ts';

export type { AttemptEffects, ClaimOptions } from './queue-table.ts';
import type {
  AttemptResult,
  AttemptView,
  ClaimedRecipient,
  MessageView,
  NewMessage,
  RecipientState,
  RecipientView,
} from './records.ts';

/** Every sealed column, with the context its values are bound to (see Sealer.seal). */
export const SEALED_COLUMNS = [
  { table: 'settings', key: 'name', column: 'value_sealed' },
  { table: 'messages', key: 'id', column: 'sender_sealed' },
  { table: 'messages', key: 'id', column: 'metadata_sealed' },
  { table: 'message_contents', key: 'message_id', column: 'content_sealed' },
  { table: 'recipients', key: 'id', column: 'reason_sealed' },
  { table: 'recipients', key: 'id', column: 'address_sealed' },
  { table: 'attempts', key: 'id', column: 'detail_sealed' },
  { table: 'suppressions', key: 'address_hash', column: 'reason_sealed' },
  { table: 'domains', key: 'name', column: 'check_sealed' },
  { table: 'dkim_keys', key: 'id', column: 'private_key_sealed' },
  { table: 'audit_log', key: 'id', column: 'detail_sealed' },
  { table: 'idempotency_keys', key: 'id', column: 'response_sealed' },
  { table: 'events', key: 'id', column: 'payload_sealed' },
  { table: 'webhooks', key: 'id', column: 'url_sealed' },
  { table: 'webhooks', key: 'id', column: 'secret_sealed' },
  { table: 'tls_policies', key: 'domain', column: 'note_sealed' },
  { table: 'mta_sts_policies', key: 'domain_hash', column: 'policy_sealed' },
  { table: 'tlsrpt_policies', key: 'id', column: 'policy_sealed' },
  { table: 'tlsrpt_failures', key: 'id', column: 'detail_sealed' },
  { table: 'tlsrpt_reports', key: 'id', column: 'detail_sealed' },
] as const;

const ctx = (table: string, column: string) => `${table}.${column}`;

export interface StoreOptions {
  dataDir: string;
  sealer: Sealer;
  /** Which events verdicts, refusals and remote bounces cause: events/derive.ts's `eventRules`. */
  events: EventRules;
}

export class Store {
  readonly engine: SqlEngine;
  readonly sealer: Sealer;
  readonly domains: DomainsTable;
  readonly audit: AuditTable;
  readonly apiKeys: ApiKeysTable;
  readonly sendApi: SendApiTable;
  readonly events: EventsTable;
  readonly webhooks: WebhooksTable;
  readonly queue: QueueTable;

  private constructor(engine: SqlEngine, sealer: Sealer, rules: EventRules) {
    this.engine = engine;
    this.sealer = sealer;
    this.domains = new DomainsTable(engine, sealer);
    this.audit = new AuditTable(engine, sealer);
    this.apiKeys = new ApiKeysTable(engine, sealer);
    this.sendApi = new SendApiTable(engine, sealer);
    this.events = new EventsTable(engine, sealer, rules);
    this.webhooks = new WebhooksTable(engine, sealer);
    this.queue = new QueueTable(engine, sealer, this.events);
  }

  /** Opens the embedded database in the data dir, applies migrations and loads the lookup key. */
  static async open(options: StoreOptions): Promise<Store> {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const engine = new SqliteEngine(join(options.dataDir, 'lacre.db'));
    return Store.openWith(engine, options.sealer, options.events);
  }

  static async openWith(engine: SqlEngine, sealer: Sealer, rules: EventRules): Promise<Store> {
    try {
      await migrate(engine);
      const store = new Store(engine, sealer, rules);
      sealer.setLookupKey(await store.#lookupKey());
      return store;
    } catch (err) {
      await engine.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.engine.close();
  }

  async #lookupKey(): Promise<Buffer> {
    const context = ctx('settings', 'value_sealed');
    return this.engine.transaction(async (tx) => {
      const row = await tx.get<{ value_sealed: Uint8Array }>('SELECT value_sealed FROM settings WHERE name = ?', ['lookup_key']);
      if (row) return this.sealer.open(row.value_sealed, context);
      const key = randomBytes(32);
      await tx.run('INSERT INTO settings (name, value_sealed) VALUES (?, ?)', ['lookup_key', this.sealer.seal(key, context)]);
      return key;
    });
  }

  // ---- queue (SQL in ./queue-table.ts) ----------------------------------------------------

  /** Commits a message, its content and its recipients in one durable transaction. */
  insertMessage(message: NewMessage): Promise<void> {
    return this.queue.insertMessage(message);
  }

  /** Leases due recipients (see QueueTable.claimDue). */
  claimDue(options: ClaimOptions): Promise<ClaimedRecipient[]> {
    return this.queue.claimDue(options);
  }

  renewLeases(owner: string, attemptIds: string[], until: number): Promise<string[]> {
    return this.queue.renewLeases(owner, attemptIds, until);
  }

  async completeAttempt(result: AttemptResult, effects: AttemptEffects = {}): Promise<boolean> {
    const [kept] = await this.queue.completeAttempts([{ result, effects }]);
    return kept;
  }

  completeAttempts(items: Array<{ result: AttemptResult; effects?: AttemptEffects }>): Promise<boolean[]> {
    return this.queue.completeAttempts(items);
  }

  async addSuppression(entry: { address: string; reason: string; messageId: string | null; at: number }): Promise<void> {
    await this.engine.transaction((tx) => this.queue.suppressIn(tx, entry));
  }

  /** The suppression entries among these addresses, keyed by the address as given. */
  async findSuppressed(addresses: string[]): Promise<Map<string, { reason: string; since: string }>> {
    const found = new Map<string, { reason: string; since: string }>();
    for (const address of addresses) {
      const row = await this.engine.get<{ reason_sealed: Uint8Array; created_at: number }>(
        'SELECT reason_sealed, created_at FROM suppressions WHERE address_hash = ?',
        [this.sealer.addressHash(address)],
      );
      if (row) {
        found.set(address, {
          reason: this.sealer.openString(row.reason_sealed, ctx('suppressions', 'reason_sealed')),
          since: new Date(Number(row.created_at)).toISOString(),
        });
      }
    }
    return found;
  }

  async removeSuppression(address: string): Promise<boolean> {
    const { changes } = await this.engine.run('DELETE FROM suppressions WHERE address_hash = ?', [this.sealer.addressHash(address)]);
    return changes > 0;
  }

  /**
   * A bounce that arrived after the recipient's server accepted the message (an asynchronous
   * DSN to the return path): the delivered recipient becomes bounced, a hard bounce is
   * suppressed, and its `bounce` event (with the webhook outbox rows) is recorded, in one
   * transaction. Returns false when no delivered recipient matches.
   */
  async recordRemoteBounce(bounce: RemoteBounce): Promise<boolean> {
    return this.engine.transaction(async (tx) => {
      const bounced = await tx.all<{ id: string }>(
        `UPDATE recipients SET state = 'bounced', reason_sealed = ?, updated_at = ?
          WHERE message_id = ? AND address_hash = ? AND state = 'delivered' RETURNING id`,
        [
          this.sealer.seal(bounce.reason, ctx('recipients', 'reason_sealed')),
          bounce.at,
          bounce.messageId,
          this.sealer.addressHash(bounce.address),
        ],
      );
      if (bounced.length === 0) return false;
      if (bounce.suppress) await this.queue.suppressIn(tx, { address: bounce.address, reason: bounce.reason, messageId: bounce.messageId, at: bounce.at });
      for (const { id } of bounced) await this.events.recordRemoteBounce(tx, bounce, id);
      return true;
    });
  }

  /** Gives a lease back unused (graceful shutdown): the recipient is due again at once. */
  releaseLease(recipientId: string, attemptId: string, now: number): Promise<boolean> {
    return this.queue.releaseLease(recipientId, attemptId, now);
  }

  messageContent(messageId: string): Promise<Buffer | null> {
    return this.queue.messageContent(messageId);
  }

  async countByState(): Promise<Record<RecipientState, number>> {
    const counts: Record<RecipientState, number> = { queued: 0, deferred: 0, delivered: 0, bounced: 0, expired: 0, failed: 0 };
    const rows = await this.engine.all<{ state: RecipientState; n: number }>(
      'SELECT state, COUNT(*) AS n FROM recipients GROUP BY state',
    );
    for (const row of rows) counts[row.state] = Number(row.n);
    return counts;
  }

  /** When the next recipient becomes due (for an idle worker's sleep), or null if none waits. */
  nextDueAt(): Promise<number | null> {
    return this.queue.nextDueAt();
  }

  nextDueAfter(now: number): Promise<number | null> {
    return this.queue.nextDueAfter(now);
  }

  async getMessage(id: string): Promise<MessageView | null> {
    const s = this.sealer;
    const message = await this.engine.get<MessageRow>('SELECT * FROM messages WHERE id = ?', [id]);
    if (!message) return null;
    const recipients = await this.engine.all<RecipientRow>(
      'SELECT * FROM recipients WHERE message_id = ? ORDER BY position',
      [id],
    );
    const attempts = await this.engine.all<AttemptRow>(
      'SELECT * FROM attempts WHERE message_id = ? ORDER BY started_at, id',
      [id],
    );
    const iso = (ms: number | null) => (ms === null ? null : new Date(Number(ms)).toISOString());
    const attemptView = (a: AttemptRow): AttemptView => ({
      id: a.id,
      worker: a.worker,
      startedAt: iso(a.started_at)!,
      endedAt: iso(a.ended_at),
      outcome: a.outcome,
      replyCode: a.reply_code === null ? null : Number(a.reply_code),
      enhancedCode: a.enhanced_code,
      detail: a.detail_sealed ? readAttemptDetail(s.openString(a.detail_sealed, ctx('attempts', 'detail_sealed')), a.id) : null,
    });
    const recipientViews: RecipientView[] = recipients.map((r) => ({
      id: r.id,
      address: s.openString(r.address_sealed, ctx('recipients', 'address_sealed')),
      state: r.state,
      attemptCount: Number(r.attempt_count),
      nextAttemptAt: r.state === 'queued' || r.state === 'deferred' ? iso(r.next_attempt_at) : null,
      reason: r.reason_sealed ? s.openString(r.reason_sealed, ctx('recipients', 'reason_sealed')) : null,
      updatedAt: iso(r.updated_at)!,
      finalizedAt: iso(r.finalized_at),
      attempts: attempts.filter((a) => a.recipient_id === r.id).map(attemptView),
    }));
    return {
      id: message.id,
      createdAt: iso(message.created_at)!,
      expiresAt: iso(message.expires_at)!,
      source: message.source,
      sender: message.sender_sealed ? s.openString(message.sender_sealed, ctx('messages', 'sender_sealed')) : null,
      size: Number(message.content_size),
      requireTls: Number(message.require_tls) === 1,
      metadata: readMessageMetadata(s.openString(message.metadata_sealed, ctx('messages', 'metadata_sealed')), message.id),
      recipients: recipientViews,
    };
  }

  // ---- sealing maintenance -----------------------------------------------------------------

  /** How many stored values each key id seals. */
  async sealedValuesByKey(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    await this.#eachSealedValue(async (_tx, _col, _key, value) => {
      const id = Sealer.keyIdOf(value);
      counts[id] = (counts[id] ?? 0) + 1;
    });
    return counts;
  }

  /**
   * Re-seals every value not sealed under the current key, in small transactions so a running
   * server is never blocked for long; safe to interrupt and run again.
   */
  async resealAll(): Promise<number> {
    let resealed = 0;
    await this.#eachSealedValue(async (tx, col, key, value) => {
      const next = this.sealer.reseal(value, ctx(col.table, col.column));
      if (!next) return;
      await tx.run(`UPDATE ${col.table} SET ${col.column} = ? WHERE ${col.key} = ?`, [next, key]);
      resealed++;
    });
    return resealed;
  }

  async #eachSealedValue(
    visit: (tx: SqlExecutor, col: (typeof SEALED_COLUMNS)[number], key: string, value: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const batch = 200;
    for (const col of SEALED_COLUMNS) {
      let after = '';
      for (;;) {
        const rows = await this.engine.transaction(async (tx) => {
          const page = await tx.all<{ k: string; v: Uint8Array }>(
            `SELECT ${col.key} AS k, ${col.column} AS v FROM ${col.table}
              WHERE ${col.key} > ? AND ${col.column} IS NOT NULL ORDER BY ${col.key} LIMIT ?`,
            [after, batch],
          );
          for (const row of page) await visit(tx, col, row.k, row.v);
          return page;
        });
        if (rows.length < batch) break;
        after = rows[rows.length - 1].k;
      }
    }
  }
}



interface MessageRow {
  id: string;
  created_at: number;
  expires_at: number;
  source: string;
  sender_sealed: Uint8Array | null;
  metadata_sealed: Uint8Array;
  content_size: number;
  require_tls: number;
}

interface RecipientRow {
  id: string;
  address_sealed: Uint8Array;
  state: RecipientState;
  attempt_count: number;
  next_attempt_at: number;
  reason_sealed: Uint8Array | null;
  updated_at: number;
  finalized_at: number | null;
}

interface AttemptRow {
  id: string;
  recipient_id: string;
  worker: string;
  started_at: number;
  ended_at: number | null;
  outcome: AttemptView['outcome'];
  reply_code: number | null;
  enhanced_code: string | null;
  detail_sealed: Uint8Array | null;
}
