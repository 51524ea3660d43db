// Lacre's outbound SMTP session: the one module that speaks SMTP on the wire to a receiving MTA.
// It owns one TCP connection: greeting, EHLO (HELO on 5xx), STARTTLS as the TLS level demands,
// certificate facts, the envelope (with PIPELINING), DATA, RSET, QUIT, per-stage timeouts, and the
// record of how the connection travelled. What a fact *means* under a level is decided by
// ../tls-policy/levels.ts (judgeTls), never here.
//
// Why a small client of our own instead of wrapping nodemailer's SMTPConnection (10.6, read in
// node_modules/nodemailer/dist/esm/smtp-connection/index.js):
// - Its connect() runs greeting → EHLO → STARTTLS → EHLO as one internal callback chain steered by
//   flags (ignoreTLS / opportunisticTLS / requireTLS). There is no point between steps where the
//   level can judge a fact, and whether STARTTLS was offered at all is never exposed
//   (`_plaintextEhlo` is private), so "starttls-not-supported" and "starttls-refused" (and a
//   stripping MITM) cannot be told apart without reaching into internals. With requireTLS it even
//   sends STARTTLS to a server that did not offer it.
// - With PIPELINING it sends DATA in the same batch as the RCPTs (`_envelope.pipelined`), so DATA
//   goes out even when every recipient is refused; Lacre sends DATA only after an accepted RCPT.
// - It falls back to HELO on any non-2xx EHLO reply, a 4xx included; RFC 5321 §4.1.4 only makes
//   sense of the fallback on 5xx (command not recognised).
// - Its timeouts are per connection phase (connection/greeting/socket idle), not the per-command
//   ones of RFC 5321 §4.5.3.2 (MAIL/RCPT 5 min, DATA 2 min, block 3 min, final dot 10 min), and it
//   keeps no per-command timings.
// - What it does well, and this client does too: since 10.x `_upgradeConnection` discards any
//   plaintext buffered after the 220 to STARTTLS (RFC 3207 §4.2/§6, response injection). That was
//   not a reason to leave it; the reasons above were. The SMTP subset needed here is small (a
//   reply parser and ten commands), and owning it keeps the policy decisions explicit and testable.
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate, createHash } from 'node:crypto';
import { MIN_TLS_VERSION, classifyTlsError, judgeTls, type TlsFailure, type TlsJudgement, type TlsLevel } from '../tls-policy/levels.ts';
import { isUsableTlsa, matchDane } from '../tls-policy/dane.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';
import type { SmtpStage } from '../mail/smtp-stage.ts';
import { DEFAULT_TIMEOUTS, type Timeouts } from './timeouts.ts';
import { trustedContext } from '../net/trust.ts';

// The defaults live in a module without sockets, so configuration can read them.
export { DEFAULT_TIMEOUTS, type Timeouts };

// ---------------------------------------------------------------------------------------------
// Public types

export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code from the first line, when its class matches the code. */
  enhanced?: string;
  /** The reply's lines without the code (and without a leading enhanced code), joined by "\n". */
  text: string;
  /** Lacre decided this itself; nothing was sent to the server for it. */
  local?: boolean;
}

export interface SessionOptions {
  /** IP address to connect to (already resolved by the caller). */
  address: string;
  port: number;
  /** The MX host name: SNI and the name the certificate must carry under `verify`. */
  mxHost: string;
  level: TlsLevel;
  /** Our name in EHLO/HELO. */
  ehloName: string;
  /** Extra trusted CA certificates (PEM), on top of the system and bundled stores. */
  ca?: string[];
  timeouts?: Partial<Timeouts>;
  /** The `may` level's second connection after a failed handshake: no STARTTLS, downgrade recorded. */
  forcePlaintext?: { reason: TlsFailure; detail?: string };
  /** Source address to bind, for hosts with several. */
  localAddress?: string;
  /** Aborting while the session opens destroys the connection; it does not follow the session into a pool. */
  signal?: AbortSignal;
  /**
   * Required with level `dane`, refused otherwise: the MX host's usable DNSSEC-secure TLSA records
   * (RFC 7672 §2.2) and the DANE-TA(2) reference identifiers (RFC 7672 §3.2.2: the MX host name and,
   * after a secure CNAME, the TLSA base domain).
   */
  dane?: {
    tlsa: TlsaRecord[];
    names: string[];
    /** SNI under `dane`: the TLSA base domain (RFC 7672 §8.1). Default: the MX host name. */
    sni?: string;
  };
}

export interface CertificateFacts {
  subjectCN?: string;
  /** DNS names and IP addresses from subjectAltName. */
  subjectAltNames: string[];
  /** Issuer distinguished name, e.g. "CN=Lacre Test Root CA". */
  issuer?: string;
  /** Lowercase hex SHA-256 of the leaf certificate DER. */
  fingerprintSha256: string;
  /** Lowercase hex SHA-256 of the leaf SubjectPublicKeyInfo (DANE 3 1 1 matches on this). */
  spkiSha256?: string;
  notBefore: string;
  notAfter: string;
}

export interface CommandTiming {
  /** Verb only; addresses are personal data and stay out of the facts. */
  command: string;
  ms: number;
  code?: number;
}

