// SMTP submission (RFC 6409), like Mailjet's SMTP relay: clients authenticate with an API key and
// its secret key and hand over finished messages, which compose checks, signs and queues. Two
// listeners share one configuration: STARTTLS on the submission port and implicit TLS on the
// submissions port (RFC 8314 §3.3, which prefers it). TLS 1.2 at least, AUTH only over TLS, no
// mail without AUTH, and "250" only once the queue has committed the message.
//
// Where each check happens, so a client learns of a refusal as early as it can be known:
//   AUTH       credentials (535 5.7.8) and the `send` scope of the key (535 5.7.8, see onAuth)
//   MAIL FROM  the key is still enabled with `send` (550 5.7.1), and the envelope sender's
//              domain is registered and verified (550 5.7.1)
//   RCPT TO    the address is well-formed (553 5.1.3) and not suppressed after a hard bounce
//              (550 5.1.1): after DATA one recipient can no longer be refused on its own
//   DATA       size (552 5.3.4), then compose: From/Sender domains (550 5.7.1), the message's
//              form (550 5.6.0); the commit (451 4.3.0 when it fails, so the client retries)
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession, type SMTPServerDataStream } from 'smtp-server';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { ApiKeys } from '../access/api-keys.ts';
import type { Composer } from '../compose/outgoing.ts';
import type { SenderDomains } from '../domains/sender-domains.ts';
import { checkEnvelopeAddress, SubmissionError } from '../queue/queue.ts';
import type { Store } from '../store/store.ts';
import type { Logger } from '../log/logger.ts';
import { loadListenerCertificate, type ListenerCertificate } from './listener-cert.ts';
import { prepareSubmittedMessage } from './smtp-message.ts';
import {
  AUTH_REQUIRED,
  SHUTTING_DOWN,
  SmtpReply,
  TEMPORARY_FAILURE,
  adaptConnectionReplies,
  replyForSubmitError,
} from './smtp-replies.ts';

export interface SubmissionConfig {
  /** Address both listeners bind. */
  host: string;
  /** STARTTLS listener (RFC 6409 submission); 0 picks a free port. */
  port: number;
  /** Implicit TLS listener (RFC 8314 submissions); 0 picks a free port. */
  tlsPort: number;
  /** PEM paths of the certificate chain and key; both unset: self-signed, kept in the data dir. */
  tlsCert?: string;
  tlsKey?: string;
  /** Largest message in bytes (SIZE, RFC 1870). */
  maxSize: number;
  /** Our name: greeting, EHLO reply, Received field, self-signed certificate. */
  hostname: string;
  dataDir: string;
}

export interface SubmissionOptions {
  config: SubmissionConfig;
  keys: ApiKeys;
  composer: Composer;
  domains: SenderDomains;
  store: Store;
  logger: Logger;
  /** Called after each committed message (serve wires it to the queue runner's nudge). */
  onQueued?: (messageId: string) => void;
  /** How long close() lets messages being received finish, by default (10 s). */
  closeGraceMs?: number;
  /** Idle time before a client is disconnected (default 5 min, RFC 5321 §4.5.3.2.7). */
  socketTimeoutMs?: number;
  /** Recipients per message (default 1000; RFC 5321 §4.5.3.1.8 asks for at least 100). */
  maxRecipients?: number;
  /** Told of connections, failed AUTHs and answered transactions (serve's metrics); must not throw. */
  observer?: SubmissionObserver;
}

export interface SubmissionObserver {
  connectionOpened(): void;
  connectionClosed(): void;
  authFailed(): void;
  submitted(result: 'accepted' | 'refused'): void;
}

export interface SubmissionListeners {
  host: string;
  ports: { starttls: number; implicit: number };
  /** SHA-256 of the certificate both listeners present (AB:CD:…). */
  fingerprint: string;
  certificate: Pick<ListenerCertificate, 'fingerprintSha256' | 'source' | 'subject' | 'notAfter' | 'certPath'>;
  /** Stops accepting, lets messages being received finish (bounded), closes every connection. */
  close(graceMs?: number): Promise<void>;
}

/** Who a session authenticated as (smtp-server keeps it in session.user). */
interface SubmittingKey {
  id: string;
  name: string;
}

