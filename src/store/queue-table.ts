// The queue's tables (messages, message_contents, recipients, attempts): the only SQL
// for durable acceptance, leases and verdicts. Implements the port the queue runner depends on
// (queue/port.ts). Personal data and content are sealed on the way in, opened on the way out.
//   - Acceptance: a message, its content and its recipients in one durable transaction.
//   - Leases: a claim takes due recipients with a lease token that is also the attempt's id; the
//     token fences every later write, so a worker that lost its lease cannot record anything.
//   - Verdicts: the recipient's new state, the attempt, and everything the verdict sets off (DSN,
//     suppression through suppressions-table.ts, events and their webhook outbox rows) in one transaction.
//   - Operators' actions (retry, hold, release, delete, bounce now): judged row by row inside the
//     transaction that applies them, by a decision handed in (queue/actions.ts), and fenced like a
//     claim: a row under a live lease is never touched; a bounce goes through the verdict path.
import type { Sealer } from '../sealing/sealer.ts';
import { domainOf } from '../mail/address.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { uuidv7 } from './ids.ts';
import type { EventsTable } from './events-table.ts';
import type { SuppressionsTable } from './suppressions-table.ts';
import { sealedContext as ctx } from './sealed-columns.ts';
import { allocatePublicIds } from './send-api-table.ts';
import type { AttemptResult, ClaimedRecipient, NewMessage, RecipientState } from './records.ts';

/** What else an attempt's verdict commits with it. */
export interface AttemptEffects {
  /** A message to queue (a DSN to the sender). */
  enqueue?: NewMessage;
  /** A hard bounce: refuse later sends to this address. */
  suppress?: { address: string; reason: string; messageId: string | null; at: number };
}

/** A due recipient as the claim sees it before taking it: no personal data, only keys. */
export interface ClaimCandidate {
  id: string;
  domainHash: string;
  messageId: string;
}

export interface ClaimOptions {
  owner: string;
  now: number;
  leaseMs: number;
  /** Due recipients to look at, in due order. */
  limit: number;
  /** Destinations (domain hashes) to pass over: their sites are saturated or waiting for a probe. */
  exclude?: string[];
  /** When the window is full, also look at up to this many due recipients of other destinations. */
  beyond?: number;
  /**
   * Chooses, from the candidates in due order, the ids to lease (all of them when absent). Runs
   * inside the claim's transaction: it must be quick and must not touch the store. `full` says
   * the window of `limit` due recipients was full: more work may wait behind it.
   */
  pick?: (candidates: ClaimCandidate[], full: boolean) => string[];
}

/**
 * A held recipient's next attempt time: the end of time (the largest valid Date), so it sorts after
 * every due recipient in the claim's index and is never due. Release sets a real time again.
 */
export const HELD_NEXT_ATTEMPT_AT = 8_640_000_000_000_000;

/** How a recipient stands for an operator's action (the input of queue/actions.ts's table). */
export interface ActionStanding {
  state: RecipientState;
  held: boolean;
  /** Under a live lease: a worker is delivering it right now. */
  leased: boolean;
}

export type ActionChange = 'due-now' | 'hold' | 'release' | 'delete' | 'bounce';
export type ActionVerdict = { kind: 'apply'; change: ActionChange } | { kind: 'refuse'; code: string; reason: string };

/** A recipient as an operator's action reads it first (to build a DSN for a bounce, say). */
export interface ActionTarget extends ActionStanding {
  recipientId: string;
  messageId: string;
  /** MessageID in the send API. */
  publicId: number | null;
  address: string;
  domain: string;
  domainHash: string;
  attemptCount: number;
  sender: string | null;
  requireTls: boolean;
  createdAt: number;
  expiresAt: number;
}

/** What a bounce-now commits beside the recipient's new state: the verdict's reason and the DSN. */
export interface OperatorBounce {
  reason: string;
  enhancedCode: string;
  dsn: NewMessage | null;
}

export interface ActionOutcome {
  recipientId: string;
  before: { state: RecipientState; held: boolean };
  verdict: ActionVerdict;
}

export class QueueTable {
  #engine: SqlEngine;
  #sealer: Sealer;
  #events: EventsTable;
  #suppressions: SuppressionsTable;
  /** Where the last look past a full window stopped (a domain hash; '' is before the first). */
  #destinationCursor = '';

