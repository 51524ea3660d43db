// The store: the only module that knows SQL, and the facade the rest of the code uses. It seals
// personal data and content on the way in (through the Sealer) and opens it on the way out. The
// work is in its modules, which this class opens and hands out or forwards to:
//   open.ts               the data dir, the engine, migrations and the lookup key
//   sealed-columns.ts     the registry of sealed columns, key counts and re-sealing
//   message-read-model.ts getMessage and countByState
//   suppressions-table.ts the suppression list
//   queue-table.ts        the queue's acceptance, leases and verdicts
//   domains, audit, API keys, send API, events, webhooks: their *-table.ts modules
// What stays here spans tables in one transaction (recordRemoteBounce).
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine } from './engine.ts';
import { openEngine, prepareDatabase } from './open.ts';
import { SealedColumns, sealedContext as ctx } from './sealed-columns.ts';
import { MessageReadModel } from './message-read-model.ts';
import { SuppressionsTable, type SuppressionEntry } from './suppressions-table.ts';
import { MessageSearchTable } from './message-search.ts';
import { DomainsTable } from './domains-table.ts';
import { AuditTable } from './audit-table.ts';
import { ApiKeysTable } from './api-keys-table.ts';
import { SendApiTable } from './send-api-table.ts';
import { EventsTable, type EventRules, type RemoteBounce } from './events-table.ts';
import { WebhooksTable } from './webhooks-table.ts';
import { QueueTable, type AttemptEffects, type ClaimOptions } from './queue-table.ts';

export type { AttemptEffects, ClaimOptions } from './queue-table.ts';
export { SEALED_COLUMNS } from './sealed-columns.ts';
import type { AttemptResult, ClaimedRecipient, MessageView, NewMessage, RecipientState } from './records.ts';

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
  /** Operators' lookups: any API id to its message, recipient listings, suppressions. */
  readonly search: MessageSearchTable;
  readonly events: EventsTable;
  readonly webhooks: WebhooksTable;
  readonly suppressions: SuppressionsTable;
  readonly queue: QueueTable;
  readonly messages: MessageReadModel;
  readonly sealedColumns: SealedColumns;

  private constructor(engine: SqlEngine, sealer: Sealer, rules: EventRules) {
    this.engine = engine;
    this.sealer = sealer;
    this.domains = new DomainsTable(engine, sealer);
    this.audit = new AuditTable(engine, sealer);
    this.apiKeys = new ApiKeysTable(engine, sealer);
    this.sendApi = new SendApiTable(engine, sealer);
    this.search = new MessageSearchTable(engine, sealer);
    this.events = new EventsTable(engine, sealer, rules);
    this.webhooks = new WebhooksTable(engine, sealer);
    this.suppressions = new SuppressionsTable(engine, sealer);
    this.queue = new QueueTable(engine, sealer, this.events, this.suppressions);
    this.messages = new MessageReadModel(engine, sealer);
    this.sealedColumns = new SealedColumns(engine, sealer);
  }

  /** Opens the embedded database in the data dir, applies migrations and loads the lookup key. */
  static async open(options: StoreOptions): Promise<Store> {
    return Store.openWith(openEngine(options.dataDir), options.sealer, options.events);
  }

  static async openWith(engine: SqlEngine, sealer: Sealer, rules: EventRules): Promise<Store> {
    await prepareDatabase(engine, sealer);
    return new Store(engine, sealer, rules);
  }

  async close(): Promise<void> {
    await this.engine.close();
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

  /** Gives a lease back unused (graceful shutdown): the recipient is due again at once. */
  releaseLease(recipientId: string, attemptId: string, now: number): Promise<boolean> {
    return this.queue.releaseLease(recipientId, attemptId, now);
  }

  messageContent(messageId: string): Promise<Buffer | null> {
    return this.queue.messageContent(messageId);
  }

  /** When the next recipient becomes due (for an idle worker's sleep), or null if none waits. */
  nextDueAt(): Promise<number | null> {
    return this.queue.nextDueAt();
  }

  nextDueAfter(now: number): Promise<number | null> {
    return this.queue.nextDueAfter(now);
  }

  // ---- suppressions (./suppressions-table.ts) ------------------------------------------------

  addSuppression(entry: SuppressionEntry): Promise<void> {
    return this.suppressions.add(entry);
  }

  /** The suppression entries among these addresses, keyed by the address as given. */
  findSuppressed(addresses: string[]): Promise<Map<string, { reason: string; since: string }>> {
    return this.suppressions.find(addresses);
  }

  removeSuppression(address: string): Promise<boolean> {
    return this.suppressions.remove(address);
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
      if (bounce.suppress) await this.suppressions.addIn(tx, { address: bounce.address, reason: bounce.reason, messageId: bounce.messageId, at: bounce.at });
      for (const { id } of bounced) await this.events.recordRemoteBounce(tx, bounce, id);
      return true;
    });
  }

  // ---- read model (./message-read-model.ts) ------------------------------------------------

  countByState(): Promise<Record<RecipientState, number>> {
    return this.messages.countByState();
  }

  oldestPendingCreatedAt(): Promise<number | null> {
    return this.messages.oldestPendingCreatedAt();
  }

  getMessage(id: string): Promise<MessageView | null> {
    return this.messages.getMessage(id);
  }

  // ---- sealing maintenance (./sealed-columns.ts) ------------------------------------------

  /** How many stored values each key id seals. */
  sealedValuesByKey(): Promise<Record<string, number>> {
    return this.sealedColumns.valuesByKey();
  }

  /** Re-seals every value not sealed under the current key (see SealedColumns.resealAll). */
  resealAll(): Promise<number> {
    return this.sealedColumns.resealAll();
  }
}
