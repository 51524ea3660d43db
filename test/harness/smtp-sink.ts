// SMTP sinks for delivery tests: receiving servers on 127.0.0.1 ephemeral ports that misbehave
// on request (refusals at any stage, slowness, silence, missing or weak TLS, bad certificates)
// and record exactly what a client did, so a test can assert on the wire and not only on the
// client's own account of it.
//
// Built on smtp-server, whose public hooks cover MAIL/RCPT/DATA but not per-command replies,
// delays or silence. Those come from wrapping two methods of each SMTPConnection instance
// (`_onCommand`, the command dispatcher, and `send`, the single place replies are written).
// Both are declared in smtp-server's own typings but are internal; the self-tests exercise every
// behaviour that depends on them, so an smtp-server upgrade that moves them fails loudly here.
import net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer } from 'smtp-server';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { SMTPConnection as ServerConnection } from 'smtp-server/lib/smtp-connection.js';
import type { IssuedCert } from './ca.ts';

export type SinkTlsMode = 'starttls' | 'none' | 'implicit';

/** Which occurrence within a session: the Nth (1-based), or every one after the first. */
export type SinkNth = number | 'after-first';

const isNth = (spec: SinkNth | undefined, n: number): boolean => (spec === 'after-first' ? n > 1 : spec === n);

/** Points where a reply can be replaced, delayed or withheld. `dataEnd` is the reply to the final dot. */
export type SinkStage = 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'mail' | 'rcpt' | 'data' | 'dataEnd';

/** `tls-handshake`: STARTTLS is answered with 220 (or, for implicit TLS, the TCP connection accepted) but the TLS handshake never progresses. */
export type SinkSilentStage = SinkStage | 'tls-handshake';

/**
 * A reply sent verbatim: `code` then each line of `text`. Put the enhanced status code in the
 * text yourself ("5.1.1 No such user"); the sink never adds one to a reply you chose.
 * A code below 400 lets the command run normally and only replaces the text of its success
 * reply (so RCPT can be 250 for some recipients and 550 for others); 400 and above answers
 * the command without running it. 421 also closes the connection, as a real server does.
 */
export interface SinkReply {
  code: number;
  text: string | string[];
}

export type SmtpParams = Record<string, string | true>;

/** An envelope address as the client sent it: ESMTP parameter keys upper-cased, bare keywords as `true`. */
export interface SmtpPath {
  address: string;
  params: SmtpParams;
}

type ReplyFor<A extends unknown[]> = SinkReply | ((...args: A) => SinkReply | undefined);

export interface SinkReplies {
  /** Must be 4xx/5xx: sent instead of the 220 banner, then the connection is closed. */
  greeting?: ReplyFor<[session: SinkSession]>;
  ehlo?: ReplyFor<[session: SinkSession]>;
  helo?: ReplyFor<[session: SinkSession]>;
  starttls?: ReplyFor<[session: SinkSession]>;
  mail?: ReplyFor<[address: string, params: SmtpParams, session: SinkSession]>;
  rcpt?: ReplyFor<[address: string, params: SmtpParams, session: SinkSession]>;
  /** The reply to the DATA command itself (normally 354). */
  data?: ReplyFor<[session: SinkSession]>;
  /** The reply after the message; any code. A code of 400 or more means the message was not delivered. */
  dataEnd?: ReplyFor<[transaction: SinkTransaction, session: SinkSession]>;
}

export interface SinkAdvertise {
  /** Advertise `SIZE n` and enforce it (552 at MAIL for a larger SIZE=, and after DATA). Not advertised by default. */
  size?: number;
  eightBitMime?: boolean; // default true
  smtpUtf8?: boolean; // default true
  pipelining?: boolean; // default true
  /** Offered only after TLS, as RFC 8689 requires. Default false. */
  requireTls?: boolean;
  /** Also makes smtp-server put enhanced codes in its own replies. Default false. */
  enhancedStatusCodes?: boolean;
  dsn?: boolean; // default false
}

