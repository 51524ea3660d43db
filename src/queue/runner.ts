// The queue runner (like Postfix's qmgr): leases due recipients, hands them to a delivery agent in
// batches (one message, one destination domain, at most 100 recipients), records each verdict, and
// keeps its leases alive while it works. It is event-driven: a committed intake (nudge), a freed
// slot and the next due time wake it; the poll interval is only a safety net. Slots are shared
// fairly across *sites* (a destination's next-hop set, learnt from the agent): each claim takes
// batches round-robin across the sites with room, a saturated site's work is left in the queue
// for others to pass, and a dead site is suspended and probed (queue/site-throttle.ts).
// A runner that dies simply stops renewing: its leases expire and another runner takes the work
// over. Stopping gracefully lets in-flight batches finish within a grace period, then aborts the
// rest and gives their leases back so nothing waits for a lease to expire.
import type { Logger } from '../log/logger.ts';
import type { AttemptDetail, ClaimedRecipient, NewMessage, AttemptResult } from '../store/records.ts';
import type { AttemptEffects, ClaimCandidate } from '../store/queue-table.ts';
import { nextTransition, type RetrySchedule, type VerdictKind } from './retry-policy.ts';
import { GroupCommit } from './group-commit.ts';
import { summarizeAttempt, type AttemptSummary } from './attempt-summary.ts';
import type { QueuePort } from './port.ts';
import { admission, afterBatch, freshSite, startProbe, type BatchOutcome, type SiteState, type ThrottleSettings } from './site-throttle.ts';

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
  detail?: AttemptDetail;
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
  /** The queue's durable operations (store.queue). */
  store: QueuePort;
  agent: DeliveryAgent;
  logger: Logger;
  workerId: string;
  leaseMs: number;
  /** Safety net only: the runner wakes on intake, freed slots and due times without it. */
  pollIntervalMs: number;
  /** Batches in flight at most (Postfix default_process_limit). */
  concurrency: number;
  /**
   * Batches in flight to one site at most (Postfix default_destination_concurrency_limit). A site
   * starts at `initialSiteConcurrency` and gains one per delivery that reached it.
   */
  destinationConcurrency?: number;
  initialSiteConcurrency?: number;
  /** First suspension of a dead site; doubles per failed probe up to the schedule's maximum backoff. */
  siteSuspendMs?: number;
  schedule: RetrySchedule;
  clock?: () => number;
  finalFailures?: FinalFailureHandler;
  /** Told of every recorded attempt (the delivery metrics); must not throw. */
  onAttempt?: (summary: AttemptSummary) => void;
}

/** RFC 5321 §4.5.3.1.8: a server must take at least 100 recipients per transaction. */
export const MAX_BATCH_RECIPIENTS = 100;
/**
 * Due recipients one claim looks at, for `free` slots: enough to fill them with several sites'
 * batches, few enough that a slot freed at high rate costs a small read. A claim whose window
 * fills up is followed by another at once.
 */
const claimWindow = (free: number) => Math.min(1_000, Math.max(100, free * 10));
/** Claims in a row for one wake-up; the next freed slot or the poll goes on from there. */
const MAX_CLAIMS_PER_WAKE = 8;
/** A lease this close to its end counts as lost for starting DATA: the renewal may not come in time. */
const LEASE_MARGIN_MS = 1_000;

interface InFlight {
  batch: DeliveryBatch;
  site: string;
  controller: AbortController;
  done: Promise<void>;
  /** Lease end as this runner knows it (claim, then renewals). */
  leaseUntil: number;
  lost: boolean;
}

export class QueueRunner {
  #o: RunnerOptions;
  #clock: () => number;
  #inFlight = new Set<InFlight>();
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #heartbeat: NodeJS.Timeout | null = null;
  #pumping: Promise<void> | null = null;
  #again = false;
  #commits: GroupCommit<{ result: AttemptResult; effects: AttemptEffects }, boolean>;
  #throttle: ThrottleSettings;
  #sites = new Map<string, SiteState>();
  /** Domain hash → site, as learnt from the agent; unknown domains are their own site. */
  #siteOfHash = new Map<string, string>();
  /** Site → in-flight batch count. */
  #busy = new Map<string, number>();
  #rr = 0;
  /** The last pass that looked for work: when it ended and whether it failed (readiness). */
  #lastPump: { at: number; error: string | null } | null = null;

