// `npm run bench`: end-to-end delivery throughput of `lacre serve` on loopback.
// N messages (default 2000, ~3 KB, one destination) are accepted into the queue and delivered by a
// real `lacre serve` process under the `encrypt` TLS policy to a harness TLS sink. Prints messages
// per second end to end, p50/p99 time from accept to delivery, TLS handshakes made, and the
// server's peak RSS. Usage: npm run bench [-- N]
import { randomBytes } from 'node:crypto';
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
  const filler = randomBytes(1100).toString('base64').replace(/(.{76})/g, '$1\r\n');
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

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

const ca = await TestCA.create();
const cert = await ca.issue({ names: ['127.0.0.1', 'mx.bench.test'] });
const sink = await startSmtpSink({ tls: 'starttls', cert, hostname: 'mx.bench.test' });
const dataDir = tempDir('lacre-bench-');
const caFile = await ca.writeCaFile(dataDir);
const server = await startServeProcess({
  LACRE_DATA_DIR: dataDir,
  LACRE_LOG_LEVEL: 'warn',
  LACRE_ROUTES: `${DOMAIN}=127.0.0.1:${sink.port}`,
  LACRE_TLS_POLICIES: `${DOMAIN}=encrypt`,
  LACRE_CA_FILE: caFile,
  LACRE_HOSTNAME: 'bench.lacre.test',
  // Work is queued by this process, so the server finds it by polling; intake in the server itself
  // wakes the runner at once instead.
  LACRE_QUEUE_POLL_INTERVAL: '20ms',
  LACRE_QUEUE_CONCURRENCY: '40',
  LACRE_DELIVERY_DESTINATION_CONCURRENCY: '8',
  LACRE_DELIVERY_MAX_MESSAGES_PER_CONNECTION: '1000',
});

const acceptedAt = new Map<string, number>();
const deliveredAt = new Map<string, number>();
let seen = 0;
const stamp = () => {
  const messages = sink.messages();
  const now = performance.now() + performance.timeOrigin;
  for (; seen < messages.length; seen++) {
    const id = /X-Bench-Id: (\d+)/.exec(messages[seen].data.toString('latin1'))?.[1];
    if (id && !deliveredAt.has(id)) deliveredAt.set(id, now);
  }
  return deliveredAt.size >= N;
};

const data = await openTempData({ dataDir });
const started = Date.now();
const delivered = sink.waitFor(stamp, 15 * 60_000, `${N} deliveries`);
const messages = Array.from({ length: N }, (_, i) => messageBytes(i));
for (let i = 0; i < N; i++) {
  await data.queue.enqueue({ sender: 'bounces@sender.test', recipients: [`rcpt${i}@${DOMAIN}`], content: messages[i], source: 'api' });
  acceptedAt.set(String(i), performance.now() + performance.timeOrigin);
}
const enqueueSeconds = (Date.now() - started) / 1000;
await delivered;
const peakRss = server.peakRss();
const latencies = [...deliveredAt].map(([id, t]) => t - acceptedAt.get(id)!).sort((a, b) => a - b);
const firstAccept = Math.min(...acceptedAt.values());
const lastDelivery = Math.max(...deliveredAt.values());
const sessions = sink.sessions.length;
const tlsHandshakes = sink.sessions.filter((s) => s.tls).length;
const protocols = [...new Set(sink.sessions.map((s) => s.tlsProtocol))].join(',');
await server.stop();
await data.close();
await sink.close();

const result = {
  messages: N,
  messageBytes: messages[0].length,
  enqueuePerSecond: Math.round(N / enqueueSeconds),
  endToEndPerSecond: Math.round(N / ((lastDelivery - firstAccept) / 1000)),
  p50Ms: Math.round(percentile(latencies, 50)),
  p99Ms: Math.round(percentile(latencies, 99)),
  smtpSessions: sessions,
  tlsHandshakes,
  tlsProtocols: protocols,
  serverPeakRssMiB: peakRss === null ? null : Math.round(peakRss / 1048576),
};
console.log(
  [
    `messages            ${result.messages} x ${result.messageBytes} bytes, policy encrypt, one destination`,
    `accepted            ${result.enqueuePerSecond} msg/s (durable commit each, from a second process)`,
    `end to end          ${result.endToEndPerSecond} msg/s (first accept to last delivery)`,
    `accept -> delivery  p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms`,
    `SMTP sessions       ${result.smtpSessions} (${result.tlsHandshakes} TLS handshakes, ${result.tlsProtocols})`,
    `server peak RSS     ${result.serverPeakRssMiB} MiB`,
  ].join('\n'),
);
console.log(JSON.stringify(result));
