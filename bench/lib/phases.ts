// One measurement: a fresh data dir, a fresh sink, a `lacre serve` child on its defaults, one
// client run, and the numbers. Every phase ends by its own deadline even if the server never
// delivers.
import type { ServeProcess } from '../../test/harness/serve-process.ts';
import { openTempData } from '../../test/harness/temp-data.ts';
import { benchMessages, rawMessage, sendHttp, sendSmtp, type BenchMessage, type ClientRun } from './clients.ts';
import { forkSink, type BenchSink } from './sink.ts';
import { cpuMs, now, peakRssMiB, percentile, round, rssMiB, sleep } from './util.ts';
import { DEFER_DOMAIN, LACRE_HOSTNAME, SINK_DOMAIN, SINK_HOST, dropDataDir, startLacre, type World } from './world.ts';

export interface PhaseResult {
  label: string;
  messages: number;
  accepted: number;
  delivered: number;
  failed: number;
  errors: string[];
  /** The phase hit its time limit before every message was delivered (or accepted). */
  timedOut: boolean;
  /** Accepted messages per second, from the first request/session to the last accept. */
  acceptPerSec: number | null;
  /** Delivered messages per second, from the first accept to the last delivery at the sink. */
  deliveredPerSec: number | null;
  seconds: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  sinkSessions: number | null;
  tlsHandshakes: number | null;
  tlsProtocols: string[];
  /** As received by the sink (DKIM signatures and trace fields included). */
  messageBytes: number | null;
  /** Server user+system CPU per delivered (or, without delivery, accepted) message. */
  cpuMsPerMessage: number | null;
  peakRssMiB: number | null;
  /** Sending pace of a paced run, msg/s. */
  pace?: number;
  /**
   * Per message (as cpuMsPerMessage), each thread's database work over the server's life: commits,
   * WAL syncs, statements run, statements prepared (from its "database statistics" log lines).
   */
  database?: Record<string, Record<string, number>>;
}

export interface PhaseOptions {
  label: string;
  via: 'http' | 'smtp';
  count: number;
  /** Where the recipients are: the sink (delivered) or a closed port (accepted, then deferred). */
  destination: 'sink' | 'defer';
  timeLimitMs: number;
  rate?: number;
  /** Called with the running server and sink, for scenarios that sample something more. */
  log?: (line: string) => void;
}

const tagCounter = { n: 0 };
const newTag = () => `b${process.pid.toString(36)}${(++tagCounter.n).toString(36)}`;

/** Servers running now, so a signal handler can end them (by their own pid) before the bench exits. */
export const liveServers = new Set<ServeProcess>();

async function startServer(world: World, dataDir: string, sinkPort: number): Promise<ServeProcess> {
  const server = await startLacre(world, dataDir, sinkPort);
  liveServers.add(server);
  return server;
}

/** Stops the server; kills it if it does not stop in time. */
export async function stopServer(server: ServeProcess): Promise<void> {
  await server.stop(20_000).catch(async () => {
    await server.kill();
  });
  liveServers.delete(server);
}

/** Stops the server and adds each thread's database statistics, per message, to `result`. */
async function stopAndCount(server: ServeProcess, result: PhaseResult, per: number): Promise<void> {
  await stopServer(server);
  if (per <= 0) return;
  const database: Record<string, Record<string, number>> = {};
  for (const line of server.output().split('\n')) {
    if (!line.includes('"database statistics"')) continue;
    try {
      const entry = JSON.parse(line) as { thread: string; database?: Record<string, number> };
      if (entry.database) database[entry.thread] = Object.fromEntries(Object.entries(entry.database).map(([k, v]) => [k, round(v / per, 2)!]));
    } catch {
      // Not a whole JSON line (output interleaved): that thread's figures are left out.
    }
  }
  if (Object.keys(database).length) result.database = database;
}

/** For signal handlers: SIGKILL every server still running. */
export async function killServers(): Promise<void> {
  for (const server of [...liveServers]) await server.kill().catch(() => {});
  liveServers.clear();
}

/** [min, max] of some numbers, or [null, null]. */
export function range(values: Iterable<number>): [number, number] | [null, null] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo === Infinity ? [null, null] : [lo, hi];
}

