// The MX of the return-path domains (bounces.<sender domain>): receives asynchronous bounces,
// the DSNs a recipient's server sends after it first accepted a message. Only addresses Lacre
// minted (return-path.ts: message id + keyed tag) are accepted; a DSN's failed recipients turn
// from delivered to bounced with a `bounce` event (and its webhooks), and hard bounces are
// suppressed so Lacre stops mailing dead addresses.
// No AUTH, no relaying: this listener accepts mail for Lacre itself and nothing else.
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { Store } from '../store/store.ts';
import type { Logger } from '../log/logger.ts';
import { parseReturnPath } from '../compose/return-path.ts';
import { classifyReply } from '../mail/replies.ts';
import { parseDeliveryStatus } from './dsn-report.ts';

export interface BounceReceiverOptions {
  host: string;
  port: number;
  hostname: string;
  store: Store;
  localPart: string;
  tag: (messageId: string) => string;
  logger: Logger;
  /** STARTTLS for senders that want it (TLS ≥ 1.2); without it the listener offers none. */
  tls?: { cert: string; key: string };
  /** Bounces quote at most the original headers; anything bigger is not a bounce we need. */
  maxSize?: number;
  clock?: () => number;
}

export interface BounceReceiver {
  port: number;
  close(): Promise<void>;
}

export async function startBounceReceiver(options: BounceReceiverOptions): Promise<BounceReceiver> {
  const maxSize = options.maxSize ?? 10 * 1024 * 1024;
  const clock = options.clock ?? Date.now;
  const log = options.logger;
  const serverOptions: SMTPServerOptions = {
    name: options.hostname,
    banner: 'Lacre bounce processor',
    authOptional: true,
    disabledCommands: options.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    ...(options.tls ? { key: options.tls.key, cert: options.tls.cert, minVersion: 'TLSv1.2' as const } : {}),
    size: maxSize,
    logger: false,
    onRcptTo(address, _session, callback) {
      const messageId = parseReturnPath(address.address, options.localPart, options.tag);
      if (!messageId) {
        const err = Object.assign(new Error('5.1.1 no such bounce address'), { responseCode: 550 });
        return callback(err);
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= maxSize) chunks.push(chunk);
      });
      stream.on('end', () => {
        if ((stream as unknown as { sizeExceeded?: boolean }).sizeExceeded || size > maxSize) {
          return callback(Object.assign(new Error('5.3.4 message too big for a bounce'), { responseCode: 552 }));
        }
        const messageIds = session.envelope.rcptTo
          .map((r) => parseReturnPath(r.address, options.localPart, options.tag))
          .filter((id): id is string => id !== null);
        applyBounce(Buffer.concat(chunks), messageIds).then(
          () => callback(),
          (err) => {
            log.error({ err }, 'could not record a bounce');
            callback(Object.assign(new Error('4.3.0 could not record the bounce, try again later'), { responseCode: 451 }));
          },
        );
      });
    },
  };

  async function applyBounce(content: Buffer, messageIds: string[]): Promise<void> {
    const reports = parseDeliveryStatus(content);
    let applied = 0;
    for (const report of reports) {
      if (report.action !== 'failed' || !report.status.startsWith('5.')) continue;
      const code = Number(/^\d{3}/.exec(report.diagnostic?.replace(/^smtp;\s*/i, '') ?? '')?.[0] ?? 550);
      const { hardBounce } = classifyReply(code, report.status, report.diagnostic ?? '');
      const reason = `bounced after delivery: ${report.status}${report.diagnostic ? ` ${report.diagnostic}` : ''}`;
      for (const messageId of messageIds) {
        const done = await options.store.recordRemoteBounce({
          messageId,
          address: report.finalRecipient,
          status: report.status,
          diagnostic: report.diagnostic,
          replyCode: code,
          reason,
          suppress: hardBounce,
          at: clock(),
        });
        if (done) applied++;
      }
    }
    // Ids and counts only: a DSN quotes addresses.
    log.info({ messages: messageIds, reports: reports.length, applied }, 'bounce received');
  }

  const server = new SMTPServer(serverOptions);
  server.on('error', (err) => log.warn({ err: { message: err.message } }, 'bounce receiver connection error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