/** How one connection travelled. Plain data: safe to serialise into a delivery record. */
export interface TlsFacts {
  remoteAddress: string;
  remotePort: number;
  mxHost: string;
  level: TlsLevel;
  /** The pre-TLS EHLO advertised STARTTLS (undefined if the session ended before EHLO). */
  starttlsOffered?: boolean;
  /** The server answered EHLO with 5xx and HELO was used (no extensions). */
  heloFallback?: boolean;
  /**
   * The domain the server named in its latest 250 to EHLO/HELO (RFC 5321 §4.1.1.1): TLS-RPT's
   * `receiving-mx-helo` (RFC 8460 §4.4). Absent when the reply named nothing printable.
   */
  helo?: string;
  /** Commands after the handshake were protected by TLS. */
  tls: boolean;
  /** Negotiated protocol, e.g. TLSv1.3. */
  protocol?: string;
  cipher?: string;
  certificate?: CertificateFacts;
  /** The chain verified against the trusted CAs and every certificate is within its validity. */
  chainVerified?: boolean;
  /** The certificate names the MX host (tls.checkServerIdentity). */
  hostnameMatches?: boolean;
  /** chainVerified && hostnameMatches: what `verify` requires. Recorded under every level. */
  verified?: boolean;
  /** Node/OpenSSL code of the first verification problem, e.g. CERT_HAS_EXPIRED. */
  verificationError?: string;
  verificationFailure?: TlsFailure;
  /** Level `dane`: how the presented chain fared against the TLSA records (RFC 7672 §3). */
  dane?: {
    matched: boolean;
    /** The record that authenticated the peer, presentation form ("3 1 1 0C72…"). */
    record?: string;
    usage?: 2 | 3;
    failure?: TlsFailure;
    detail: string;
  };
  /** Set when a `may` delivery travels in plaintext although TLS was wanted, and why. */
  downgrade?: { reason: TlsFailure; detail: string; retried: boolean };
  /** Bytes that arrived after the 220 to STARTTLS and before the handshake: discarded (RFC 3207 §4.2). */
  discardedAfterStartTls?: number;
  timings: {
    connectMs?: number;
    tlsHandshakeMs?: number;
    commands: CommandTiming[];
    /** Timings not kept once the list is full (long-lived reused sessions). */
    commandsDropped: number;
  };
}

export interface Extensions {
  /** Every EHLO keyword (upper case) with its parameters. */
  keywords: ReadonlyMap<string, string>;
  /** RFC 1870 fixed maximum; undefined when SIZE is absent or announces no limit. */
  size?: number;
  sizeAdvertised: boolean;
  pipelining: boolean;
  eightBitMime: boolean;
  smtpUtf8: boolean;
  enhancedStatusCodes: boolean;
  requireTls: boolean;
  starttls: boolean;
  dsn: boolean;
}

export interface Envelope {
  /** Reverse path; null (or '') for the null sender `<>` of bounces. */
  from: string | null;
  to: string[];
  /** RFC 8689: send only to a server offering REQUIRETLS, over TLS, with the MAIL parameter. */
  requireTls?: boolean;
  /** Declared size for SIZE=; the message length is used when larger or absent. */
  size?: number;
}

export interface RecipientResult extends Reply {
  accepted: boolean;
}

export interface SendResult {
  /** Per recipient address as given in the envelope. */
  recipients: Map<string, RecipientResult>;
  /** The reply to DATA (when not 354) or to the final dot; absent when no RCPT was accepted or DATA was withheld. */
  data?: Reply;
  /** `beforeData` said no: recipients were accepted, DATA was never sent and the transaction was RSET. */
  dataWithheld?: boolean;
}

export interface SendHooks {
  /**
   * Asked once, after a RCPT was accepted and right before the DATA command. False withholds DATA:
   * the transaction is RSET (RFC 5321 §4.1.1.5) and the session stays usable. Used to stop a
   * worker that lost its lease from sending what another worker now owns.
   */
  beforeData?: () => boolean;
}

/**
 * Where a session failed. `data` is the DATA command, its 354 and the message blocks up to the one
 * carrying the final dot; `dot` starts once the final dot was handed to the socket and covers the
 * wait for its reply (RFC 5321 §4.5.3.2.6). A failure at `dot` leaves the outcome unknown: the
 * server may have taken the message (RFC 1047). `message` is a local refusal before MAIL.
 */
export type SessionStage = SmtpStage;

export type SessionErrorKind =
  /** Refused, reset or closed by the peer. */
  | 'connection'
  /** A stage timeout (RFC 5321 §4.5.3.2) or the connect/handshake timeout. */
  | 'timeout'
  /** The server refused (see `reply`). */
  | 'reply'
  /** The server broke SMTP: malformed or unsolicited replies, an oversized reply. */
  | 'protocol'
  /** The TLS level is not met (see `failure`); nothing of the envelope was sent. */
  | 'tls-policy'
  /** Local refusals before sending (see the synthesised, `local` reply). */
  | 'size-exceeded'
  | 'requiretls-unavailable'
  | 'smtputf8-unavailable'
  | '8bitmime-unavailable'
  | 'message-format'
  | 'aborted';

export class SmtpSessionError extends Error {
  readonly stage: SessionStage;
  readonly kind: SessionErrorKind;
  /** A later attempt may succeed (4xx, timeouts, connection and TLS policy failures). */
  readonly temporary: boolean;
  readonly failure?: TlsFailure;
  readonly reply?: Reply;
  /** Snapshot of the connection's facts when it failed. */
  readonly facts?: TlsFacts;
  /** `may` only: the handshake failed and one new plaintext connection is allowed. */
  readonly retryPlaintext: boolean;
  /** The server had accepted MAIL FROM of the transaction that failed. */
  readonly mailAccepted: boolean;
  /** RCPT results of the failed transaction, when it failed after them (stages `data` and `dot`). */
  readonly recipients?: Map<string, RecipientResult>;

  constructor(
    message: string,
    init: {
      stage: SessionStage;
      kind: SessionErrorKind;
      temporary: boolean;
      failure?: TlsFailure;
      reply?: Reply;
      facts?: TlsFacts;
      retryPlaintext?: boolean;
      mailAccepted?: boolean;
      recipients?: Map<string, RecipientResult>;
    },
  ) {
    super(message);
    this.name = 'SmtpSessionError';
    this.stage = init.stage;
    this.kind = init.kind;
    this.temporary = init.temporary;
    this.failure = init.failure;
    this.reply = init.reply;
    this.facts = init.facts;
    this.retryPlaintext = init.retryPlaintext ?? false;
    this.mailAccepted = init.mailAccepted ?? false;
    this.recipients = init.recipients;
  }
}

// ---------------------------------------------------------------------------------------------
// Limits

// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers exceed it a little.
const MAX_LINE = 4096;
const MAX_REPLY_LINES = 200;
// Bytes parked between the 220 to STARTTLS and the handshake, or unparsed input: bounded so a
// hostile peer cannot make us buffer without end.
const MAX_BUFFERED = 64 * 1024;
const MAX_TIMINGS = 256;
const WRITE_CHUNK = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Small pure helpers