class SubmissionServer extends SMTPServer {
  override connect(socket: Socket | TLSSocket, socketOptions?: Parameters<SMTPServer['connect']>[1]): void {
    super.connect(socket, socketOptions);
    // connect() has just added the new connection last; adapting is idempotent, so a connection
    // that closed at once (and left an older one last) is harmless.
    let newest: SMTPConnection | undefined;
    for (const connection of this.connections) newest = connection;
    if (newest) adaptConnectionReplies(newest);
  }
}

export async function startSubmission(options: SubmissionOptions): Promise<SubmissionListeners> {
  const { config, keys, composer, domains, store, logger: log } = options;
  const certificate = await loadListenerCertificate({
    dataDir: config.dataDir,
    hostname: config.hostname,
    certFile: config.tlsCert,
    keyFile: config.tlsKey,
    name: 'submission',
  });
  if (certificate.notAfter.getTime() < Date.now()) {
    log.warn({ certificate: certificate.certPath, notAfter: certificate.notAfter.toISOString() }, 'the submission certificate has expired');
  }

  /** Sessions whose message is being received or committed, and when each is done. */
  const inFlight = new Map<SMTPServerSession, Promise<void>>();
  let closing: Promise<void> | null = null;
  const observer = options.observer;
  /** Sessions counted as open connections (onConnect let them in). */
  const counted = new Set<string>();

  const serverOptions = (implicitTls: boolean): SMTPServerOptions => ({
    name: config.hostname,
    banner: 'Lacre mail submission',
    secure: implicitTls,
    key: certificate.key,
    cert: certificate.cert,
    minVersion: 'TLSv1.2',
    logger: false,
    // No reverse lookups: they would leave loopback in tests and add nothing to authenticated mail.
    disableReverseLookup: true,
    authMethods: ['PLAIN', 'LOGIN'],
    allowInsecureAuth: false,
    // smtp-server answers MAIL/RCPT/DATA before AUTH itself; this is its text (with the enhanced code).
    authRequiredMessage: AUTH_REQUIRED().message,
    size: config.maxSize,
    rejectOversized: true,
    hideENHANCEDSTATUSCODES: false,
    hideREQUIRETLS: false,
    hideDSN: true,
    maxRecipients: options.maxRecipients ?? 1000,
    socketTimeout: options.socketTimeoutMs ?? 300_000,
    closeTimeout: options.closeGraceMs ?? 10_000,

    onConnect(session, callback) {
      if (!closing) {
        counted.add(session.id);
        observer?.connectionOpened();
      }
      callback(closing ? SHUTTING_DOWN() : null);
    },

    onClose(session) {
      // Only sessions onConnect let in were counted (smtp-server calls onClose for every one).
      if (counted.delete(session.id)) observer?.connectionClosed();
    },

    onAuth(auth, session, callback) {
      const refuse = (text: string) => callback(null, { responseCode: 535, message: `5.7.8 ${text}` });
      // RFC 4616 §2: an authorization identity other than the authentication identity asks to act
      // as someone else, which API keys cannot grant.
      if (auth.method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid !== auth.authcid) {
        return refuse('Authentication credentials invalid: the authorization identity must be empty or the API key');
      }
      keys.authenticate(auth.username ?? '', auth.password ?? '').then(
        (key) => {
          if (!key) {
            observer?.authFailed();
            log.info({ session: session.id, method: auth.method }, 'submission AUTH refused: invalid credentials');
            return refuse('Authentication credentials invalid');
          }
          // A key without `send` authenticated but may not submit. Refused here, at AUTH, so the
          // client's connection test fails instead of every message later; 535 because RFC 4954
          // §4 answers an identity not authorised to act with it.
          if (!key.scopes.includes('send')) {
            log.info({ session: session.id, apiKey: key.id }, 'submission AUTH refused: the key lacks the send scope');
            return refuse('Authentication credentials invalid for sending: this API key lacks the "send" scope');
          }
          log.debug({ session: session.id, apiKey: key.id, remote: session.remoteAddress }, 'submission AUTH');
          const user: SubmittingKey = { id: key.id, name: key.name };
          callback(null, { user });
        },
        (err: unknown) => {
          log.error({ err, session: session.id }, 'submission AUTH failed');
          callback(null, { responseCode: 454, message: '4.7.0 Temporary authentication failure; try again later' });
        },
      );
    },

    onMailFrom(address, session, callback) {
      const key = session.user as SubmittingKey | undefined;
      if (!key) return callback(AUTH_REQUIRED());
      (async () => {
        // Disabling a key stops it at once (api-keys.ts), also in a session that authenticated
        // before: each transaction reads the key again (one row, no scrypt).
        const current = await keys.get(key.id);
        if (!current || current.disabledAt !== null || !current.scopes.includes('send')) {
          return new SmtpReply(550, '5.7.1', 'this API key was disabled, deleted or lost the "send" scope after this session authenticated');
        }
        // The null sender <> is allowed: compose checks From instead and sets the return path.
        if (address.address === '') return null;
        const verdict = await domains.checkSender(address.address);
        return verdict.allowed ? null : new SmtpReply(550, '5.7.1', `envelope sender: ${verdict.message}`);
      })().then(
        (refusal) => callback(refusal),
        (err: unknown) => {
          log.error({ err, session: session.id }, 'submission: sender check failed');
          callback(TEMPORARY_FAILURE());
        },
      );
    },

    onRcptTo(address, session, callback) {
      if (!session.user) return callback(AUTH_REQUIRED());
      try {
        checkEnvelopeAddress(address.address, 'recipient');
      } catch (err) {
        if (err instanceof SubmissionError) return callback(new SmtpReply(553, '5.1.3', err.message));
        throw err;
      }
      store.findSuppressed([address.address]).then(
        (suppressed) => {
          const entry = suppressed.get(address.address);
          if (!entry) return callback();
          callback(new SmtpReply(550, '5.1.1', `recipient suppressed since ${entry.since} after a hard bounce: ${entry.reason}`));
        },
        (err: unknown) => {
          log.error({ err, session: session.id }, 'submission: suppression lookup failed');
          callback(TEMPORARY_FAILURE());
        },
      );
    },

    onData(stream, session, callback) {
      let finish!: () => void;
      inFlight.set(session, new Promise<void>((resolve) => (finish = resolve)));
      const done = () => {
        inFlight.delete(session);
        finish();
        // Shutting down: the reply is out (smtp-server writes it inside the callback), so this
        // connection can go now rather than wait for the grace period to run out.
        if (closing) setImmediate(() => dropSession(session));
      };
      receive(stream).then(
        (content) => {
          if (content === null) {
            done();
            observer?.submitted('refused');
            return callback(new SmtpReply(552, '5.3.4', `message exceeds fixed maximum message size ${config.maxSize}`));
          }
          accept(session, content).then(
            (reply) => {
              observer?.submitted('accepted');
              callback(null, reply);
              done();
            },
            (err: unknown) => {
              observer?.submitted('refused');
              callback(err as Error);
              done();
            },
          );
        },
        // The client went away in the middle of the message: nothing to answer, nothing queued.
        () => done(),
      );
    },
  });

  /** The message, or null when it went over the size limit (then it is not kept in memory). */
  function receive(stream: SMTPServerDataStream): Promise<Buffer | null> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= config.maxSize) chunks.push(chunk);
        else chunks.length = 0;
      });
      stream.once('error', reject);
      stream.once('close', () => reject(new Error('connection closed during DATA')));
      stream.once('end', () => resolve(stream.sizeExceeded || size > config.maxSize ? null : Buffer.concat(chunks, size)));
    });
  }

  async function accept(session: SMTPServerSession, raw: Buffer): Promise<string> {
    const key = session.user as SubmittingKey | undefined;
    if (!key) throw AUTH_REQUIRED();
    const envelope = session.envelope;
    try {
      const prepared = prepareSubmittedMessage(raw, { hostname: config.hostname, sessionId: session.id, at: new Date() });
      const accepted = await composer.submit({
        content: prepared.content,
        envelopeSender: envelope.mailFrom && envelope.mailFrom.address !== '' ? envelope.mailFrom.address : null,
        recipients: envelope.rcptTo.map((r) => r.address),
        // RFC 8689 §4.1: REQUIRETLS in MAIL FROM (accepted over TLS only) travels with the message.
        requireTls: envelope.requireTLS === true,
        source: 'smtp',
        metadata: { apiKeyId: key.id, ...prepared.metadata },
      });
      try {
        options.onQueued?.(accepted.messageId);
      } catch (err) {
        log.warn({ err }, 'submission: onQueued callback failed');
      }
      // Ids and counts only: no addresses at info level.
      log.info(
        {
          session: session.id,
          messageId: accepted.messageId,
          apiKey: key.id,
          recipientCount: accepted.recipients.length,
          refused: accepted.refused.length,
          size: raw.length,
          requireTls: envelope.requireTLS === true,
        },
        'submission accepted',
      );
      // A recipient suppressed between RCPT and the end of DATA cannot be refused on its own any
      // more (only LMTP has per-recipient replies after DATA); the reply says so.
      const note = accepted.refused.length > 0 ? `; ${accepted.refused.length} recipient(s) not queued: suppressed after a hard bounce` : '';
      return `2.0.0 Ok: queued as ${accepted.messageId}${note}`;
    } catch (err) {
      const reply = replyForSubmitError(err);
      if (reply) {
        log.info({ session: session.id, apiKey: key.id, code: reply.responseCode, status: reply.enhancedCode }, 'submission refused');
        throw reply;
      }
      log.error({ err, session: session.id, apiKey: key.id }, 'submission could not be queued');
      throw TEMPORARY_FAILURE();
    }
  }

  const servers = [new SubmissionServer(serverOptions(false)), new SubmissionServer(serverOptions(true))] as const;
  for (const server of servers) {
    // Handshake failures, resets and the like: the client's problem, not ours.
    server.on('error', (err: Error & { code?: string }) => log.debug({ err: { message: err.message, code: err.code } }, 'submission connection error'));
  }

  function dropSession(session: SMTPServerSession): void {
    for (const server of servers) {
      for (const connection of server.connections) {
        if (connection.session !== session) continue;
        connection.send(SHUTTING_DOWN().responseCode, SHUTTING_DOWN().message);
        connection.close();
      }
    }
  }

  const listen = (server: SubmissionServer, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.server.once('error', reject);
      server.listen(port, config.host, () => {
        server.server.off('error', reject);
        resolve((server.server.address() as AddressInfo).port);
      });
    });
  let starttlsPort: number;
  let implicitPort: number;
  try {
    starttlsPort = await listen(servers[0], config.port);
    implicitPort = await listen(servers[1], config.tlsPort);
  } catch (err) {
    await Promise.all(servers.map((s) => (s.server.listening ? new Promise<void>((r) => s.close(() => r())) : undefined)));
    throw err;
  }

  if (certificate.replaced) log.warn({ reason: certificate.replaced, certificate: certificate.certPath }, 'replaced the self-signed submission certificate');
  log.info(
    {
      host: config.host,
      starttls: starttlsPort,
      implicitTls: implicitPort,
      certificate: {
        source: certificate.source,
        sha256: certificate.fingerprintSha256,
        subject: certificate.subject,
        notAfter: certificate.notAfter.toISOString(),
        file: certificate.certPath,
      },
      maxSize: config.maxSize,
    },
    'SMTP submission listening',
  );

  return {
    host: config.host,
    ports: { starttls: starttlsPort, implicit: implicitPort },
    fingerprint: certificate.fingerprintSha256,
    certificate: {
      fingerprintSha256: certificate.fingerprintSha256,
      source: certificate.source,
      subject: certificate.subject,
      notAfter: certificate.notAfter,
      certPath: certificate.certPath,
    },
    close(graceMs = options.closeGraceMs ?? 10_000) {
      closing ??= (async () => {
        const closed = servers.map((server) => {
          // smtp-server's own deadline: whatever is still open then gets 421 and is closed.
          server.options.closeTimeout = graceMs;
          return new Promise<void>((resolve) => server.close(() => resolve()));
        });
        // Idle clients, and clients still before DATA, go at once (421: they retry later).
        for (const server of servers) {
          for (const connection of [...server.connections]) {
            if (inFlight.has(connection.session)) continue;
            connection.send(SHUTTING_DOWN().responseCode, SHUTTING_DOWN().message);
            connection.close();
          }
        }
        // Messages being received or committed finish (each connection is closed right after its
        // reply), or smtp-server cuts them off when the grace period is over.
        await Promise.all(closed);
        // A commit that was under way when its connection was cut still ends before the store
        // closes behind us (bounded: a commit that hangs is the store's problem, not a reason to hang).
        if (inFlight.size > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            Promise.all(inFlight.values()),
            new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
          ]);
          clearTimeout(timer);
        }
        log.info({ unfinished: inFlight.size }, 'SMTP submission closed');
      })();
      return closing;
    },
  };
}