interface SinkCommonOptions {
  /** Name in the greeting and EHLO reply. */
  hostname?: string;
  replies?: SinkReplies;
  /** Delay before replies: one number for every reply, or per stage (`other` = RSET, NOOP, QUIT, ...). */
  delayMs?: number | Partial<Record<SinkStage | 'other', number>>;
  /** Never answer from this stage on; the connection stays open until the client or close() drops it. */
  silentAt?: SinkSilentStage;
  /**
   * Close the connection right after the final dot of the Nth message of a session (1-based), or
   * of every message after the first, without replying. The message is still recorded, marked
   * `dropped`, so a test can count how often the receiver got it (RFC 1047's duplicate problem).
   */
  dropAfterDot?: SinkNth;
  /**
   * Close the connection without replying when the Nth MAIL FROM of a session arrives (or every
   * one after the first): what a client sees of a pooled connection the server closed while idle.
   */
  dropAtMail?: SinkNth;
  advertise?: SinkAdvertise;
  /** smtp-server's idle timeout (421 afterwards). Long by default so silence stays silent. */
  idleTimeoutMs?: number;
  /**
   * Where to listen: another loopback address and a fixed port let several sinks stand for several
   * MX hosts on the one port the service dials (LACRE_SMTP_PORT). Default 127.0.0.1, ephemeral.
   */
  listen?: { host?: string; port?: number };
}

export type SmtpSinkOptions = SinkCommonOptions &
  (
    | { tls: 'none' }
    | {
        tls: 'starttls' | 'implicit';
        /** Any kind from the test CA; its chainPem is presented, so intermediates go out too. */
        cert: IssuedCert;
        /** Offer only TLS 1.0 and 1.1 (OpenSSL 3 needs security level 0 for them). */
        legacyTlsOnly?: boolean;
        /** Extra options for the server's secure context (e.g. maxVersion), applied last. */
        tlsOptions?: tls.SecureContextOptions;
      }
  );

export interface SinkCommand {
  line: string;
  /** Date.now() when the command arrived. */
  at: number;
  /** Whether the command arrived over TLS. */
  tls: boolean;
  replyCode?: number;
  /** Reply lines as given to smtp-server (an enhanced code it adds itself is not included). */
  reply?: string[];
}

export interface SinkRecipient extends SmtpPath {
  replyCode?: number;
}

export interface SinkTransaction {
  mailFrom: SmtpPath;
  mailReplyCode?: number;
  /** Every RCPT TO the client sent in this transaction, accepted or not. */
  rcptTo: SinkRecipient[];
  /** The message as received, dot-unstuffed, ending with the final CRLF. */
  data?: Buffer;
  sizeExceeded?: boolean;
  dataEndReplyCode?: number;
  dataEndReply?: string[];
  tls: boolean;
}

export interface SinkTranscriptLine {
  from: 'client' | 'server';
  line: string;
  tls: boolean;
}

export interface SinkSession {
  id: string;
  remoteAddress: string;
  remotePort: number;
  greeting?: string;
  heloVerb?: 'EHLO' | 'HELO';
  heloName?: string;
  /** TLS is up (implicit, or after a completed STARTTLS). */
  tls: boolean;
  implicitTls: boolean;
  /** Negotiated protocol from getProtocol(), e.g. 'TLSv1.3' (getCipher().version is only the cipher's minimum). */
  tlsProtocol?: string;
  tlsCipher?: string;
  servername?: string;
  commands: SinkCommand[];
  transactions: SinkTransaction[];
  transcript: SinkTranscriptLine[];
  /** The stage at which the sink went silent, if it did. */
  silenced?: SinkSilentStage;
  /** Where the sink dropped the connection on purpose (dropAtMail, dropAfterDot). */
  dropped?: 'mail' | 'dataEnd';
  errors: string[];
  closed: boolean;
}

export interface DeliveredMessage {
  sessionId: string;
  mailFrom: SmtpPath;
  /** Recipients the sink accepted. */
  rcptTo: SmtpPath[];
  data: Buffer;
  tls: boolean;
  tlsProtocol?: string;
  tlsCipher?: string;
  /** Received in full, then the connection was dropped without a reply (dropAfterDot). */
  dropped?: boolean;
}

