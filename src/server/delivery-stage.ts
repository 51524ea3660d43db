// The delivery side of `lacre serve` (like Postfix's qmgr and smtp, which run apart from smtpd):
// the queue runner and the SMTP delivery agent with its policy sources, the webhook dispatcher,
// and TLS reporting. It runs on a thread of its own (delivery-worker.ts) with its own database
// connection, so the second core delivers while the first takes mail in; the two meet only in the
// store, and intake wakes the runner with a message.
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import { keyringSource, loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { eventRules } from '../events/derive.ts';
import { Queue } from '../queue/queue.ts';
import { QueueRunner } from '../queue/runner.ts';
import { BounceComposer } from '../compose/bounces.ts';
import type { Resolver } from '../dns/resolver.ts';
import { SmtpDeliveryAgent } from '../delivery/agent.ts';
import { SenderDomains, senderSettingsFrom } from '../domains/sender-domains.ts';
import { Composer } from '../compose/outgoing.ts';
import { WebhookDispatcher, dispatcherSettingsFrom } from '../events/dispatcher.ts';
import { resolverLookup, vetWebhookUrl } from '../events/url-guard.ts';
import { policySourcesFrom, resolverFrom } from './wiring.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import { TlsReportCollector } from '../tls-reporting/collector.ts';
import { TLSRPT_RETENTION_DAYS, TlsReporter } from '../tls-reporting/reporter.ts';
import { addDays, DAY_MS, utcDay } from '../tls-reporting/days.ts';
import type { WriteHealth } from '../store/engine.ts';
import type { KeyringStatus } from '../sealing/sealer.ts';
import { DeliveryMetrics, type MetricsJson } from './metrics.ts';

/** What the main thread asks the delivery thread for: its metrics and its side of readiness. */
export interface DeliveryStatus {
  metrics: MetricsJson;
  runner: ReturnType<QueueRunner['health']>;
  store: WriteHealth;
  keyring: KeyringStatus;
}

export interface DeliveryStage {
  /** Something was committed to the queue: look for work now. */
  nudge(): void;
  /** The static policy table was changed by the other thread: drop the cached snapshot. */
  staticPoliciesChanged(): void;
  stop(graceMs: number): Promise<{ finished: number; released: number }>;
  status(): Promise<DeliveryStatus>;
}

export function scheduleOf(config: Config) {
  return { minBackoffMs: config.queue.minBackoff, maxBackoffMs: config.queue.maxBackoff, maxAgeMs: config.queue.maxAge };
}

export async function startDeliveryStage(options: { config: Config; logger: Logger; ca: string[]; workerId: string }): Promise<DeliveryStage> {
  const { config, logger, ca, workerId } = options;
  const sealer = new Sealer(loadKeyring(config), { source: keyringSource(config) });
  const store = await Store.open({ dataDir: config.dataDir, sealer, events: eventRules });
  try {
    const schedule = scheduleOf(config);
    const queue = new Queue(store, schedule);
    const resolver = resolverFrom(config);
    const policy = policySourcesFrom(config, {
      store,
      resolver,
      ca,
      logger: logger.child({ component: 'mta-sts' }),
    });
    // Sessions are counted by default (one row per recipient domain and day, no addresses), so
    // `lacre tlsrpt show` and TLS coverage work out of the box; reports go out only when enabled.
    const tlsRpt = config.tlsReporting.count
      ? tlsReportingFrom(config, { store, queue, resolver, ca, logger, sealer, queued: () => runner.nudge() })
      : null;
    const agent = new SmtpDeliveryAgent({
      resolver,
      routes: new Map(Object.entries(config.delivery.routes)),
      smtpPort: config.delivery.smtpPort,
      policies: new Map(Object.entries(config.tls.policies)),
      defaultPolicy: config.tls.defaultPolicy,
      sources: policy.sources,
      allowTlsRequiredNo: config.tls.allowTlsRequiredNo,
      ...(tlsRpt ? { onTlsSession: (r: Parameters<TlsReportCollector['record']>[0]) => tlsRpt.collector.record(r) } : {}),
      ehloName: config.hostname,
      ca,
      timeouts: config.delivery.timeouts,
      destinationConcurrency: config.delivery.destinationConcurrency,
      maxMessagesPerConnection: config.delivery.maxMessagesPerConnection,
      idleTimeoutMs: config.delivery.idleTimeout,
      logger: logger.child({ component: 'delivery' }),
    });
    const metrics = new DeliveryMetrics();
    const runner = new QueueRunner({
      store: store.queue,
      agent,
      logger: logger.child({ component: 'queue' }),
      workerId,
      leaseMs: config.queue.lease,
      pollIntervalMs: config.queue.pollInterval,
      concurrency: config.queue.concurrency,
      destinationConcurrency: config.delivery.destinationConcurrency,
      schedule,
      finalFailures: new BounceComposer(queue, config.hostname),
      onAttempt: (summary) => metrics.record(summary),
    });
    const webhookDispatcher = new WebhookDispatcher({
      store,
      logger: logger.child({ component: 'webhooks' }),
      workerId,
      lookup: resolverLookup(resolver),
      ca,
      ...dispatcherSettingsFrom(config.webhooks),
    });
    runner.start();
    webhookDispatcher.start();
    tlsRpt?.reporter?.start();
    let stopping: Promise<{ finished: number; released: number }> | null = null;
    return {
      nudge: () => runner.nudge(),
      staticPoliciesChanged: () => policy.staticPolicies.invalidate(),
      async status() {
        return { metrics: await metrics.json(), runner: runner.health(), store: store.engine.writeHealth(), keyring: sealer.refresh(true) };
      },
      stop(graceMs: number) {
        stopping ??= (async () => {
          // Let in-flight deliveries finish or give their leases back, then close what they write to.
          const result = await runner.stop(graceMs);
          await agent.close();
          // After the runner: its last verdicts may have added outbox rows; the rest wait in the outbox.
          await webhookDispatcher.stop(graceMs);
          await tlsRpt?.reporter?.stop();
          if (tlsRpt?.pruner) clearInterval(tlsRpt.pruner);
          await tlsRpt?.collector.close();
          // What the bench reads per message (bench/lib/phases.ts): this thread's own connection.
          logger.info({ thread: 'delivery', database: store.engine.stats }, 'database statistics');
          await store.close();
          return result;
        })();
        return stopping;
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}

function tlsReportingFrom(
  config: Config,
  deps: { store: Store; queue: Queue; resolver: Resolver; ca: string[]; logger: Logger; sealer: Sealer; queued: () => void },
): { collector: TlsReportCollector; reporter: TlsReporter | null; pruner: NodeJS.Timeout | null } {
  const table = new TlsRptTable(deps.store.engine, deps.store.sealer);
  const log = deps.logger.child({ component: 'tls-reporting' });
  const collector = new TlsReportCollector({
    table,
    onError: (err) => log.warn({ err: { message: (err as Error).message } }, 'TLS-RPT counts kept for the next flush'),
  });
  if (!config.tlsReporting.enabled) {
    // Counting only: nothing sends, so keep the counts as long as the reporter would, and no longer.
    const prune = () =>
      table.pruneBefore(addDays(utcDay(Date.now()), -TLSRPT_RETENTION_DAYS)).catch((err) => log.warn({ err: { message: (err as Error).message } }, 'pruning old TLS session counts failed'));
    void prune();
    const pruner = setInterval(prune, DAY_MS / 4);
    pruner.unref();
    return { collector, reporter: null, pruner };
  }
  // Reports travel like any mail: through compose (DKIM-signed, RFC 8460 §5.3.1) and the queue.
  const domains = new SenderDomains({
    store: deps.store,
    resolver: deps.resolver,
    settings: senderSettingsFrom(config),
    rotationGraceMs: config.senders.dkimRotationGrace,
  });
  const composer = new Composer({ queue: deps.queue, domains, tag: (id) => deps.sealer.lookupHash('return-path', id) });
  const from = config.tlsReporting.from!;
  const reporter = new TlsReporter({
    table,
    resolver: deps.resolver,
    submit: async (m) => {
      const accepted = await composer.submit({ ...m, source: 'system', metadata: { kind: 'tlsrpt' } });
      deps.queued();
      return accepted;
    },
    organizationName: config.tlsReporting.organizationName ?? config.hostname,
    submitter: config.hostname,
    contact: config.tlsReporting.contact ?? `mailto:${from}`,
    from,
    ca: deps.ca,
    // A domain's own DNS names the https rua: vet it as a webhook URL (no private addresses).
    vetHttps: async (url) => {
      const vetted = await vetWebhookUrl(url.href, { lookup: resolverLookup(deps.resolver), allowLoopback: config.webhooks.allowLoopback });
      return { host: vetted.host, addresses: vetted.addresses };
    },
    httpsTimeoutMs: config.tlsReporting.httpsTimeout,
    flush: () => collector.flush(),
    logger: log,
  });
  return { collector, reporter, pruner: null };
}
