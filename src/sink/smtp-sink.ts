// `lacre sink`: a local SMTP server that accepts every message and reports each one, for trying
// Lacre on one machine (Postfix ships smtp-sink(1) for the same reason). It offers STARTTLS with a
// self-signed certificate (kept in its own directory, never Lacre's data dir), so a trial delivery
// travels over TLS as real ones do, and it says which TLS version and cipher each message came
// over. It is not part of the mail flow: nothing in Lacre imports it but the CLI.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { loadListenerCertificate } from '../intake/listener-cert.ts';

export interface SinkOptions {
  host: string;
  port: number;
  /** Where the self-signed certificate is kept between runs. */
  certDir: string;
  /** Also append each message's line to this file. */
  jsonLog?: string;
  /** Keep each message as `<n>.eml` in this directory. */
  saveDir?: string;
  /** Largest message accepted, in bytes. */
  maxSize?: number;
  /** Told of each message as it is accepted. */
  onMessage?: (message: SunkMessage) => void;
}

/** One accepted message, as the sink reports it (one JSON line). */
export interface SunkMessage {
  at: string;
  n: number;
  client: string;
  helo: string;
  mailFrom: string;
  rcptTo: string[];
  size: number;
  tls: { version: string; cipher: string } | null;
  subject: string | null;
  messageId: string | null;
  saved?: string;
}

export interface RunningSink {
  host: string;
  port: number;
  certificateSha256: string;
  close(): Promise<void>;
}

/** A header's first value, unfolded (RFC 5322 §2.2.3), from the header block only. */
function headerValue(raw: Buffer, name: string): string | null {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end < 0 ? Math.min(raw.length, 65_536) : end).toString('latin1').replace(/\r\n[ \t]+/g, ' ');
  const match = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(head);
  return match ? match[1].trim() : null;
}

function tlsOf(session: SMTPServerSession): SunkMessage['tls'] {
  if (!session.secure) return null;
  const info = session.tlsOptions as { name?: string; version?: string; standardName?: string } | false | undefined;
  return info ? { version: info.version ?? 'unknown', cipher: info.standardName ?? info.name ?? 'unknown' } : { version: 'unknown', cipher: 'unknown' };
}

export async function startSink(options: SinkOptions): Promise<RunningSink> {
  mkdirSync(options.certDir, { recursive: true, mode: 0o700 });
  const certificate = await loadListenerCertificate({ dataDir: options.certDir, hostname: 'localhost', name: 'sink' });
  if (options.saveDir) mkdirSync(options.saveDir, { recursive: true, mode: 0o700 });
  const maxSize = options.maxSize ?? 50 * 1024 * 1024;
  let n = 0;
  const server = new SMTPServer({
    name: 'localhost',
    banner: 'lacre sink: accepts everything, delivers nothing',
    key: certificate.key,
    cert: certificate.cert,
    minVersion: 'TLSv1.2',
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ['AUTH'],
    size: maxSize,
    // A trial tool on loopback still has limits: it must not be an open door if bound wider.
    maxClients: 100,
    socketTimeout: 60_000,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (stream.sizeExceeded) return callback(Object.assign(new Error('5.3.4 message too big for the sink'), { responseCode: 552 }));
        const raw = Buffer.concat(chunks);
        const message: SunkMessage = {
          at: new Date().toISOString(),
          n: ++n,
          client: session.remoteAddress,
          helo: session.hostNameAppearsAs,
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          size: raw.length,
          tls: tlsOf(session),
          subject: headerValue(raw, 'Subject'),
          messageId: headerValue(raw, 'Message-ID'),
        };
        try {
          if (options.saveDir) {
            message.saved = join(options.saveDir, `${message.n}.eml`);
            writeFileSync(message.saved, raw, { mode: 0o600 });
          }
          if (options.jsonLog) appendFileSync(options.jsonLog, JSON.stringify(message) + '\n', { mode: 0o600 });
        } catch (err) {
          // Not kept where asked: answer 451 so the sender keeps the message and tries again.
          return callback(Object.assign(new Error(`4.3.0 the sink could not write: ${(err as Error).message}`), { responseCode: 451 }));
        }
        options.onMessage?.(message);
        callback(null, `2.0.0 sunk as message ${message.n}`);
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.server.address();
  return {
    host: options.host,
    port: typeof address === 'object' && address ? address.port : options.port,
    certificateSha256: certificate.fingerprintSha256,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