export interface SmtpSink {
  /** The loopback address it listens on (127.0.0.1 unless `listen.host` chose another 127.x.y.z). */
  readonly host: string;
  readonly port: number;
  readonly tls: SinkTlsMode;
  /** One per accepted TCP connection, in order. */
  readonly sessions: SinkSession[];
  /** Connections open now: counted up when one is accepted, down when its socket closes. */
  readonly openSessions: number;
  /** The most connections that were ever open at once: a client's concurrency, counted exactly. */
  readonly peakOpenSessions: number;
  /** Listener-level errors, e.g. a failed implicit-TLS handshake (client rejected the certificate). */
  readonly errors: Error[];
  messages(): DeliveredMessage[];
  waitForMessages(n: number, timeoutMs?: number): Promise<DeliveredMessage[]>;
  waitForSessions(n: number, timeoutMs?: number): Promise<SinkSession[]>;
  /** Resolves with the predicate's first truthy value; re-checked whenever the sink records something. */
  waitFor<T>(predicate: () => T | Falsy, timeoutMs?: number, what?: string): Promise<T>;
  /** Stops listening and destroys every connection, without waiting for clients. */
  close(): Promise<void>;
}

const DEFAULT_WAIT_MS = 5000;

type Falsy = undefined | null | false | 0 | '';

const STAGE_OF_VERB: Record<string, SinkStage> = {
  EHLO: 'ehlo',
  HELO: 'helo',
  STARTTLS: 'starttls',
  MAIL: 'mail',
  RCPT: 'rcpt',
  DATA: 'data',
};

/** Parses `MAIL FROM:<a> K=V FLAG` / `RCPT TO:<a> ...` the lenient way a recorder should. */
export function parseSmtpPath(line: string): SmtpPath | undefined {
  const m = /^(?:MAIL\s+FROM|RCPT\s+TO)\s*:\s*<([^>]*)>\s*(.*)$/i.exec(line.trim());
  if (!m) return undefined;
  const params: SmtpParams = {};
  for (const word of m[2].split(/\s+/).filter(Boolean)) {
    const eq = word.indexOf('=');
    if (eq < 0) params[word.toUpperCase()] = true;
    else params[word.slice(0, eq).toUpperCase()] = word.slice(eq + 1);
  }
  return { address: m[1], params };
}

function textLines(text: string | string[]): string[] {
  return Array.isArray(text) ? text : [text];
}

function resolveReply<A extends unknown[]>(spec: ReplyFor<A> | undefined, ...args: A): SinkReply | undefined {
  if (!spec) return undefined;
  return typeof spec === 'function' ? spec(...args) : spec;
}

// Per-connection bookkeeping the wrappers share.
interface ConnState {
  rec: SinkSession;
  conn: ServerConnection;
  /** Where the next reply gets recorded; one-shot. */
  replyTarget?: (code: number, lines: string[]) => void;
  /** Replacement for the next reply: always (dataEnd) or only if it is a success reply. */
  rewrite?: { reply: SinkReply; always: boolean };
  tx?: SinkTransaction;
  /** MAIL commands and complete messages so far on this connection, for dropAtMail/dropAfterDot. */
  mails: number;
  messages: number;
}

