// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports; it stands beside intake/ as a source of new messages (report mails go to
// compose, which DKIM-signs and queues them).
//
// This file: the daily run. For each recipient domain with counts on a finished UTC day, look up
// its rua (`_smtp._tls.<domain>`), build the report, gzip it (§5.1) and deliver it to every rua;
// record per (day, domain) whether it went (sent / no-rua / failed, retried on later runs up to a
// bound). Runs once a day at a random time after 00:00 UTC (§4.1 asks senders to spread), and
// once at start to catch up. A report being sent is held by a lease (store/leases.ts through the
// table), renewed every third of it while this run works on it, and every write about the report
// is fenced by its token: a second run, here or on another node, neither sends it meanwhile nor
// records over it. The shared lease-worker loop (lease/worker-loop.ts) is not used: it claims
// continuously with concurrency slots, while reports are a once-a-day sequential walk whose
// outcomes runDay returns to its caller; only the renewal is shared, through the same primitive.
import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { DnsError, type Resolver } from '../dns/resolver.ts';
import type { TlsRptClaim, TlsRptReportDetail, TlsRptReportState, TlsRptTable } from '../store/tlsrpt-table.ts';
import { addDays, DAY_MS, isDay, utcDay } from './days.ts';
import { postReport, type HttpsTarget } from './https-post.ts';
import { buildReportMail } from './mail.ts';
import { buildReport, serializeReport, type TlsRptReport } from './report.ts';
import { parseTlsRptRecords, tlsRptName, type RuaResult, type RuaUri } from './rua.ts';
import { domainKey } from '../mail/domain.ts';

/** A report mail for compose (Composer.submit with source 'system'). */
export interface ReportMessage {
  content: Buffer;
  envelopeSender: string;
  recipients: string[];
}

/** The subset of a pino logger used; domains are logged only as a short keyed tag. */
export interface ReporterLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface TlsReporterOptions {
  table: TlsRptTable;
  resolver: Pick<Resolver, 'txt'>;
  /** Hands a report mail to compose; resolves once it is queued. */
  submit: (message: ReportMessage) => Promise<unknown>;
  /** §4.4 organization-name. */
  organizationName: string;
  /** Our host name: TLS-Report-Submitter and the file name's sender (§5.1, §5.3). */
  submitter: string;
  /** §4.4 contact-info, e.g. `mailto:tlsrpt@example.net` or an address. */
  contact: string;
  /** The report mails' From and envelope sender: must be under a verified sender domain. */
  from: string;
  /** Extra trusted CAs (PEM) for https rua receivers, beside the bundled and system roots. */
  ca: string[];
  /**
   * Checks an https rua and says which addresses it may be reached at; throws when it must not be
   * reached (SSRF: a domain's DNS names the URL). Production: events/url-guard's vetWebhookUrl.
   */
  vetHttps: (url: URL) => Promise<HttpsTarget>;
  httpsTimeoutMs?: number;
  clock?: () => number;
  logger: ReporterLogger;
  /** Called before each run so sessions counted but not yet written are in the report. */
  flush?: () => Promise<void>;
  /** Attempts per (day, domain) report before it is left failed. Default 5. */
  maxAttempts?: number;
  /** How many past days a run looks at for reports not yet sent. Default 7. */
  catchUpDays?: number;
  /** Counts and report states older than this many days are deleted. Default 30. */
  retentionDays?: number;
  /** After a run that left retryable failures, run again this much later. Default one hour. */
  retryDelayMs?: number;
  random?: () => number;
  /** Lease owner name, unique per process. Default: a random one. */
  owner?: string;
  /** How long a claimed report is ours unless renewed (every third of it, while it is sent). Default 2 min. */
  leaseMs?: number;
}

export type ReportOutcome =
  | { day: string; domain: string; state: 'sent'; reportId: string; attempt: number; rua: string[] }
  | { day: string; domain: string; state: 'no-rua'; reason: string }
  | { day: string; domain: string; state: 'failed'; reportId: string; attempt: number; errors: Array<{ uri?: string; error: string }> }
  /** Already done, out of attempts, or being sent by another run. */
  | { day: string; domain: string; state: 'skipped' };

/** How long TLS session counts are kept, sent or not (the CLI shows a month back). */
export const TLSRPT_RETENTION_DAYS = 30;

const DEFAULTS = {
  httpsTimeoutMs: 30_000,
  maxAttempts: 5,
  catchUpDays: 7,
  retentionDays: TLSRPT_RETENTION_DAYS,
  retryDelayMs: 3_600_000,
  leaseMs: 120_000,
};
/** A lease this close to its end counts as lost for starting a delivery: the renewal may come too late. */
const LEASE_MARGIN_MS = 1_000;
const MIN_HEARTBEAT_MS = 250;

