// The delivery half of the server for end-to-end tests: a store and queue (a temp data dir unless
// the test brings its own), the real SmtpDeliveryAgent and QueueRunner wired as serve wires them
// (bounces composed as DSNs), and optionally one harness sink for the recipients' MX. DNS is the
// test's: it passes the resolver pointed at its FakeDnsServer or validating resolver.
// close() undoes it in reverse order: runner, agent (pooled connections), sink, then the data the
// rig opened itself.
import { createLogger } from '../../src/log/logger.ts';
import type { Resolver } from '../../src/dns/resolver.ts';
import { SmtpDeliveryAgent, type AgentOptions } from '../../src/delivery/agent.ts';
import { QueueRunner, type RunnerOptions } from '../../src/queue/runner.ts';
import { BounceComposer } from '../../src/compose/bounces.ts';
import type { StaticTlsLevel } from '../../src/tls-policy/levels.ts';
import type { RetrySchedule } from '../../src/queue/retry-policy.ts';
import { startSmtpSink, type SmtpSink, type SmtpSinkOptions } from './smtp-sink.ts';
import { openTempData, type TempData } from './temp-data.ts';

/** Short enough that a test about a stalled peer ends quickly, long enough for a loaded CI machine. */
export const TEST_TIMEOUTS: AgentOptions['timeouts'] = { connect: 2_000, greeting: 3_000, command: 3_000, dataInit: 3_000, dataBlock: 3_000, dataDone: 3_000 };

export interface DeliveryRigOptions {
  resolver: Resolver;
  /** Extra trusted CA certificates (PEM): the test CA. */
  ca: string[];
  /** Deliver from this store and queue; the rig opens a temp data dir (and removes it) when absent. */
  data?: TempData;
  /** Retry schedule of the temp data dir the rig opens. */
  schedule?: RetrySchedule;
  /** Start one sink and send every MX connection to its port. */
  sink?: SmtpSinkOptions;
  /** The MX port when the test runs its own sinks; 25 otherwise. */
  smtpPort?: number;
  /** Static routes, domain → `host:port`. */
  routes?: Record<string, string>;
  policies?: Record<string, StaticTlsLevel>;
  /** EHLO name and the DSN reporting host. */
  hostname?: string;
  workerId?: string;
  /** The runner's and the agent's per-destination limit. */
  destinationConcurrency?: number;
  /** The runner's batches in flight. */
  concurrency?: number;
  /** Runner's safety-net poll. */
  pollIntervalMs?: number;
  /** Anything else of the agent's options (sources, onTlsSession, idleTimeoutMs, …). */
  agent?: Partial<AgentOptions>;
  /** Start the runner at once (default); false leaves runner.start() to the test. */
  start?: boolean;
}

export interface DeliveryRig {
  data: TempData;
  agent: SmtpDeliveryAgent;
  runner: QueueRunner;
  /** The sink started for `options.sink`, if any. */
  sink: SmtpSink | undefined;
  close(): Promise<void>;
}

export async function startDeliveryRig(options: DeliveryRigOptions): Promise<DeliveryRig> {
  const ownData = options.data === undefined;
  const data = options.data ?? (await openTempData(options.schedule ? { schedule: options.schedule } : {}));
  const sink = options.sink ? await startSmtpSink(options.sink) : undefined;
  const hostname = options.hostname ?? 'mta.lacre.test';
  const destinationConcurrency = options.destinationConcurrency ?? 2;
  const logger = createLogger({ level: 'silent' });
  const routes = new Map(
    Object.entries(options.routes ?? {}).map(([domain, hostPort]) => {
      const [host, port] = hostPort.split(':');
      return [domain, { host, port: Number(port) }];
    }),
  );
  const agent = new SmtpDeliveryAgent({
    resolver: options.resolver,
    routes,
    smtpPort: sink?.port ?? options.smtpPort ?? 25,
    policies: new Map(Object.entries(options.policies ?? {})),
    defaultPolicy: 'may',
    ehloName: hostname,
    ca: options.ca,
    timeouts: TEST_TIMEOUTS,
    destinationConcurrency,
    maxMessagesPerConnection: 10,
    idleTimeoutMs: 1_000,
    logger,
    ...options.agent,
  });
  const runnerOptions: RunnerOptions = {
    store: data.store,
    agent,
    logger,
    workerId: options.workerId ?? 'delivery-rig',
    leaseMs: 10_000,
    pollIntervalMs: options.pollIntervalMs ?? 10,
    concurrency: options.concurrency ?? 4,
    destinationConcurrency,
    schedule: data.queue.schedule,
    finalFailures: new BounceComposer(data.queue, hostname),
  };
  const runner = new QueueRunner(runnerOptions);
  if (options.start !== false) runner.start();
  let closed = false;
  return {
    data,
    agent,
    runner,
    sink,
    async close() {
      if (closed) return;
      closed = true;
      await runner.stop(2_000);
      await agent.close();
      await sink?.close();
      if (ownData) await data.close();
    },
  };
}
