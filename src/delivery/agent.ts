// The delivery stage (like Postfix's smtp client): takes a batch (one message, one destination
// domain) from the queue runner, finds where the domain's mail goes, gathers the TLS policy
// evidence (static policy, MTA-STS, DANE per MX host) and lets the policy engine plan each hop,
// speaks SMTP through pooled sessions, reports every TLS session for TLS-RPT, and turns every reply
// into a per-recipient verdict with a record of exactly how the attempt travelled.
// What a failure means (fresh connection, next address, next MX, defer, bounce, unknown outcome) is
// decided by ./trouble.ts, never here.
import type { Logger } from '../log/logger.ts';
import type { DeliveryAgent, DeliveryBatch, RecipientVerdict } from '../queue/runner.ts';

/** The record of how an attempt travelled, in the shape the queue keeps it (store/records.ts). */
type AttemptDetail = NonNullable<RecipientVerdict['detail']>;
type AttemptHopFailure = NonNullable<AttemptDetail['hopFailures']>[number];
import type { Resolver } from '../dns/resolver.ts';
import { decidePolicy, type StaticTlsLevel, type TlsFailure } from '../tls-policy/levels.ts';
import type { TlsSessionReport } from '../tls-policy/evidence.ts';
import { judgeForReport, planHop, type DomainEvidence, type HopPlan } from '../tls-policy/engine.ts';
import { hasTlsRequiredNo } from '../tls-policy/tls-required-header.ts';
import { danePort, lookupDane } from '../policy-lookup/dane.ts';
import type { PolicySources } from '../policy-lookup/sources.ts';
import { resolveDestination, type Destination, type NextHop } from './destination.ts';
import { openSessionWithPolicy, SmtpSessionError, type SmtpSession, type TlsFacts, type Timeouts } from './smtp-session.ts';
import { decideTrouble, troubleOf, type TroubleDecision } from './trouble.ts';
import { classifyReply, enhancedCodeOf } from '../mail/replies.ts';
import { KeyedLimiter } from './limiter.ts';
import { SessionPool } from './session-pool.ts';
import { domainKey } from '../mail/domain.ts';

export type { PolicySources };

export interface AgentOptions {
  resolver: Resolver;
  routes: Map<string, { host: string; port: number }>;
  smtpPort: number;
  /** Static policies and default, used when `sources.staticPolicy` is not given. */
  policies: Map<string, StaticTlsLevel>;
  defaultPolicy: StaticTlsLevel;
  /** Evidence sources; each missing one falls back (static map, no MTA-STS, DANE via `resolver`). */
  sources?: Partial<PolicySources>;
  /** RFC 8689 §5: honour `TLS-Required: No` (tls.allowTlsRequiredNo). Default false. */
  allowTlsRequiredNo?: boolean;
  /** Told about every TLS session (and every MX host a policy ruled out), for TLS-RPT. */
  onTlsSession?: (report: TlsSessionReport) => void;
  ehloName: string;
  /** Extra trusted CA certificates (PEM), on top of the system store. */
  ca: string[];
  timeouts: Timeouts;
  destinationConcurrency: number;
  maxMessagesPerConnection: number;
  idleTimeoutMs: number;
  logger: Logger;
}

/** One next-hop address that did not take the message (the attempt's record of it, with delivery's own types). */
interface HopFailure extends AttemptHopFailure {
  failure?: TlsFailure;
  tls?: TlsFacts;
}

type ConnectPlan = Extract<HopPlan, { action: 'connect' }>;

type Settle = (verdicts: Map<string, RecipientVerdict>) => Promise<void>;

/** Domains whose site is remembered; the least recently used is forgotten first. */
const MAX_SITES = 10_000;
/** Fresh connections tried for one address after pooled ones turned out dead. */
const MAX_FRESH_RETRIES = 1;

const LEASE_LOST = 'lease lost before DATA; another worker owns these recipients';