/** The report's lease was taken over (it ran out): another run owns the report and its outcome. */
class LeaseLost extends Error {}

interface ReportLease {
  held(): boolean;
  /** Records progress or the outcome, fenced by the lease; throws LeaseLost when it is gone. */
  record(state: TlsRptReportState, detail: TlsRptReportDetail): Promise<void>;
  end(): Promise<void>;
}
// §4.1 suggests delivering "after some delay, perhaps several hours": a random minute in this window.
export const SPREAD_MINUTES = { from: 10, to: 240 };

/** When the daily run after `now` is due: `offsetMs` past the next 00:00 UTC still ahead. */
export function nextRunAt(now: number, offsetMs: number): number {
  const todayRun = Math.floor(now / DAY_MS) * DAY_MS + offsetMs;
  return todayRun > now ? todayRun : todayRun + DAY_MS;
}

/** The daily run's offset after midnight, drawn once per process. */
export function spreadOffsetMs(random: () => number): number {
  const minutes = SPREAD_MINUTES.from + Math.floor(random() * (SPREAD_MINUTES.to - SPREAD_MINUTES.from));
  return minutes * 60_000;
}

export class TlsReporter {
  readonly #o: TlsReporterOptions & typeof DEFAULTS;
  readonly #clock: () => number;
  #started = false;
  #daily: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #offsetMs = 0;
  readonly #owner: string;

  constructor(options: TlsReporterOptions) {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.#o = { ...DEFAULTS, ...(given as TlsReporterOptions) };
    this.#clock = options.clock ?? Date.now;
    this.#owner = options.owner ?? `tlsrpt-${randomUUID()}`;
  }

