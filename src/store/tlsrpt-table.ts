// TLS-RPT (RFC 8460) counts and report states: per UTC day, recipient domain and policy, the
// session counts and the grouped failure details, and for each (day, domain) whether its report
// went out. Recipient domains are personal data: rows are keyed by the domain's keyed hash (the
// same one the queue keeps), and the domain, the policy and every failure detail are sealed. A run
// sending a report holds it by a lease (./leases.ts) that fences every write about it.
import type { Sealer } from '../sealing/sealer.ts';
import type { SqlEngine, SqlExecutor } from './engine.ts';
import { uuidv7 } from './ids.ts';
import { LEASE_CLEAR, LEASE_FENCE, LeaseTable } from './leases.ts';
import { domainKey } from '../mail/domain.ts';

/** The policy sessions were counted under (RFC 8460 §4.4 `policy`), as the collector gives it. */
export interface TlsRptPolicy {
  type: string;
  strings: string[];
  mxHosts: string[];
}

/** A failure-details row without its count; values are plain strings (or absent). */
export type TlsRptDetail = { resultType: string } & Record<string, string | undefined>;

/** Counts to add for one (day, domain, policy). */
export interface TlsRptCounts {
  day: string;
  domain: string;
  policy: TlsRptPolicy;
  success: number;
  failure: number;
  details: Array<{ detail: TlsRptDetail; count: number }>;
}

export interface TlsRptDayPolicy {
  policy: TlsRptPolicy;
  success: number;
  failure: number;
  details: Array<{ detail: TlsRptDetail; count: number }>;
}

export type TlsRptReportState = 'sending' | 'sent' | 'no-rua' | 'failed';

export interface TlsRptReportRow {
  day: string;
  domainHash: string;
  reportId: string;
  state: TlsRptReportState;
  attempts: number;
  detail: TlsRptReportDetail | null;
  updatedAt: number;
}

/** What became of a report's delivery: sealed, as rua addresses name the domain's people. */
export interface TlsRptReportDetail {
  /** rua URIs the report reached (a retry skips them). */
  delivered: string[];
  /** Why the last attempt did not finish, per URI or for the whole report. */
  errors?: Array<{ uri?: string; error: string }>;
  reason?: string;
}

export interface TlsRptClaim {
  /** The lease token: every write about the report until it is finished must carry it. */
  token: string;
  /** When the lease ends unless renewed. */
  leaseUntil: number;
  reportId: string;
  /** Attempts including this one. */
  attempt: number;
  delivered: string[];
}

const POLICY = 'tlsrpt_policies.policy_sealed';
const DETAIL = 'tlsrpt_failures.detail_sealed';
const REPORT = 'tlsrpt_reports.detail_sealed';

