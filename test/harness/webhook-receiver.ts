// A webhook receiver for tests: one loopback listener (HTTP, or HTTPS with a certificate from the
// test CA) that records every request with its raw body, and answers 200 unless told otherwise:
// the next N requests can fail with a chosen status (500, 410, …) or hang past the sender's timeout.
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { IssuedCert } from './ca.ts';

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The exact bytes received: what a signature is checked against. */
  raw: Buffer;
  /** The status it was answered with. */
  status: number;
  /** SNI name the client sent (HTTPS), or null. */
  servername: string | null;
  at: Date;
}

export interface WebhookReceiverOptions {
  /** Serve HTTPS with this certificate (from the test CA); HTTP without it. */
  cert?: IssuedCert;
  /** Default 127.0.0.1. */
  host?: string;
  /** Fail the first N requests with `failStatus`. */
  failFirst?: number;
  failStatus?: number;
}

export interface WebhookReceiver {
  /** Base URL, e.g. http://127.0.0.1:PORT (HTTPS: https://127.0.0.1:PORT; use your own name for the host as needed). */
  url: string;
  port: number;
  requests(): ReceivedRequest[];
  /** The parsed JSON bodies of successful (2xx) requests, flattened: every event received. */
  events(): Array<Record<string, unknown>>;
  /** The next `count` requests are answered with `status` (default 500). */
  failNext(count: number, status?: number): void;
  /** The next `count` requests get no answer until the client gives up. */
  hangNext(count: number): void;
  waitFor(check: () => boolean, timeoutMs?: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(options: WebhookReceiverOptions = {}): Promise<WebhookReceiver> {
  const received: ReceivedRequest[] = [];
  let failing = options.failFirst ?? 0;
  let failStatus = options.failStatus ?? 500;
  let hanging = 0;
  const sockets = new Set<Socket>();

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (hanging > 0) {
        hanging--;
        received.push(record(req, Buffer.concat(chunks), 0));
        return; // never answered
      }
      const status = failing > 0 ? (failing--, failStatus) : 200;
      received.push(record(req, Buffer.concat(chunks), status));
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'failing on purpose');
    });
  };
  const record = (req: http.IncomingMessage, raw: Buffer, status: number): ReceivedRequest => ({
    method: req.method ?? '',
    path: req.url ?? '',
    headers: req.headers,
    raw,
    status,
    servername: ((req.socket as { servername?: string | false }).servername || null) as string | null,
    at: new Date(),
  });

  const server = options.cert
    ? https.createServer({ cert: options.cert.chainPem, key: options.cert.keyPem, minVersion: 'TLSv1.2' }, handler)
    : http.createServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // Refused handshakes (the client rejected our certificate) must not crash the test process.
  server.on('tlsClientError', () => {});
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  const scheme = options.cert ? 'https' : 'http';
  const hostInUrl = host.includes(':') ? `[${host}]` : host;

  return {
    url: `${scheme}://${hostInUrl}:${port}`,
    port,
    requests: () => [...received],
    events: () =>
      received
        .filter((r) => r.status >= 200 && r.status < 300)
        .flatMap((r) => JSON.parse(r.raw.toString('utf8')) as Array<Record<string, unknown>>),
    failNext(count: number, status = 500) {
      failing = count;
      failStatus = status;
    },
    hangNext(count: number) {
      hanging = count;
    },
    async waitFor(check, timeoutMs = 15_000, what = 'the condition') {
      const deadline = Date.now() + timeoutMs;
      for (let i = 0; i < 100_000; i++) {
        if (check()) return;
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`webhook receiver: timed out waiting for ${what} (${received.length} requests so far)`);
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
