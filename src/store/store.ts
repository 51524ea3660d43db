// The store: the only module that knows SQL. It owns the schema, seals personal data and content
// on the way in (through the Sealer) and opens it on the way out, and implements the queue's
// durable operations (enqueue, lease, complete, release) as single transactions.
// May import: ../sealing, ./engine and its implementations.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Sealer, domainOf } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { migrate } from './migrations.ts';
import { SqliteEngine } from './sqlite-engine.ts';
import { uuidv7 } from './ids.ts';
import { DomainsTable } from './domains-table.ts';
import { AuditTable } from './audit-table.ts';
import { ApiKeysTable } from './api-keys-table.ts';
import { SendApiTable, allocatePublicIds } from './send-api-table.ts';
import { EventsTable } from './events-table.ts';
import { WebhooksTable } from './webhooks-table.ts';
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

  private constructor(engine: SqlEngine, sealer: Sealer) {
    this.engine = engine;
    this.sealer = sealer;
    this.domains = new DomainsTable(engine, sealer);
    this.audit = new AuditTable(engine, sealer);
    this.apiKeys = new ApiKeysTable(engine, sealer);
    this.sendApi = new SendApiTable(engine, sealer);
    this.events = new EventsTable(engine, sealer);
    this.webhooks = new WebhooksTable(engine, sealer);
  }

  /** Opens the embedded database in the data dir, applies migrations and loads the lookup key. */
  static async open(options: StoreOptions): Promise<Store> {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const engine = new SqliteEngine(join(options.dataDir, 'lacre.db'));
    return Store.openWith(engine, options.sealer);
  }

  static async openWith(engine: SqlEngine, sealer: Sealer): Promise<Store> {
    try {
      await migrate(engine);
      const store = new Store(engine, sealer);
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

  // ---- queue ---------------------------------------------------------------------------------

  /** Commits a message, its content and its recipients in one durable transaction. */
  async insertMessage(message: NewMessage): Promise<void> {
    await this.engine.transaction((tx) => this.#insertMessage(tx, message));
  }

  async #insertMessage(tx: SqlExecutor, message: NewMessage): Promise<void> {
    const s = this.sealer;
    await tx.run(
      `INSERT INTO messages (id, created_at, expires_at, source, sender_sealed, metadata_sealed, content_size, require_tls)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        message.id,
        message.createdAt,
        message.expiresAt,
        message.source,
        message.sender === null ? null : s.seal(message.sender, ctx('messages', 'sender_sealed')),
        s.seal(JSON.stringify(message.metadata), ctx('messages', 'metadata_sealed')),
        message.content.length,
        message.requireTls ? 1 : 0,
      ],
    );
    await tx.run('INSERT INTO message_contents (message_id, content_sealed) VALUES (?, ?)', [
      message.id,
      s.seal(message.content, ctx('message_contents', 'content_sealed')),
    ]);
    let position = 0;
    // Every recipient gets its numeric MessageID (send API) in the same transaction.
    const firstPublicId = await allocatePublicIds(tx, message.recipients.length);
    for (const recipient of message.recipients) {
      await tx.run(
        `INSERT INTO recipients (id, message_id, position, address_sealed, address_hash, domain_hash, state,
           next_attempt_at, updated_at, public_id)
         VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)`,
        [
          recipient.id,
          message.id,
          position,
          s.seal(recipient.address, ctx('recipients', 'address_sealed')),
          s.addressHash(recipient.address),
          s.domainHash(domainOf(recipient.address)),
          message.firstAttemptAt,
          message.createdAt,
          firstPublicId + position++,
        ],
      );
    }
    // Suppressed recipients get their `blocked` event with the message, or not at all.
    await this.events.recordRefused(tx, message);
  }

  /**
   * Leases up to `limit` due recipients to `owner` until `now + leaseMs`. A due recipient is
   * queued or deferred, its next attempt time has come, and it has no live lease: an expired lease
   * means its worker died, so its open attempt is closed as abandoned and the work is taken over.
   */
  async claimDue(options: {
    owner: string;
    now: number;
    leaseMs: number;
    limit: number;
    /**
     * Whether to take a due recipient, asked in due order; lets the caller skip destinations
     * that already have all the connections they may have. Candidates looked at: 4 × limit.
     */
    accept?: (candidate: { domainHash: string; messageId: string }) => boolean;
  }): Promise<ClaimedRecipient[]> {
    const { owner, now, leaseMs, limit, accept } = options;
    const rows = await this.engine.transaction(async (tx) => {
      const candidates = await tx.all<{ id: string; lease_token: string | null; domain_hash: string; message_id: string }>(
        `SELECT id, lease_token, domain_hash, message_id FROM recipients
          WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?
            AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
          ORDER BY next_attempt_at, message_id, position
          LIMIT ? ${this.engine.claimLockClause}`,
        [now, now, accept ? limit * 4 : limit],
      );
      const due = (accept ? candidates.filter((c) => accept({ domainHash: c.domain_hash, messageId: c.message_id })) : candidates).slice(
        0,
        limit,
      );
      const claimed = [];
      for (const { id, lease_token: staleToken } of due) {
        if (staleToken) {
          await tx.run(`UPDATE attempts SET ended_at = ?, outcome = 'abandoned' WHERE id = ? AND ended_at IS NULL`, [
            now,
            staleToken,
          ]);
        }
        const token = uuidv7(now);
        await tx.run(
          `UPDATE recipients SET lease_owner = ?, lease_token = ?, lease_expires_at = ?,
                  attempt_count = attempt_count + 1, updated_at = ?
            WHERE id = ?`,
          [owner, token, now + leaseMs, now, id],
        );
        const recipient = await tx.get<{ message_id: string }>('SELECT message_id FROM recipients WHERE id = ?', [id]);
        await tx.run('INSERT INTO attempts (id, recipient_id, message_id, worker, started_at) VALUES (?, ?, ?, ?, ?)', [
          token,
          id,
          recipient!.message_id,
          owner,
          now,
        ]);
        claimed.push(id);
      }
      if (claimed.length === 0) return [];
      return tx.all<ClaimRow>(
        `SELECT r.id, r.message_id, r.address_sealed, r.domain_hash, r.lease_token, r.attempt_count, r.lease_expires_at,
                m.sender_sealed, m.require_tls, m.created_at, m.expires_at
           FROM recipients r JOIN messages m ON m.id = r.message_id
          WHERE r.id IN (${claimed.map(() => '?').join(', ')})
          ORDER BY r.message_id, r.position`,
        claimed,
      );
    }, { durable: false });
    return rows.map((row) => {
      const address = this.sealer.openString(row.address_sealed, ctx('recipients', 'address_sealed'));
      return {
        recipientId: row.id,
        messageId: row.message_id,
        address,
        domain: domainOf(address),
        domainHash: row.domain_hash,
        attemptId: row.lease_token,
        attemptNumber: Number(row.attempt_count),
        leaseExpiresAt: Number(row.lease_expires_at),
        sender: row.sender_sealed ? this.sealer.openString(row.sender_sealed, ctx('messages', 'sender_sealed')) : null,
        requireTls: Number(row.require_tls) === 1,
        createdAt: Number(row.created_at),
        expiresAt: Number(row.expires_at),
      };
    });
  }

  /** Extends live leases held by `owner`; returns the attempt ids whose lease is still held. */
  async renewLeases(owner: string, attemptIds: string[], until: number): Promise<string[]> {
    if (attemptIds.length === 0) return [];
    return this.engine.transaction(async (tx) => {
      const held: string[] = [];
      for (const token of attemptIds) {
        const { changes } = await tx.run(
          'UPDATE recipients SET lease_expires_at = ? WHERE lease_token = ? AND lease_owner = ?',
          [until, token, owner],
        );
        if (changes === 1) held.push(token);
      }
      return held;
    }, { durable: false });
  }

  /**
   * Records the end of an attempt and the recipient's new state, only if the attempt still holds
   * the recipient's lease (a fencing token): a worker that lost its lease cannot finalise a
   * recipient that another worker has taken over. Returns false when the lease was lost.
   */
  async completeAttempt(result: AttemptResult, effects: AttemptEffects = {}): Promise<boolean> {
    const [kept] = await this.completeAttempts([{ result, effects }]);
    return kept;
  }

  /**
   * Records several attempts in one durable transaction (group commit: one fsync for many
   * verdicts). Each is fenced on its own; the returned flags say which were kept.
   */
  async completeAttempts(items: Array<{ result: AttemptResult; effects?: AttemptEffects }>): Promise<boolean[]> {
    if (items.length === 0) return [];
    return this.engine.transaction(async (tx) => {
      const kept: boolean[] = [];
      for (const { result, effects } of items) kept.push(await this.#completeAttempt(tx, result, effects ?? {}));
      return kept;
    });
  }

  async #completeAttempt(tx: SqlExecutor, result: AttemptResult, effects: AttemptEffects): Promise<boolean> {
    const final = result.state !== 'queued' && result.state !== 'deferred';
    const { changes } = await tx.run(
      `UPDATE recipients
          SET state = ?, next_attempt_at = ?, reason_sealed = ?, updated_at = ?, finalized_at = ?,
              lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
        WHERE id = ? AND lease_token = ? AND state IN ('queued', 'deferred')`,
      [
        result.state,
        result.nextAttemptAt,
        result.reason === null ? null : this.sealer.seal(result.reason, ctx('recipients', 'reason_sealed')),
        result.endedAt,
        final ? result.endedAt : null,
        result.recipientId,
        result.attemptId,
      ],
    );
    if (changes !== 1) return false;
    await tx.run(
      `UPDATE attempts SET ended_at = ?, outcome = ?, reply_code = ?, enhanced_code = ?, detail_sealed = ? WHERE id = ?`,
      [
        result.endedAt,
        result.outcome,
        result.replyCode,
        result.enhancedCode,
        this.sealer.seal(JSON.stringify(result.detail), ctx('attempts', 'detail_sealed')),
        result.attemptId,
      ],
    );
    // In the same transaction as the verdict, so a crash can never record a bounce without
    // its DSN, its suppression or its event (and the event's webhook outbox rows).
    if (effects.suppress) await this.#suppress(tx, effects.suppress);
    if (effects.enqueue) await this.#insertMessage(tx, effects.enqueue);
    await this.events.recordVerdict(tx, result, effects);
    return true;
  }

  async #suppress(tx: SqlExecutor, entry: { address: string; reason: string; messageId: string | null; at: number }) {
    const hash = this.sealer.addressHash(entry.address);
    const exists = await tx.get('SELECT address_hash FROM suppressions WHERE address_hash = ?', [hash]);
    if (exists) return;
    await tx.run('INSERT INTO suppressions (address_hash, reason_sealed, source_message_id, created_at) VALUES (?, ?, ?, ?)', [
      hash,
      this.sealer.seal(entry.reason, ctx('suppressions', 'reason_sealed')),
      entry.messageId,
      entry.at,
    ]);
  }

  async addSuppression(entry: { address: string; reason: string; messageId: string | null; at: number }): Promise<void> {
    await this.engine.transaction((tx) => this.#suppress(tx, entry));
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
   * DSN to the return path): the delivered recipient becomes bounced, and a hard bounce is
   * suppressed, in one transaction. Returns false when no delivered recipient matches.
   */
  async recordRemoteBounce(entry: { messageId: string; address: string; reason: string; suppress: boolean; at: number }): Promise<boolean> {
    return this.engine.transaction(async (tx) => {
      const { changes } = await tx.run(
        `UPDATE recipients SET state = 'bounced', reason_sealed = ?, updated_at = ?
          WHERE message_id = ? AND address_hash = ? AND state = 'delivered'`,
        [
          this.sealer.seal(entry.reason, ctx('recipients', 'reason_sealed')),
          entry.at,
          entry.messageId,
          this.sealer.addressHash(entry.address),
        ],
      );
      if (changes === 0) return false;
      if (entry.suppress) await this.#suppress(tx, { address: entry.address, reason: entry.reason, messageId: entry.messageId, at: entry.at });
      return true;
    });
  }

  /** Gives a lease back unused (graceful shutdown): the recipient is due again at once. */
  async releaseLease(recipientId: string, attemptId: string, now: number): Promise<boolean> {
    return this.engine.transaction(async (tx) => {
      const { changes } = await tx.run(
        `UPDATE recipients SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?,
                attempt_count = attempt_count - 1
          WHERE id = ? AND lease_token = ?`,
        [now, recipientId, attemptId],
      );
      if (changes === 1) {
        await tx.run(`UPDATE attempts SET ended_at = ?, outcome = 'released' WHERE id = ?`, [now, attemptId]);
      }
      return changes === 1;
    }, { durable: false });
  }

  async messageContent(messageId: string): Promise<Buffer | null> {
    const row = await this.engine.get<{ content_sealed: Uint8Array }>(
      'SELECT content_sealed FROM message_contents WHERE message_id = ?',
      [messageId],
    );
    return row ? this.sealer.open(row.content_sealed, ctx('message_contents', 'content_sealed')) : null;
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
  async nextDueAt(): Promise<number | null> {
    const row = await this.engine.get<{ at: number | null }>(
      `SELECT MIN(CASE WHEN lease_expires_at IS NULL OR lease_expires_at < next_attempt_at
                       THEN next_attempt_at ELSE lease_expires_at END) AS at
         FROM recipients WHERE state IN ('queued', 'deferred')`,
    );
    return row?.at == null ? null : Number(row.at);
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
      detail: a.detail_sealed ? JSON.parse(s.openString(a.detail_sealed, ctx('attempts', 'detail_sealed'))) : null,
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
      metadata: JSON.parse(s.openString(message.metadata_sealed, ctx('messages', 'metadata_sealed'))),
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

/** What else an attempt's verdict commits with it. */
export interface AttemptEffects {
  /** A message to queue (a DSN to the sender). */
  enqueue?: NewMessage;
  /** A hard bounce: refuse later sends to this address. */
  suppress?: { address: string; reason: string; messageId: string | null; at: number };
}

interface ClaimRow {
  id: string;
  message_id: string;
  address_sealed: Uint8Array;
  domain_hash: string;
  lease_token: string;
  attempt_count: number;
  lease_expires_at: number;
  sender_sealed: Uint8Array | null;
  require_tls: number;
  created_at: number;
  expires_at: number;
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
