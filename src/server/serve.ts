// `lacre serve`: wires configuration, sealing, store, queue runner and listeners into one process
// and takes them down in order. May import every stage; nothing imports it but the CLI.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import { loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { Queue } from '../queue/queue.ts';
import { QueueRunner, type DeliveryAgent } from '../queue/runner.ts';
import { buildHttpServer, type HttpState } from './http.ts';

export interface RunningServer {
  httpUrl: string;
  queue: Queue;
  store: Store;
  stop(reason: string): Promise<void>;
}

export interface ServeOptions {
  config: Config;
  logger: Logger;
  /** The delivery stage; without one, messages wait in the queue. */
  agent?: DeliveryAgent;
}

export async function startServer({ config, logger, agent }: ServeOptions): Promise<RunningServer> {
  const keyring = loadKeyring(config);
  const sealer = new Sealer(keyring);
  const store = await Store.open({ dataDir: config.dataDir, sealer });
  const schedule = {
    minBackoffMs: config.queue.minBackoff,
    maxBackoffMs: config.queue.maxBackoff,
    maxAgeMs: config.queue.maxAge,
  };
  const queue = new Queue(store, schedule);
  const state: HttpState = { ready: false };
  const http = buildHttpServer({ logger, state });
  const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const runner = agent
    ? new QueueRunner({
        store,
        agent,
        logger: logger.child({ component: 'queue' }),
        workerId,
        leaseMs: config.queue.lease,
        pollIntervalMs: config.queue.pollInterval,
        concurrency: config.queue.concurrency,
        schedule,
      })
    : null;

  try {
    await http.listen({ host: config.http.host, port: config.http.port });
  } catch (err) {
    await store.close();
    throw err;
  }
  runner?.start();
  state.ready = true;
  const address = http.server.address();
  const port = typeof address === 'object' && address ? address.port : config.http.port;
  const host = config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host;
  const httpUrl = `http://${host}:${port}`;
  logger.info(
    { http: httpUrl, dataDir: config.dataDir, sealingKey: keyring.current.idHex, worker: workerId, delivery: !!runner },
    'lacre is serving',
  );

  let stopping: Promise<void> | null = null;
  return {
    httpUrl,
    queue,
    store,
    stop(reason: string) {
      stopping ??= (async () => {
        logger.info({ reason }, 'shutting down');
        state.ready = false;
        // Stop taking work first, then let in-flight deliveries finish or give their leases back,
        // and only then close the database they write to.
        await http.close();
        const result = runner ? await runner.stop(config.queue.shutdownGrace) : { finished: 0, released: 0 };
        await store.close();
        logger.info(result, 'stopped');
      })();
      return stopping;
    },
  };
}
