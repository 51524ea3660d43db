// The delivery stage (like Postfix's smtp client): takes a batch (one message, one destination
// domain) from the queue runner, finds where the domain's mail goes, gathers the TLS policy
// evidence (static policy, MTA-STS, DANE per MX host) and lets the policy engine plan each hop,
// speaks SMTP through pooled sessions, reports every TLS session for TLS-RPT, and turns every reply
// into a per-recipient verdict with a record of exactly how the attempt travelled.
// May import: ./destination, ./smtp-session, ./replies, ./limiter, ../tls-policy, ../policy-lookup, ../dns, ../queue (types), ../log (types).
import type { Logger } from '../log/logger.ts';
import type { DeliveryAgent, DeliveryBatch, RecipientVerdict } from '../queue/runner.ts';
import type { Resolver } from '../dns/resolver.ts';
import { decidePolicy, type StaticTlsLevel, type TlsFailure } from '../tls-policy/levels.ts';
import type { TlsSessionReport } from '../tls-policy/evidence.ts';
import { judgeForReport, planHop, type DomainEvidence, type HopPlan } from '../tls-policy/engine.ts';
import { hasTlsRequiredNo } from '../tls-policy/tls-required-header.ts';
import { lookupDane } from '../policy-lookup/dane.ts';
import type { PolicySources } from '../policy-lookup/sources.ts';
import { resolveDestination, type NextHop } from './destination.ts';
import { openSessionWithPolicy, SmtpSessionError, type SmtpSession, type Timeouts } from './smtp-session.ts';
import { classifyReply, enhancedCodeOf } from './replies.ts';
import { KeyedLimiter } from './limiter.ts';
import { SessionPool } from './session-pool.ts';

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

interface HopFailure {
  host: string;
  address: string;
  port: number;
  stage: string;
  temporary: boolean;
  reason: string;
  failure?: TlsFailure;
  /** A policy decided this hop cannot take the message at all (REQUIRETLS): bounce, don't retry. */
  permanentPolicy?: boolean;
  policy?: { level?: string; source: string; why?: string };
  reply?: { code: number; enhanced?: string | null; text: string };
  tls?: unknown;
}

type ConnectPlan = Extract<HopPlan, { action: 'connect' }>;