  constructor(engine: SqlEngine, sealer: Sealer, events: EventsTable, suppressions: SuppressionsTable) {
    this.#engine = engine;
    this.#sealer = sealer;
    this.#events = events;
    this.#suppressions = suppressions;
  }

  /** Commits a message, its content and its recipients in one durable transaction. */
  async insertMessage(message: NewMessage): Promise<void> {
    await this.#engine.transaction((tx) => this.insertMessageIn(tx, message));
  }

  async insertMessageIn(tx: SqlExecutor, message: NewMessage): Promise<void> {
    const s = this.#sealer;
    await tx.run(
      `INSERT INTO messages (id, created_at, expires_at, source, sender_sealed, metadata_sealed, content_size, require_tls, custom_id_hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        message.id,
        message.createdAt,
        message.expiresAt,
        message.source,
        message.sender === null ? null : s.seal(message.sender, ctx('messages', 'sender_sealed')),
        s.seal(JSON.stringify(message.metadata), ctx('messages', 'metadata_sealed')),
        message.content.length,
        message.requireTls ? 1 : 0,
        message.metadata.customId ? s.lookupHash('custom-id', message.metadata.customId) : null,
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
    await this.#events.recordRefused(tx, message);
  }

  /**
   * Leases due recipients to `owner` until `now + leaseMs`. A due recipient is queued or
   * deferred, its next attempt time has come, and it has no live lease: an expired lease means
   * its worker died, so its open attempt is closed as abandoned and the work is taken over.
   */
  async claimDue(options: ClaimOptions): Promise<ClaimedRecipient[]> {
    const { owner, now, leaseMs, limit, exclude = [], pick } = options;
    const rows = await this.#engine.transaction(
      async (tx) => {
        // Same WHERE as the partial index recipients_pending, so due order comes without a sort, and
        // the read stops at the window. Excluded destinations are passed over here rather than in
        // SQL: skipping them there would read a saturated destination's whole backlog each claim.
        const window = await tx.all<CandidateRow>(
          `SELECT id, lease_token, domain_hash, message_id FROM recipients
            WHERE state IN ('queued', 'deferred') AND next_attempt_at <= ?
              AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
            ORDER BY next_attempt_at, message_id, position
            LIMIT ? ${this.#engine.claimLockClause}`,
          [now, now, limit],
        );
        const skip = new Set(exclude);
        const candidates = window.filter((c) => !skip.has(c.domain_hash));
        // A full window may be one big destination's backlog: look past it once for the others, so
        // a message to another destination is never stuck behind it.
        if (window.length === limit && (options.beyond ?? 0) > 0) {
          for (const c of window) skip.add(c.domain_hash);
          candidates.push(...(await this.#otherDestinations(tx, skip, options.beyond!, now)));
        }
        if (candidates.length === 0) return [];
        const wanted = pick
          ? new Set(pick(candidates.map((c) => ({ id: c.id, domainHash: c.domain_hash, messageId: c.message_id })), window.length === limit))
          : null;
        const claimed: string[] = [];
        for (const { id, lease_token: staleToken, message_id: messageId } of candidates) {
          if (wanted && !wanted.has(id)) continue;
          if (staleToken) {
            await tx.run(`UPDATE attempts SET ended_at = ?, outcome = 'abandoned' WHERE id = ? AND ended_at IS NULL`, [now, staleToken]);
          }
          const token = uuidv7(now);
          await tx.run(
            `UPDATE recipients SET lease_owner = ?, lease_token = ?, lease_expires_at = ?,
                    attempt_count = attempt_count + 1, updated_at = ?
              WHERE id = ?`,
            [owner, token, now + leaseMs, now, id],
          );
          await tx.run('INSERT INTO attempts (id, recipient_id, message_id, worker, started_at) VALUES (?, ?, ?, ?, ?)', [
            token,
            id,
            messageId,
            owner,
            now,
          ]);
          claimed.push(id);
        }
        const out: ClaimRow[] = [];
        // In slices, so the statement (and its cached plan) has one of a few shapes.
        for (let i = 0; i < claimed.length; i += 100) {
          const slice = claimed.slice(i, i + 100);
          out.push(
            ...(await tx.all<ClaimRow>(
              `SELECT r.id, r.message_id, r.address_sealed, r.domain_hash, r.lease_token, r.attempt_count, r.lease_expires_at,
                      m.sender_sealed, m.require_tls, m.created_at, m.expires_at
                 FROM recipients r JOIN messages m ON m.id = r.message_id
                WHERE r.id IN (${slice.map(() => '?').join(', ')})`,
              slice,
            )),
          );
        }
        // Back in due order (which keeps each message's recipients in their positions).
        const order = new Map(claimed.map((id, i) => [id, i]));
        return out.sort((a, b) => order.get(a.id)! - order.get(b.id)!);
      },
      { durable: false },
    );
    return rows.map((row) => {
      const address = this.#sealer.openString(row.address_sealed, ctx('recipients', 'address_sealed'));
      return {
        recipientId: row.id,
        messageId: row.message_id,
        address,
        domain: domainOf(address),
        domainHash: row.domain_hash,
        attemptId: row.lease_token,
        attemptNumber: Number(row.attempt_count),
        leaseExpiresAt: Number(row.lease_expires_at),
        sender: row.sender_sealed ? this.#sealer.openString(row.sender_sealed, ctx('messages', 'sender_sealed')) : null,
        requireTls: Number(row.require_tls) === 1,
        createdAt: Number(row.created_at),
        expiresAt: Number(row.expires_at),
      };
    });
  }

  /**
   * Up to `n` due recipients of destinations not in `skip`, destination by destination: a skip
   * scan over recipients_pending_domain (one index seek per destination), so it costs the same
   * however long the skipped destinations' backlogs are. It goes on from where the last one
   * stopped, so every destination gets its turn when more of them wait than one look takes.
   */
  async #otherDestinations(tx: SqlExecutor, skip: Set<string>, n: number, now: number): Promise<CandidateRow[]> {
    const out: CandidateRow[] = [];
    const start = this.#destinationCursor;
    let from = start;
    let wrapped = false;
    for (let steps = 0; out.length < n && steps < skip.size + MAX_DESTINATIONS_PER_LOOK; steps++) {
      const next = await tx.get<{ domain_hash: string }>(
        `SELECT domain_hash FROM recipients WHERE state IN ('queued', 'deferred') AND domain_hash > ?
          ORDER BY domain_hash LIMIT 1`,
        [from],
      );
      if (!next) {
        if (wrapped || start === '') break;
        wrapped = true;
        from = '';
        continue;
      }
      if (wrapped && next.domain_hash > start) break;
      from = next.domain_hash;
      if (skip.has(from)) continue;
      out.push(
        ...(await tx.all<CandidateRow>(
          `SELECT id, lease_token, domain_hash, message_id FROM recipients
            WHERE state IN ('queued', 'deferred') AND domain_hash = ? AND next_attempt_at <= ?
              AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
            ORDER BY next_attempt_at, message_id, position
            LIMIT ? ${this.#engine.claimLockClause}`,
          [from, now, now, n - out.length],
        )),
      );
    }
    this.#destinationCursor = from;
    return out;
  }

