// `npm run bench`: end-to-end delivery throughput of `lacre serve` on loopback.
// N messages (default 2000, ~3 KB, one destination) are accepted into the queue and delivered by a
// real `lacre serve` process under the `encrypt` TLS policy to a harness TLS sink. Prints messages
// per second end to end, p50/p99 time from accept to delivery, TLS handshakes made, and the
// server's peak RSS. Usage: npm run bench [-- N]
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TestCA } from '../test/harness/ca.ts';
import { startSmtpSink } from '../test/harness/smtp-sink.ts';
import { startServeProcess } from '../test/harness/serve-process.ts';
import { openTempData, tempDir } from '../test/harness/temp-data.ts';

const N = Number(process.argv[2] ?? process.env.BENCH_MESSAGES ?? 2000);
if (!Number.isInteger(N) || N < 1 || N > 1_000_000) {
  console.error(`bench: message count must be an integer from 1 to 1000000, got ${process.argv[2]}`);
  process.exit(2);
}
const DOMAIN = 'bench.test';

function messageBytes(i: number): Buffer {
  const filler = randomBytes(2200).toString('base64').replace(/(.{76})/g, '$1\r\n');
  return Buffer.from(
    [
      `From: Bench <bench@sender.test>`,
      `To: <rcpt${i}@${DOMAIN}>`,
      `Subject: benchmark message ${i}`,
      `Message-ID: <bench-${i}@sender.test>`,
      `X-Bench-Id: ${i}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      filler,
      '',
    ].join('\r\n'),
  );
}

/** User + system CPU seconds of a process so far, from /proc (Linux). */
function cpuSeconds(pid: number): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Math.round(((Number(fields[11]) + Number(fields[12])) / 100) * 10) / 10;
  } catch {
    return null;
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

const ca = await TestCA.create();
const cert = await ca.issue({ names: ['127.0.0.1', 'mx.bench.test'] });
const messages = Array.from({ length: N }, (_, i) => messageBytes(i));

interface PhaseResult {
  seconds: number;
  perSecond: number;
  enqueuePerSecond: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  smtpSessions: number;
  tlsHandshakes: number;
  tlsProtocols: string;
  serverPeakRssMiB: number | null;
  serverCpuSeconds: number | null;
}

/**
 * live: the server runs while this process queues the messages (accept-to-delivery latency).
 * drain: the queue is filled first, then the server starts (delivery throughput on its own).
 */
async function phase(mode: 'live' | 'drain'): Promise<PhaseResult> {
  const sink = await startSmtpSink({ tls: 'starttls', cert, hostname: 'mx.bench.test' });
  const dataDir = tempDir('lacre-bench-');
  const env = {
    LACRE_DATA_DIR: dataDir,
    LACRE_LOG_LEVEL: 'warn',
    LACRE_ROUTES: `${DOMAIN}=127.0.0.1:${sink.port}`,
    LACRE_TLS_POLICIES: `${DOMAIN}=encrypt`,
    LACRE_CA_FILE: await ca.writeCaFile(dataDir),
    LACRE_HOSTNAME: 'bench.lacre.test',
    // Work is queued by this process, so the server finds it by polling; intake in the server
    // itself (the HTTP API, SMTP submission) wakes the runner at once instead.
    LACRE_QUEUE_POLL_INTERVAL: '20ms',
    LACRE_QUEUE_CONCURRENCY: '64',
    LACRE_DELIVERY_DESTINATION_CONCURRENCY: '16',
    LACRE_DELIVERY_MAX_MESSAGES_PER_CONNECTION: '1000',
  };
  const acceptedAt = new Map<string, number>();
  const deliveredAt = new Map<string, number>();
  let seen = 0;
  const stamp = () => {
    const received = sink.messages();
    const now = performance.timeOrigin + performance.now();
    for (; seen < received.length; seen++) {
      const id = /X-Bench-Id: (\d+)/.exec(received[seen].data.toString('latin1'))?.[1];
      if (id && !deliveredAt.has(id)) deliveredAt.set(id, now);
    }
    return deliveredAt.size >= N;
  };
  const data = await openTempData({ dataDir });
  const enqueueAll = async () => {
    const started = performance.now();
    for (let i = 0; i < N; i++) {
      await data.queue.enqueue({ sender: 'bounces@sender.test', recipients: [`rcpt${i}@${DOMAIN}`], content: messages[i], source: 'api' });
      acceptedAt.set(String(i), performance.timeOrigin + performance.now());
    }
    return Math.round(N / ((performance.now() - started) / 1000));
  };
  let enqueuePerSecond: number | null = null;
  if (mode === 'drain') await enqueueAll();
  const server = await startServeProcess(env);
  const startedAt = performance.timeOrigin + performance.now();
  const delivered = sink.waitFor(stamp, 15 * 60_000, `${N} deliveries`);
  if (mode === 'live') enqueuePerSecond = await enqueueAll();
  await delivered;
  const peakRss = server.peakRss();
  const serverCpuSeconds = cpuSeconds(server.pid);
  await server.stop();
  await data.close();
  await sink.close();
  const lastDelivery = Math.max(...deliveredAt.values());
  const begin = mode === 'live' ? Math.min(...acceptedAt.values()) : startedAt;
  const latencies = mode === 'live' ? [...deliveredAt].map(([id, t]) => t - acceptedAt.get(id)!).sort((a, b) => a - b) : [];
  return {
    seconds: Math.round((lastDelivery - begin) / 10) / 100,
    perSecond: Math.round(N / ((lastDelivery - begin) / 1000)),
    enqueuePerSecond,
    p50Ms: latencies.length ? Math.round(percentile(latencies, 50)) : null,
    p99Ms: latencies.length ? Math.round(percentile(latencies, 99)) : null,
    smtpSessions: sink.sessions.length,
    tlsHandshakes: sink.sessions.filter((s) => s.tls).length,
    tlsProtocols: [...new Set(sink.sessions.map((s) => s.tlsProtocol))].join(','),
    serverPeakRssMiB: peakRss === null ? null : Math.round(peakRss / 1048576),
    serverCpuSeconds,
  };
}

const live = await phase('live');
const drain = await phase('drain');
const result = { messages: N, messageBytes: messages[0].length, live, drain };
console.log(
  [
    `messages            ${N} x ${messages[0].length} bytes, policy encrypt, one destination, loopback`,
    `live (accept while delivering; queued from a second process, one durable commit each)`,
    `  accepted          ${live.enqueuePerSecond} msg/s`,
    `  end to end        ${live.perSecond} msg/s (first accept to last delivery, ${live.seconds} s)`,
    `  accept->delivery  p50 ${live.p50Ms} ms, p99 ${live.p99Ms} ms`,
    `  SMTP sessions     ${live.smtpSessions} (${live.tlsHandshakes} TLS handshakes, ${live.tlsProtocols})`,
    `  server            peak RSS ${live.serverPeakRssMiB} MiB, CPU ${live.serverCpuSeconds} s`,
    `drain (queue filled first, then the server started)`,
    `  delivered         ${drain.perSecond} msg/s (${drain.seconds} s)`,
    `  SMTP sessions     ${drain.smtpSessions} (${drain.tlsHandshakes} TLS handshakes)`,
    `  server            peak RSS ${drain.serverPeakRssMiB} MiB, CPU ${drain.serverCpuSeconds} s`,
  ].join('\n'),
);
console.log(JSON.stringify(result));