/** JSON with sorted keys and no undefined members: equal content, equal text, equal hash. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export class TlsRptTable {
  readonly #engine: SqlEngine;
  readonly #sealer: Sealer;
  readonly #leases: LeaseTable;

  constructor(engine: SqlEngine, sealer: Sealer) {
    this.#engine = engine;
    this.#sealer = sealer;
    this.#leases = new LeaseTable(engine, 'tlsrpt_reports');
  }

  /** The keyed hash rows are found by: the store's domain hash, so it matches the queue's. */
  domainHash(domain: string): string {
    return this.#sealer.domainHash(domainKey(domain));
  }

  /** Adds counts in one durable transaction; rows that exist are incremented. */
  async addCounts(batch: TlsRptCounts[]): Promise<void> {
    if (batch.length === 0) return;
    await this.#engine.transaction(async (tx) => {
      for (const entry of batch) await this.#add(tx, entry);
    });
  }

  async #add(tx: SqlExecutor, entry: TlsRptCounts): Promise<void> {
    const s = this.#sealer;
    const domain = domainKey(entry.domain);
    const domainHash = s.domainHash(domain);
    // Keyed, not a plain digest: a policy's text (its mx patterns) would let a plain hash be
    // matched against guessed domains.
    const policyKey = s.lookupHash('tlsrpt-policy', canonical(entry.policy));
    // Table-qualified on the right: PostgreSQL finds a bare column name ambiguous with `excluded`.
    await tx.run(
      `INSERT INTO tlsrpt_policies (id, day, domain_hash, policy_key, policy_sealed, success_count, failure_count)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (day, domain_hash, policy_key) DO UPDATE
         SET success_count = tlsrpt_policies.success_count + excluded.success_count,
             failure_count = tlsrpt_policies.failure_count + excluded.failure_count`,
      [uuidv7(), entry.day, domainHash, policyKey, s.seal(JSON.stringify({ domain, policy: entry.policy }), POLICY), entry.success, entry.failure],
    );
    for (const { detail, count } of entry.details) {
      await tx.run(
        `INSERT INTO tlsrpt_failures (id, day, domain_hash, policy_key, detail_key, detail_sealed, session_count)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (day, domain_hash, policy_key, detail_key) DO UPDATE
           SET session_count = tlsrpt_failures.session_count + excluded.session_count`,
        [uuidv7(), entry.day, domainHash, policyKey, s.lookupHash('tlsrpt-detail', canonical(detail)), s.seal(canonical(detail), DETAIL), count],
      );
    }
  }

  /** Days in [from, to] (inclusive, YYYY-MM-DD) that have counts, oldest first. */
  async daysWithCounts(from: string, to: string): Promise<string[]> {
    const rows = await this.#engine.all<{ day: string }>(
      'SELECT DISTINCT day FROM tlsrpt_policies WHERE day >= ? AND day <= ? ORDER BY day',
      [from, to],
    );
    return rows.map((r) => r.day);
  }

  /** The domains with counts on a day (opened from their sealed policy rows), in hash order. */
  async domainsOn(day: string): Promise<Array<{ domain: string; domainHash: string }>> {
    const rows = await this.#engine.all<{ domain_hash: string; policy_sealed: Uint8Array }>(
      `SELECT p.domain_hash, p.policy_sealed FROM tlsrpt_policies p
        WHERE p.day = ? AND p.id = (SELECT MIN(q.id) FROM tlsrpt_policies q WHERE q.day = p.day AND q.domain_hash = p.domain_hash)
        ORDER BY p.domain_hash`,
      [day],
    );
    return rows.map((r) => ({ domainHash: r.domain_hash, domain: this.#openPolicy(r.policy_sealed).domain }));
  }

  /** Everything counted for one domain on one day, policies with their failure details. */
  async dayCounts(day: string, domain: string): Promise<TlsRptDayPolicy[]> {
    const domainHash = this.domainHash(domain);
    const policies = await this.#engine.all<{ policy_key: string; policy_sealed: Uint8Array; success_count: number; failure_count: number }>(
      'SELECT policy_key, policy_sealed, success_count, failure_count FROM tlsrpt_policies WHERE day = ? AND domain_hash = ? ORDER BY id',
      [day, domainHash],
    );
    const failures = await this.#engine.all<{ policy_key: string; detail_sealed: Uint8Array; session_count: number }>(
      'SELECT policy_key, detail_sealed, session_count FROM tlsrpt_failures WHERE day = ? AND domain_hash = ? ORDER BY id',
      [day, domainHash],
    );
    return policies.map((p) => ({
      policy: this.#openPolicy(p.policy_sealed).policy,
      success: Number(p.success_count),
      failure: Number(p.failure_count),
      details: failures
        .filter((f) => f.policy_key === p.policy_key)
        .map((f) => ({ detail: JSON.parse(this.#sealer.openString(f.detail_sealed, DETAIL)) as TlsRptDetail, count: Number(f.session_count) })),
    }));
  }

  async report(day: string, domainHash: string): Promise<TlsRptReportRow | null> {
    const row = await this.#engine.get<ReportRow>('SELECT * FROM tlsrpt_reports WHERE day = ? AND domain_hash = ?', [day, domainHash]);
    return row ? this.#reportRow(row) : null;
  }

  /**
   * Leases a report to `owner` for `leaseMs`, or returns null when it is done (sent, no-rua), out
   * of attempts, or leased by another run whose lease has not run out. The report-id is made once
   * and kept across retries, so a receiver can tell a repeat from a new report.
   */
  async claimReport(options: {
    day: string;
    domainHash: string;
    now: number;
    owner: string;
    leaseMs: number;
    maxAttempts: number;
    newReportId: () => string;
  }): Promise<TlsRptClaim | null> {
    const { day, domainHash, now } = options;
    const lease = { owner: options.owner, token: uuidv7(now), until: now + options.leaseMs };
    return this.#engine.transaction(async (tx) => {
      const row = await tx.get<ReportRow>('SELECT * FROM tlsrpt_reports WHERE day = ? AND domain_hash = ?', [day, domainHash]);
      if (!row) {
        const reportId = options.newReportId();
        const id = uuidv7(now);
        await tx.run(
          `INSERT INTO tlsrpt_reports (id, day, domain_hash, report_id, state, attempts, detail_sealed, updated_at)
           VALUES (?, ?, ?, ?, 'sending', 1, NULL, ?)`,
          [id, day, domainHash, reportId, now],
        );
        await this.#leases.take(tx, [id], lease);
        return { token: lease.token, leaseUntil: lease.until, reportId, attempt: 1, delivered: [] };
      }
      const current = this.#reportRow(row);
      if (current.state === 'sent' || current.state === 'no-rua') return null;
      if (current.attempts >= options.maxAttempts) return null;
      if (row.lease_expires_at !== null && Number(row.lease_expires_at) > now) return null;
      await tx.run(`UPDATE tlsrpt_reports SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?`, [now, row.id]);
      await this.#leases.take(tx, [row.id], lease);
      return {
        token: lease.token,
        leaseUntil: lease.until,
        reportId: current.reportId,
        attempt: current.attempts + 1,
        delivered: current.detail?.delivered ?? [],
      };
    });
  }

  /**
   * Records progress (`sending`: the lease stays) or the outcome (the lease ends) of a claimed
   * report, fenced by its lease token. False when the lease was taken over: the report is another
   * run's now, and nothing is written.
   */
  async updateReport(
    day: string,
    domainHash: string,
    token: string,
    state: TlsRptReportState,
    detail: TlsRptReportDetail,
    now: number,
  ): Promise<boolean> {
    const { changes } = await this.#engine.transaction((tx) =>
      tx.run(
        `UPDATE tlsrpt_reports SET state = ?, detail_sealed = ?, updated_at = ?${state === 'sending' ? '' : `, ${LEASE_CLEAR}`}
          WHERE day = ? AND domain_hash = ? AND ${LEASE_FENCE}`,
        [state, this.#sealer.seal(JSON.stringify(detail), REPORT), now, day, domainHash, token],
      ),
    );
    return changes === 1;
  }

  /** Extends a report's lease to `until` while it is being sent; false once it was lost. */
  async renewReport(owner: string, token: string, until: number): Promise<boolean> {
    return (await this.#leases.renew(owner, [token], until)).length === 1;
  }

  /** Deletes counts and report states of days before `day`: kept only as long as they are useful. */
  async pruneBefore(day: string): Promise<number> {
    return this.#engine.transaction(async (tx) => {
      let removed = 0;
      for (const table of ['tlsrpt_failures', 'tlsrpt_policies', 'tlsrpt_reports']) {
        removed += (await tx.run(`DELETE FROM ${table} WHERE day < ?`, [day])).changes;
      }
      return removed;
    });
  }

  #openPolicy(sealed: Uint8Array): { domain: string; policy: TlsRptPolicy } {
    return JSON.parse(this.#sealer.openString(sealed, POLICY));
  }

  #reportRow(row: ReportRow): TlsRptReportRow {
    return {
      day: row.day,
      domainHash: row.domain_hash,
      reportId: row.report_id,
      state: row.state,
      attempts: Number(row.attempts),
      detail: row.detail_sealed ? JSON.parse(this.#sealer.openString(row.detail_sealed, REPORT)) : null,
      updatedAt: Number(row.updated_at),
    };
  }
}

interface ReportRow {
  id: string;
  day: string;
  domain_hash: string;
  report_id: string;
  state: TlsRptReportState;
  attempts: number;
  detail_sealed: Uint8Array | null;
  updated_at: number;
  lease_owner: string | null;
  lease_token: string | null;
  lease_expires_at: number | null;
}