export class SmtpDeliveryAgent implements DeliveryAgent {
  #o: AgentOptions;
  #limiter: KeyedLimiter;
  readonly pool: SessionPool;

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#limiter = new KeyedLimiter(options.destinationConcurrency);
    this.pool = new SessionPool({ idleTimeoutMs: options.idleTimeoutMs, maxMessagesPerSession: options.maxMessagesPerConnection });
  }

  async close(): Promise<void> {
    await this.pool.closeAll();
  }

  async deliver(batch: DeliveryBatch, signal: AbortSignal): Promise<Map<string, RecipientVerdict>> {
    const started = Date.now();
    const all = (verdict: RecipientVerdict) => new Map(batch.recipients.map((r) => [r.recipientId, verdict]));
    const staticPolicy = this.#o.sources?.staticPolicy
      ? await this.#o.sources.staticPolicy(batch.domain)
      : decidePolicy(batch.domain, this.#o.policies, this.#o.defaultPolicy);
    const base: Record<string, unknown> = { domain: batch.domain };

    const destination = await resolveDestination(batch.domain, {
      resolver: this.#o.resolver,
      routes: this.#o.routes,
      smtpPort: this.#o.smtpPort,
    });
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

    const release = await this.#limiter.acquire(batch.domain, signal);
    try {
      return await this.#deliverToHops(batch, content, destination.hops, evidence, signal, base, started);
    } finally {
      release();
    }
  }

  async #plan(evidence: DomainEvidence, hop: NextHop): Promise<HopPlan> {
    const dane = this.#o.sources?.dane ? await this.#o.sources.dane(hop) : await lookupDane(this.#o.resolver, hop, hop.source === 'route' ? hop.port : 25);
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
    base: Record<string, unknown>,
    started: number,
  ): Promise<Map<string, RecipientVerdict>> {
    const failures: HopFailure[] = [];
    // RFC 5321 §5.1: try each MX in order, and each of its addresses, until one takes the message.
    for (const hop of hops) {
      const plan = await this.#plan(evidence, hop);
      const policy = { level: plan.action === 'connect' ? plan.level : undefined, source: plan.source, why: plan.action === 'connect' ? plan.why : plan.detail };
      if (plan.action === 'skip') {
        // The policy rules this host out before any connection (RFC 7672 §2.2, RFC 8461 §4.1, RFC 8689 §4.2.1).
        failures.push({ host: hop.host, address: '', port: hop.port, stage: 'policy', temporary: !plan.permanent, reason: `${plan.failure}: ${plan.detail}`, failure: plan.failure, permanentPolicy: plan.permanent, policy });
        this.#report(evidence, plan, hop, undefined, { success: false, failure: plan.failure, detail: plan.detail });
        continue;
      }
      for (const address of hop.addresses) {
        if (signal.aborted) throw signal.reason;
        let session: SmtpSession;
        let reused = false;
        const key = poolKey(hop, address, plan);
        try {
          const pooled = this.pool.take(key);
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
          const failure = hopFailure(hop, address, err, policy);
          failures.push(failure);
          // Only sessions that reached the TLS decision count for TLS-RPT; a refused connection is no session.
          if (err instanceof SmtpSessionError && err.failure) {
            this.#report(evidence, plan, hop, address, judgeForReport(plan, err.facts, { failure: err.failure, detail: err.message }), err.facts?.helo);
          }
          continue;
        }
        const abort = () => session.destroy();
        signal.addEventListener('abort', abort, { once: true });
        try {
          const result = await session.send(
            { from: batch.sender, to: batch.recipients.map((r) => r.address), requireTls: batch.requireTls, size: content.length },
            content,
          );
          await this.pool.give(key, session);
          return this.#verdicts(batch, result, { ...base, policy, ...where(hop, address), reused, tls: session.facts, hopFailures: failures, durationMs: Date.now() - started });
        } catch (err) {
          session.destroy();
          if (signal.aborted) throw signal.reason;
          // A pooled connection the server closed while idle: not the destination's fault, try afresh.
          if (reused && err instanceof SmtpSessionError && err.stage !== 'rcpt' && !err.reply) {
            hop.addresses.push(address);
            continue;
          }
          const failure = hopFailure(hop, address, err, policy);
          if (err instanceof SmtpSessionError && err.kind === 'requiretls-unavailable') {
            // RFC 8689 §4.2.1: this MX cannot keep the promise; another MX may. If none can, bounce.
            failure.permanentPolicy = true;
            failure.temporary = false;
            failures.push(failure);
            break;
          }
          failures.push(failure);
          // A reply to MAIL FROM or DATA speaks for the whole transaction: don't shop it around.
          if (err instanceof SmtpSessionError && err.reply && (err.stage === 'mail' || err.stage === 'data' || err.stage === 'message')) {
            return this.#allFrom(batch, failure, { ...base, policy, ...where(hop, address), tls: session.facts, hopFailures: failures, durationMs: Date.now() - started });
          }
        } finally {
          signal.removeEventListener('abort', abort);
        }
      }
    }
    return this.#noHopTookIt(batch, failures, base, started);
  }

  #noHopTookIt(batch: DeliveryBatch, failures: HopFailure[], base: Record<string, unknown>, started: number): Map<string, RecipientVerdict> {
    const last = pickReason(failures);
    // The policy of the hop whose failure explains the outcome, so a deferral says what was demanded.
    const detail = { ...base, ...(last?.policy ? { policy: last.policy } : {}), hopFailures: failures, durationMs: Date.now() - started };
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
        } satisfies RecipientVerdict,
      ]),
    );
  }

  #verdicts(
    batch: DeliveryBatch,
    result: Awaited<ReturnType<SmtpSession['send']>>,
    detail: Record<string, unknown>,
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

  #allFrom(batch: DeliveryBatch, failure: HopFailure, detail: Record<string, unknown>): Map<string, RecipientVerdict> {
    const reply = failure.reply!;
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
function summariseEvidence(e: DomainEvidence): Record<string, unknown> {
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

function hopFailure(hop: NextHop, address: string, err: unknown, policy: HopFailure['policy']): HopFailure {
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
    };
  }
  return { host: hop.host, address, port: hop.port, stage: 'local', temporary: true, reason: (err as Error).message, policy };
}

/** The failure that explains the outcome best: a policy (TLS) failure or a reply beats a bare connection error. */
function pickReason(failures: HopFailure[]): HopFailure | undefined {
  return (
    failures.find((f) => f.stage === 'tls' || f.stage === 'starttls' || f.stage === 'policy') ??
    failures.find((f) => f.reply) ??
    failures[failures.length - 1]
  );
}
