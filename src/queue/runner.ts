// The queue runner: leases due recipients, hands them to a delivery agent in batches (one message,
// one destination domain), records each verdict, and keeps its leases alive while it works. A
// runner that dies simply stops renewing: its leases expire and another runner takes the work
// over. Stopping gracefully lets in-flight batches finish within a grace period, then aborts the
// rest and gives their leases back so nothing waits for a lease to expire.
// May import: ../store (types), ./retry-policy, ../log (types).
import type { Logger } from '../log/logger.ts';
import type { Store } from '../store/store.ts';
import type { ClaimedRecipient, NewMessage } from '../store/records.ts';
import type { AttemptEffects } from '../store/store.ts';
import { nextTransition, type RetrySchedule, type VerdictKind } from './retry-policy.ts';
import { GroupCommit } from './group-commit.ts';
import type { AttemptResult } from '../store/records.ts';

export interface DeliveryBatch {
  messageId: string;
  /** Destination domain (lower case) shared by every recipient of the batch. */
  domain: string;
  sender: string | null;
  requireTls: boolean;
  recipients: ClaimedRecipient[];
  /** The message bytes, opened from the store on demand. */
  content(): Promise<Buffer>;
  /**
   * False once the runner knows the batch's lease was lost or has run out. The agent asks right
   * before DATA: a worker without the lease must not send, another worker owns the recipients.
   */
  leaseHeld(): boolean;
}

export interface RecipientVerdict {
  kind: VerdictKind;
  reason: string | null;
  replyCode?: number | null;
  enhancedCode?: string | null;
  /** How the attempt travelled: destination, TLS facts, timings. */
  detail?: Record<string, unknown>;
  /** The address itself is bad (unknown user, no such domain): suppress later sends to it. */
  hardBounce?: boolean;
  /** The host that gave the verdict, for the DSN's Remote-MTA. */
  remoteMta?: string;
  /**
   * No address of any next hop of the site could be reached or would greet: the input of the
   * dead-site throttle (queue/site-throttle.ts). Not set for TLS, policy or reply failures.
   */
  siteDown?: boolean;
}

/** What a final failure sets off, committed with the verdict (implemented by the server's wiring). */
export interface FinalFailureHandler {
  /** The DSN to queue for a bounced or expired recipient, or null (null sender, or not wanted). */
  bounceMessage(batch: DeliveryBatch, recipient: ClaimedRecipient, verdict: RecipientVerdict, state: 'bounced' | 'expired', now: number): Promise<NewMessage | null>;
}

/** Implemented by the delivery stage; the queue never depends on how mail travels. */
export interface DeliveryAgent {
  /**
   * Returns a verdict for every recipient of the batch, keyed by recipient id. When `settle` is
   * given the agent calls it with the verdicts as soon as it has them and waits for it (the
   * runner commits them durably) before it resets the connection and pools it, so a crash between
   * the two can never leave a delivered message unrecorded while its connection carries the next.
   */
  deliver(batch: DeliveryBatch, signal: AbortSignal, settle?: (verdicts: Map<string, RecipientVerdict>) => Promise<void>): Promise<Map<string, RecipientVerdict>>;
  /**
   * The site (next-hop set: the MX hosts, or a static route) a domain's mail goes to, once the
   * agent has learned it. Concurrency, fairness and the dead-site throttle are keyed by site, so
   * a thousand domains hosted by one provider share one limit.
   */
  siteOf?(domain: string): string | undefined;
}

export interface RunnerOptions {
  store: Store;
  agent: DeliveryAgent;
  logger: Logger;
  workerId: string;
  leaseMs: number;
  pollIntervalMs: number;
  concurrency: number;
  /**
   * Batches in flight to one destination domain at most. Work for a saturated destination is
   * left in the queue rather than taking slots that other destinations could use.
   */
  destinationConcurrency?: number;
  schedule: RetrySchedule;
  clock?: () => number;
  finalFailures?: FinalFailureHandler;
}

interface InFlight {
  batch: DeliveryBatch;
  controller: AbortController;
  done: Promise<void>;
}

export class QueueRunner {
  #o: RunnerOptions;
  #clock: () => number;
  #inFlight = new Set<InFlight>();
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  #heartbeat: NodeJS.Timeout | null = null;
  #polling: Promise<void> | null = null;
  #commits: GroupCommit<{ result: AttemptResult; effects: AttemptEffects }, boolean>;

