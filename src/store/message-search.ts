// Finding mail for operators: any id the API hands out (the message id, a recipient's MessageUUID, a
// recipient's numeric MessageID) resolves to its message, and recipients can be listed by address,
// CustomID, state, destination domain and date, paged. Addresses and CustomIDs are matched by
// their keyed hashes (nothing personal is searched in the clear); what is shown is unsealed here.
import type { Sealer } from '../sealing/sealer.ts';
import { domainOf } from '../mail/address.ts';
import type { SqlEngine } from './engine.ts';
import type { MessageMetadata, RecipientState } from './records.ts';
import { RECIPIENT_STATES } from './records.ts';

const ctx = (table: string, column: string) => `${table}.${column}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What an id names: a whole message, or one recipient of it. */
export interface MessageRef {
  messageId: string;
  /** Set when the id named one recipient (MessageUUID or MessageID). */
  recipientId: string | null;
}

export interface MessageSearch {
  /** Full address; matched through the keyed address hash. */
  recipient?: string;
  customId?: string;
  state?: RecipientState;
  /** Destination domain (the recipient's). */
  domain?: string;
  /** Created at or after / before, ms since the epoch. */
  since?: number;
  until?: number;
  limit?: number;
  offset?: number;
}

export interface RecipientListing {
  messageId: string;
  /** MessageUUID in the send API. */
  recipientId: string;
  /** MessageID in the send API (null for mail that did not come through it, e.g. DSNs). */
  publicId: number | null;
  address: string;
  state: RecipientState;
  attemptCount: number;
  createdAt: string;
  updatedAt: string;
  customId: string | null;
  source: string;
}

export interface SearchPage {
  total: number;
  items: RecipientListing[];
}

export const MAX_PAGE = 1000;

export class MessageSearchTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
  }

  /**
   * Any id the API returns: a UUID is a message id or a recipient id (MessageUUID), all digits a
   * recipient's MessageID. One id, everywhere: every command and route that takes an id uses this.
   */
  async resolve(id: string): Promise<MessageRef | null> {
    const trimmed = id.trim();
    if (UUID.test(trimmed)) {
      const key = trimmed.toLowerCase();
      const message = await this.#engine.get<{ id: string }>('SELECT id FROM messages WHERE id = ?', [key]);
      if (message) return { messageId: message.id, recipientId: null };
      const recipient = await this.#engine.get<{ id: string; message_id: string }>('SELECT id, message_id FROM recipients WHERE id = ?', [key]);
      return recipient ? { messageId: recipient.message_id, recipientId: recipient.id } : null;
    }
    if (/^\d{1,16}$/.test(trimmed) && Number.isSafeInteger(Number(trimmed))) {
      const recipient = await this.#engine.get<{ id: string; message_id: string }>('SELECT id, message_id FROM recipients WHERE public_id = ?', [Number(trimmed)]);
      return recipient ? { messageId: recipient.message_id, recipientId: recipient.id } : null;
    }
    return null;
  }

  async search(q: MessageSearch): Promise<SearchPage> {
    const where: string[] = [];
    const params: Array<string | number> = [];
    if (q.recipient !== undefined) {
      where.push('r.address_hash = ?');
      params.push(this.#sealer.addressHash(q.recipient));
    }
    if (q.domain !== undefined) {
      where.push('r.domain_hash = ?');
      params.push(this.#sealer.domainHash(domainOf(`x@${q.domain}`)));
    }
    if (q.customId !== undefined) {
      where.push('m.custom_id_hash = ?');
      params.push(this.#sealer.lookupHash('custom-id', q.customId));
    }
    if (q.state !== undefined) {
      if (!RECIPIENT_STATES.includes(q.state)) throw new RangeError(`unknown state ${q.state}`);
      where.push('r.state = ?');
      params.push(q.state);
    }
    if (q.since !== undefined) {
      where.push('m.created_at >= ?');
      params.push(q.since);
    }
    if (q.until !== undefined) {
      where.push('m.created_at < ?');
      params.push(q.until);
    }
    const from = `FROM recipients r JOIN messages m ON m.id = r.message_id${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`;
    const limit = Math.min(Math.max(q.limit ?? 50, 1), MAX_PAGE);
    const offset = Math.max(q.offset ?? 0, 0);
    const [count, rows] = await Promise.all([
      this.#engine.get<{ n: number }>(`SELECT COUNT(*) AS n ${from}`, params),
      this.#engine.all<{
        message_id: string;
        id: string;
        public_id: number | null;
        address_sealed: Uint8Array;
        state: RecipientState;
        attempt_count: number;
        created_at: number;
        updated_at: number;
        metadata_sealed: Uint8Array;
        source: string;
      }>(
        // Newest first: ids are UUIDv7, so message id order is creation order.
        `SELECT r.message_id, r.id, r.public_id, r.address_sealed, r.state, r.attempt_count, m.created_at, r.updated_at,
                m.metadata_sealed, m.source
         ${from} ORDER BY m.created_at DESC, r.message_id DESC, r.position LIMIT ? OFFSET ?`,
        [...params, limit, offset],
      ),
    ]);
    const s = this.#sealer;
    const iso = (ms: number) => new Date(Number(ms)).toISOString();
    return {
      total: Number(count?.n ?? 0),
      items: rows.map((r) => {
        const metadata = JSON.parse(s.openString(r.metadata_sealed, ctx('messages', 'metadata_sealed'))) as MessageMetadata;
        return {
          messageId: r.message_id,
          recipientId: r.id,
          publicId: r.public_id === null ? null : Number(r.public_id),
          address: s.openString(r.address_sealed, ctx('recipients', 'address_sealed')),
          state: r.state,
          attemptCount: Number(r.attempt_count),
          createdAt: iso(r.created_at),
          updatedAt: iso(r.updated_at),
          customId: metadata.customId ?? null,
          source: r.source,
        };
      }),
    };
  }
}