export class SmtpDeliveryAgent implements DeliveryAgent {
  #o: AgentOptions;
  #limiter: KeyedLimiter;
  /** Domain → site, in least-recently-used order. */
  #sites = new Map<string, string>();
  readonly pool: SessionPool;

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#limiter = new KeyedLimiter(options.destinationConcurrency);
    this.pool = new SessionPool({ idleTimeoutMs: options.idleTimeoutMs, maxMessagesPerSession: options.maxMessagesPerConnection });
  }

  async close(): Promise<void> {
    await this.pool.closeAll();
  }

  /** The next-hop set the domain's mail went to when it was last resolved (see siteFor). */
  siteOf(domain: string): string | undefined {
    const key = domainKey(domain);
    const site = this.#sites.get(key);
    if (site !== undefined) {
      this.#sites.delete(key);
      this.#sites.set(key, site);
    }
    return site;
  }

  #learnSite(domain: string, site: string): void {
    const key = domainKey(domain);
    this.#sites.delete(key);
    this.#sites.set(key, site);
    if (this.#sites.size > MAX_SITES) this.#sites.delete(this.#sites.keys().next().value!);
  }

  async deliver(batch: DeliveryBatch, signal: AbortSignal, settle?: Settle): Promise<Map<string, RecipientVerdict>> {
    const started = Date.now();
    const all = (verdict: RecipientVerdict) => new Map(batch.recipients.map((r) => [r.recipientId, verdict]));
    const staticPolicy = this.#o.sources?.staticPolicy
      ? await this.#o.sources.staticPolicy(batch.domain)
      : decidePolicy(batch.domain, this.#o.policies, this.#o.defaultPolicy);
    const base: AttemptDetail = { domain: batch.domain, site: this.siteOf(batch.domain) ?? null };

    const destination = await resolveDestination(batch.domain, {
      resolver: this.#o.resolver,
      routes: this.#o.routes,
      smtpPort: this.#o.smtpPort,
    });
    if (destination.kind === 'hops') {
      base.site = siteFor(destination);
      this.#learnSite(batch.domain, base.site as string);
    }
    if (destination.kind === 'null-mx') {
      // RFC 7505 §4.1: a domain with a null MX accepts no mail; fail at once, don't retry.
      return all({
        kind: 'permanent',
        reason: `${batch.domain} publishes a null MX: it accepts no mail (RFC 7505)`,
        enhancedCode: '5.1.10',
        hardBounce: true,
        detail: { ...base, destination: 'null-mx', durationMs: Date.now() - started },
      });
    }
    if (destination.kind === 'unresolvable') {
      return all({
        kind: destination.temporary ? 'transient' : 'permanent',
        reason: destination.reason,
        enhancedCode: destination.temporary ? '4.4.3' : '5.1.2',
        hardBounce: !destination.temporary,
        detail: { ...base, destination: 'unresolvable', durationMs: Date.now() - started },
      });
    }

    const content = await batch.content();
    const sts = this.#o.sources?.mtaSts ? await this.#o.sources.mtaSts(batch.domain) : ({ kind: 'none' } as const);
    const evidence: DomainEvidence = {
      domain: batch.domain,
      requireTls: batch.requireTls,
      tlsRequiredNo: hasTlsRequiredNo(content),
      allowTlsRequiredNo: this.#o.allowTlsRequiredNo ?? false,
      mxSecure: destination.mxSecure,
      sts,
      static: staticPolicy,
    };
    base.policyEvidence = summariseEvidence(evidence);

    // Keyed by site: a thousand domains hosted on one provider share one limit.
    const release = await this.#limiter.acquire(base.site as string, signal);
    try {
      return await this.#deliverToHops(batch, content, destination.hops, evidence, signal, base, started, settle);
    } finally {
      release();
    }
  }

  async #plan(evidence: DomainEvidence, hop: NextHop): Promise<HopPlan> {
    const dane = this.#o.sources?.dane ? await this.#o.sources.dane(hop) : await lookupDane(this.#o.resolver, hop, danePort(hop));
    return planHop(evidence, { host: hop.host, addressesSecure: hop.addressesSecure, dane });
  }

  #report(evidence: DomainEvidence, plan: HopPlan, hop: NextHop, address: string | undefined, outcome: { success: true } | { success: false; failure: TlsFailure; detail: string }, helo?: string): void {
    if (!this.#o.onTlsSession) return;
    // REQUIRETLS refusals are about the message, not the receiving domain's TLS: not a TLS-RPT matter.
    if (!outcome.success && outcome.failure === 'requiretls-unverifiable') return;
    this.#o.onTlsSession({
      domain: evidence.domain,
      policy: plan.report,
      success: outcome.success,
      ...(outcome.success ? {} : { failure: outcome.failure, detail: outcome.detail }),
      mxHost: hop.host,
      receivingIp: address,
      receivingHelo: helo,
      at: Date.now(),
    });
  }

  async #deliverToHops(
    batch: DeliveryBatch,
    content: Buffer,
    hops: NextHop[],
    evidence: DomainEvidence,
    signal: AbortSignal,
    base: AttemptDetail,
    started: number,
    settle: Settle | undefined,
  ): Promise<Map<string, RecipientVerdict>> {
    const failures: HopFailure[] = [];
    // RFC 5321 §5.1: try each MX in order, and each of its addresses, until one takes the message.
    nextHop: for (const hop of hops) {
      const plan = await this.#plan(evidence, hop);
      const policy = { level: plan.action === 'connect' ? plan.level : undefined, source: plan.source, why: plan.action === 'connect' ? plan.why : plan.detail };
      if (plan.action === 'skip') {
        // The policy rules this host out before any connection (RFC 7672 §2.2, RFC 8461 §4.1, RFC 8689 §4.2.1).
        failures.push({ host: hop.host, address: '', port: hop.port, stage: 'policy', temporary: !plan.permanent, reason: `${plan.failure}: ${plan.detail}`, failure: plan.failure, permanentPolicy: plan.permanent, policy });
        this.#report(evidence, plan, hop, undefined, { success: false, failure: plan.failure, detail: plan.detail });
        continue;
      }
      for (const address of hop.addresses) {
        const key = poolKey(hop, address, plan);
        for (let fresh = 0; fresh <= MAX_FRESH_RETRIES; fresh++) {
          if (signal.aborted) throw signal.reason;
          let session: SmtpSession;
          let reused = false;
          try {
            const pooled = fresh === 0 ? this.pool.take(key) : null;
            if (pooled) {
              session = pooled;
              reused = true;
            } else {
              session = await openSessionWithPolicy({
                address,
                port: hop.port,
                mxHost: hop.host,
                level: plan.level,
                dane: plan.dane,
                ehloName: this.#o.ehloName,
                ca: this.#o.ca,
                timeouts: this.#o.timeouts,
                signal,
              });
              this.#report(evidence, plan, hop, address, judgeForReport(plan, session.facts), session.facts.helo);
            }
          } catch (err) {
            if (signal.aborted) throw signal.reason;
            // Only sessions that reached the TLS decision count for TLS-RPT; a refused connection is no session.
            if (err instanceof SmtpSessionError && err.failure) {
              this.#report(evidence, plan, hop, address, judgeForReport(plan, err.facts, { failure: err.failure, detail: err.message }), err.facts?.helo);
            }
            const decided = decideTrouble(troubleOf(err, false));
            failures.push(hopFailure(hop, address, err, policy, decided));
            if (decided.action === 'next-mx') continue nextHop;
            break;
          }

          const abort = () => session.destroy();
          signal.addEventListener('abort', abort, { once: true });
          const detail = () => ({ ...base, policy, ...where(hop, address), reused, tls: session.facts, hopFailures: failures, durationMs: Date.now() - started });
          let result: Awaited<ReturnType<SmtpSession['send']>>;
          try {
            result = await session.send(
              { from: batch.sender, to: batch.recipients.map((r) => r.address), requireTls: batch.requireTls, size: content.length },
              content,
              // A worker whose lease is gone must not send what another worker now owns.
              { beforeData: () => batch.leaseHeld() },
            );
          } catch (err) {
            session.destroy();
            const decided = decideTrouble(troubleOf(err, reused));
            // Recorded even when aborted: releasing the lease would send the message again at once.
            if (decided.action === 'defer-unknown-outcome') {
              return this.#unknownOutcome(batch, err as SmtpSessionError, hop, address, { ...detail(), hopFailures: [...failures, hopFailure(hop, address, err, policy, decided)] });
            }
            if (signal.aborted) throw signal.reason;
            if (decided.action === 'retry-fresh-connection') continue;
            const failure = hopFailure(hop, address, err, policy, decided);
            failures.push(failure);
            if (decided.action === 'defer' || decided.action === 'bounce') {
              return this.#allFrom(batch, failure, detail());
            }
            if (decided.action === 'next-mx') continue nextHop;
            break;
          } finally {
            signal.removeEventListener('abort', abort);
          }

          const verdicts = result.dataWithheld
            ? this.#all(batch, { kind: 'transient', reason: LEASE_LOST, detail: { ...detail(), leaseLost: true } })
            : this.#verdicts(batch, result, detail());
          if (settle) {
            // The verdicts are durable before the connection is RSET and carries anything else.
            try {
              await settle(verdicts);
            } catch (err) {
              session.destroy();
              throw err;
            }
          }
          await this.pool.give(key, session);
          return verdicts;
        }
      }
    }
    return this.#noHopTookIt(batch, failures, base, started);
  }

  #all(batch: DeliveryBatch, verdict: RecipientVerdict): Map<string, RecipientVerdict> {
    return new Map(batch.recipients.map((r) => [r.recipientId, verdict]));
  }

  /**
   * RFC 1047: the final dot was sent and no reply came. Recipients the server refused at RCPT keep
   * that verdict; every accepted one may have the message, so none is sent it again right away.
   */
  #unknownOutcome(batch: DeliveryBatch, err: SmtpSessionError, hop: NextHop, address: string, detail: AttemptDetail): Map<string, RecipientVerdict> {
    const unknown: RecipientVerdict = {
      kind: 'unknown',
      reason: `${hop.host}[${address}]: connection lost after the final dot; the message may have been delivered (RFC 1047)`,
      replyCode: null,
      enhancedCode: null,
      remoteMta: hop.host,
      detail: { ...detail, unknownOutcome: true, stage: 'dot', error: err.message },
    };
    const verdicts = new Map<string, RecipientVerdict>();
    const refused = this.#verdicts(batch, { recipients: err.recipients ?? new Map() }, detail);
    for (const r of batch.recipients) {
      const rcpt = err.recipients?.get(r.address);
      verdicts.set(r.recipientId, rcpt && !rcpt.accepted ? refused.get(r.recipientId)! : unknown);
    }
    return verdicts;
  }

  #noHopTookIt(batch: DeliveryBatch, failures: HopFailure[], base: AttemptDetail, started: number): Map<string, RecipientVerdict> {
    const last = pickReason(failures);
    // The policy of the hop whose failure explains the outcome, so a deferral says what was demanded.
    const detail = { ...base, ...(last?.policy ? { policy: last.policy } : {}), hopFailures: failures, durationMs: Date.now() - started };
    // Every address of every hop was tried and none could be reached or would greet.
    const siteDown = failures.length > 0 && failures.every((f) => f.unreachable);
    // RFC 8689 §4.2.1/§5: REQUIRETLS with no MX that can keep it is bounced (5.7.30), never sent weaker.
    if (batch.requireTls && failures.length > 0 && failures.every((f) => f.permanentPolicy)) {
      const reason = `REQUIRETLS could not be honoured by any MX of ${batch.domain}: ${failures.map((f) => `${f.host}: ${f.reason}`).join('; ')}`;
      return new Map(
        batch.recipients.map((r) => [r.recipientId, { kind: 'permanent', reason, replyCode: 550, enhancedCode: '5.7.30', hardBounce: false, detail } satisfies RecipientVerdict]),
      );
    }
    return new Map(
      batch.recipients.map((r) => [
        r.recipientId,
        {
          kind: last && !last.temporary && last.reply ? 'permanent' : 'transient',
          reason: last ? `${last.host}${last.address ? `[${last.address}]` : ''}: ${last.reason}` : 'no next hop to try',
          replyCode: last?.reply?.code ?? null,
          enhancedCode: last?.reply?.enhanced ?? (last?.failure ? '4.7.5' : null),
          remoteMta: last?.host,
          detail,
          ...(siteDown ? { siteDown: true } : {}),
        } satisfies RecipientVerdict,
      ]),
    );
  }

  #verdicts(
    batch: DeliveryBatch,
    result: Awaited<ReturnType<SmtpSession['send']>>,
    detail: AttemptDetail,
  ): Map<string, RecipientVerdict> {
    const verdicts = new Map<string, RecipientVerdict>();
    for (const r of batch.recipients) {
      const rcpt = result.recipients.get(r.address);
      // An accepted RCPT is decided by the reply to the end of DATA (RFC 5321 §4.1.1.4).
      const reply = rcpt?.accepted && result.data ? result.data : rcpt;
      if (!reply) {
        verdicts.set(r.recipientId, { kind: 'transient', reason: 'no reply for this recipient', detail });
        continue;
      }
      const enhanced = reply.enhanced ?? enhancedCodeOf(reply.code, reply.text);
      const meaning = classifyReply(reply.code, enhanced, reply.text);
      verdicts.set(r.recipientId, {
        kind: meaning.kind,
        reason: meaning.kind === 'delivered' ? null : `${String(detail.mx)}: ${reply.code} ${reply.text}`,
        replyCode: reply.code,
        enhancedCode: enhanced,
        hardBounce: meaning.hardBounce,
        remoteMta: String(detail.mx),
        detail: { ...detail, reply: { code: reply.code, enhanced, text: reply.text } },
      });
    }
    return verdicts;
  }

  #allFrom(batch: DeliveryBatch, failure: HopFailure, detail: AttemptDetail): Map<string, RecipientVerdict> {
    const reply = failure.reply;
    if (!reply) {
      return this.#all(batch, { kind: 'transient', reason: `${failure.host}[${failure.address}]: ${failure.reason}`, remoteMta: failure.host, detail });
    }
    const meaning = classifyReply(reply.code, reply.enhanced ?? null, reply.text);
    return new Map(
      batch.recipients.map((r) => [
        r.recipientId,
        {
          kind: meaning.kind === 'delivered' ? 'transient' : meaning.kind,
          reason: `${failure.host}: ${reply.code} ${reply.text}`,
          replyCode: reply.code,
          enhancedCode: reply.enhanced ?? null,
          hardBounce: false,
          remoteMta: failure.host,
          detail: { ...detail, reply },
        } satisfies RecipientVerdict,
      ]),
    );
  }
}

