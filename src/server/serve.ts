// `lacre serve`: wires configuration, sealing, store and listeners into one process and takes them
// down in order. Intake (HTTP API, SMTP submission, the bounce receiver) runs on this thread; the
// delivery stage (queue runner, SMTP client, webhooks, TLS reporting) on a thread of its own
// (delivery-stage.ts), so both cores work.
import { hostname } from 'node:os';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import { lacreVersion } from '../config/version.ts';
import type { Logger } from '../log/logger.ts';
import { keyringSource, loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { eventRules } from '../events/derive.ts';
import { Queue } from '../queue/queue.ts';
import { buildHttpServer, type HttpState } from './http.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { SenderDomains, senderSettingsFrom } from '../domains/sender-domains.ts';
import { Composer } from '../compose/outgoing.ts';
import { preflight } from './preflight.ts';
import { registerApiRoutes } from './api.ts';
import { Webhooks } from '../events/webhooks.ts';
import { resolverLookup } from '../events/url-guard.ts';
import { startBounceReceiver, type BounceReceiver } from '../intake/bounce-receiver.ts';
import { startSubmission, type SubmissionListeners } from '../intake/smtp-submission.ts';
import { loadListenerCertificate } from '../intake/listener-cert.ts';
import { scheduleOf } from './delivery-stage.ts';
import { policySourcesFrom, resolverFrom } from './wiring.ts';
import { startDeliveryThread, type DeliveryThread } from './delivery-thread.ts';
import { IntakeMetrics } from './metrics.ts';
import { readiness } from './health.ts';
import { queueActionsFrom } from './queue-actions.ts';

/** How long /healthz and /metrics wait for the delivery thread's answer. */
const DELIVERY_STATUS_TIMEOUT_MS = 2_000;

export interface RunningServer {
  httpUrl: string;
  queue: Queue;
  store: Store;
  domains: SenderDomains;
  composer: Composer;
  stop(reason: string): Promise<void>;
}

export interface ServeOptions {
  config: Config;
  logger: Logger;
}

export async function startServer({ config, logger }: ServeOptions): Promise<RunningServer> {
  // Before anything starts: a missing CA file, a bad PEM pair or plain HTTP off loopback is a
  // configuration error naming the setting, not a delivery failure later.
  const { ca, https: httpsOptions, warnings } = await preflight(config);
  for (const warning of warnings) logger.warn({ setting: warning.split(' ')[0] }, warning);
  const keyring = loadKeyring(config);
  const sealer = new Sealer(keyring, { source: keyringSource(config) });
  const store = await Store.open({ dataDir: config.dataDir, sealer, events: eventRules });
  const keys = new ApiKeys(store);
  const state: HttpState = { ready: false };
  const http = buildHttpServer({ logger, state, https: httpsOptions, keys });
  const metrics = new IntakeMetrics(store);
  countHttp(http, metrics);
  // Teardown is fastify's: each part registers an onClose hook as it is wired, and http.close()
  // runs them in reverse (fastify stops taking HTTP requests first, then the other listeners stop,
  // then delivery, and the store closes last), every one even when an earlier one threw.
  http.addHook('onClose', async () => {
    logger.info({ thread: 'intake', database: store.engine.stats }, 'database statistics');
    await store.close();
  });
  // Set once the delivery thread runs; intake that commits before then is found by its first claim.
  let delivery: DeliveryThread | null = null;
  let stopped: Record<string, unknown> | null = null;
  let submission: SubmissionListeners;
  let bounces: BounceReceiver | null = null;
  const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  let stopping: Promise<void> | null = null;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ reason }, 'shutting down');
      state.ready = false;
      await http.close();
      logger.info(stopped ?? {}, 'stopped');
    })();
    return stopping;
  };
  let queue: Queue;
  let domains: SenderDomains;
  let composer: Composer;
  let policy: ReturnType<typeof policySourcesFrom>;
  try {
    queue = new Queue(store, scheduleOf(config));
    const resolver = resolverFrom(config);
    policy = policySourcesFrom(config, {
      store,
      resolver,
      ca,
      logger: logger.child({ component: 'mta-sts' }),
      onStaticPoliciesChanged: () => delivery?.staticPoliciesChanged(),
    });
    domains = new SenderDomains({
      store,
      resolver,
      settings: senderSettingsFrom(config),
      rotationGraceMs: config.senders.dkimRotationGrace,
    });
    composer = new Composer({ queue, domains, tag: (id) => sealer.lookupHash('return-path', id) });
    await registerApiRoutes(http, {
      domains,
      composer,
      store,
      tlsPolicyTable: policy.tlsPolicyTable,
      staticPolicies: policy.staticPolicies,
      webhooks: new Webhooks(store, { lookup: resolverLookup(resolver), allowLoopback: config.webhooks.allowLoopback }),
      onQueued: () => delivery?.nudge(),
      version: lacreVersion(),
      queueActions: queueActionsFrom(store, config, () => delivery?.nudge()),
      metrics: {
        intake: metrics,
        delivery: async () => {
          const answer = delivery ? await delivery.status(DELIVERY_STATUS_TIMEOUT_MS) : null;
          return answer?.status?.metrics ?? null;
        },
      },
    });
    // Delivery is wired before the listeners so that it stops after them: in-flight deliveries
    // finish or give their leases back once nothing new can arrive, and before the store closes.
    const thread = await startDeliveryThread({
      config,
      ca,
      workerId,
      logger,
      onDeath: (err) => {
        // Accepting mail that nothing delivers would be worse than stopping: a supervisor restarts us.
        logger.fatal({ err: { message: err.message } }, 'the delivery thread died; stopping');
        process.exitCode = 1;
        void stop('delivery thread died').finally(() => process.exit(1));
      },
    });
    delivery = thread;
    state.readiness = async () =>
      readiness({
        serving: state.ready,
        store: store.engine.writeHealth(),
        keyring: sealer.refresh(true),
        delivery: await thread.status(DELIVERY_STATUS_TIMEOUT_MS),
        now: Date.now(),
      });
    http.addHook('onClose', async () => {
      stopped = await thread.stop(config.queue.shutdownGrace).catch((err: Error) => {
        logger.error({ err: { message: err.message } }, 'the delivery thread did not stop cleanly; its leases will expire');
        return null;
      });
    });
    if (config.bounces.port !== undefined) {
      // STARTTLS for the bounces too: they quote the original headers. A self-signed certificate
      // is enough here: senders to an MX encrypt opportunistically and do not verify (RFC 7435).
      const cert = await loadListenerCertificate({ dataDir: config.dataDir, hostname: config.hostname, name: 'bounces' });
      const receiver = await startBounceReceiver({
        tls: { cert: cert.cert, key: cert.key },
        host: config.bounces.host,
        port: config.bounces.port,
        hostname: config.hostname,
        store,
        localPart: config.senders.returnPathLocalPart,
        tag: (id) => sealer.lookupHash('return-path', id),
        logger: logger.child({ component: 'bounces' }),
      });
      bounces = receiver;
      http.addHook('onClose', async () => receiver.close());
    }
    const listeners = await startSubmission({
      config: { ...config.submission, hostname: config.hostname, dataDir: config.dataDir },
      keys,
      composer,
      domains,
      store,
      logger: logger.child({ component: 'submission' }),
      onQueued: () => delivery?.nudge(),
      closeGraceMs: config.queue.shutdownGrace,
      observer: {
        connectionOpened: () => metrics.connectionOpened('smtp'),
        connectionClosed: () => metrics.connectionClosed('smtp'),
        authFailed: () => metrics.authFailed('smtp'),
        submitted: (result) => metrics.submitted('smtp', result),
      },
    });
    submission = listeners;
    http.addHook('onClose', async () => listeners.close(config.queue.shutdownGrace));
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
    http.addHook('onClose', async () => {
      clearInterval(recheck);
      clearInterval(stsRefresh);
    });
    // Last: the HTTP API answers once everything behind it runs.
    await http.listen({ host: config.http.host, port: config.http.port });
  } catch (err) {
    // Whatever was wired is taken down by its hook; the start-up error is the one to report.
    await http.close().catch((closeErr: Error) => logger.error({ err: { message: closeErr.message } }, 'teardown after a failed start failed'));
    throw err;
  }
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

  return { httpUrl, queue, store, domains, composer, stop };
}

/**
 * The HTTP side of the intake metrics, from outside the routes: connections as the server sees
 * them, a send request by its answer (2xx accepted, else refused), a 401 as a failed authentication.
 */
function countHttp(http: FastifyInstance, metrics: IntakeMetrics): void {
  http.server.on('connection', (socket: Socket) => {
    metrics.connectionOpened('http');
    socket.once('close', () => metrics.connectionClosed('http'));
  });
  http.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode === 401) metrics.authFailed('http');
    if (request.method === 'POST' && request.routeOptions.url === '/v3.1/send') {
      metrics.submitted('http', reply.statusCode < 300 ? 'accepted' : 'refused');
    }
  });
}
