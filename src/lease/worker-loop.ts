// lease/: what every leasing worker shares. The lease primitive itself (SQL: take, renew, release,
// the fence of finish statements) is store/leases.ts, since only the store knows SQL; this folder
// owns the lease-worker loop that the queue runner, the webhook dispatcher and TLS reporting build
// on, so they claim, renew, stop and give work back the same way.
//
// This file: the loop. It claims work while slots are free, runs each item with an abort signal
// and a view of its lease, renews the leases of work in flight every third of the lease, and on
// stop lets work finish for a grace period, then aborts the rest and gives its leases back. It is
// event-driven: nudge(), a finished item and the next due time wake it; the poll interval is only
// a safety net (work committed by other processes, leases of dead workers). A worker that dies
// simply stops renewing: its leases run out and another worker takes the work over.
import type { Logger } from '../log/logger.ts';

export interface LeaseView {
  /** False once a renewal found the lease lost, or it is within the margin of its end. */
  held(): boolean;
}

export interface LeaseLoopOptions<W> {
  /** For logs. */
  name: string;
  logger: Logger;
  /** Work items in flight at most. */
  concurrency: number;
  /** Renewed every third of it while work is in flight. */
  leaseMs: number;
  /** Safety net only. */
  pollIntervalMs: number;
  clock?: () => number;
  /** Takes up to `free` work items; `more`: there may be more due right now, claim again at once. */
  claim(free: number, now: number): Promise<{ work: W[]; more: boolean }>;
  /** Does one item. Aborted only by stop(); then it must record nothing (the loop releases it). */
  run(work: W, signal: AbortSignal, lease: LeaseView): Promise<void>;
  /** The lease tokens an item holds: all of them must still be held for its lease to be. */
  tokens(work: W): string[];
  /** When the item's lease ends, as claimed. */
  leaseUntil(work: W): number;
  /** Extends the tokens' leases to `until`; resolves with those still held. */
  renew(tokens: string[], until: number): Promise<string[]>;
  /** Gives an item's leases back unused; resolves with how many rows it freed. */
  release(work: W): Promise<number>;
  /** When work is next due after `now` (an idle loop sleeps until then), or null. */
  nextDueAfter?(now: number): Promise<number | null>;
}

/** Claims in a row for one wake-up; the next freed slot or the poll goes on from there. */
const MAX_CLAIMS_PER_WAKE = 8;
/** A lease this close to its end counts as lost: the renewal may not come in time to cover a step. */
const LEASE_MARGIN_MS = 1_000;
const MIN_HEARTBEAT_MS = 250;

interface Flight<W> {
  work: W;
  controller: AbortController;
  done: Promise<void>;
  /** Lease end as this loop knows it (claim, then renewals). */
  until: number;
  lost: boolean;
}

export class LeaseLoop<W> {
  readonly #o: LeaseLoopOptions<W>;
  readonly #clock: () => number;
  readonly #margin: number;
  readonly #inFlight = new Set<Flight<W>>();
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #heartbeat: NodeJS.Timeout | null = null;
  #renewing: Promise<void> | null = null;
  #pumping: Promise<void> | null = null;
  #again = false;

  constructor(options: LeaseLoopOptions<W>) {
    this.#o = { ...options, concurrency: Math.max(1, options.concurrency) };
    this.#clock = options.clock ?? Date.now;
    // A short lease (tests) would otherwise never count as held: the margin is at most a third of it.
    this.#margin = Math.min(LEASE_MARGIN_MS, Math.floor(options.leaseMs / 3));
  }