/** Sessions are shared only between deliveries that would have opened them under the same plan. */
function poolKey(hop: NextHop, address: string, plan: ConnectPlan): string {
  const dane = plan.dane ? plan.dane.tlsa.map((r) => `${r.usage}${r.selector}${r.matchingType}${r.data.toString('hex')}`).join(',') : '';
  return `${hop.host}|${address}|${hop.port}|${plan.level}|${plan.source}|${dane}`;
}

/** What the attempt record keeps of the evidence: enough to explain the decision, nothing personal. */
function summariseEvidence(e: DomainEvidence): NonNullable<AttemptDetail['policyEvidence']> {
  return {
    requireTls: e.requireTls,
    tlsRequiredNo: e.tlsRequiredNo,
    mxSecure: e.mxSecure,
    static: { level: e.static.level, source: e.static.source, ...(e.static.match ? { match: e.static.match } : {}) },
    mtaSts:
      e.sts.kind === 'policy'
        ? { mode: e.sts.policy.mode, id: e.sts.policy.id, fromCache: e.sts.fromCache, ...(e.sts.refreshFailure ? { refreshFailure: e.sts.refreshFailure.failure } : {}) }
        : e.sts.kind === 'failed'
          ? { failure: e.sts.failure, detail: e.sts.detail }
          : null,
  };
}

