// The benchmark's receiving MX, in a process of its own so that the clients' work in the bench
// process never delays the moment a delivery is stamped. It runs the harness sink
// (test/harness/smtp-sink.ts) with STARTTLS and a test-CA certificate, and reports every message
// it accepted as [X-Bench-Id, epoch ms] over IPC, batched every few milliseconds.
//
// Parent → child: { type: 'stats' } | { type: 'close' }
// Child → parent: { type: 'ready', port } | { type: 'delivered', items } | { type: 'stats', ... }
import { writeFileSync } from 'node:fs';
import { startSmtpSink, type SinkSession, type SinkReply } from '../../test/harness/smtp-sink.ts';
import type { IssuedCert } from '../../test/harness/ca.ts';

export interface SinkChildOptions {
  cert: IssuedCert;
  hostname: string;
  /** Answer every RCPT with this (e.g. 451) instead of accepting. */
  rcptReply?: SinkReply;
}

export interface SinkStats {
  type: 'stats';
  sessions: number;
  tlsHandshakes: number;
  tlsProtocols: string[];
  messages: number;
  /** Size of the first message received, as received (DKIM signatures and trace fields included). */
  firstMessageBytes: number | null;
  errors: string[];
}

const now = () => performance.timeOrigin + performance.now();
const send = (message: unknown) => process.send?.(message);

const options = JSON.parse(process.argv[2] ?? '{}') as SinkChildOptions;
// Certificates crossed the process boundary as JSON: Buffers and Dates arrive as plain data,
// and only the PEM fields are used by the sink.
const sink = await startSmtpSink({
  tls: 'starttls',
  cert: options.cert,
  hostname: options.hostname,
  ...(options.rcptReply ? { replies: { rcpt: options.rcptReply } } : {}),
});

let pending: Array<[string, number]> = [];
let count = 0;
let firstBytes: number | null = null;
const ID_FIELD = /^x-bench-id:[ \t]*([^\r\n]+)/im;

/** The X-Bench-Id field's value (any case of the name: Lacre writes it as X-Bench-ID). */
function benchId(data: Buffer): string {
  const end = data.indexOf('\r\n\r\n');
  const head = (end < 0 ? data : data.subarray(0, end + 2)).toString('latin1');
  return ID_FIELD.exec(head)?.[1].trim() ?? '';
}

// sink.messages() copies its whole list on every call, which is quadratic over a run; instead
// follow each session's own transaction list with a cursor, and drop sessions once closed and read.
let sessionCursor = 0;
const active = new Map<SinkSession, number>();
function scan(): false {
  const t = now();
  for (; sessionCursor < sink.sessions.length; sessionCursor++) active.set(sink.sessions[sessionCursor], 0);
  for (const [session, cursor] of active) {
    let i = cursor;
    while (i < session.transactions.length) {
      const tx = session.transactions[i];
      // The last transaction may still be under way; an earlier one without a final reply ended
      // without DATA (refused recipients, RSET).
      if (tx.dataEndReplyCode === undefined && i === session.transactions.length - 1 && !session.closed) break;
      if (tx.dataEndReplyCode !== undefined && tx.dataEndReplyCode < 400 && tx.data) {
        count++;
        firstBytes ??= tx.data.length;
        const id = benchId(tx.data);
        if (!id && process.env.BENCH_SINK_DUMP) writeFileSync(process.env.BENCH_SINK_DUMP, tx.data);
        pending.push([id, t]);
      }
      i++;
    }
    if (session.closed && i >= session.transactions.length) active.delete(session);
    else active.set(session, i);
  }
  return false;
}
// Re-run on everything the sink records; never resolves (the timeout is far beyond any run).
sink.waitFor(scan, 24 * 3_600_000, 'the end of the benchmark').catch(() => {});

const flush = setInterval(() => {
  if (pending.length === 0) return;
  send({ type: 'delivered', items: pending });
  pending = [];
}, 5);

process.on('message', async (message: { type: string }) => {
  if (message.type === 'stats') {
    scan();
    const stats: SinkStats = {
      type: 'stats',
      sessions: sink.sessions.length,
      tlsHandshakes: sink.sessions.filter((s) => s.tls).length,
      tlsProtocols: [...new Set(sink.sessions.map((s) => s.tlsProtocol).filter((p): p is string => !!p))],
      messages: count,
      firstMessageBytes: firstBytes,
      errors: [...new Set([...sink.errors.map((e) => e.message), ...sink.sessions.flatMap((s) => s.errors)])].slice(0, 5),
    };
    send(stats);
  } else if (message.type === 'close') {
    clearInterval(flush);
    scan();
    if (pending.length) send({ type: 'delivered', items: pending });
    await sink.close();
    process.disconnect?.();
    process.exit(0);
  }
});
// If the bench dies, so does the sink.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready', port: sink.port });
