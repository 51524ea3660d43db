// `lacre serve`: wires configuration, sealing, store, queue runner and listeners into one process
// and takes them down in order. May import every stage; nothing imports it but the CLI.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Logger } from '../log/logger.ts';
import { loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { Queue } from '../queue/queue.ts';
import { QueueRunner } from '../queue/runner.ts';
import { BounceComposer } from '../compose/bounces.ts';
import { Resolver } from '../dns/resolver.ts';
import { SmtpDeliveryAgent } from '../delivery/agent.ts';
import { readFileSync } from 'node:fs';
import { buildHttpServer, type HttpState } from './http.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { SenderDomains, senderSettingsFrom } from '../domains/sender-domains.ts';
import { Composer } from '../compose/outgoing.ts';
import { domainRoutes } from './routes/domains.ts';
import { loadHttpTls } from './https.ts';
import { sendRoutes } from './routes/send.ts';
import { messageRoutes } from './routes/messages.ts';
import { eventRoutes } from './routes/events.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { Webhooks } from '../events/webhooks.ts';
import { WebhookDispatcher, dispatcherSettingsFrom } from '../events/dispatcher.ts';
import { resolverLookup } from '../events/url-guard.ts';
import { startBounceReceiver, type BounceReceiver } from '../intake/bounce-receiver.ts';
import { startSubmission, type SubmissionListeners } from '../intake/smtp-submission.ts';
import { loadListenerCertificate } from '../intake/listener-cert.ts';
import { buildPolicySources } from '../policy-lookup/sources.ts';
import { tlsPolicyRoutes } from './routes/tls-policies.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import { TlsReportCollector } from '../tls-reporting/collector.ts';
import { TlsReporter } from '../tls-reporting/reporter.ts';
import { vetWebhookUrl } from '../events/url-guard.ts';

export interface RunningServer {
  httpUrl: string;
  queue: Queue;
  store: Store;
  domains: SenderDomains;
  composer: Composer;
  agent: SmtpDeliveryAgent;
  runner: QueueRunner;
  stop(reason: string): Promise<void>;
}

export interface ServeOptions {
  config: Config;
  logger: Logger;
}

export async function startServer({ config, logger }: ServeOptions): Promise<RunningServer> {
  // Read before anything starts: a missing CA file is a configuration error, not a delivery failure.
  const ca = config.tls.caFile ? [readFileCa(config.tls.caFile)] : [];
  // Also before anything starts: a bad PEM pair, or plain HTTP on a non-loopback address, stops start-up.
  const httpsOptions = loadHttpTls(config.http);
  const keyring = loadKeyring(config);
  const sealer = new Sealer(keyring);
  const store = await Store.open({ dataDir: config.dataDir, sealer });
  const schedule = {
    minBackoffMs: config.queue.minBackoff,
    maxBackoffMs: config.queue.maxBackoff,
    maxAgeMs: config.queue.maxAge,
  };
  const queue = new Queue(store, schedule);
  const resolver = new Resolver({ servers: config.dns.servers, timeoutMs: config.dns.timeout, trustAd: config.dns.trustAd });
  const policy = buildPolicySources({
    store,
    resolver,
    configured: config.tls.policies,
    defaultLevel: config.tls.defaultPolicy,
    ca,
    mtaStsPort: config.tls.mtaSts.port,
    mtaStsFetchTimeoutMs: config.tls.mtaSts.fetchTimeout,
    logger: logger.child({ component: 'mta-sts' }),
  });
  const keys = new ApiKeys(store);
  const domains = new SenderDomains({
    store,
    resolver,
    settings: senderSettingsFrom(config),
    rotationGraceMs: config.senders.dkimRotationGrace,
  });
  const composer = new Composer({ queue, domains, tag: (id) => sealer.lookupHash('return-path', id) });
  const state: HttpState = { ready: false };
  const http = buildHttpServer({ logger, state, https: httpsOptions });
  await http.register(domainRoutes({ keys, domains }));
  await http.register(tlsPolicyRoutes({ keys, table: policy.tlsPolicyTable, audit: store.audit, policies: policy.staticPolicies }));
  // The runner is built below; the callback runs only once requests arrive.
  await http.register(sendRoutes({ keys, composer, store, onQueued: () => runner.nudge(), version: '0.1.0' }));
  await http.register(messageRoutes({ keys, store }));
  const webhookLookup = resolverLookup(resolver);
  await http.register(eventRoutes({ keys, store }));
  await http.register(webhookRoutes({ keys, webhooks: new Webhooks(store, { lookup: webhookLookup, allowLoopback: config.webhooks.allowLoopback }) }));
  const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  // RFC 8460: sessions are counted only when reporting is on, so nothing is kept that is never used.
  const tlsRpt = config.tlsReporting.enabled ? tlsReportingFrom(config, { store, resolver, composer, ca, logger }) : null;
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
  });
  const webhookDispatcher = new WebhookDispatcher({
    store,
    logger: logger.child({ component: 'webhooks' }),
    workerId,
    lookup: webhookLookup,
    ca,
    ...dispatcherSettingsFrom(config.webhooks),
  });

  try {
    await http.listen({ host: config.http.host, port: config.http.port });
  } catch (err) {
    await store.close();
    throw err;
  }
  let bounces: BounceReceiver | null = null;
  if (config.bounces.port !== undefined) {
    try {
      // STARTTLS for the bounces too: they quote the original headers. A self-signed certificate
      // is enough here: senders to an MX encrypt opportunistically and do not verify (RFC 7435).
      const cert = await loadListenerCertificate({ dataDir: config.dataDir, hostname: config.hostname, name: 'bounces' });
      bounces = await startBounceReceiver({
        tls: { cert: cert.cert, key: cert.key },
        host: config.bounces.host,
        port: config.bounces.port,
        hostname: config.hostname,
        store,
        localPart: config.senders.returnPathLocalPart,
        tag: (id) => sealer.lookupHash('return-path', id),
        logger: logger.child({ component: 'bounces' }),
      });
    } catch (err) {
      await http.close();
      await store.close();
      throw err;
    }
  }
  let submission: SubmissionListeners;
  try {
    submission = await startSubmission({
      config: { ...config.submission, hostname: config.hostname, dataDir: config.dataDir },
      keys,
      composer,
      domains,
      store,
      logger: logger.child({ component: 'submission' }),
      onQueued: () => runner.nudge(),
      closeGraceMs: config.queue.shutdownGrace,
    });
  } catch (err) {
    await bounces?.close();
    await http.close();
    await store.close();
    throw err;
  }
  runner.start();
  webhookDispatcher.start();
  // DNS changes by domain owners are picked up without anyone running `domains verify` again.
  const recheck = setInterval(() => {
    domains.recheckWaiting().catch((err) => logger.warn({ err: { message: (err as Error).message } }, 'domain recheck failed'));
  }, config.senders.recheckInterval);
  recheck.unref();
  // RFC 8461 §5.1: refresh cached MTA-STS policies before they expire, so a policy host that is down
  // on the day a policy would lapse does not drop the domain back to opportunistic TLS.
  const stsRefresh = setInterval(() => {
    policy.mtaSts
      .refreshExpiring(Math.max(config.tls.mtaSts.refreshInterval * 2, 86_400_000))
      .catch((err) => logger.warn({ err: { message: (err as Error).message } }, 'MTA-STS refresh failed'));
  }, config.tls.mtaSts.refreshInterval);
  stsRefresh.unref();
  tlsRpt?.reporter.start();
  state.ready = true;
  const address = http.server.address();
  const port = typeof address === 'object' && address ? address.port : config.http.port;
  const host = config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host;
  const httpUrl = `${httpsOptions ? 'https' : 'http'}://${host}:${port}`;
  logger.info(
    {
      http: httpUrl,
      dataDir: config.dataDir,
      sealingKey: keyring.current.idHex,
      worker: workerId,
      tlsDefaultPolicy: config.tls.defaultPolicy,
      submission: {
        host: submission.host,
        starttls: submission.ports.starttls,
        implicitTls: submission.ports.implicit,
        certificateSha256: submission.fingerprint,
      },
      ...(bounces ? { bounceReceiver: `${config.bounces.host}:${bounces.port}` } : {}),
    },
    'lacre is serving',
  );

  let stopping: Promise<void> | null = null;
  return {
    httpUrl,
    queue,
    store,
    domains,
    composer,
    agent,
    runner,
    stop(reason: string) {
      stopping ??= (async () => {
        logger.info({ reason }, 'shutting down');
        state.ready = false;
        clearInterval(recheck);
        clearInterval(stsRefresh);
        // Stop taking work first, then let in-flight deliveries finish or give their leases back,
        // and only then close the database they write to.
        await Promise.all([http.close(), submission.close(config.queue.shutdownGrace)]);
        await bounces?.close();
        const result = await runner.stop(config.queue.shutdownGrace);
        await agent.close();
        // After the runner: its last verdicts may have added outbox rows; the rest wait in the outbox.
        await webhookDispatcher.stop(config.queue.shutdownGrace);
        await tlsRpt?.reporter.stop();
        await tlsRpt?.collector.close();
        await store.close();
        logger.info(result, 'stopped');
      })();
      return stopping;
    },
  };
}

function tlsReportingFrom(
  config: Config,
  deps: { store: Store; resolver: Resolver; composer: Composer; ca: string[]; logger: Logger },
): { collector: TlsReportCollector; reporter: TlsReporter } {
  const table = new TlsRptTable(deps.store.engine, deps.store.sealer);
  const log = deps.logger.child({ component: 'tls-reporting' });
  const collector = new TlsReportCollector({
    table,
    onError: (err) => log.warn({ err: { message: (err as Error).message } }, 'TLS-RPT counts kept for the next flush'),
  });
  const from = config.tlsReporting.from!;
  const reporter = new TlsReporter({
    table,
    resolver: deps.resolver,
    // Through compose like any mail: DKIM-signed (RFC 8460 §5.3.1) and queued durably.
    submit: (m) => deps.composer.submit({ ...m, source: 'system', metadata: { kind: 'tlsrpt' } }),
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
  return { collector, reporter };
}

function readFileCa(path: string): string {
  try {
    const pem = readFileSync(path, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (err) {
    throw new ConfigError(`LACRE_CA_FILE (tls.caFile) = ${JSON.stringify(path)}: ${(err as Error).message}`);
  }
}