export async function startSmtpSink(options: SmtpSinkOptions): Promise<SmtpSink> {
  const replies = options.replies ?? {};
  const adv = options.advertise ?? {};
  const silentAt = options.silentAt;
  if (typeof replies.greeting === 'object' && replies.greeting.code < 400) {
    throw new Error('replies.greeting must be a 4xx/5xx refusal');
  }
  const sessions: SinkSession[] = [];
  const delivered: DeliveredMessage[] = [];
  const errors: Error[] = [];
  const states = new Map<string, ConnState>();
  const rawSockets = new Set<net.Socket>();
  const tlsSockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const waiters = new Set<() => void>();
  let closing = false;
  let openSessions = 0;
  let peakOpenSessions = 0;

  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const later = (ms: number, fn: () => void) => {
    if (ms <= 0) return fn();
    const t = setTimeout(() => {
      timers.delete(t);
      if (!closing) fn();
    }, ms);
    timers.add(t);
  };

  const delayFor = (stage: SinkStage | undefined): number => {
    const d = options.delayMs;
    if (d === undefined) return 0;
    if (typeof d === 'number') return d;
    return d[stage ?? 'other'] ?? 0;
  };

  let tlsServerOptions: tls.SecureContextOptions = {};
  if (options.tls !== 'none') {
    tlsServerOptions = {
      key: options.cert.keyPem,
      cert: options.cert.chainPem,
      ...(options.legacyTlsOnly
        ? { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }
        : { minVersion: 'TLSv1.2' }),
      ...options.tlsOptions,
    };
  }

  const server = new SMTPServer({
    ...tlsServerOptions,
    secure: options.tls === 'implicit',
    name: options.hostname ?? 'sink.lacre.test',
    logger: false,
    disableReverseLookup: true,
    // A relay sink: no AUTH, or smtp-server would demand it before MAIL (530).
    disabledCommands: options.tls === 'none' ? ['AUTH', 'STARTTLS'] : ['AUTH'],
    size: adv.size,
    rejectOversized: adv.size !== undefined,
    hide8BITMIME: adv.eightBitMime === false,
    hideSMTPUTF8: adv.smtpUtf8 === false,
    hidePIPELINING: adv.pipelining === false,
    hideREQUIRETLS: adv.requireTls !== true,
    hideENHANCEDSTATUSCODES: adv.enhancedStatusCodes !== true,
    hideDSN: adv.dsn !== true,
    socketTimeout: options.idleTimeoutMs ?? 300_000,
    closeTimeout: 100,

    onConnect(session, callback) {
      const st = states.get(session.id);
      if (!st) return callback();
      later(delayFor('greeting'), () => {
        if (silentAt === 'greeting') {
          st.rec.silenced = 'greeting';
          notify();
          return;
        }
        const r = resolveReply(replies.greeting, st.rec);
        // A success code has no meaning here (smtp-server sends its own 220): ignored.
        if (r && r.code >= 400) {
          st.conn.send(r.code, textLines(r.text), false);
          if (r.code !== 421) st.conn.close(); // send() already closes on 421
          return;
        }
        callback();
      });
    },

    onSecure(socket, session, callback) {
      const st = states.get(session.id);
      if (st) {
        recordTls(st.rec, socket as tls.TLSSocket);
        st.rec.servername = session.servername || undefined;
        st.tx = undefined; // smtp-server forgets pre-TLS state, so does the record
        tlsSockets.add(socket);
        notify();
      }
      callback();
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback) {
      const st = states.get(session.id);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (!st) return callback();
        const tx = st.tx;
        if (tx) {
          tx.data = Buffer.concat(chunks);
          tx.sizeExceeded = stream.sizeExceeded;
        }
        if (isNth(options.dropAfterDot, ++st.messages) && tx) {
          // Received, never answered: the client cannot know whether the message arrived.
          delivered.push(deliveredOf(st, tx, true));
          st.tx = undefined;
          st.rec.dropped = 'dataEnd';
          st.conn._socket.destroy();
          notify();
          return;
        }
        notify();
        later(delayFor('dataEnd'), () => {
          if (silentAt === 'dataEnd') {
            st.rec.silenced = 'dataEnd';
            notify();
            return;
          }
          const r = tx ? resolveReply(replies.dataEnd, tx, st.rec) : undefined;
          st.rewrite = r ? { reply: r, always: true } : undefined;
          st.replyTarget = (code, lines) => {
            if (!tx) return;
            tx.dataEndReplyCode = code;
            tx.dataEndReply = lines;
            if (code < 400 && tx.data) delivered.push(deliveredOf(st, tx, false));
          };
          st.tx = undefined;
          callback();
        });
      });
    },

    onClose(session) {
      const st = states.get(session.id);
      if (st) {
        st.rec.closed = true;
        notify();
      }
    },
  });

  // Without a listener, a failed handshake would be an unhandled 'error' and kill the test process.
  // smtp-server reports one TLS failure twice (the socket's 'error' and '_tlsError'), same object.
  server.on('error', (err) => {
    if (!errors.includes(err)) errors.push(err);
    notify();
  });

  function deliveredOf(st: ConnState, tx: SinkTransaction, dropped: boolean): DeliveredMessage {
    return {
      sessionId: st.rec.id,
      mailFrom: tx.mailFrom,
      rcptTo: tx.rcptTo.filter((r) => r.replyCode !== undefined && r.replyCode < 400).map(({ address, params }) => ({ address, params })),
      data: tx.data!,
      tls: tx.tls,
      tlsProtocol: st.rec.tlsProtocol,
      tlsCipher: st.rec.tlsCipher,
      ...(dropped ? { dropped: true } : {}),
    };
  }

  function recordTls(rec: SinkSession, socket: tls.TLSSocket) {
    rec.tls = true;
    rec.tlsProtocol = socket.getProtocol() ?? undefined;
    rec.tlsCipher = socket.getCipher()?.name;
  }

  function newSession(socket: net.Socket, remoteAddress: string, remotePort: number, id: string): SinkSession {
    const rec: SinkSession = {
      id,
      remoteAddress,
      remotePort,
      tls: false,
      implicitTls: options.tls === 'implicit',
      commands: [],
      transactions: [],
      transcript: [],
      errors: [],
      closed: false,
    };
    sessions.push(rec);
    openSessions++;
    peakOpenSessions = Math.max(peakOpenSessions, openSessions);
    socket.once('close', () => {
      openSessions--;
      rec.closed = true;
      notify();
    });
    return rec;
  }

  function instrument(conn: ServerConnection, socket: net.Socket) {
    const rec = newSession(socket, conn.remoteAddress, conn.remotePort, conn.id);
    const st: ConnState = { rec, conn, mails: 0, messages: 0 };
    states.set(conn.id, st);
    if (options.tls === 'implicit' && 'getProtocol' in socket) {
      recordTls(rec, socket as tls.TLSSocket);
      tlsSockets.add(socket);
    }
    st.replyTarget = (code, lines) => {
      rec.greeting = `${code} ${lines.join('\n')}`;
    };
    const seen = new WeakSet<Error>();
    conn.on('error', (err: Error) => {
      if (seen.has(err)) return;
      seen.add(err);
      rec.errors.push(err.message);
      notify();
    });

    const originalSend = conn.send.bind(conn);
    conn.send = (code, data, context) => {
      const rw = st.rewrite;
      st.rewrite = undefined;
      if (rw && (rw.always || code < 400)) {
        code = rw.reply.code;
        data = textLines(rw.reply.text);
        context = false;
      }
      const lines = data == null ? [] : Array.isArray(data) ? data.map(String) : [String(data)];
      for (const [i, l] of lines.entries()) {
        const sep = i < lines.length - 1 ? '-' : ' ';
        rec.transcript.push({ from: 'server', line: `${code}${sep}${l}`, tls: conn.secure });
      }
      const target = st.replyTarget;
      st.replyTarget = undefined;
      target?.(code, lines);
      originalSend(code, data, context);
      notify();
    };

    const originalOnCommand = conn._onCommand.bind(conn);
    conn._onCommand = (command, callback) => {
      const line = command.toString();
      rec.transcript.push({ from: 'client', line, tls: conn.secure });
      // Plaintext that trailed STARTTLS, or anything after the sink went quiet: smtp-server
      // drops the former by itself, and the latter must get no answer at all.
      if (rec.silenced) return notify();
      if (conn._upgrading) return originalOnCommand(command, callback);

      const next = callback ?? (() => {});
      const cmd: SinkCommand = { line, at: Date.now(), tls: conn.secure };
      rec.commands.push(cmd);
      const verb = line.trim().split(/[\s:]/, 1)[0].toUpperCase();
      const stage = STAGE_OF_VERB[verb];
      let onReply: ((code: number) => void) | undefined;
      let reply: SinkReply | undefined;

      if (stage === 'ehlo' || stage === 'helo') {
        rec.heloVerb = verb as 'EHLO' | 'HELO';
        rec.heloName = line.trim().split(/\s+/)[1];
        st.tx = undefined;
      } else if (verb === 'RSET') {
        st.tx = undefined;
      } else if (stage === 'mail') {
        if (isNth(options.dropAtMail, ++st.mails)) {
          rec.dropped = 'mail';
          conn._socket.destroy();
          return notify();
        }
        const path = parseSmtpPath(line);
        if (path) {
          const tx: SinkTransaction = { mailFrom: path, rcptTo: [], tls: conn.secure };
          onReply = (code) => {
            tx.mailReplyCode = code;
            if (code < 400) {
              rec.transactions.push(tx);
              st.tx = tx;
            }
          };
        }
      } else if (stage === 'rcpt') {
        const path = parseSmtpPath(line);
        const tx = st.tx;
        if (path && tx) {
          const rcpt: SinkRecipient = { ...path };
          tx.rcptTo.push(rcpt);
          onReply = (code) => {
            rcpt.replyCode = code;
          };
        }
      }
      notify();

      later(delayFor(stage), () => {
        if (stage && silentAt === stage) {
          rec.silenced = stage;
          return notify();
        }
        st.replyTarget = (code, lines) => {
          cmd.replyCode = code;
          cmd.reply = lines;
          onReply?.(code);
        };
        if (stage === 'starttls' && silentAt === 'tls-handshake') {
          conn.send(220, 'Ready to start TLS', false);
          // Detach the parser and stop reading: the ClientHello sits unread in the kernel buffer.
          if (conn._parser) conn._socket.unpipe(conn._parser);
          conn._socket.pause();
          rec.silenced = 'tls-handshake';
          return notify();
        }
        if (stage === 'mail' || stage === 'rcpt') {
          const path = parseSmtpPath(line);
          if (path) reply = resolveReply(replies[stage], path.address, path.params, rec);
        } else if (stage) {
          reply = resolveReply(replies[stage] as ReplyFor<[SinkSession]> | undefined, rec);
        }
        if (reply && reply.code >= 400) {
          conn.send(reply.code, textLines(reply.text), false);
          return next();
        }
        st.rewrite = reply ? { reply, always: false } : undefined;
        originalOnCommand(command, callback);
      });
    };
  }

  const originalConnect = server.connect.bind(server);
  server.connect = (socket, socketOptions) => {
    originalConnect(socket, socketOptions);
    // connect() registers the new SMTPConnection and returns; nothing has been read yet.
    const conn = [...server.connections].at(-1);
    if (conn) instrument(conn, socket as net.Socket);
  };

  if (options.tls === 'implicit' && silentAt === 'tls-handshake') {
    // Never hand the socket to smtp-server, which would answer the ClientHello.
    server.server.removeAllListeners('connection');
    let n = 0;
    server.server.on('connection', (socket: net.Socket) => {
      const rec = newSession(socket, socket.remoteAddress ?? '', socket.remotePort ?? 0, `blackhole-${++n}`);
      rec.silenced = 'tls-handshake';
      socket.on('error', () => {});
      socket.pause();
      notify();
    });
  }
  server.server.on('connection', (socket: net.Socket) => {
    rawSockets.add(socket);
    socket.once('close', () => rawSockets.delete(socket));
  });

  const listenHost = options.listen?.host ?? '127.0.0.1';
  if (!/^127\./.test(listenHost) && listenHost !== '::1') throw new Error(`sinks listen on loopback only, not ${listenHost}`);
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(options.listen?.port ?? 0, listenHost, () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const port = (server.server.address() as net.AddressInfo).port;

  const waitFor = <T>(predicate: () => T | Falsy, timeoutMs = DEFAULT_WAIT_MS, what = 'condition') =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        let v: T | Falsy;
        try {
          v = predicate();
        } catch (err) {
          finish();
          reject(err);
          return;
        }
        if (v) {
          finish();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`smtp sink on port ${port}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  return {
    host: listenHost,
    port,
    tls: options.tls,
    sessions,
    get openSessions() {
      return openSessions;
    },
    get peakOpenSessions() {
      return peakOpenSessions;
    },
    errors,
    messages: () => [...delivered],
    waitForMessages: (n, timeoutMs) =>
      waitFor(() => delivered.length >= n && [...delivered], timeoutMs, `${n} message(s)`),
    waitForSessions: (n, timeoutMs) =>
      waitFor(() => sessions.length >= n && [...sessions], timeoutMs, `${n} session(s)`),
    waitFor,
    close: () =>
      new Promise<void>((resolve) => {
        if (closing) return resolve();
        closing = true;
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.close(() => resolve());
        // Top (TLS) sockets first, then what is under them; nothing waits for a client.
        for (const s of tlsSockets) s.destroy();
        for (const s of rawSockets) s.destroy();
      }),
  };
}