  get inFlightCount(): number {
    return this.#inFlight.size;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    // A third of the lease leaves two chances to recover from a slow or failed renewal.
    this.#heartbeat = setInterval(() => {
      this.#renewing ??= this.#renew().finally(() => (this.#renewing = null));
    }, Math.max(MIN_HEARTBEAT_MS, Math.floor(this.#o.leaseMs / 3)));
    this.#heartbeat.unref();
    this.nudge();
  }

  /** Claims now (work was committed, a slot came free). Calls during a claim cause one more after it. */
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

  /** Sleeps until `at` at the latest: an earlier wake-up already armed wins. */
  wakeAt(at: number): void {
    if (!this.#running || at >= this.#timerAt) return;
    this.#clearTimer();
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAt = Infinity;
      this.nudge();
    }, Math.max(0, at - this.#clock()));
    this.#timer.unref();
  }

  /**
   * Stops claiming, lets work in flight finish for `graceMs` (its leases still renewed), then
   * aborts the rest and releases what it held. `finished`: items that ended on their own.
   */
  async stop(graceMs: number): Promise<{ finished: number; released: number }> {
    this.#running = false;
    this.#again = false;
    this.#clearTimer();
    await this.#pumping;
    const pending = [...this.#inFlight];
    const allDone = Promise.all(pending.map((f) => f.done));
    const inTime = await Promise.race([allDone.then(() => true), delay(graceMs).then(() => false)]);
    let released = 0;
    let aborted = 0;
    if (!inTime) {
      const rest = [...this.#inFlight];
      aborted = rest.length;
      for (const flight of rest) flight.controller.abort(new Error('shutting down'));
      // Aborted work stops at its next await; an item that ignores the signal is released anyway.
      await Promise.race([Promise.all(rest.map((f) => f.done)), delay(Math.max(1_000, graceMs))]);
      for (const flight of rest) released += await this.#release(flight.work);
    }
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    await this.#renewing;
    return { finished: pending.length - aborted, released };
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Infinity;
  }

  async #pump(): Promise<void> {
    const { logger, name } = this.#o;
    try {
      for (let i = 0; i < MAX_CLAIMS_PER_WAKE && this.#running; i++) {
        const free = this.#o.concurrency - this.#inFlight.size;
        if (free <= 0) break;
        const { work, more } = await this.#o.claim(free, this.#clock());
        for (const w of work) this.#run(w);
        // Nothing taken though more is due (all of it busy here): a freed slot or the poll goes on.
        if (work.length === 0 || !more) break;
      }
      if (!this.#running) return;
      const now = this.#clock();
      let at = now + this.#o.pollIntervalMs;
      const due = this.#o.nextDueAfter ? await this.#o.nextDueAfter(now) : null;
      // A time not after now is work this claim could not take (busy): waking for it would spin.
      if (due !== null && due > now) at = Math.min(at, due);
      this.wakeAt(at);
    } catch (err) {
      logger.error({ err, loop: name }, 'claiming work failed; retrying at the next wake');
      this.wakeAt(this.#clock() + this.#o.pollIntervalMs);
    }
  }

  #run(work: W): void {
    const flight: Flight<W> = { work, controller: new AbortController(), done: Promise.resolve(), until: this.#o.leaseUntil(work), lost: false };
    const lease: LeaseView = { held: () => !flight.lost && this.#clock() < flight.until - this.#margin };
    this.#inFlight.add(flight);
    flight.done = Promise.resolve()
      .then(() => this.#o.run(work, flight.controller.signal, lease))
      .catch((err) => this.#o.logger.error({ err, loop: this.#o.name }, 'a work item failed unexpectedly'))
      .finally(() => {
        this.#inFlight.delete(flight);
        // A slot came free: more may be waiting.
        this.nudge();
      });
  }

  async #renew(): Promise<void> {
    // Work without tokens holds no lease (nothing to renew, nothing to lose).
    const flights = [...this.#inFlight].filter((f) => !f.lost && this.#o.tokens(f.work).length > 0);
    const tokens = flights.flatMap((f) => this.#o.tokens(f.work));
    if (tokens.length === 0) return;
    const until = this.#clock() + this.#o.leaseMs;
    try {
      const held = new Set(await this.#o.renew(tokens, until));
      for (const flight of flights) {
        if (this.#o.tokens(flight.work).every((t) => held.has(t))) flight.until = until;
        else {
          // What the item already did stands; it must start nothing more (held() is false).
          flight.lost = true;
          this.#o.logger.warn({ loop: this.#o.name }, 'a lease was lost while its work was in flight');
        }
      }
    } catch (err) {
      this.#o.logger.error({ err, loop: this.#o.name }, 'renewing leases failed; retrying at the next heartbeat');
    }
  }

  async #release(work: W): Promise<number> {
    try {
      return await this.#o.release(work);
    } catch (err) {
      this.#o.logger.error({ err, loop: this.#o.name }, 'releasing a lease failed; it will run out instead');
      return 0;
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