function parseReply(lines: string[]): Reply {
  const code = Number(lines[lines.length - 1].slice(0, 3));
  const texts = lines.map((l) => l.slice(4));
  const m = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/.exec(texts[0] ?? '');
  // RFC 3463 §2: the enhanced code's class must agree with the reply code.
  const enhanced = m && Number(m[1]) === Math.floor(code / 100) ? `${m[1]}.${m[2]}.${m[3]}` : undefined;
  const text = texts.map((t) => (enhanced && t.startsWith(enhanced) ? t.slice(enhanced.length).trimStart() : t)).join('\n');
  return enhanced ? { code, enhanced, text } : { code, text };
}

function parseExtensions(reply: Reply | undefined): Extensions {
  const keywords = new Map<string, string>();
  // The first line is the server's name and greeting; each later line is one extension.
  for (const line of reply ? reply.text.split('\n').slice(1) : []) {
    const [word, ...params] = line.trim().split(/\s+/);
    if (word) keywords.set(word.toUpperCase(), params.join(' '));
  }
  const sizeParam = keywords.get('SIZE');
  const size = sizeParam !== undefined && /^\d+$/.test(sizeParam) && Number(sizeParam) > 0 ? Number(sizeParam) : undefined;
  return {
    keywords,
    size,
    sizeAdvertised: keywords.has('SIZE'),
    pipelining: keywords.has('PIPELINING'),
    eightBitMime: keywords.has('8BITMIME'),
    smtpUtf8: keywords.has('SMTPUTF8'),
    enhancedStatusCodes: keywords.has('ENHANCEDSTATUSCODES'),
    requireTls: keywords.has('REQUIRETLS'),
    starttls: keywords.has('STARTTLS'),
    dsn: keywords.has('DSN'),
  };
}

const isAscii = (s: string) => /^[\x00-\x7f]*$/.test(s);
// CR/LF would let an address smuggle extra commands; angle brackets would end the path early.
const badAddress = (s: string) => /[\x00-\x1f\x7f<>]/.test(s) || s.length > 320;

/** Offset of the first CR or LF that is not part of a CRLF pair, or -1. */
function bareLineEnd(msg: Buffer): number {
  for (let i = msg.indexOf(0x0a); i >= 0; i = msg.indexOf(0x0a, i + 1)) {
    if (i === 0 || msg[i - 1] !== 0x0d) return i;
  }
  for (let i = msg.indexOf(0x0d); i >= 0; i = msg.indexOf(0x0d, i + 1)) {
    if (msg[i + 1] !== 0x0a) return i;
  }
  return -1;
}

function hasEightBit(msg: Buffer): boolean {
  for (let i = 0; i < msg.length; i++) if (msg[i] > 0x7f) return true;
  return false;
}

const DOT = Buffer.from('.');
const CRLF = Buffer.from('\r\n');
const END_OF_DATA = Buffer.from('.\r\n');

/**
 * The message as DATA content (RFC 5321 §4.5.2): a line starting with "." gets one more, a
 * missing final CRLF is added, then the terminating ".". Slices of the original, no copies.
 */
export function dotStuff(msg: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let from = 0;
  if (msg[0] === 0x2e) parts.push(DOT);
  for (let i = msg.indexOf('\n.'); i >= 0; i = msg.indexOf('\n.', i + 2)) {
    parts.push(msg.subarray(from, i + 1), DOT);
    from = i + 1;
  }
  parts.push(msg.subarray(from));
  if (msg.length > 0 && !(msg[msg.length - 2] === 0x0d && msg[msg.length - 1] === 0x0a)) parts.push(CRLF);
  parts.push(END_OF_DATA);
  return parts.filter((p) => p.length > 0);
}

function certificateFacts(cert: tls.PeerCertificate): CertificateFacts | undefined {
  if (!cert || !cert.raw) return undefined;
  const cn = cert.subject?.CN;
  const issuer = cert.issuer
    ? Object.entries(cert.issuer)
        .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
        .join(', ')
    : undefined;
  let spkiSha256: string | undefined;
  try {
    const spki = new X509Certificate(cert.raw).publicKey.export({ type: 'spki', format: 'der' });
    spkiSha256 = createHash('sha256').update(spki).digest('hex');
  } catch {
    // An unparseable key is itself recorded by its absence.
  }
  return {
    subjectCN: Array.isArray(cn) ? cn.join(', ') : cn,
    subjectAltNames: (cert.subjectaltname ?? '')
      .split(/,\s*/)
      .filter(Boolean)
      .map((s) => s.replace(/^(DNS|IP Address):/, '')),
    issuer,
    fingerprintSha256: createHash('sha256').update(cert.raw).digest('hex'),
    spkiSha256,
    notBefore: new Date(cert.valid_from).toISOString(),
    notAfter: new Date(cert.valid_to).toISOString(),
  };
}

/**
 * The certificates the peer sent, DER, leaf first: Node links each to its issuer, ending where
 * the chain repeats (a self-signed root points at itself) or has no issuer. Node may complete the
 * chain with a root from the local trust store; a DANE-TA record can only match that root if its
 * digest is in DNSSEC-signed DNS, so the addition gives no attacker anything.
 */
function presentedChain(socket: tls.TLSSocket): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<string>();
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  for (let i = 0; i < 16 && cert?.raw; i++) {
    const id = cert.fingerprint256;
    if (seen.has(id)) break;
    seen.add(id);
    chain.push(cert.raw);
    cert = cert.issuerCertificate;
  }
  return chain;
}

