// The delivery stage (like Postfix's smtp client): takes a batch (one message, one destination
// domain) from the queue runner, finds where the domain's mail goes, decides the TLS policy,
// speaks SMTP through pooled sessions, and turns every reply into a per-recipient verdict with a
// record of exactly how the attempt travelled.
// May import: ./destination, ./smtp-session, ./replies, ./limiter, ../tls-policy, ../dns, ../queue (types), ../log (types).
import type { Logger } from '../log/logger.ts';
import type { DeliveryAgent, DeliveryBatch, RecipientVerdict } from '../queue/runner.ts';
import type { Resolver } from '../dns/resolver.ts';
import { decidePolicy, type PolicyDecision, type TlsLevel } from '../tls-policy/levels.ts';
import { resolveDestination, type NextHop } from './destination.ts';
import { openSessionWithPolicy, SmtpSessionError, type SmtpSession, type Timeouts } from './smtp-session.ts';
import { classifyReply, enhancedCodeOf } from './replies.ts';
import { KeyedLimiter } from './limiter.ts';
import { SessionPool } from './session-pool.ts';

export interface AgentOptions {
  resolver: Resolver;
  routes: Map<string, { host: string; port: number }>;
  smtpPort: number;
  policies: Map<string, TlsLevel>;
  defaultPolicy: TlsLevel;
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
  reply?: { code: number; enhanced?: string | null; text: string };
  tls?: unknown;
}

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
    const policy = decidePolicy(batch.domain, this.#o.policies, this.#o.defaultPolicy);
    const base = { domain: batch.domain, policy: { level: policy.level, source: policy.source } };
    const all = (verdict: RecipientVerdict) => new Map(batch.recipients.map((r) => [r.recipientId, verdict]));

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

    const release = await this.#limiter.acquire(batch.domain, signal);
    try {
      return await this.#deliverToHops(batch, destination.hops, policy, signal, base, started);
    } finally {
      release();
    }
  }

  async #deliverToHops(
    batch: DeliveryBatch,
    hops: NextHop[],
    policy: PolicyDecision,
    signal: AbortSignal,
    base: Record<string, unknown>,
    started: number,
  ): Promise<Map<string, RecipientVerdict>> {
    const failures: HopFailure[] = [];
    const content = await batch.content();
    // RFC 5321 §5.1: try each MX in order, and each of its addresses, until one takes the message.
    for (const hop of hops) {
      for (const address of hop.addresses) {
        if (signal.aborted) throw signal.reason;
        let session: SmtpSession;
        let reused = false;
        try {
          const pooled = this.pool.take(poolKey(hop, address, policy.level));
          if (pooled) {
            session = pooled;
            reused = true;
          } else {
            session = await openSessionWithPolicy({
              address,
              port: hop.port,
              mxHost: hop.host,
              level: policy.level,
              ehloName: this.#o.ehloName,
              ca: this.#o.ca,
              timeouts: this.#o.timeouts,
              signal,
            });
          }
        } catch (err) {
          if (signal.aborted) throw signal.reason;
          failures.push(hopFailure(hop, address, err));
          continue;
        }
        const abort = () => session.destroy();
        signal.addEventListener('abort', abort, { once: true });
        try {
          const result = await session.send(
            { from: batch.sender, to: batch.recipients.map((r) => r.address), requireTls: batch.requireTls, size: content.length },
            content,
          );
          await this.pool.give(poolKey(hop, address, policy.level), session);
          return this.#verdicts(batch, result, { ...base, ...where(hop, address), reused, tls: session.facts, hopFailures: failures, durationMs: Date.now() - started });
        } catch (err) {
          session.destroy();
          if (signal.aborted) throw signal.reason;
          // A pooled connection the server closed while idle: not the destination's fault, try afresh.
          if (reused && err instanceof SmtpSessionError && err.stage !== 'rcpt' && !err.reply) {
            hop.addresses.push(address);
            continue;
          }
          const failure = hopFailure(hop, address, err);
          failures.push(failure);
          // A reply to MAIL FROM or DATA speaks for the whole transaction: don't shop it around.
          if (err instanceof SmtpSessionError && err.reply && (err.stage === 'mail' || err.stage === 'data' || err.stage === 'message')) {
            return this.#allFrom(batch, failure, { ...base, ...where(hop, address), tls: session.facts, hopFailures: failures, durationMs: Date.now() - started });
          }
        } finally {
          signal.removeEventListener('abort', abort);
        }
      }
    }
    const last = pickReason(failures);
    return new Map(
      batch.recipients.map((r) => [
        r.recipientId,
        {
          kind: last && !last.temporary && last.reply ? 'permanent' : 'transient',
          reason: last ? `${last.host}[${last.address}]: ${last.reason}` : 'no next hop to try',
          replyCode: last?.reply?.code ?? null,
          enhancedCode: last?.reply?.enhanced ?? null,
          remoteMta: last?.host,
          detail: { ...base, hopFailures: failures, durationMs: Date.now() - started },
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

function poolKey(hop: NextHop, address: string, level: TlsLevel): string {
  return `${hop.host}|${address}|${hop.port}|${level}`;
}

function where(hop: NextHop, address: string) {
  return { mx: hop.host, ip: address, port: hop.port, hopSource: hop.source };
}

function hopFailure(hop: NextHop, address: string, err: unknown): HopFailure {
  if (err instanceof SmtpSessionError) {
    return {
      host: hop.host,
      address,
      port: hop.port,
      stage: err.stage,
      temporary: err.temporary,
      reason: err.failure ? `${err.failure}: ${err.message}` : err.message,
      reply: err.reply ? { code: err.reply.code, enhanced: err.reply.enhanced ?? null, text: err.reply.text } : undefined,
      tls: err.facts,
    };
  }
  return { host: hop.host, address, port: hop.port, stage: 'local', temporary: true, reason: (err as Error).message };
}

/** The failure that explains the outcome best: a policy (TLS) failure or a reply beats a bare connection error. */
function pickReason(failures: HopFailure[]): HopFailure | undefined {
  return (
    failures.find((f) => f.stage === 'tls' || f.stage === 'starttls') ??
    failures.find((f) => f.reply) ??
    failures[failures.length - 1]
  );
}