function where(hop: NextHop, address: string) {
  return { mx: hop.host, ip: address, port: hop.port, hopSource: hop.source };
}

function hopFailure(hop: NextHop, address: string, err: unknown, policy: HopFailure['policy'], decided: TroubleDecision): HopFailure {
  const judged = {
    ...(decided.unreachable ? { unreachable: true } : {}),
    ...(decided.policyBounce ? { permanentPolicy: true } : {}),
  };
  if (err instanceof SmtpSessionError) {
    return {
      host: hop.host,
      address,
      port: hop.port,
      stage: err.stage,
      temporary: err.temporary,
      reason: err.failure ? `${err.failure}: ${err.message}` : err.message,
      failure: err.failure,
      policy,
      reply: err.reply ? { code: err.reply.code, enhanced: err.reply.enhanced ?? null, text: err.reply.text } : undefined,
      tls: err.facts,
      ...judged,
      // A policy refusal (RFC 8689 §4.2.1) is not retried on a later attempt.
      ...(decided.policyBounce ? { temporary: false } : {}),
    };
  }
  return { host: hop.host, address, port: hop.port, stage: 'local', temporary: true, reason: (err as Error).message, policy, ...judged };
}

/**
 * A destination's site: the next-hop set its mail goes to, so domains hosted on one provider are
 * one destination for concurrency and throttling. The sorted MX host names, or `route:host:port`.
 */
export function siteFor(destination: Extract<Destination, { kind: 'hops' }>): string {
  const route = destination.hops.find((h) => h.source === 'route');
  if (route) return `route:${route.host.toLowerCase()}:${route.port}`;
  return [...new Set(destination.hops.map((h) => h.host.toLowerCase().replace(/\.$/, '')))].sort().join(',');
}

/** The failure that explains the outcome best: a policy (TLS) failure or a reply beats a bare connection error. */
function pickReason(failures: HopFailure[]): HopFailure | undefined {
  return (
    failures.find((f) => f.stage === 'tls' || f.stage === 'starttls' || f.stage === 'policy') ??
    failures.find((f) => f.reply) ??
    failures[failures.length - 1]
  );
}