  constructor(options: RunnerOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#commits = new GroupCommit((items) => options.store.completeAttempts(items));
  }

  get inFlightCount(): number {
    return this.#inFlight.size;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    // Renew well before expiry: a third of the lease leaves two chances to recover from a slow tick.
    this.#heartbeat = setInterval(() => void this.#renew(), Math.max(250, Math.floor(this.#o.leaseMs / 3)));
    this.#schedulePoll(0);
  }

  /** Wakes the runner now (e.g. right after a message was queued). */
  nudge(): void {
    if (this.#running && !this.#polling) this.#schedulePoll(0);
  }

  async stop(graceMs: number): Promise<{ finished: number; released: number }> {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#polling;
    const pending = [...this.#inFlight];
    const allDone = Promise.all(pending.map((f) => f.done));
    const inTime = await Promise.race([allDone.then(() => true), delay(graceMs).then(() => false)]);
    let released = 0;
    if (!inTime) {
      for (const flight of this.#inFlight) flight.controller.abort(new Error('shutting down'));
      // Aborted batches release their own leases; give them a moment to do so.
      await Promise.race([allDone, delay(Math.max(1000, graceMs))]);
      for (const flight of this.#inFlight) released += await this.#release(flight.batch.recipients);
    }
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    return { finished: pending.length - this.#inFlight.size, released };
  }

  #schedulePoll(ms: number): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#polling = this.#poll().finally(() => {
        this.#polling = null;
        if (this.#running) this.#schedulePoll(this.#o.pollIntervalMs);
      });
    }, ms);
  }

  async #poll(): Promise<void> {
    const free = this.#o.concurrency - this.#inFlight.size;
    if (!this.#running || free <= 0) return;
    let claimed: ClaimedRecipient[];
    const perDomain = this.#o.destinationConcurrency;
    const batches = new Map<string, Set<string>>();
    for (const flight of this.#inFlight) {
      const set = batches.get(flight.batch.recipients[0].domainHash) ?? new Set<string>();
      set.add(`in-flight ${set.size}`);
      batches.set(flight.batch.recipients[0].domainHash, set);
    }
    // A recipient joins a batch already picked for its message and domain, or opens a new one if
    // its destination still has room.
    const accept = perDomain
      ? ({ domainHash, messageId }: { domainHash: string; messageId: string }) => {
          const set = batches.get(domainHash) ?? new Set<string>();
          batches.set(domainHash, set);
          if (set.has(messageId)) return true;
          if (set.size >= perDomain) return false;
          set.add(messageId);
          return true;
        }
      : undefined;
    try {
      claimed = await this.#o.store.claimDue({
        owner: this.#o.workerId,
        now: this.#clock(),
        leaseMs: this.#o.leaseMs,
        limit: free,
        accept,
      });
    } catch (err) {
      this.#o.logger.error({ err }, 'claiming due recipients failed');
      return;
    }
    for (const batch of this.#batches(claimed)) this.#run(batch);
  }