/** A `dane` session without records (or records for another level) is a caller bug, not a peer's fault. */
function checkDaneOptions(o: SessionOptions): void {
  if (o.level === 'dane') {
    if (!o.dane) throw new Error('SmtpSession: level "dane" needs options.dane with the TLSA records and names');
    if (!o.dane.tlsa.some(isUsableTlsa)) throw new Error('SmtpSession: level "dane" needs at least one usable TLSA record (DANE-TA or DANE-EE)');
  } else if (o.dane) {
    throw new Error(`SmtpSession: options.dane is only for level "dane", not "${o.level}"`);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

// ---------------------------------------------------------------------------------------------
// The session

interface Waiter {
  resolve: (r: Reply) => void;
  reject: (e: SmtpSessionError) => void;
  stage: SessionStage;
}

interface Death {
  kind: SessionErrorKind;
  message: string;
}

export async function openSession(options: SessionOptions): Promise<SmtpSession> {
  return SmtpSession.open(options);
}

/**
 * openSession plus the `may` level's single plaintext retry: when the TLS handshake fails, one new
 * connection without STARTTLS, its facts carrying `downgrade: { reason, retried: true }`.
 */
export async function openSessionWithPolicy(options: SessionOptions): Promise<SmtpSession> {
  try {
    return await openSession(options);
  } catch (err) {
    if (err instanceof SmtpSessionError && err.retryPlaintext && err.failure && options.level === 'may' && !options.forcePlaintext) {
      return openSession({ ...options, forcePlaintext: { reason: err.failure, detail: err.message } });
    }
    throw err;
  }
}

export class SmtpSession {
  readonly facts: TlsFacts;
  #o: SessionOptions;
  #t: Required<Timeouts>;
  #socket!: net.Socket;
  #plain!: net.Socket;
  #ext: Extensions = parseExtensions(undefined);
  #in: Buffer = Buffer.alloc(0);
  #lines: string[] = [];
  #replies: Reply[] = [];
  #outstanding = 0;
  #waiter: Waiter | undefined;
  #death: Death | undefined;
  /** Stop parsing after the next complete reply (the 220 to STARTTLS): what follows is suspect. */
  #holdAfterReply = false;
  #held = false;
  #busy = false;
  #closed = false;
  #serverClosing = false;
  #messagesSent = 0;
  /** Of the transaction under way: MAIL FROM got a 2xx, and the RCPT results once known. */
  #tx: { mailAccepted: boolean; recipients?: Map<string, RecipientResult> } = { mailAccepted: false };
  #onAbort = () => this.#die({ kind: 'aborted', message: 'aborted' });
  #onData = (chunk: Buffer) => this.#receive(chunk);
  #onError = (err: Error) => this.#die({ kind: 'connection', message: `connection error: ${describe(err)}` });
  #onClose = () => this.#die({ kind: 'connection', message: 'connection closed by the server' });

  private constructor(options: SessionOptions) {
    checkDaneOptions(options);
    // MX exchanges can come with the root dot; SNI and the certificate name check want it off.
    this.#o = { ...options, mxHost: options.mxHost.replace(/\.$/, '') };
    this.#t = { ...DEFAULT_TIMEOUTS, ...definedOnly(options.timeouts ?? {}) };
    this.facts = {
      remoteAddress: options.address,
      remotePort: options.port,
      mxHost: this.#o.mxHost,
      level: options.level,
      tls: false,
      timings: { commands: [], commandsDropped: 0 },
    };
  }

  /** Connect, greet, EHLO, STARTTLS and judge the level; rejects with SmtpSessionError. */
  static async open(options: SessionOptions): Promise<SmtpSession> {
    const session = new SmtpSession(options);
    try {
      await session.#establish();
      return session;
    } catch (err) {
      session.destroy();
      throw err;
    } finally {
      // The signal guards opening only: a pooled session outlives the delivery that opened it.
      options.signal?.removeEventListener('abort', session.#onAbort);
    }
  }

  get extensions(): Extensions {
    return this.#ext;
  }

  get messagesSent(): number {
    return this.#messagesSent;
  }

  /** Connected, in a known state, not closed: another transaction may start. */
  get usable(): boolean {
    return !this.#closed && !this.#death && !this.#serverClosing && !this.#held && !this.#socket?.destroyed;
  }

  // ------------------------------------------------------------------------------------------
  // Setting up

  async #establish(): Promise<void> {
    const o = this.#o;
    if (o.signal?.aborted) throw this.#error('aborted before connecting', 'connect', 'aborted', true);
    o.signal?.addEventListener('abort', this.#onAbort, { once: true });

    this.#outstanding = 1; // the greeting
    await this.#connect();
    const greeting = await this.#timed('greeting', this.#read('greeting', this.#t.greeting));
    if (greeting.code !== 220) {
      // RFC 5321 §3.1: after a 554 greeting the client should still QUIT politely.
      await this.#quietQuit(greeting.code !== 421);
      throw this.#replyError('greeting refused', 'greeting', greeting);
    }

    await this.#hello();
    this.facts.starttlsOffered = this.#ext.starttls;
    const afterEhlo = judgeTls(o.level, {
      step: 'ehlo',
      starttlsOffered: this.#ext.starttls,
      plaintextRetry: o.forcePlaintext ? { failure: o.forcePlaintext.reason, detail: o.forcePlaintext.detail ?? o.forcePlaintext.reason } : undefined,
    });
    if (afterEhlo.action !== 'proceed') return this.#settle(afterEhlo, 'starttls', !!o.forcePlaintext);

    this.#holdAfterReply = true;
    const reply = await this.#command('STARTTLS', 'STARTTLS', 'starttls', this.#t.command);
    const afterStartTls = judgeTls(o.level, { step: 'starttls-reply', code: reply.code, text: reply.text });
    if (afterStartTls.action !== 'proceed') {
      // Refused: the session goes on in plaintext (may) or ends; either way parsing resumes.
      this.#release();
      return this.#settle(afterStartTls, 'starttls', false);
    }
    await this.#upgrade();
  }

  /** Applies a non-"proceed" judgement made before TLS. */
  async #settle(j: TlsJudgement, stage: SessionStage, retried: boolean): Promise<void> {
    if (j.action === 'plaintext') {
      if (j.failure) this.facts.downgrade = { reason: j.failure, detail: j.detail ?? j.failure, retried };
      return;
    }
    if (j.action === 'proceed') return;
    // defer (or a retry that only a failed handshake can earn): QUIT is safe in plaintext, it
    // carries nothing of the message.
    await this.#quietQuit(true);
    throw this.#error(`TLS policy "${this.#o.level}" not met: ${j.detail}`, stage, 'tls-policy', true, { failure: j.failure });
  }

  #connect(): Promise<void> {
    const o = this.#o;
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: o.address, port: o.port, localAddress: o.localAddress });
      this.#socket = socket;
      this.#plain = socket;
      socket.setNoDelay(true);
      const done = (err?: SmtpSessionError) => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        o.signal?.removeEventListener('abort', onAbort);
        if (err) {
          socket.destroy();
          reject(err);
        } else resolve();
      };
      const onConnect = () => {
        this.facts.timings.connectMs = Math.round(performance.now() - started);
        this.#attach(socket);
        done();
      };
      const onError = (err: Error) => done(this.#error(`connect to ${o.address}:${o.port} failed: ${describe(err)}`, 'connect', 'connection', true));
      const onAbort = () => done(this.#error('aborted while connecting', 'connect', 'aborted', true));
      const timer = setTimeout(
        () => done(this.#error(`connect to ${o.address}:${o.port} timed out after ${this.#t.connect} ms`, 'connect', 'timeout', true)),
        this.#t.connect,
      );
      socket.once('connect', onConnect);
      socket.once('error', onError);
      o.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** EHLO, or HELO when EHLO gets a 5xx (RFC 5321 §4.1.4); a 4xx is a temporary refusal. */
  async #hello(): Promise<void> {
    const ehlo = await this.#command(`EHLO ${this.#o.ehloName}`, 'EHLO', 'ehlo', this.#t.command);
    if (ehlo.code === 250) {
      this.#ext = parseExtensions(ehlo);
      this.#noteHelo(ehlo);
      return;
    }
    if (ehlo.code < 500 || ehlo.code > 599) {
      await this.#quietQuit(ehlo.code !== 421);
      throw this.#replyError('EHLO refused', 'ehlo', ehlo);
    }
    const helo = await this.#command(`HELO ${this.#o.ehloName}`, 'HELO', 'ehlo', this.#t.command);
    if (helo.code !== 250) {
      await this.#quietQuit(helo.code !== 421);
      throw this.#replyError('HELO refused', 'ehlo', helo);
    }
    this.#ext = parseExtensions(undefined);
    this.#noteHelo(helo);
    this.facts.heloFallback = true;
  }

  #noteHelo(reply: Reply): void {
    const name = reply.text.split('\n')[0].trim().split(/\s+/)[0] ?? '';
    // A server's own words end up in reports: keep them to one bounded, printable token.
    if (/^[\x21-\x7e]{1,255}$/.test(name)) this.facts.helo = name;
  }

  async #upgrade(): Promise<void> {
    const o = this.#o;
    // RFC 3207 §4.2: nothing received before the handshake may be taken as a reply afterwards.
    // Whatever followed the 220 (an injection, or a confused server) is counted and dropped.
    const discarded = this.#in.length + this.#lines.reduce((n, l) => n + l.length + 2, 0) + this.#replies.length;
    if (discarded > 0) this.facts.discardedAfterStartTls = discarded;
    this.#in = Buffer.alloc(0);
    this.#lines = [];
    this.#replies = [];
    this.#outstanding = 0;
    this.#held = false;
    this.#holdAfterReply = false;

    const plain = this.#plain;
    this.#detach(plain);
    // Errors of the raw socket surface through the TLS socket; this keeps a late one from being unhandled.
    plain.on('error', () => {});

    const started = performance.now();
    let secure: tls.TLSSocket;
    try {
      secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
        let s: tls.TLSSocket;
        const fail = (err: unknown) => {
          clearTimeout(timer);
          o.signal?.removeEventListener('abort', onAbort);
          s?.destroy();
          plain.destroy();
          reject(err);
        };
        const onAbort = () => fail(Object.assign(new Error('aborted during the TLS handshake'), { code: 'ABORT_ERR' }));
        const timer = setTimeout(
          () => fail(Object.assign(new Error(`TLS handshake timed out after ${this.#t.tlsHandshake} ms`), { code: 'ETIMEDOUT' })),
          this.#t.tlsHandshake,
        );
        o.signal?.addEventListener('abort', onAbort, { once: true });
        try {
          // RFC 7672 §8.1: under DANE the SNI is the TLSA base domain, so the server picks the chain
          // its records describe; otherwise the MX host name.
          const sni = o.level === 'dane' && o.dane?.sni ? o.dane.sni.replace(/\.$/, '') : o.mxHost;
          s = tls.connect({
            socket: plain,
            // RFC 6066 §3: SNI carries host names only, never an address literal.
            servername: net.isIP(sni) ? undefined : sni,
            secureContext: trustedContext(o.ca),
            minVersion: MIN_TLS_VERSION,
            // Verification is recorded under every level and enforced by judgeTls, not by Node:
            // an unverifiable certificate must still let `may`/`encrypt` proceed.
            rejectUnauthorized: false,
            checkServerIdentity: () => undefined,
          });
        } catch (err) {
          return fail(err);
        }
        s.once('secureConnect', () => {
          clearTimeout(timer);
          o.signal?.removeEventListener('abort', onAbort);
          s.off('error', fail);
          resolve(s);
        });
        s.once('error', fail);
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ABORT_ERR') throw this.#error('aborted during the TLS handshake', 'tls', 'aborted', true);
      const failure = classifyTlsError(err);
      const j = judgeTls(o.level, { step: 'handshake', failure, detail: describe(err) });
      const timedOut = (err as NodeJS.ErrnoException).code === 'ETIMEDOUT';
      this.#death = { kind: timedOut ? 'timeout' : 'connection', message: describe(err) };
      throw this.#error(`TLS handshake with ${o.mxHost} failed (${failure}): ${describe(err)}`, 'tls', 'tls-policy', true, {
        failure: 'failure' in j ? j.failure : failure,
        retryPlaintext: j.action === 'retry-plaintext',
      });
    }
    this.facts.timings.tlsHandshakeMs = Math.round(performance.now() - started);
    this.#socket = secure;
    this.#attach(secure);

    const cert = secure.getPeerCertificate();
    const chainVerified = secure.authorized;
    const chainError = chainVerified ? undefined : String(secure.authorizationError ?? 'UNKNOWN');
    const nameError = cert?.raw ? tls.checkServerIdentity(o.mxHost, cert) : new Error('no certificate');
    const hostnameMatches = nameError === undefined;
    const protocol = secure.getProtocol();
    Object.assign(this.facts, {
      tls: true,
      protocol: protocol ?? undefined,
      cipher: secure.getCipher()?.name,
      certificate: certificateFacts(cert),
      chainVerified,
      hostnameMatches,
      verified: chainVerified && hostnameMatches,
    } satisfies Partial<TlsFacts>);
    const verificationError = chainError ?? (hostnameMatches ? undefined : ((nameError as NodeJS.ErrnoException).code ?? 'ERR_TLS_CERT_ALTNAME_INVALID'));
    if (verificationError) {
      this.facts.verificationError = verificationError;
      const f = classifyTlsError(verificationError);
      this.facts.verificationFailure = f === 'tls-handshake-failed' ? 'validation-failure' : f;
    }

    let dane: { matched: boolean; detail: string; failure?: TlsFailure } | undefined;
    if (o.level === 'dane' && o.dane) {
      // RFC 7672 §3: the TLSA records alone authenticate the peer; WebPKI facts above stay a record.
      const m = matchDane(o.dane.tlsa, presentedChain(secure), { names: o.dane.names, now: Date.now() });
      this.facts.dane = m.matched
        ? { matched: true, record: m.record, usage: m.usage, detail: m.detail }
        : { matched: false, failure: m.failure, detail: m.detail };
      dane = m.matched ? { matched: true, detail: m.detail } : { matched: false, detail: m.detail, failure: m.failure };
    }

    const j = judgeTls(o.level, { step: 'established', protocol, chainVerified, chainError, hostnameMatches, dane });
    if (j.action === 'defer' || j.action === 'retry-plaintext') {
      // TLS is up: QUIT travels encrypted and reveals nothing. No MAIL FROM is ever sent.
      await this.#quietQuit(true);
      throw this.#error(`TLS policy "${o.level}" not met by ${o.mxHost}: ${j.detail}`, 'tls', 'tls-policy', true, {
        failure: j.failure,
        retryPlaintext: j.action === 'retry-plaintext',
      });
    }
    // RFC 3207 §4.2: forget the pre-TLS extensions and ask again, inside TLS.
    this.#ext = parseExtensions(undefined);
    await this.#hello();
  }

  // ------------------------------------------------------------------------------------------
  // Transactions

  /**
   * One mail transaction: MAIL, RCPT for each recipient (pipelined when offered), DATA only if a
   * recipient was accepted. Recipient refusals are results; failures of the whole transaction
   * (MAIL refused, local refusals, timeouts, a lost connection) reject with SmtpSessionError.
   */
  async send(envelope: Envelope, message: Buffer, hooks: SendHooks = {}): Promise<SendResult> {
    this.#enter('mail');
    this.#tx = { mailAccepted: false };
    try {
      return await this.#send(envelope, message, hooks);
    } finally {
      this.#tx = { mailAccepted: false };
      this.#busy = false;
    }
  }

  async #send(envelope: Envelope, message: Buffer, hooks: SendHooks): Promise<SendResult> {
    const ext = this.#ext;
    const from = envelope.from ?? '';
    const results = new Map<string, RecipientResult>();

    // Local checks first: a refusal here costs the server nothing and leaves the session usable.
    const bare = bareLineEnd(message);
    if (bare >= 0) {
      throw this.#localError('message-format', `the message has a bare CR or LF at byte ${bare}; SMTP needs CRLF line ends (RFC 5321 §2.3.8)`, 554, '5.6.0');
    }
    if (badAddress(from)) throw this.#localError('message-format', 'the sender address contains characters not allowed in SMTP', 553, '5.1.7');
    const size = Math.max(message.length, envelope.size ?? 0);
    if (ext.size !== undefined && size > ext.size) {
      // RFC 1870 §6: a client should not send a message the server announced it cannot take.
      throw this.#localError('size-exceeded', `message of ${size} bytes exceeds the server's fixed limit of ${ext.size} (RFC 1870)`, 552, '5.3.4');
    }
    const eightBit = hasEightBit(message);
    // RFC 6531 §3.1: SMTPUTF8 implies 8BITMIME; without either, 8-bit content cannot go as it is.
    if (eightBit && !ext.eightBitMime && !ext.smtpUtf8) {
      throw this.#localError('8bitmime-unavailable', 'the message has 8-bit content and the server offers neither 8BITMIME nor SMTPUTF8 (RFC 6152)', 554, '5.6.3');
    }
    if (envelope.requireTls && !(this.facts.tls && ext.requireTls)) {
      // RFC 8689 §4.2.1: never hand a REQUIRETLS message to a server that cannot keep the promise.
      throw this.#localError('requiretls-unavailable', this.facts.tls ? 'the server does not offer REQUIRETLS (RFC 8689)' : 'REQUIRETLS needs a TLS session (RFC 8689)', 550, '5.7.30');
    }
    if (!isAscii(from) && !ext.smtpUtf8) {
      throw this.#localError('smtputf8-unavailable', 'the sender address is internationalised and the server does not offer SMTPUTF8 (RFC 6531)', 553, '5.6.7');
    }

    const rcpts: string[] = [];
    for (const to of envelope.to) {
      if (results.has(to) || rcpts.includes(to)) continue;
      if (badAddress(to) || to === '') {
        results.set(to, { code: 553, enhanced: '5.1.3', text: 'recipient address has characters not allowed in SMTP', accepted: false, local: true });
      } else if (!isAscii(to) && !ext.smtpUtf8) {
        // RFC 6531 §3.2: without SMTPUTF8 at the server, a non-ASCII address cannot be sent at all.
        results.set(to, { code: 553, enhanced: '5.6.7', text: 'internationalised address and the server does not offer SMTPUTF8 (RFC 6531)', accepted: false, local: true });
      } else rcpts.push(to);
    }
    if (rcpts.length === 0) return { recipients: ordered(envelope.to, results) };

    const params: string[] = [];
    if (ext.sizeAdvertised) params.push(`SIZE=${size}`); // RFC 1870 §6
    if (eightBit && ext.eightBitMime) params.push('BODY=8BITMIME'); // RFC 6152 §3
    if (ext.smtpUtf8 && (!isAscii(from) || rcpts.some((r) => !isAscii(r)))) params.push('SMTPUTF8'); // RFC 6531 §3.4
    if (envelope.requireTls) params.push('REQUIRETLS'); // RFC 8689 §4.1
    const mailLine = `MAIL FROM:<${from}>${params.map((p) => ' ' + p).join('')}`;
    const rcptLines = rcpts.map((r) => `RCPT TO:<${r}>`);

    let mail: Reply;
    const rcptReplies: Reply[] = [];
    if (ext.pipelining) {
      // RFC 2920 §3.1: MAIL and RCPTs go as one batch; DATA is held back until a RCPT is accepted.
      const started = performance.now();
      this.#write([mailLine, ...rcptLines].map((l) => l + '\r\n').join(''), 1 + rcptLines.length);
      mail = await this.#read('mail', this.#t.command);
      this.#time('MAIL', started, mail.code);
      this.#tx.mailAccepted = mail.code >= 200 && mail.code < 300;
      // After a 421 the server closes: the replies still owed will never come.
      for (let i = 0; i < rcptLines.length && !this.#serverClosing; i++) {
        const r = await this.#read('rcpt', this.#t.command);
        this.#time('RCPT', started, r.code);
        rcptReplies.push(r);
      }
    } else {
      mail = await this.#command(mailLine, 'MAIL', 'mail', this.#t.command);
      this.#tx.mailAccepted = mail.code >= 200 && mail.code < 300;
      if (this.#tx.mailAccepted) {
        for (const line of rcptLines) {
          const r = await this.#command(line, 'RCPT', 'rcpt', this.#t.command);
          rcptReplies.push(r);
          if (r.code === 421) break;
        }
      }
    }
    if (mail.code < 200 || mail.code >= 300) throw this.#replyError('MAIL FROM refused', 'mail', mail);

    rcpts.forEach((to, i) => {
      const r = rcptReplies[i] ?? { code: 421, text: 'no reply: the server is closing the connection', local: true };
      results.set(to, { ...r, accepted: r.code >= 200 && r.code < 300 });
    });
    const recipients = ordered(envelope.to, results);
    this.#tx.recipients = recipients;
    if (this.#serverClosing) {
      // Accepted recipients without DATA are not delivered: the whole transaction failed.
      const closing = rcptReplies.find((r) => r.code === 421) ?? { code: 421, text: 'the server is closing the connection' };
      throw this.#replyError('the server closed the transaction', 'rcpt', closing);
    }
    if (!rcpts.some((to) => results.get(to)!.accepted)) {
      // RFC 5321 §4.1.1.5: end the open transaction so the session can carry the next message.
      await this.#resetQuietly();
      return { recipients };
    }

    if (hooks.beforeData && !hooks.beforeData()) {
      await this.#resetQuietly();
      return { recipients, dataWithheld: true };
    }
    const go = await this.#command('DATA', 'DATA', 'data', this.#t.dataInit);
    if (go.code !== 354) {
      if (!this.#serverClosing) await this.#resetQuietly();
      return { recipients, data: go };
    }
    const started = performance.now();
    await this.#writeData(dotStuff(message));
    const done = await this.#read('dot', this.#t.dataDone);
    this.#time('DATA-END', started, done.code);
    if (done.code >= 200 && done.code < 300) this.#messagesSent++;
    return { recipients, data: done };
  }

  /** RSET (RFC 5321 §4.1.1.5): abandon any transaction so the session can carry another. */
  async reset(): Promise<void> {
    this.#enter('mail');
    try {
      const r = await this.#command('RSET', 'RSET', 'mail', this.#t.command);
      if (r.code !== 250) {
        this.#die({ kind: 'reply', message: `RSET refused: ${r.code} ${r.text}` });
        throw this.#replyError('RSET refused', 'mail', r);
      }
    } finally {
      this.#busy = false;
    }
  }

  /** QUIT and close. Never rejects; safe to call more than once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#busy || !this.usable) return this.destroy();
    this.#busy = true;
    try {
      await this.#quietQuit(true);
    } finally {
      this.destroy();
      this.#busy = false;
    }
  }

  /** Drops the connection at once, without QUIT. */
  destroy(): void {
    this.#closed = true;
    this.#o.signal?.removeEventListener('abort', this.#onAbort);
    this.#die({ kind: 'connection', message: 'session closed' });
    this.#socket?.destroy();
    this.#plain?.destroy();
  }

  // ------------------------------------------------------------------------------------------
  // Wire

  #enter(stage: SessionStage): void {
    if (!this.usable) {
      const why = this.#closed ? 'closed' : (this.#death?.message ?? (this.#serverClosing ? 'the server is closing' : 'closed'));
      throw this.#error(`session not usable: ${why}`, stage, this.#death?.kind === 'timeout' && !this.#closed ? 'timeout' : 'connection', true);
    }
    if (this.#busy) throw new Error('SmtpSession: one operation at a time');
    this.#busy = true;
  }

  #attach(socket: net.Socket): void {
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('end', this.#onClose);
  }

  #detach(socket: net.Socket): void {
    socket.off('data', this.#onData);
    socket.off('error', this.#onError);
    socket.off('close', this.#onClose);
    socket.off('end', this.#onClose);
  }

  #receive(chunk: Buffer): void {
    if (this.#death) return;
    this.#in = this.#in.length ? Buffer.concat([this.#in, chunk]) : chunk;
    if (this.#held) {
      if (this.#in.length > MAX_BUFFERED) this.#die({ kind: 'protocol', message: 'too much data after the reply to STARTTLS' });
      return;
    }
    this.#parse();
  }

  #parse(): void {
    let start = 0;
    for (;;) {
      const nl = this.#in.indexOf(0x0a, start);
      if (nl < 0) break;
      const line = this.#in.toString('utf8', start, nl > start && this.#in[nl - 1] === 0x0d ? nl - 1 : nl);
      start = nl + 1;
      if (line.length > MAX_LINE || this.#lines.length >= MAX_REPLY_LINES) {
        return this.#die({ kind: 'protocol', message: 'reply too long' });
      }
      const m = /^(\d{3})([ -]|$)/.exec(line);
      if (!m || (this.#lines.length > 0 && this.#lines[0].slice(0, 3) !== m[1])) {
        return this.#die({ kind: 'protocol', message: `malformed reply line: ${JSON.stringify(line.slice(0, 80))}` });
      }
      this.#lines.push(line);
      if (m[2] === '-') continue;
      const reply = parseReply(this.#lines);
      this.#lines = [];
      if (this.#outstanding === 0) {
        // RFC 5321 §4.2: a reply nobody asked for. 421 is the one a server may send on its own.
        if (reply.code === 421) {
          this.#serverClosing = true;
          continue;
        }
        return this.#die({ kind: 'protocol', message: `unsolicited reply: ${reply.code} ${reply.text.slice(0, 80)}` });
      }
      this.#outstanding--;
      if (reply.code === 421) this.#serverClosing = true;
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w.resolve(reply);
      } else this.#replies.push(reply);
      if (this.#holdAfterReply) {
        // The reply to STARTTLS: anything after it stays unparsed until the upgrade drops it.
        this.#holdAfterReply = false;
        this.#held = true;
        this.#in = this.#in.subarray(start);
        return;
      }
    }
    this.#in = this.#in.subarray(start);
    if (this.#in.length > MAX_LINE) this.#die({ kind: 'protocol', message: 'reply line too long' });
  }

  /** Resumes parsing after a STARTTLS that did not lead to a handshake. */
  #release(): void {
    this.#holdAfterReply = false;
    if (!this.#held) return;
    this.#held = false;
    this.#parse();
  }

  #write(text: string, expectReplies: number): void {
    this.#outstanding += expectReplies;
    this.#socket.write(Buffer.from(text, 'utf8'));
  }

  #read(stage: SessionStage, timeoutMs: number): Promise<Reply> {
    const queued = this.#replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#death) return Promise.reject(this.#deathError(stage));
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#die({ kind: 'timeout', message: `no reply within ${timeoutMs} ms (${stage})` });
      }, timeoutMs);
      this.#waiter = {
        stage,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  async #command(line: string, verb: string, stage: SessionStage, timeoutMs: number): Promise<Reply> {
    if (this.#death) throw this.#deathError(stage);
    const started = performance.now();
    this.#write(line + '\r\n', 1);
    const reply = await this.#read(stage, timeoutMs);
    this.#time(verb, started, reply.code);
    return reply;
  }

  async #timed(verb: string, p: Promise<Reply>): Promise<Reply> {
    const started = performance.now();
    const reply = await p;
    this.#time(verb, started, reply.code);
    return reply;
  }

  #time(command: string, started: number, code?: number): void {
    const t = this.facts.timings;
    if (t.commands.length >= MAX_TIMINGS) t.commandsDropped++;
    else t.commands.push({ command, ms: Math.round(performance.now() - started), code });
  }

  /** Message content with backpressure; each wait for the socket is one RFC 5321 data block. */
  async #writeData(parts: Buffer[]): Promise<void> {
    const socket = this.#socket;
    let batch: Buffer[] = [];
    let batched = 0;
    // Once the block with the final dot is in the socket the server may complete the transaction
    // whatever happens to us next, so a failure from there on is `dot`, not `data` (RFC 1047).
    const flush = async (withDot: boolean) => {
      if (batched === 0) return;
      const buf = batch.length === 1 ? batch[0] : Buffer.concat(batch, batched);
      batch = [];
      batched = 0;
      if (this.#death) throw this.#deathError('data');
      const stage: SessionStage = withDot ? 'dot' : 'data';
      if (socket.write(buf)) return;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          cleanup();
          this.#die({ kind: 'timeout', message: `data block not accepted within ${this.#t.dataBlock} ms` });
          reject(this.#deathError(stage));
        }, this.#t.dataBlock);
        const onDrain = () => {
          cleanup();
          resolve();
        };
        const onGone = () => {
          cleanup();
          reject(this.#deathError(stage));
        };
        const cleanup = () => {
          clearTimeout(timer);
          socket.off('drain', onDrain);
          socket.off('close', onGone);
        };
        socket.on('drain', onDrain);
        socket.on('close', onGone);
      });
    };
    // Counted before the first byte leaves: the reply may arrive while the last block drains.
    this.#outstanding += 1; // the reply to the final dot
    for (let i = 0; i < parts.length; i++) {
      batch.push(parts[i]);
      batched += parts[i].length;
      if (batched >= WRITE_CHUNK) await flush(i === parts.length - 1);
    }
    await flush(true);
  }

  async #resetQuietly(): Promise<void> {
    try {
      const r = await this.#command('RSET', 'RSET', 'mail', this.#t.command);
      if (r.code !== 250) this.#die({ kind: 'reply', message: `RSET refused: ${r.code} ${r.text}` });
    } catch {
      // The session is already marked dead; the caller's result stands.
    }
  }

  /** QUIT when the connection is in a state to carry it; waits briefly for 221. Never throws. */
  async #quietQuit(polite: boolean): Promise<void> {
    if (!polite || this.#death || this.#held || this.#socket?.destroyed) return;
    try {
      await this.#command('QUIT', 'QUIT', 'mail', this.#t.quit);
    } catch {
      // Nothing to learn from a server that will not say goodbye.
    }
  }

  #die(death: Death): void {
    if (this.#death) return;
    this.#death = death;
    this.#socket?.destroy();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(this.#deathError(w.stage));
  }

  #deathError(stage: SessionStage): SmtpSessionError {
    const d = this.#death ?? { kind: 'connection' as const, message: 'connection lost' };
    // Timeouts, lost connections and protocol breakage are all worth another try later.
    return this.#error(`${d.message} [${stage}]`, stage, d.kind, true);
  }

  #error(
    message: string,
    stage: SessionStage,
    kind: SessionErrorKind,
    temporary: boolean,
    extra: { failure?: TlsFailure; reply?: Reply; retryPlaintext?: boolean } = {},
  ): SmtpSessionError {
    const tx = this.#tx;
    return new SmtpSessionError(message, {
      stage,
      kind,
      temporary,
      facts: structuredClone(this.facts),
      mailAccepted: tx.mailAccepted,
      ...(tx.recipients && (stage === 'data' || stage === 'dot') ? { recipients: tx.recipients } : {}),
      ...extra,
    });
  }

  #replyError(what: string, stage: SessionStage, reply: Reply): SmtpSessionError {
    const enhanced = reply.enhanced ? ` ${reply.enhanced}` : '';
    return this.#error(`${what}: ${reply.code}${enhanced} ${reply.text}`, stage, 'reply', reply.code < 500, { reply });
  }

  /** A permanent refusal Lacre makes itself, with the reply a server would have given. */
  #localError(kind: SessionErrorKind, text: string, code: number, enhanced: string): SmtpSessionError {
    return this.#error(text, 'message', kind, false, { reply: { code, enhanced, text, local: true } });
  }
}

function ordered(order: string[], results: Map<string, RecipientResult>): Map<string, RecipientResult> {
  const out = new Map<string, RecipientResult>();
  for (const to of order) {
    const r = results.get(to);
    if (r && !out.has(to)) out.set(to, r);
  }
  return out;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