  /** Extends live leases held by `owner`; returns the attempt ids whose lease is still held. */
  async renewLeases(owner: string, attemptIds: string[], until: number): Promise<string[]> {
    if (attemptIds.length === 0) return [];
    return this.#engine.transaction(
      async (tx) => {
        const held: string[] = [];
        for (const token of attemptIds) {
          const { changes } = await tx.run('UPDATE recipients SET lease_expires_at = ? WHERE lease_token = ? AND lease_owner = ?', [
            until,
            token,
            owner,
          ]);
          if (changes === 1) held.push(token);
        }
        return held;
      },
      { durable: false },
    );
  }

  /**
   * Records several attempts in one durable transaction (group commit: one fsync for many
   * verdicts). Each is fenced by its lease token on its own: a worker that lost its lease cannot
   * finalise a recipient another worker has taken over. The returned flags say which were kept.
   */
  async completeAttempts(items: Array<{ result: AttemptResult; effects?: AttemptEffects }>): Promise<boolean[]> {
    if (items.length === 0) return [];
    return this.#engine.transaction(async (tx) => {
      const kept: boolean[] = [];
      for (const { result, effects } of items) kept.push(await this.#completeAttempt(tx, result, effects ?? {}));
      // In the same transaction as the verdicts, so a crash can never record one without its
      // event (and the event's webhook outbox rows); all of them at once, in a few statements.
      await this.#events.recordVerdicts(
        tx,
        items.filter((_, i) => kept[i]).map(({ result, effects }) => ({ result, suppressed: effects?.suppress !== undefined })),
      );
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
        result.reason === null ? null : this.#sealer.seal(result.reason, ctx('recipients', 'reason_sealed')),
        result.endedAt,
        final ? result.endedAt : null,
        result.recipientId,
        result.attemptId,
      ],
    );
    if (changes !== 1) return false;
    await tx.run(`UPDATE attempts SET ended_at = ?, outcome = ?, reply_code = ?, enhanced_code = ?, detail_sealed = ? WHERE id = ?`, [
      result.endedAt,
      result.outcome,
      result.replyCode,
      result.enhancedCode,
      this.#sealer.seal(JSON.stringify(result.detail), ctx('attempts', 'detail_sealed')),
      result.attemptId,
    ]);
    // In the same transaction as the verdict, so a crash can never record a bounce without
    // its DSN or its suppression.
    if (effects.suppress) await this.#suppressions.addIn(tx, effects.suppress);
    if (effects.enqueue) await this.insertMessageIn(tx, effects.enqueue);
    return true;
  }

  /** Gives a lease back unused (graceful shutdown): the recipient is due again at once. */
  async releaseLease(recipientId: string, attemptId: string, now: number): Promise<boolean> {
    return this.#engine.transaction(
      async (tx) => {
        const { changes } = await tx.run(
          `UPDATE recipients SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?,
                  attempt_count = attempt_count - 1
            WHERE id = ? AND lease_token = ?`,
          [now, recipientId, attemptId],
        );
        if (changes === 1) await tx.run(`UPDATE attempts SET ended_at = ?, outcome = 'released' WHERE id = ?`, [now, attemptId]);
        return changes === 1;
      },
      { durable: false },
    );
  }

  /**
   * Every recipient of a message (or the one named), as an operator's action reads them before it
   * runs: states, holds, live leases, and what a DSN needs. Nothing here is a decision yet.
   */
  async actionTargets(messageId: string, recipientId: string | null, now: number): Promise<ActionTarget[]> {
    const rows = await this.#engine.all<TargetRow>(
      `SELECT r.id, r.message_id, r.public_id, r.address_sealed, r.domain_hash, r.state, r.held_at, r.lease_expires_at, r.attempt_count,
              m.sender_sealed, m.require_tls, m.created_at, m.expires_at
         FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.message_id = ?${recipientId === null ? '' : ' AND r.id = ?'}
        ORDER BY r.position`,
      recipientId === null ? [messageId] : [messageId, recipientId],
    );
    return rows.map((row) => {
      const address = this.#sealer.openString(row.address_sealed, ctx('recipients', 'address_sealed'));
      return {
        recipientId: row.id,
        messageId: row.message_id,
        publicId: row.public_id === null ? null : Number(row.public_id),
        address,
        domain: domainOf(address),
        domainHash: row.domain_hash,
        state: row.state,
        held: row.held_at !== null,
        leased: row.lease_expires_at !== null && Number(row.lease_expires_at) > now,
        attemptCount: Number(row.attempt_count),
        sender: row.sender_sealed ? this.#sealer.openString(row.sender_sealed, ctx('messages', 'sender_sealed')) : null,
        requireTls: Number(row.require_tls) === 1,
        createdAt: Number(row.created_at),
        expiresAt: Number(row.expires_at),
      };
    });
  }

  /**
   * Applies an operator's action to these recipients of one message inside the caller's
   * transaction (which also writes the audit line). Each row is read again here and judged by
   * `decide` as it stands now, so a row a worker claimed meanwhile is refused, not raced. Every
   * write is fenced as well: pending, and no live lease. A lease that ran out (dead worker) is
   * taken over like a claim does, its attempt closed as abandoned. `bounces` holds the prepared
   * DSN per recipient for a bounce; a bounce is recorded through the same verdict code as the
   * runner's (#completeAttempt and the events it causes), under a lease the action takes for it.
   * Returns each recipient's outcome and whether the message itself was removed (delete, when no
   * recipient is left).
   */
  async applyActionIn(
    tx: SqlExecutor,
    input: {
      messageId: string;
      recipientIds: readonly string[];
      now: number;
      /** Who acts, recorded as the worker of a bounce's attempt. */
      actor: string;
      decide: (standing: ActionStanding) => ActionVerdict;
      bounces?: ReadonlyMap<string, OperatorBounce>;
    },
  ): Promise<{ outcomes: ActionOutcome[]; messageRemoved: boolean }> {
    const { messageId, now } = input;
    const outcomes: ActionOutcome[] = [];
    const verdicts: Array<{ result: AttemptResult; suppressed: boolean }> = [];
    let deleted = 0;
    const FREE = `state IN ('queued', 'deferred') AND (lease_expires_at IS NULL OR lease_expires_at <= ?)`;
    for (const id of input.recipientIds) {
      const row = await tx.get<{ state: RecipientState; held_at: number | null; held_remaining_ms: number | null; lease_token: string | null; lease_expires_at: number | null }>(
        'SELECT state, held_at, held_remaining_ms, lease_token, lease_expires_at FROM recipients WHERE id = ? AND message_id = ?',
        [id, messageId],
      );
      if (!row) continue;
      const standing = { state: row.state, held: row.held_at !== null, leased: row.lease_expires_at !== null && Number(row.lease_expires_at) > now };
      let verdict = input.decide(standing);
      const bounce = input.bounces?.get(id);
      // Pending now but not when the action read it: no DSN was prepared, so it must be asked again.
      if (verdict.kind === 'apply' && verdict.change === 'bounce' && !bounce) {
        verdict = { kind: 'refuse', code: 'in-delivery', reason: 'changed while the action ran, try again' };
      }
      outcomes.push({ recipientId: id, before: { state: row.state, held: standing.held }, verdict });
      if (verdict.kind !== 'apply') continue;
      // A dead worker's attempt is closed as a claim would close it; its late verdict is fenced out.
      if (row.lease_token) {
        await tx.run(`UPDATE attempts SET ended_at = ?, outcome = 'abandoned' WHERE id = ? AND ended_at IS NULL`, [now, row.lease_token]);
      }
      const clearLease = 'lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL';
      let changes = 0;
      switch (verdict.change) {
        case 'due-now':
          ({ changes } = await tx.run(
            `UPDATE recipients SET next_attempt_at = ?, updated_at = ?, ${clearLease} WHERE id = ? AND held_at IS NULL AND ${FREE}`,
            [now, now, id, now],
          ));
          break;
        case 'hold': {
          // The lifetime left now is what release gives back: the expiry clock stops while held.
          ({ changes } = await tx.run(
            `UPDATE recipients SET held_at = ?, next_attempt_at = ?, updated_at = ?, ${clearLease},
                    held_remaining_ms = (SELECT MAX(expires_at - ?, 0) FROM messages WHERE id = ?)
              WHERE id = ? AND held_at IS NULL AND ${FREE}`,
            [now, HELD_NEXT_ATTEMPT_AT, now, now, messageId, id, now],
          ));
          break;
        }
        case 'release':
          ({ changes } = await tx.run(
            `UPDATE recipients SET held_at = NULL, held_remaining_ms = NULL, next_attempt_at = ?, updated_at = ?, ${clearLease}
              WHERE id = ? AND held_at IS NOT NULL AND ${FREE}`,
            [now, now, id, now],
          ));
          // The expiry is the message's: it ends no earlier than the lifetime this recipient had
          // left when held, counted from now (never shortened, so releasing one recipient of
          // several held ones cannot cut another's time).
          if (changes === 1 && row.held_remaining_ms !== null) {
            await tx.run('UPDATE messages SET expires_at = MAX(expires_at, ?) WHERE id = ?', [now + Number(row.held_remaining_ms), messageId]);
          }
          break;
        case 'delete':
          ({ changes } = await tx.run(`DELETE FROM recipients WHERE id = ? AND ${FREE}`, [id, now]));
          deleted += changes;
          break;
        case 'bounce': {
          // Taken under a lease of the action's own, so the runner's verdict code (fenced by the
          // token) records it: the same state change, attempt, DSN and events as a real bounce.
          const token = uuidv7(now);
          ({ changes } = await tx.run(
            `UPDATE recipients SET lease_owner = ?, lease_token = ?, lease_expires_at = ?, attempt_count = attempt_count + 1,
                    held_at = NULL, held_remaining_ms = NULL, updated_at = ?
              WHERE id = ? AND ${FREE}`,
            [input.actor, token, now + 60_000, now, id, now],
          ));
          if (changes !== 1) break;
          await tx.run('INSERT INTO attempts (id, recipient_id, message_id, worker, started_at) VALUES (?, ?, ?, ?, ?)', [token, id, messageId, input.actor, now]);
          const result: AttemptResult = {
            recipientId: id,
            attemptId: token,
            outcome: 'bounced',
            state: 'bounced',
            nextAttemptAt: now,
            reason: bounce!.reason,
            replyCode: null,
            enhancedCode: bounce!.enhancedCode,
            detail: {},
            endedAt: now,
          };
          const kept = await this.#completeAttempt(tx, result, bounce!.dsn ? { enqueue: bounce!.dsn } : {});
          if (!kept) throw new Error(`bouncing recipient ${id} lost its own lease`);
          verdicts.push({ result, suppressed: false });
          break;
        }
      }
      // Read and judged in this transaction, so the fence cannot fail; if it did, say so.
      if (changes !== 1) outcomes[outcomes.length - 1].verdict = { kind: 'refuse', code: 'in-delivery', reason: 'changed while the action ran, try again' };
    }
    await this.#events.recordVerdicts(tx, verdicts);
    let messageRemoved = false;
    if (deleted > 0) {
      const left = await tx.get<{ n: number }>('SELECT COUNT(*) AS n FROM recipients WHERE message_id = ?', [messageId]);
      if (Number(left?.n ?? 0) === 0) {
        // Nothing remains: the message goes with its content and events (ON DELETE CASCADE).
        await tx.run('DELETE FROM messages WHERE id = ?', [messageId]);
        messageRemoved = true;
      }
    }
    return { outcomes, messageRemoved };
  }

  async messageContent(messageId: string): Promise<Buffer | null> {
    const row = await this.#engine.get<{ content_sealed: Uint8Array }>('SELECT content_sealed FROM message_contents WHERE message_id = ?', [
      messageId,
    ]);
    return row ? this.#sealer.open(row.content_sealed, ctx('message_contents', 'content_sealed')) : null;
  }

  /** When the next recipient becomes due (for an idle worker's sleep), or null if none waits. */
  async nextDueAt(): Promise<number | null> {
    const row = await this.#engine.get<{ at: number | null }>(
      `SELECT MIN(CASE WHEN lease_expires_at IS NULL OR lease_expires_at < next_attempt_at
                       THEN next_attempt_at ELSE lease_expires_at END) AS at
         FROM recipients WHERE state IN ('queued', 'deferred')`,
    );
    return row?.at == null ? null : Number(row.at);
  }

  /**
   * The first due time after `now` of a pending recipient no worker holds, or null: what an idle
   * runner sleeps until. Reads the partial index from `now` on, so it stays cheap with a long
   * queue. Expiring leases of dead workers are left to the runner's safety-net poll.
   */
  async nextDueAfter(now: number): Promise<number | null> {
    const row = await this.#engine.get<{ at: number | null }>(
      `SELECT next_attempt_at AS at FROM recipients
        WHERE state IN ('queued', 'deferred') AND next_attempt_at > ? AND lease_expires_at IS NULL
        ORDER BY next_attempt_at, message_id, position LIMIT 1`,
      [now],
    );
    return row?.at == null ? null : Number(row.at);
  }
}

/** Destinations one look past a full window visits beyond the skipped ones, at most. */
const MAX_DESTINATIONS_PER_LOOK = 200;

interface CandidateRow {
  id: string;
  lease_token: string | null;
  domain_hash: string;
  message_id: string;
}

interface TargetRow {
  id: string;
  message_id: string;
  public_id: number | null;
  address_sealed: Uint8Array;
  domain_hash: string;
  state: RecipientState;
  held_at: number | null;
  lease_expires_at: number | null;
  attempt_count: number;
  sender_sealed: Uint8Array | null;
  require_tls: number;
  created_at: number;
  expires_at: number;
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