export function summarize(
  label: string,
  messages: BenchMessage[],
  run: ClientRun | null,
  deliveredAt: Map<string, number> | null,
  extra: Partial<PhaseResult>,
): PhaseResult {
  const accepted = run ? run.acceptedAt.size : messages.length;
  const [firstAccept, lastAccept] = range(run ? run.acceptedAt.values() : []);
  const [, lastDelivery] = range(deliveredAt ? deliveredAt.values() : []);
  const latencies: number[] = [];
  if (run && deliveredAt) {
    for (const [id, t] of deliveredAt) {
      const a = run.acceptedAt.get(id);
      if (a !== undefined) latencies.push(t - a);
    }
  }
  latencies.sort((a, b) => a - b);
  const delivered = deliveredAt ? deliveredAt.size : 0;
  const begin = extra.seconds === undefined ? firstAccept : null;
  const span = begin !== null && lastDelivery !== null ? lastDelivery - begin : null;
  return {
    label,
    messages: messages.length,
    accepted,
    delivered,
    failed: run?.failed ?? 0,
    errors: run?.errors ?? [],
    timedOut: false,
    acceptPerSec: run && lastAccept !== null && accepted > 0 ? round(accepted / ((lastAccept - run.startedAt) / 1000)) : null,
    deliveredPerSec: span !== null && span > 0 ? round(delivered / (span / 1000)) : null,
    seconds: span !== null ? round(span / 1000, 2) : null,
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    maxMs: round(latencies.at(-1) ?? null),
    sinkSessions: null,
    tlsHandshakes: null,
    tlsProtocols: [],
    messageBytes: null,
    cpuMsPerMessage: null,
    peakRssMiB: null,
    ...extra,
  };
}

async function sinkFacts(sink: BenchSink): Promise<Partial<PhaseResult>> {
  const s = await sink.stats();
  return { sinkSessions: s.sessions, tlsHandshakes: s.tlsHandshakes, tlsProtocols: s.tlsProtocols, messageBytes: s.firstMessageBytes };
}

/** Messages through HTTP or SMTP submission into a fresh server, delivered to a fresh sink (or deferred). */
export async function clientPhase(world: World, o: PhaseOptions): Promise<PhaseResult> {
  const deadline = now() + o.timeLimitMs;
  const domain = o.destination === 'sink' ? SINK_DOMAIN : DEFER_DOMAIN;
  const messages = benchMessages(newTag(), o.count, domain);
  const sink = await forkSink({ cert: world.sinkCert, hostname: SINK_HOST });
  const dataDir = world.newDataDir();
  let server: ServeProcess | null = null;
  try {
    server = await startServer(world, dataDir, sink.port);
    const cpuBefore = cpuMs(server.pid) ?? 0;
    let run: ClientRun;
    if (o.via === 'http') {
      run = await sendHttp(server.url, world.key, messages, { deadline, rate: o.rate, batch: 50, concurrency: 4 });
    } else {
      const ports = server.submission();
      if (!ports) throw new Error('the server did not log its submission ports ("SMTP submission listening", needs log level info)');
      run = await sendSmtp(
        { host: '127.0.0.1', port: ports.starttls, ca: world.ca.certPem, servername: LACRE_HOSTNAME, auth: { user: world.key.apiKey, pass: world.key.secretKey } },
        messages,
        { deadline, rate: o.rate, sessions: 20 },
      );
    }
    let complete = run.acceptedAt.size === messages.length;
    if (o.destination === 'sink') complete = (await sink.waitFor(run.acceptedAt.keys(), deadline)) && complete;
    const cpuAfter = cpuMs(server.pid) ?? 0;
    const facts = o.destination === 'sink' ? await sinkFacts(sink) : {};
    const peak = peakRssMiB(server.pid);
    const per = o.destination === 'sink' ? sink.deliveredAt.size : run.acceptedAt.size;
    const result = summarize(o.label, messages, run, o.destination === 'sink' ? sink.deliveredAt : null, {
      ...facts,
      timedOut: !complete,
      cpuMsPerMessage: per > 0 ? round((cpuAfter - cpuBefore) / per, 2) : null,
      peakRssMiB: peak,
      ...(o.rate ? { pace: round(o.rate, 1)! } : {}),
    });
    if (sink.unexpected) result.errors.push(`${sink.unexpected} deliveries without a known X-Bench-Id or duplicated`);
    const stopping = server;
    server = null;
    await stopAndCount(stopping, result, per);
    return result;
  } finally {
    if (server) await stopServer(server);
    await sink.close();
    dropDataDir(dataDir);
  }
}