  #batches(claimed: ClaimedRecipient[]): DeliveryBatch[] {
    const groups = new Map<string, ClaimedRecipient[]>();
    for (const r of claimed) {
      const key = `${r.messageId} ${r.domainHash}`;
      const group = groups.get(key);
      if (group) group.push(r);
      else groups.set(key, [r]);
    }
    const store = this.#o.store;
    return [...groups.values()].map((recipients) => {
      const first = recipients[0];
      return {
        messageId: first.messageId,
        domain: first.domain,
        sender: first.sender,
        requireTls: first.requireTls,
        recipients,
        content: async () => {
          const content = await store.messageContent(first.messageId);
          if (!content) throw new Error(`message ${first.messageId} has no content`);
          return content;
        },
      };
    });
  }

  #run(batch: DeliveryBatch): void {
    const controller = new AbortController();
    const flight: InFlight = { batch, controller, done: Promise.resolve() };
    flight.done = this.#deliver(batch, controller.signal).finally(() => this.#inFlight.delete(flight));
    this.#inFlight.add(flight);
  }

  async #deliver(batch: DeliveryBatch, signal: AbortSignal): Promise<void> {
    const log = this.#o.logger;
    let verdicts: Map<string, RecipientVerdict>;
    try {
      verdicts = await this.#o.agent.deliver(batch, signal);
    } catch (err) {
      if (signal.aborted) {
        await this.#release(batch.recipients);
        return;
      }
      log.error({ err, messageId: batch.messageId }, 'delivery agent failed; deferring the batch');
      verdicts = new Map(
        batch.recipients.map((r) => [r.recipientId, { kind: 'transient', reason: `local error: ${(err as Error).message}` }]),
      );
    }
    await Promise.all(batch.recipients.map((recipient) => this.#record(batch, recipient, verdicts)));
  }

  async #record(batch: DeliveryBatch, recipient: ClaimedRecipient, verdicts: Map<string, RecipientVerdict>): Promise<void> {
    const log = this.#o.logger;
    const verdict = verdicts.get(recipient.recipientId) ?? {
      kind: 'transient' as const,
      reason: 'local error: delivery agent gave no verdict for this recipient',
    };
    const now = this.#clock();
    const transition = nextTransition(
      verdict.kind,
      { number: recipient.attemptNumber, now, expiresAt: recipient.expiresAt },
      this.#o.schedule,
    );
    const reason =
      transition.state === 'expired' ? `expired after ${recipient.attemptNumber} attempts: ${verdict.reason}` : verdict.reason;
    const effects: AttemptEffects = {};
    if (transition.state === 'bounced' && verdict.hardBounce) {
      effects.suppress = { address: recipient.address, reason: reason ?? 'hard bounce', messageId: recipient.messageId, at: now };
    }
    if ((transition.state === 'bounced' || transition.state === 'expired') && this.#o.finalFailures && batch.sender !== null) {
      try {
        const dsn = await this.#o.finalFailures.bounceMessage(batch, recipient, { ...verdict, reason }, transition.state, now);
        if (dsn) effects.enqueue = dsn;
      } catch (err) {
        log.error({ err, messageId: recipient.messageId }, 'building the bounce message failed');
      }
    }
    const result: AttemptResult = {
      recipientId: recipient.recipientId,
      attemptId: recipient.attemptId,
      outcome: transition.outcome,
      state: transition.state,
      nextAttemptAt: transition.nextAttemptAt,
      reason,
      replyCode: verdict.replyCode ?? null,
      enhancedCode: verdict.enhancedCode ?? null,
      detail: verdict.detail ?? {},
      endedAt: now,
    };
    let kept: boolean;
    try {
      kept = await this.#commits.submit({ result, effects });
    } catch (err) {
      // The lease runs out and the recipient is tried again: nothing is lost, at worst sent twice.
      log.error({ err, messageId: recipient.messageId, recipientId: recipient.recipientId }, 'recording the attempt failed');
      return;
    }
    const fields = { messageId: recipient.messageId, recipientId: recipient.recipientId, attempt: recipient.attemptNumber };
    if (!kept) log.warn(fields, 'lease lost before the attempt was recorded; another worker owns this recipient');
    else log.info({ ...fields, state: transition.state, replyCode: verdict.replyCode ?? undefined }, 'attempt recorded');
  }

  async #release(recipients: ClaimedRecipient[]): Promise<number> {
    let released = 0;
    for (const r of recipients) {
      try {
        if (await this.#o.store.releaseLease(r.recipientId, r.attemptId, this.#clock())) released++;
      } catch (err) {
        this.#o.logger.error({ err, recipientId: r.recipientId }, 'releasing a lease failed; it will expire instead');
      }
    }
    return released;
  }

  async #renew(): Promise<void> {
    const tokens = [...this.#inFlight].flatMap((f) => f.batch.recipients.map((r) => r.attemptId));
    if (tokens.length === 0) return;
    try {
      const held = new Set(await this.#o.store.renewLeases(this.#o.workerId, tokens, this.#clock() + this.#o.leaseMs));
      for (const flight of this.#inFlight) {
        if (flight.batch.recipients.some((r) => !held.has(r.attemptId))) {
          this.#o.logger.warn({ messageId: flight.batch.messageId }, 'a lease was lost while delivering');
        }
      }
    } catch (err) {
      this.#o.logger.error({ err }, 'renewing leases failed');
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
