// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports; it stands beside intake/ as a source of new messages (report mails go to
// compose).
//
// This file: the counter delivery sessions report to. Counting is in memory (a session must never
// wait on the database); flush() adds what was counted to the store in one transaction, on a
// timer and at close().
import type { TlsSessionReport } from '../tls-policy/evidence.ts';
import type { TlsRptCounts, TlsRptDetail, TlsRptTable } from '../store/tlsrpt-table.ts';
import { utcDay } from './days.ts';
import { failureDetailOf, type FailureDetail } from './result-types.ts';
import { domainKey } from '../mail/domain.ts';

export interface TlsReportCollectorOptions {
  table: Pick<TlsRptTable, 'addCounts'>;
  /** Used only for a session report without a usable `at`. */
  clock?: () => number;
  /** How often counts are written to the store. Default one minute. */
  flushIntervalMs?: number;
  /**
   * Flush early once this many distinct (day, domain, policy, detail) groups are waiting, so a
   * burst of distinct failures cannot grow memory without bound. Default 5000.
   */
  maxPendingGroups?: number;
  /** Told when a flush fails (the counts are kept for the next one). */
  onError?: (err: unknown) => void;
}

interface Group {
  counts: TlsRptCounts;
  details: Map<string, { detail: TlsRptDetail; count: number }>;
}

const DEFAULT_FLUSH_MS = 60_000;
const DEFAULT_MAX_GROUPS = 5000;

function detailKey(detail: FailureDetail): string {
  return JSON.stringify([
    detail.resultType,
    detail.receivingMxHostname,
    detail.receivingIp,
    detail.receivingMxHelo,
    detail.sendingMtaIp,
    detail.additionalInformation,
    detail.failureReasonCode,
  ]);
}

function plainDetail(detail: FailureDetail): TlsRptDetail {
  const out: TlsRptDetail = { resultType: detail.resultType };
  for (const [k, v] of Object.entries(detail)) if (v !== undefined) out[k] = v;
  return out;
}

export class TlsReportCollector {
  readonly #table: Pick<TlsRptTable, 'addCounts'>;
  readonly #clock: () => number;
  readonly #maxGroups: number;
  readonly #onError: (err: unknown) => void;
  #pending = new Map<string, Group>();
  #pendingGroups = 0;
  #flushing: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #writing = 0;

  constructor(options: TlsReportCollectorOptions) {
    this.#table = options.table;
    this.#clock = options.clock ?? Date.now;
    this.#maxGroups = options.maxPendingGroups ?? DEFAULT_MAX_GROUPS;
    this.#onError = options.onError ?? (() => {});
    const interval = options.flushIntervalMs ?? DEFAULT_FLUSH_MS;
    if (interval > 0) {
      this.#timer = setInterval(() => {
        this.flush().catch(this.#onError);
      }, interval);
      // Counting must never keep the process alive on its own.
      this.#timer.unref();
    }
  }

  /** Counts one session (RFC 8460 §4.4 summary and failure-details). Never throws, never waits. */
  record(report: TlsSessionReport): void {
    if (this.#closed) return;
    let detail: FailureDetail | null = null;
    if (!report.success) {
      detail = failureDetailOf({
        failure: report.failure ?? 'validation-failure',
        detail: report.detail,
        mxHost: report.mxHost,
        receivingIp: report.receivingIp,
        receivingHelo: report.receivingHelo,
        sendingIp: report.sendingIp,
      });
      // Not a TLS-RPT failure (see result-types.ts): the session is not the domain's to count.
      if (!detail) return;
    }
    // A report without a usable time is counted now rather than lost or put on a bogus day.
    const day = utcDay(Number.isFinite(report.at) ? report.at : this.#clock());
    const domain = domainKey(report.domain);
    if (domain === '') return;
    const policy = { type: report.policy.type, strings: [...report.policy.strings], mxHosts: [...report.policy.mxHosts] };
    const key = JSON.stringify([day, domain, policy.type, policy.strings, policy.mxHosts]);
    let group = this.#pending.get(key);
    if (!group) {
      group = { counts: { day, domain, policy, success: 0, failure: 0, details: [] }, details: new Map() };
      this.#pending.set(key, group);
      this.#pendingGroups++;
    }
    if (!detail) {
      group.counts.success++;
    } else {
      group.counts.failure++;
      const dk = detailKey(detail);
      const entry = group.details.get(dk);
      if (entry) entry.count++;
      else {
        group.details.set(dk, { detail: plainDetail(detail), count: 1 });
        this.#pendingGroups++;
      }
    }
    // One early flush at a time: while the store is down, sessions must not each start another.
    if (this.#pendingGroups >= this.#maxGroups && this.#writing === 0) this.flush().catch(this.#onError);
  }

  /**
   * Writes everything counted so far in one transaction. What is counted is taken at once (so a
   * flush relieves memory straight away); writes run one after another, and a failed one puts
   * its counts back so the next flush carries them.
   */
  flush(): Promise<void> {
    const taken = this.#pending;
    this.#pending = new Map();
    this.#pendingGroups = 0;
    this.#writing++;
    const run = this.#flushing.then(() => this.#write(taken)).finally(() => this.#writing--);
    // The chain must survive a failure, or every later flush would fail with it.
    this.#flushing = run.catch(() => {});
    return run;
  }

  async #write(taken: Map<string, Group>): Promise<void> {
    if (taken.size === 0) return;
    const batch = [...taken.values()].map((g) => ({ ...g.counts, details: [...g.details.values()] }));
    try {
      await this.#table.addCounts(batch);
    } catch (err) {
      this.#restore(taken);
      throw err;
    }
  }

  #restore(taken: Map<string, Group>): void {
    for (const [key, group] of taken) {
      const current = this.#pending.get(key);
      if (!current) {
        this.#pending.set(key, group);
        this.#pendingGroups += 1 + group.details.size;
        continue;
      }
      current.counts.success += group.counts.success;
      current.counts.failure += group.counts.failure;
      for (const [dk, entry] of group.details) {
        const mine = current.details.get(dk);
        if (mine) mine.count += entry.count;
        else {
          current.details.set(dk, entry);
          this.#pendingGroups++;
        }
      }
    }
  }

  /** Stops the timer and writes what is left. Later sessions are not counted. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }

  /** For tests and shutdown logs: sessions counted but not yet written. */
  get pendingSessions(): number {
    let n = 0;
    for (const g of this.#pending.values()) n += g.counts.success + g.counts.failure;
    return n;
  }
}