  /** The report for one domain and day as it would be sent now, or null without counts. */
  async buildReport(domain: string, day: string): Promise<TlsRptReport | null> {
    return previewReport(this.#o.table, { organizationName: this.#o.organizationName, contact: this.#o.contact }, domain, day);
  }

  async #report(domain: string, day: string, reportId: string): Promise<TlsRptReport | null> {
    return dayReport(this.#o.table, { organizationName: this.#o.organizationName, contact: this.#o.contact }, domain, day, reportId);
  }

  /** Sends every report of a finished day not sent yet. Safe to repeat: sent reports are not sent again. */
  async runDay(day: string): Promise<ReportOutcome[]> {
    if (!isDay(day)) throw new Error(`not a day: ${JSON.stringify(day)} (expected YYYY-MM-DD)`);
    if (day >= utcDay(this.#clock())) throw new Error(`${day} has not ended yet (UTC): its report would be partial`);
    const outcomes: ReportOutcome[] = [];
    for (const { domain, domainHash } of await this.#o.table.domainsOn(day)) {
      outcomes.push(await this.#runOne(day, domain, domainHash));
    }
    return outcomes;
  }

  async #runOne(day: string, domain: string, domainHash: string): Promise<ReportOutcome> {
    const { table, logger } = this.#o;
    const tag = domainHash.slice(0, 12);
    const claim = await table.claimReport({
      day,
      domainHash,
      now: this.#clock(),
      owner: this.#owner,
      leaseMs: this.#o.leaseMs,
      maxAttempts: this.#o.maxAttempts,
      newReportId,
    });
    if (!claim) return { day, domain, state: 'skipped' };
    const lease = this.#hold(day, domainHash, claim);
    try {
      return await this.#send(day, domain, domainHash, claim, lease);
    } catch (err) {
      if (err instanceof LeaseLost) {
        logger.warn({ day, domain: tag, attempt: claim.attempt }, 'TLS report lease lost; another run has the report');
        return { day, domain, state: 'skipped' };
      }
      // A bug or a store failure with one domain must not hold up the others; the claim is
      // released as failed so a later run retries within the attempt bound.
      const errors = [{ error: (err as Error).message }];
      await lease.record('failed', { delivered: claim.delivered, errors }).catch(() => {});
      logger.warn({ day, domain: tag, attempt: claim.attempt, err: (err as Error).name }, 'TLS report run failed for a domain');
      return { day, domain, state: 'failed', reportId: claim.reportId, attempt: claim.attempt, errors };
    } finally {
      await lease.end();
    }
  }

  /** Keeps a claimed report's lease alive while it is sent, and fences what is recorded about it. */
  #hold(day: string, domainHash: string, claim: TlsRptClaim): ReportLease {
    const { table, logger, leaseMs } = this.#o;
    let until = claim.leaseUntil;
    let lost = false;
    let renewing: Promise<void> | null = null;
    const margin = Math.min(LEASE_MARGIN_MS, Math.floor(leaseMs / 3));
    const renew = async () => {
      const next = this.#clock() + leaseMs;
      try {
        if (await table.renewReport(this.#owner, claim.token, next)) until = next;
        else lost = true;
      } catch (err) {
        // Retried at the next beat; held() turns false if none succeeds before the lease's end.
        logger.warn({ day, domain: domainHash.slice(0, 12), err: (err as Error).message }, 'renewing a TLS report lease failed');
      }
    };
    const timer = setInterval(() => {
      if (!lost) renewing ??= renew().finally(() => (renewing = null));
    }, Math.max(MIN_HEARTBEAT_MS, Math.floor(leaseMs / 3)));
    timer.unref();
    return {
      held: () => !lost && this.#clock() < until - margin,
      record: async (state, detail) => {
        if (!(await table.updateReport(day, domainHash, claim.token, state, detail, this.#clock()))) {
          lost = true;
          throw new LeaseLost();
        }
      },
      end: async () => {
        clearInterval(timer);
        await renewing;
      },
    };
  }

  async #send(day: string, domain: string, domainHash: string, claim: TlsRptClaim, lease: ReportLease): Promise<ReportOutcome> {
    const { logger } = this.#o;
    const tag = domainHash.slice(0, 12);
    const delivered = [...claim.delivered];
    let rua: RuaResult;
    try {
      rua = await this.#lookupRua(domain);
    } catch (err) {
      const errors = [{ error: `rua lookup failed: ${(err as Error).message}` }];
      await lease.record('failed', { delivered, errors });
      logger.warn({ day, domain: tag, attempt: claim.attempt, code: (err as DnsError).code }, 'TLS report rua lookup failed; will retry');
      return { day, domain, state: 'failed', reportId: claim.reportId, attempt: claim.attempt, errors };
    }
    if (rua.kind === 'none') {
      await lease.record('no-rua', { delivered, reason: rua.reason });
      logger.debug({ day, domain: tag }, 'domain takes no TLS reports');
      return { day, domain, state: 'no-rua', reason: rua.reason };
    }
    const report = await this.#report(domain, day, claim.reportId);
    if (!report) {
      // Counts vanished between listing and building (pruned): nothing to say.
      await lease.record('no-rua', { delivered, reason: 'no counts' });
      return { day, domain, state: 'no-rua', reason: 'no counts' };
    }
    const gz = gzipSync(serializeReport(report));
    const errors: Array<{ uri?: string; error: string }> = [];
    for (const uri of rua.uris) {
      if (delivered.includes(uri.uri)) continue;
      // Not sent without the lease: the run that took it over sends this copy.
      if (!lease.held()) throw new LeaseLost();
      try {
        await this.#deliver(uri, { domain: report.policies[0].policy['policy-domain'], day, reportId: claim.reportId, gz });
      } catch (err) {
        errors.push({ uri: uri.uri, error: (err as Error).message });
        logger.debug({ day, domain: tag, scheme: uri.scheme, err: (err as Error).message }, 'TLS report delivery failed');
        continue;
      }
      delivered.push(uri.uri);
      // Kept as it happens, so a run that dies here does not send this copy again.
      await lease.record('sending', { delivered });
    }
    if (errors.length > 0) {
      await lease.record('failed', { delivered, errors });
      logger.warn({ day, domain: tag, attempt: claim.attempt, failed: errors.length, delivered: delivered.length }, 'TLS report not delivered everywhere; will retry');
      return { day, domain, state: 'failed', reportId: claim.reportId, attempt: claim.attempt, errors };
    }
    await lease.record('sent', { delivered });
    logger.info({ day, domain: tag, rua: delivered.length }, 'TLS report sent');
    return { day, domain, state: 'sent', reportId: claim.reportId, attempt: claim.attempt, rua: delivered };
  }

  async #lookupRua(domain: string): Promise<RuaResult> {
    try {
      const answer = await this.#o.resolver.txt(tlsRptName(domain));
      return parseTlsRptRecords(answer.records);
    } catch (err) {
      // Only NXDOMAIN says "no record"; SERVFAIL or a timeout may go away, so the report waits.
      if (err instanceof DnsError && err.code === 'NXDOMAIN') return { kind: 'none', reason: `${tlsRptName(domain)} does not exist` };
      throw err;
    }
  }

  async #deliver(uri: RuaUri, report: { domain: string; day: string; reportId: string; gz: Buffer }): Promise<void> {
    if (uri.scheme === 'mailto') {
      const content = await buildReportMail({
        from: this.#o.from,
        to: uri.address,
        submitter: this.#o.submitter,
        policyDomain: report.domain,
        day: report.day,
        reportId: report.reportId,
        gz: report.gz,
        date: new Date(this.#clock()),
      });
      await this.#o.submit({ content, envelopeSender: this.#o.from, recipients: [uri.address] });
      return;
    }
    const url = new URL(uri.url);
    const target = await this.#o.vetHttps(url);
    const status = await postReport(url, target, report.gz, {
      ca: this.#o.ca,
      timeoutMs: this.#o.httpsTimeoutMs,
      userAgent: `Lacre TLS-RPT (${this.#o.submitter})`,
    });
    if (status < 200 || status > 299) {
      throw new Error(status >= 300 && status < 400 ? `the receiver answered ${status} (redirects are not followed)` : `the receiver answered ${status}`);
    }
  }

  /**
   * Reports for recent finished days that still need sending (yesterday and up to catchUpDays
   * back, so a stopped server or a failed delivery catches up), then deletes old counts.
   */
  async runDue(): Promise<ReportOutcome[]> {
    const { table, logger } = this.#o;
    if (this.#o.flush) {
      try {
        await this.#o.flush();
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'TLS report counts could not be written before the run');
      }
    }
    const today = utcDay(this.#clock());
    const outcomes: ReportOutcome[] = [];
    for (const day of await table.daysWithCounts(addDays(today, -this.#o.catchUpDays), addDays(today, -1))) {
      outcomes.push(...(await this.runDay(day)));
    }
    await table.pruneBefore(addDays(today, -this.#o.retentionDays));
    return outcomes;
  }

  /** Schedules the daily run and catches up at once. Timers never keep the process alive. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#offsetMs = spreadOffsetMs(this.#o.random ?? Math.random);
    this.#kick();
    this.#scheduleDaily();
  }

  /** Cancels the schedule and waits for a run in progress. */
  async stop(): Promise<void> {
    this.#started = false;
    clearTimeout(this.#daily);
    clearTimeout(this.#retry);
    this.#daily = this.#retry = undefined;
    await this.#running;
  }

  /** Resolves when the run in progress (if any) has ended; for tests and shutdown. */
  idle(): Promise<void> {
    return this.#running;
  }

  #scheduleDaily(): void {
    if (!this.#started) return;
    const now = this.#clock();
    this.#daily = setTimeout(() => {
      this.#kick();
      this.#scheduleDaily();
    }, nextRunAt(now, this.#offsetMs) - now);
    this.#daily.unref();
  }

  #kick(): void {
    // Runs never overlap: the next one waits for the one before.
    this.#running = this.#running.then(async () => {
      if (!this.#started) return;
      try {
        const outcomes = await this.runDue();
        const retryable = outcomes.some((o) => o.state === 'failed' && o.attempt < this.#o.maxAttempts);
        if (retryable && this.#started && !this.#retry) {
          this.#retry = setTimeout(() => {
            this.#retry = undefined;
            this.#kick();
          }, this.#o.retryDelayMs);
          this.#retry.unref();
        }
      } catch (err) {
        this.#o.logger.warn({ err: (err as Error).message }, 'TLS report run failed');
      }
    });
  }
}

/** Who a report says it is from (§4.4 organization-name, contact-info). */
export interface ReportIdentity {
  organizationName: string;
  contact: string;
}

async function dayReport(table: TlsRptTable, identity: ReportIdentity, domain: string, day: string, reportId: string): Promise<TlsRptReport | null> {
  const policies = await table.dayCounts(day, domain);
  if (policies.length === 0) return null;
  return buildReport({
    organizationName: identity.organizationName,
    contactInfo: identity.contact,
    reportId,
    day,
    policyDomain: domainKey(domain),
    policies,
  });
}

/**
 * The report one domain's counts for a day make, as it would be sent now; nothing is sent or
 * claimed. Its report-id is the one already given to the day's report, or a fresh one.
 */
export async function previewReport(table: TlsRptTable, identity: ReportIdentity, domain: string, day: string): Promise<TlsRptReport | null> {
  const existing = await table.report(day, table.domainHash(domain));
  return dayReport(table, identity, domain, day, existing?.reportId ?? newReportId());
}

/** RFC 8460 §5.1 unique-id is letters and digits; 128 random bits. */
function newReportId(): string {
  return randomUUID().replace(/-/g, '');
}
