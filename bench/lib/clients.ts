// The benchmark's clients: the Mailjet v3.1 send API over HTTP (batches, a few requests in flight)
// and SMTP with nodemailer (pooled transports, one session each). Both can run flat out or at a
// fixed pace (message i is not sent before start + i / rate), and both record when each message
// was accepted: the HTTP response that carried it, or the 250 after its DATA.
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import nodemailer from 'nodemailer';
import { now, sleep } from './util.ts';

/** One message to send: its X-Bench-Id, recipient and ~3 KB text body. */
export interface BenchMessage {
  id: string;
  to: string;
  text: string;
}

export const FROM = { Email: 'bench@sender.test', Name: 'Lacre bench' };
export const TEXT_BYTES = 3000;

/** A plain-text body of `bytes` printable ASCII in 76-character lines (CRLF). */
export function textBody(bytes = TEXT_BYTES): string {
  const lines: string[] = [];
  let size = 0;
  while (size < bytes) {
    const line = randomBytes(57).toString('base64');
    lines.push(line);
    size += line.length + 2;
  }
  return lines.join('\r\n');
}

export function benchMessages(tag: string, count: number, domain: string): BenchMessage[] {
  // A few distinct bodies, reused: making 50k random bodies would cost more than sending them.
  const bodies = Array.from({ length: 16 }, () => textBody());
  return Array.from({ length: count }, (_, i) => ({ id: `${tag}-${i}`, to: `rcpt${i}@${domain}`, text: bodies[i % bodies.length] }));
}

/** The RFC 5322 form the SMTP client submits: the same fields and body as the HTTP messages. */
export function rawMessage(m: BenchMessage): Buffer {
  return Buffer.from(
    [
      `From: "${FROM.Name}" <${FROM.Email}>`,
      `To: <${m.to}>`,
      `Subject: Lacre benchmark ${m.id}`,
      `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
      `Message-ID: <${m.id}.${randomBytes(6).toString('hex')}@sender.test>`,
      `X-Bench-Id: ${m.id}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Transfer-Encoding: 7bit',
      '',
      m.text,
      '',
    ].join('\r\n'),
  );
}

export interface ClientRun {
  /** When the first request or session started sending (epoch ms). */
  startedAt: number;
  /** id → epoch ms at which the server accepted the message. */
  acceptedAt: Map<string, number>;
  /** Messages refused or lost to errors, with a few of the errors. */
  failed: number;
  errors: string[];
  /** The run stopped at its deadline before every message was sent. */
  cutShort: boolean;
}

export interface PaceOptions {
  /** Messages per second; absent: as fast as the server takes them. */
  rate?: number;
  /** Epoch ms after which nothing more is sent. */
  deadline: number;
}

function noteError(run: ClientRun, message: string, count = 1) {
  run.failed += count;
  if (run.errors.length < 5 && !run.errors.includes(message)) run.errors.push(message);
}

/**
 * POST /v3.1/send with Basic auth: up to `batch` messages per request, `concurrency` requests in
 * flight (one keep-alive connection each). When paced, a request carries the messages that are due.
 */
export async function sendHttp(
  baseUrl: string,
  key: { apiKey: string; secretKey: string },
  messages: BenchMessage[],
  options: PaceOptions & { batch?: number; concurrency?: number },
): Promise<ClientRun> {
  const batch = options.batch ?? 50;
  const concurrency = options.concurrency ?? 4;
  const url = new URL('/v3.1/send', baseUrl);
  const auth = `Basic ${Buffer.from(`${key.apiKey}:${key.secretKey}`).toString('base64')}`;
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const run: ClientRun = { startedAt: now(), acceptedAt: new Map(), failed: 0, errors: [], cutShort: false };
  const dueAt = (i: number) => (options.rate ? run.startedAt + (i * 1000) / options.rate : 0);
  let next = 0;

  const post = (body: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(
        url,
        { method: 'POST', agent, timeout: 120_000, headers: { authorization: auth, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('HTTP request timed out after 120 s')));
      req.on('error', reject);
      req.end(body);
    });

  const worker = async () => {
    while (next < messages.length) {
      const wait = dueAt(next) - now();
      if (wait > 0) await sleep(Math.min(wait, 1_000));
      if (now() > options.deadline) {
        run.cutShort = true;
        return;
      }
      if (dueAt(next) > now()) continue;
      const slice: BenchMessage[] = [];
      while (slice.length < batch && next < messages.length && dueAt(next) <= now()) slice.push(messages[next++]);
      const body = JSON.stringify({
        Messages: slice.map((m) => ({
          From: FROM,
          To: [{ Email: m.to }],
          Subject: `Lacre benchmark ${m.id}`,
          TextPart: m.text,
          Headers: { 'X-Bench-Id': m.id },
        })),
      });
      try {
        const res = await post(body);
        const t = now();
        let results: Array<{ Status?: string }> = [];
        try {
          results = (JSON.parse(res.text) as { Messages?: Array<{ Status?: string }> }).Messages ?? [];
        } catch {
          // not JSON: counted below
        }
        slice.forEach((m, i) => {
          if (res.status === 200 && results[i]?.Status === 'success') run.acceptedAt.set(m.id, t);
          else noteError(run, `HTTP ${res.status}: ${res.text.slice(0, 200)}`);
        });
      } catch (err) {
        noteError(run, (err as Error).message, slice.length);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return run;
}

export interface SmtpTarget {
  host: string;
  port: number;
  /** Trust anchor and expected name of the server's certificate (STARTTLS is required). */
  ca: string;
  servername: string;
  auth?: { user: string; pass: string };
}

/**
 * `sessions` nodemailer pooled transports of one connection each, STARTTLS required (and AUTH
 * PLAIN when credentials are given), each sending its share of the messages one after another.
 */
export async function sendSmtp(target: SmtpTarget, messages: BenchMessage[], options: PaceOptions & { sessions?: number }): Promise<ClientRun> {
  const sessions = options.sessions ?? 20;
  const run: ClientRun = { startedAt: now(), acceptedAt: new Map(), failed: 0, errors: [], cutShort: false };
  const dueAt = (i: number) => (options.rate ? run.startedAt + (i * 1000) / options.rate : 0);
  const raws = messages.map(rawMessage);
  let next = 0;
  const transports = Array.from({ length: sessions }, () =>
    nodemailer.createTransport({
      host: target.host,
      port: target.port,
      secure: false,
      requireTLS: true,
      tls: { ca: target.ca, servername: target.servername },
      name: 'client.bench.test',
      ...(target.auth ? { auth: target.auth, authMethod: 'PLAIN' } : {}),
      pool: true,
      maxConnections: 1,
      maxMessages: Infinity,
      connectionTimeout: 30_000,
      greetingTimeout: 30_000,
      socketTimeout: 120_000,
    }),
  );
  const worker = async (transport: (typeof transports)[number]) => {
    while (next < messages.length) {
      const i = next++;
      const wait = dueAt(i) - now();
      if (wait > 0) await sleep(wait);
      if (now() > options.deadline) {
        run.cutShort = true;
        return;
      }
      const m = messages[i];
      try {
        await transport.sendMail({ envelope: { from: FROM.Email, to: [m.to] }, raw: raws[i] });
        run.acceptedAt.set(m.id, now());
      } catch (err) {
        noteError(run, (err as Error).message);
      }
    }
  };
  try {
    await Promise.all(transports.map(worker));
  } finally {
    for (const t of transports) t.close();
  }
  return run;
}