  constructor(options: RunnerOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#commits = new GroupCommit((items) => options.store.completeAttempts(items));
    const limit = options.destinationConcurrency ?? options.concurrency;
    this.#throttle = {
      limit,
      initial: Math.min(limit, options.initialSiteConcurrency ?? 5),
      suspendMs: options.siteSuspendMs ?? Math.min(60_000, options.schedule.minBackoffMs),
      maxSuspendMs: Math.max(options.siteSuspendMs ?? 0, options.schedule.maxBackoffMs),
    };
  }

  get inFlightCount(): number {
    return this.#inFlight.size;
  }

  /**
   * What readiness needs to know (server/health.ts): whether the runner runs, and when its last
   * pass for work ended and how. A pass runs at least every poll interval (the safety net below),
   * so a stale or failing pass is a worker that no longer delivers.
   */
  health(): { running: boolean; pollIntervalMs: number; lastPassAt: number | null; lastPassError: string | null } {
    return {
      running: this.#running,
      pollIntervalMs: this.#o.pollIntervalMs,
      lastPassAt: this.#lastPump?.at ?? null,
      lastPassError: this.#lastPump?.error ?? null,
    };
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    // Renew well before expiry: a third of the lease leaves two chances to recover from a slow tick.
    this.#heartbeat = setInterval(() => void this.#renew(), Math.max(250, Math.floor(this.#o.leaseMs / 3)));
    this.nudge();
  }

  /** Wakes the runner now (after a message was committed, a slot freed). Calls coalesce. */
  nudge(): void {
    if (!this.#running) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = null;
      if (this.#again && this.#running) {
        this.#again = false;
        this.nudge();
      }
    });
  }

  async stop(graceMs: number): Promise<{ finished: number; released: number }> {
    this.#running = false;
    this.#clearTimer();
    await this.#pumping;
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

  // ---- waking --------------------------------------------------------------------------------

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
  }

  /** Sleeps until `at` at the latest (an earlier wake-up wins). */
  #wakeAt(at: number): void {
    if (!this.#running || at >= this.#timerAt) return;
    this.#clearTimer();
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.nudge();
    }, Math.max(0, at - this.#clock()));
  }

  async #pump(): Promise<void> {
    try {
      for (let i = 0; i < MAX_CLAIMS_PER_WAKE && this.#running; i++) {
        const free = this.#o.concurrency - this.#inFlight.size;
        if (free <= 0) break;
        const opened = await this.#claim(free);
        // A full window may hide more work behind it: claim again; otherwise we are done for now.
        if (opened.batches === 0 || !opened.more) break;
      }
      if (!this.#running) return;
      const now = this.#clock();
      // Safety net: catches work committed by other processes and leases of dead workers.
      let at = now + this.#o.pollIntervalMs;
      const due = await this.#o.store.nextDueAfter(now);
      if (due !== null) at = Math.min(at, due);
      for (const site of this.#sites.values()) if (site.status === 'suspended' && site.until > now) at = Math.min(at, site.until);
      this.#lastPump = { at: now, error: null };
      this.#wakeAt(at);
    } catch (err) {
      this.#lastPump = { at: this.#clock(), error: (err as Error).message };
      this.#o.logger.error({ err }, 'claiming due recipients failed');
      this.#wakeAt(this.#clock() + this.#o.pollIntervalMs);
    }
  }

  // ---- claiming ------------------------------------------------------------------------------

  #siteKey(domainHash: string): string {
    return this.#siteOfHash.get(domainHash) ?? `domain:${domainHash}`;
  }

  #site(key: string): SiteState {
    let site = this.#sites.get(key);
    if (!site) {
      site = freshSite(this.#throttle);
      this.#sites.set(key, site);
    }
    return site;
  }

  /** One claim: batches round-robin across the sites that have room, up to `free`. */
  async #claim(free: number): Promise<{ batches: number; more: boolean }> {
    const now = this.#clock();
    // Sites whose work stays in the queue for now: saturated, or waiting for their probe.
    const exclude: string[] = [];
    for (const [hash, key] of this.#siteOfHash) {
      const site = startProbe(this.#site(key), now);
      this.#sites.set(key, site);
      if (admission(site, this.#busy.get(key) ?? 0, now).kind === 'wait') exclude.push(hash);
    }
    let full = false;
    let picked: Array<{ site: string; deferReason: string | null; ids: string[] }> = [];
    const claimed = await this.#o.store.claimDue({
      owner: this.#o.workerId,
      now,
      leaseMs: this.#o.leaseMs,
      limit: claimWindow(free),
      beyond: 100,
      exclude,
      pick: (candidates, windowFull) => {
        full = windowFull;
        picked = this.#pick(candidates, free, now);
        return picked.flatMap((b) => b.ids);
      },
    });
    const byId = new Map(claimed.map((r) => [r.recipientId, r]));
    let batches = 0;
    for (const planned of picked) {
      const recipients = planned.ids.map((id) => byId.get(id)).filter((r): r is ClaimedRecipient => r !== undefined);
      if (recipients.length === 0) continue;
      batches++;
      this.#learnSite(recipients[0]);
      const batch = this.#batch(recipients);
      if (planned.deferReason) this.#deferSuspended(batch, planned.site, planned.deferReason);
      else this.#run(batch, planned.site);
    }
    return { batches, more: full };
  }

  /**
   * Chooses batches from the due candidates: recipients of one message and domain go together (up
   * to MAX_BATCH_RECIPIENTS), and sites take turns, one batch each per round, until the free slots
   * or the sites' windows are used up. Suspended sites' batches are taken to be deferred at once.
   */
  #pick(candidates: ClaimCandidate[], free: number, now: number): Array<{ site: string; deferReason: string | null; ids: string[] }> {
    // Per site, its candidate batches in due order.
    const perSite = new Map<string, Map<string, string[]>>();
    for (const c of candidates) {
      const site = this.#siteKey(c.domainHash);
      let batches = perSite.get(site);
      if (!batches) perSite.set(site, (batches = new Map()));
      const key = `${c.messageId} ${c.domainHash}`;
      const ids = batches.get(key);
      if (!ids) batches.set(key, [c.id]);
      else if (ids.length < MAX_BATCH_RECIPIENTS) ids.push(c.id);
    }
    const sites = [...perSite.keys()];
    // Rotate the starting site between claims, so no site is always first in line, and let the
    // sites with the fewest batches in flight go first: a freed slot goes to whoever has least.
    const offset = sites.length ? this.#rr++ % sites.length : 0;
    const rotated = [...sites.slice(offset), ...sites.slice(0, offset)];
    const order = rotated
      .map((s, i) => ({ s, i, busy: this.#busy.get(s) ?? 0 }))
      .sort((a, b) => a.busy - b.busy || a.i - b.i)
      .map((x) => x.s);
    const queues = new Map(order.map((s) => [s, [...perSite.get(s)!.values()]]));
    const room = new Map<string, number>();
    const deferring = new Map<string, string>();
    for (const s of order) {
      const a = admission(this.#site(s), this.#busy.get(s) ?? 0, now);
      if (a.kind === 'open') room.set(s, a.slots);
      else if (a.kind === 'defer') {
        deferring.set(s, a.reason);
        room.set(s, Infinity);
      } else room.set(s, 0);
    }
    const out: Array<{ site: string; deferReason: string | null; ids: string[] }> = [];
    let slots = free;
    for (let progress = true; progress && slots > 0; ) {
      progress = false;
      for (const s of order) {
        if (slots <= 0) break;
        const q = queues.get(s)!;
        if (q.length === 0 || room.get(s)! <= 0) continue;
        out.push({ site: s, deferReason: deferring.get(s) ?? null, ids: q.shift()! });
        room.set(s, room.get(s)! - 1);
        // Deferring a suspended site's batch costs no connection, and it takes no slot for long.
        if (!deferring.has(s)) slots--;
        progress = true;
      }
    }
    return out;
  }

  #learnSite(r: ClaimedRecipient): void {
    const site = this.#o.agent.siteOf?.(r.domain);
    if (site) this.#siteOfHash.set(r.domainHash, site);
  }

  #batch(recipients: ClaimedRecipient[]): DeliveryBatch {
    const first = recipients[0];
    const store = this.#o.store;
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
      leaseHeld: () => true,
    };
  }

  // ---- delivering ----------------------------------------------------------------------------

  #run(batch: DeliveryBatch, site: string): void {
    const controller = new AbortController();
    const flight: InFlight = {
      batch,
      site,
      controller,
      done: Promise.resolve(),
      leaseUntil: Math.min(...batch.recipients.map((r) => r.leaseExpiresAt)),
      lost: false,
    };
    batch.leaseHeld = () => !flight.lost && this.#clock() < flight.leaseUntil - LEASE_MARGIN_MS;
    this.#busy.set(site, (this.#busy.get(site) ?? 0) + 1);
    this.#inFlight.add(flight);
    flight.done = this.#deliver(flight).finally(() => {
      this.#inFlight.delete(flight);
      const n = (this.#busy.get(site) ?? 1) - 1;
      if (n > 0) this.#busy.set(site, n);
      else this.#busy.delete(site);
      // A freed slot is a reason to look for work at once.
      this.nudge();
    });
  }

  async #deliver(flight: InFlight): Promise<void> {
    const { batch, controller } = flight;
    const signal = controller.signal;
    const log = this.#o.logger;
    // The verdicts are recorded once: by the agent's call (before it pools the connection) or here.
    const once: { settled: Promise<void> | null } = { settled: null };
    const startedAt = this.#clock();
    const settle = (verdicts: Map<string, RecipientVerdict>) => (once.settled ??= this.#recordAll(batch, verdicts, startedAt));
    let verdicts: Map<string, RecipientVerdict>;
    try {
      verdicts = await this.#o.agent.deliver(batch, signal, settle);
    } catch (err) {
      if (once.settled) {
        // Recorded already; the agent failed afterwards (returning the connection, say).
        await once.settled.catch(() => {});
        return;
      }
      if (signal.aborted) {
        await this.#release(batch.recipients);
        return;
      }
      log.error({ err, messageId: batch.messageId }, 'delivery agent failed; deferring the batch');
      verdicts = new Map(
        batch.recipients.map((r) => [r.recipientId, { kind: 'transient', reason: `local error: ${(err as Error).message}` }]),
      );
    }
    this.#learnSite(batch.recipients[0]);
    const site = this.#siteKey(batch.recipients[0].domainHash);
    this.#sites.set(site, afterBatch(this.#site(site), outcomeOf(verdicts), this.#clock(), this.#throttle));
    await settle(verdicts);
  }

  /** A suspended site's batch: deferred with the site's failure, without a connection. */
  #deferSuspended(batch: DeliveryBatch, site: string, reason: string): void {
    const verdict: RecipientVerdict = { kind: 'transient', reason, enhancedCode: '4.4.1', detail: { domain: batch.domain, site, suspended: true } };
    const flight: InFlight = { batch, site, controller: new AbortController(), done: Promise.resolve(), leaseUntil: Infinity, lost: false };
    this.#inFlight.add(flight);
    flight.done = this.#recordAll(batch, new Map(batch.recipients.map((r) => [r.recipientId, verdict])), this.#clock()).finally(() => {
      this.#inFlight.delete(flight);
      this.nudge();
    });
  }

  async #recordAll(batch: DeliveryBatch, verdicts: Map<string, RecipientVerdict>, startedAt: number): Promise<void> {
    await Promise.all(batch.recipients.map((recipient) => this.#record(batch, recipient, verdicts, startedAt)));
  }

  async #record(batch: DeliveryBatch, recipient: ClaimedRecipient, verdicts: Map<string, RecipientVerdict>, startedAt: number): Promise<void> {
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
    if (!kept) {
      const fields = { messageId: recipient.messageId, recipientId: recipient.recipientId, attempt: recipient.attemptNumber };
      log.warn(fields, 'lease lost before the attempt was recorded; another worker owns this recipient');
      return;
    }
    // One line per recipient attempt, like Postfix's smtp(8) `status=` line: ids, relay, TLS, codes
    // and delays, no address (the reason, which can quote one, only at debug).
    const summary = summarizeAttempt({ recipient, state: transition.state, replyCode: result.replyCode, enhancedCode: result.enhancedCode, reason, detail: result.detail, startedAt, endedAt: now });
    log.info(summary, 'attempt');
    if (reason && log.isLevelEnabled('debug')) log.debug({ messageId: recipient.messageId, recipientId: recipient.recipientId, why: reason }, 'attempt reason');
    try {
      this.#o.onAttempt?.(summary);
    } catch (err) {
      log.error({ err }, 'counting the attempt failed');
    }
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
    const flights = [...this.#inFlight].filter((f) => !f.lost && f.leaseUntil !== Infinity);
    const tokens = flights.flatMap((f) => f.batch.recipients.map((r) => r.attemptId));
    if (tokens.length === 0) return;
    const until = this.#clock() + this.#o.leaseMs;
    try {
      const held = new Set(await this.#o.store.renewLeases(this.#o.workerId, tokens, until));
      for (const flight of flights) {
        if (flight.batch.recipients.every((r) => held.has(r.attemptId))) flight.leaseUntil = until;
        else {
          // The batch must not start DATA now (leaseHeld); what it already sent stands.
          flight.lost = true;
          this.#o.logger.warn({ messageId: flight.batch.messageId }, 'a lease was lost while delivering');
        }
      }
    } catch (err) {
      this.#o.logger.error({ err }, 'renewing leases failed');
    }
  }
}

/** What a batch's verdicts say about its site, for the dead-site throttle. */
export function outcomeOf(verdicts: Map<string, RecipientVerdict>): BatchOutcome {
  const all = [...verdicts.values()].filter((v): v is RecipientVerdict => v !== undefined);
  const down = all.find((v) => v.siteDown);
  if (down && all.every((v) => v.siteDown)) return { kind: 'down', reason: down.reason ?? 'the site could not be reached' };
  if (all.some((v) => v.kind === 'delivered' || v.replyCode != null)) return { kind: 'reached' };
  return { kind: 'none' };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