/** Commits messages straight into a data dir before any server runs (through the harness's openTempData). */
export async function prefill(dataDir: string, messages: BenchMessage[], deadline: number, sender = 'bench@sender.test'): Promise<number> {
  const data = await openTempData({ dataDir });
  let next = 0;
  let done = 0;
  try {
    const worker = async () => {
      while (next < messages.length && now() < deadline) {
        const m = messages[next++];
        await data.queue.enqueue({ sender, recipients: [m.to], content: rawMessage(m), source: 'api' });
        done++;
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
  } finally {
    await data.close();
  }
  return done;
}

/** Flatness: N messages committed to the queue first, then the server started: its delivery rate on its own. */
export async function drainPhase(world: World, label: string, count: number, timeLimitMs: number, log: (s: string) => void): Promise<PhaseResult> {
  const messages = benchMessages(newTag(), count, SINK_DOMAIN);
  const sink = await forkSink({ cert: world.sinkCert, hostname: SINK_HOST });
  const dataDir = world.newDataDir();
  let server: ServeProcess | null = null;
  try {
    const t0 = now();
    const filled = await prefill(dataDir, messages, now() + timeLimitMs);
    log(`  ${label}: ${filled} messages committed to the queue in ${round((now() - t0) / 1000, 1)} s; starting the server`);
    const deadline = now() + timeLimitMs;
    server = await startServer(world, dataDir, sink.port);
    const startedAt = now();
    const cpuBefore = cpuMs(server.pid) ?? 0;
    const complete = await sink.waitFor(messages.slice(0, filled).map((m) => m.id), deadline);
    const cpuAfter = cpuMs(server.pid) ?? 0;
    const facts = await sinkFacts(sink);
    const delivered = sink.deliveredAt.size;
    // The queue runner starts a moment before /healthz answers: begin at whichever came first.
    const [first, last] = range(sink.deliveredAt.values());
    const span = last !== null ? last - Math.min(startedAt, first) : null;
    const result = summarize(label, messages.slice(0, filled), null, sink.deliveredAt, {
      ...facts,
      accepted: filled,
      timedOut: !complete || filled < count,
      seconds: span !== null ? round(span / 1000, 2) : null,
      deliveredPerSec: span ? round(delivered / (span / 1000)) : null,
      cpuMsPerMessage: delivered ? round((cpuAfter - cpuBefore) / delivered, 2) : null,
      peakRssMiB: peakRssMiB(server.pid),
    });
    const stopping = server;
    server = null;
    await stopAndCount(stopping, result, delivered);
    return result;
  } finally {
    if (server) await stopServer(server);
    await sink.close();
    dropDataDir(dataDir);
  }
}

export interface MemoryResult {
  queued: number;
  fillSeconds: number | null;
  workSeconds: number;
  rssAtReadyMiB: number | null;
  rssAtEndMiB: number | null;
  peakRssMiB: number | null;
  /** VmHWM sampled every second while the server worked. */
  samples: Array<{ s: number; hwmMiB: number | null }>;
  timedOut: boolean;
  targetMiB: number;
}

/** Queue memory: `count` messages to a deferring destination in the queue, then the server works on them for `workMs`. */
export async function memoryPhase(world: World, count: number, workMs: number, timeLimitMs: number, log: (s: string) => void): Promise<MemoryResult> {
  const messages = benchMessages(newTag(), count, DEFER_DOMAIN);
  const dataDir = world.newDataDir();
  let server: ServeProcess | null = null;
  try {
    const t0 = now();
    const filled = await prefill(dataDir, messages, now() + timeLimitMs);
    const fillSeconds = round((now() - t0) / 1000, 1);
    log(`  memory: ${filled} messages committed to the queue in ${fillSeconds} s; the server works on them for ${workMs / 1000} s`);
    messages.length = 0;
    server = await startServer(world, dataDir, world.closedPort);
    const rssAtReadyMiB = rssMiB(server.pid);
    const samples: MemoryResult['samples'] = [];
    const started = now();
    for (let i = 1; i <= Math.ceil(workMs / 1000); i++) {
      await sleep(Math.max(0, started + i * 1000 - now()));
      samples.push({ s: i, hwmMiB: peakRssMiB(server.pid) });
    }
    return {
      queued: filled,
      fillSeconds,
      workSeconds: round((now() - started) / 1000, 1)!,
      rssAtReadyMiB,
      rssAtEndMiB: rssMiB(server.pid),
      peakRssMiB: peakRssMiB(server.pid),
      samples,
      timedOut: filled < count,
      targetMiB: 300,
    };
  } finally {
    if (server) await stopServer(server);
    dropDataDir(dataDir);
  }
}
