// Fake DNS server for tests: owns a scriptable set of records (MX, A, AAAA, TXT, TLSA, CNAME) and
// per-name misbehaviour (NXDOMAIN, SERVFAIL, silence), answered over UDP and TCP on one loopback
// port. It plays the validating recursive resolver the service is configured with
// (LACRE_DNS_SERVERS), so it also decides the AD bit and truncates oversized UDP answers.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Packet, Question } from 'dns-packet';

export type DnsRecord =
  | { type: 'A'; address: string; ttl?: number }
  | { type: 'AAAA'; address: string; ttl?: number }
  | { type: 'MX'; preference: number; exchange: string; ttl?: number }
  /** A string longer than 255 bytes is split into 255-byte character-strings; an array is sent as given. */
  | { type: 'TXT'; data: string | string[]; ttl?: number }
  | { type: 'TLSA'; usage: number; selector: number; matchingType: number; data: Buffer; ttl?: number }
  | { type: 'CNAME'; target: string; ttl?: number };

export type DnsRecordType = DnsRecord['type'];
/** TIMEOUT drops the query without any answer. */
export type DnsFailure = 'NXDOMAIN' | 'SERVFAIL' | 'TIMEOUT';

export interface DnsQueryLogEntry {
  /** As it appeared in the question (case preserved). */
  name: string;
  type: string;
  transport: 'udp' | 'tcp';
  /** UDP payload size from the query's EDNS OPT record, or null when the query had no EDNS. */
  edns: number | null;
  /** EDNS DO bit: the client asked for DNSSEC data. */
  do: boolean;
  /** AD bit in the query: the client asked whether the data is authenticated. */
  ad: boolean;
  /** Response code sent, or 'dropped' when the query went unanswered. */
  outcome: string;
  /** The UDP answer did not fit and was sent with TC set. */
  truncated: boolean;
  at: Date;
}

export interface FakeDnsServerOptions {
  host?: string;
  /** 0 (default) picks a free port for both UDP and TCP. */
  port?: number;
  /** Cap on UDP answers regardless of the client's EDNS size, to force TCP fallback in tests. */
  maxUdpSize?: number;
}

const DEFAULT_TTL = 60;
// Advertised in our OPT record; the value DNS Flag Day 2020 settled on.
const EDNS_UDP_SIZE = 1232;
const MAX_CNAME_CHAIN = 16;
const PORT_ATTEMPTS = 20;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;
type Rcode = keyof typeof RCODE;

function normalize(name: string): string {
  return name.replace(/\.$/, '').toLowerCase();
}

function splitTxt(data: string | string[]): Buffer[] {
  if (Array.isArray(data)) {
    return data.map((s) => {
      const b = Buffer.from(s);
      if (b.length > 255) throw new Error('TXT character-strings are limited to 255 bytes');
      return b;
    });
  }
  const bytes = Buffer.from(data);
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 255) chunks.push(bytes.subarray(i, i + 255));
  return chunks.length > 0 ? chunks : [Buffer.alloc(0)];
}

function validate(record: DnsRecord): void {
  const byte = (n: number) => Number.isInteger(n) && n >= 0 && n <= 255;
  switch (record.type) {
    case 'A':
      if (!net.isIPv4(record.address)) throw new Error(`not an IPv4 address: ${record.address}`);
      break;
    case 'AAAA':
      if (!net.isIPv6(record.address)) throw new Error(`not an IPv6 address: ${record.address}`);
      break;
    case 'MX':
      if (!Number.isInteger(record.preference) || record.preference < 0 || record.preference > 0xffff) {
        throw new Error(`bad MX preference: ${record.preference}`);
      }
      break;
    case 'TLSA':
      if (!byte(record.usage) || !byte(record.selector) || !byte(record.matchingType)) {
        throw new Error('TLSA usage, selector and matching type are single bytes');
      }
      break;
    case 'TXT':
      splitTxt(record.data);
      break;
    case 'CNAME':
      break;
  }
}

function toAnswer(owner: string, record: DnsRecord): Answer {
  const base = { name: owner, ttl: record.ttl ?? DEFAULT_TTL, class: 'IN' as const };
  switch (record.type) {
    case 'A':
    case 'AAAA':
      return { ...base, type: record.type, data: record.address };
    case 'CNAME':
      return { ...base, type: 'CNAME', data: record.target };
    case 'MX':
      return { ...base, type: 'MX', data: { preference: record.preference, exchange: record.exchange } };
    case 'TXT':
      // Fresh buffers each time: dns-packet's TXT encoder rewrites the array it is given.
      return { ...base, type: 'TXT', data: splitTxt(record.data) };
    case 'TLSA':
      return {
        ...base,
        type: 'TLSA',
        data: {
          usage: record.usage,
          selector: record.selector,
          matchingType: record.matchingType,
          certificate: record.data,
        },
      };
  }
}

interface Resolution {
  rcode: Rcode;
  answers: Answer[];
  drop: boolean;
  secure: boolean;
}

export class FakeDnsServer {
  readonly host: string;
  readonly port: number;
  /** "host:port" as the service expects it in LACRE_DNS_SERVERS. */
  readonly address: string;
  readonly queries: DnsQueryLogEntry[] = [];

  readonly #udp: dgram.Socket;
  readonly #tcp: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #maxUdpSize: number | undefined;
  readonly #records = new Map<string, DnsRecord[]>();
  // name -> type (or '*' for every type) -> failure
  readonly #failures = new Map<string, Map<string, DnsFailure>>();
  readonly #secure = new Map<string, boolean>();
  #closed: Promise<void> | undefined;

  private constructor(udp: dgram.Socket, tcp: net.Server, host: string, port: number, maxUdpSize?: number) {
    this.#udp = udp;
    this.#tcp = tcp;
    this.host = host;
    this.port = port;
    this.address = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
    this.#maxUdpSize = maxUdpSize;
    udp.on('message', (msg, rinfo) => this.#onUdp(msg, rinfo));
    tcp.on('connection', (socket) => this.#onTcp(socket));
  }

  static async start(opts: FakeDnsServerOptions = {}): Promise<FakeDnsServer> {
    const host = opts.host ?? '127.0.0.1';
    const wanted = opts.port ?? 0;
    // UDP takes an ephemeral port first; TCP must then get the same number, which another process
    // may hold, so retry with a new UDP port a bounded number of times.
    for (let attempt = 1; ; attempt++) {
      const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(wanted, host, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      const port = udp.address().port;
      const tcp = net.createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(port, host, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (wanted !== 0 || attempt >= PORT_ATTEMPTS) throw err;
        continue;
      }
      // Late socket errors (e.g. ICMP unreachable on send) must not crash the test process.
      udp.on('error', () => {});
      return new FakeDnsServer(udp, tcp, host, port, opts.maxUdpSize);
    }
  }

  /** Adds records for `name`. A CNAME cannot share its name with other data, as in real zones. */
  add(name: string, ...records: DnsRecord[]): this {
    const key = normalize(name);
    const list = this.#records.get(key) ?? [];
    for (const record of records) {
      validate(record);
      const hasCname = list.some((r) => r.type === 'CNAME');
      if ((record.type === 'CNAME' && list.length > 0) || (record.type !== 'CNAME' && hasCname)) {
        throw new Error(`${name}: a CNAME cannot coexist with other records`);
      }
      list.push(record);
    }
    this.#records.set(key, list);
    return this;
  }

  /** Removes all records of `name`, or only those of `type`. */
  remove(name: string, type?: DnsRecordType): this {
    const key = normalize(name);
    const kept = type ? (this.#records.get(key) ?? []).filter((r) => r.type !== type) : [];
    if (kept.length > 0) this.#records.set(key, kept);
    else this.#records.delete(key);
    return this;
  }

  /**
   * Makes queries for `name` (only of `type`, if given) fail. Applies wherever the name is reached,
   * including as a CNAME target. Pass `null` to lift it.
   */
  fail(name: string, failure: DnsFailure | null, type?: DnsRecordType): this {
    const key = normalize(name);
    const byType = this.#failures.get(key) ?? new Map<string, DnsFailure>();
    if (failure === null) byType.delete(type ?? '*');
    else byType.set(type ?? '*', failure);
    if (byType.size > 0) this.#failures.set(key, byType);
    else this.#failures.delete(key);
    return this;
  }

  /**
   * Marks names at and below `zone` as DNSSEC-validated (AD bit) or not. The closest enclosing
   * setting wins, so an insecure delegation can sit inside a secure zone.
   */
  secure(zone: string, isSecure = true): this {
    this.#secure.set(normalize(zone), isSecure);
    return this;
  }

  /** Forgets all records, failures, security settings and the query log. */
  reset(): void {
    this.#records.clear();
    this.#failures.clear();
    this.#secure.clear();
    this.clearQueries();
  }

  clearQueries(): void {
    this.queries.length = 0;
  }

  /** Stops both listeners and cuts open TCP connections. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      for (const socket of this.#sockets) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => this.#udp.close(() => resolve())),
        new Promise<void>((resolve) => this.#tcp.close(() => resolve())),
      ]);
    })();
    return this.#closed;
  }

  #isSecure(name: string): boolean {
    const labels = normalize(name).split('.');
    for (let i = 0; i < labels.length; i++) {
      const setting = this.#secure.get(labels.slice(i).join('.'));
      if (setting !== undefined) return setting;
    }
    return false;
  }

  // A name with no records of its own still exists when something below it does (an empty
  // non-terminal such as _tcp.mx.example.test), and must then answer NODATA, not NXDOMAIN.
  #exists(key: string): boolean {
    if (this.#records.has(key)) return true;
    const suffix = `.${key}`;
    for (const name of this.#records.keys()) if (name.endsWith(suffix)) return true;
    return false;
  }

  #failureFor(key: string, type: string): DnsFailure | undefined {
    const byType = this.#failures.get(key);
    return byType?.get(type) ?? byType?.get('*');
  }

  #resolve(qname: string, qtype: string): Resolution {
    const answers: Answer[] = [];
    let owner = qname;
    let secure = true;
    const seen = new Set<string>();
    for (let depth = 0; depth < MAX_CNAME_CHAIN; depth++) {
      const key = normalize(owner);
      seen.add(key);
      secure &&= this.#isSecure(key);
      const failure = this.#failureFor(key, qtype);
      if (failure === 'TIMEOUT') return { rcode: 'SERVFAIL', answers: [], drop: true, secure: false };
      if (failure === 'SERVFAIL') return { rcode: 'SERVFAIL', answers: [], drop: false, secure: false };
      if (failure === 'NXDOMAIN') return { rcode: 'NXDOMAIN', answers, drop: false, secure };
      const records = this.#records.get(key);
      if (!records) {
        return { rcode: this.#exists(key) ? 'NOERROR' : 'NXDOMAIN', answers, drop: false, secure };
      }
      const matching = qtype === 'ANY' ? records : records.filter((r) => r.type === qtype);
      if (matching.length > 0) {
        answers.push(...matching.map((r) => toAnswer(owner, r)));
        return { rcode: 'NOERROR', answers, drop: false, secure };
      }
      const cname = records.find((r) => r.type === 'CNAME');
      if (!cname || cname.type !== 'CNAME') return { rcode: 'NOERROR', answers, drop: false, secure };
      answers.push(toAnswer(owner, cname));
      owner = cname.target.replace(/\.$/, '');
      // A looping chain is a broken zone; a validating resolver gives up with SERVFAIL.
      if (seen.has(normalize(owner))) break;
    }
    return { rcode: 'SERVFAIL', answers: [], drop: false, secure: false };
  }

  // Returns the encoded response, or null to stay silent.
  #handle(msg: Buffer, transport: 'udp' | 'tcp'): Buffer | null {
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return null; // Unparseable: a real server could not even echo the id back.
    }
    if (query.type !== 'query') return null;
    const opt = query.additionals?.find((a): a is OptAnswer => a.type === 'OPT');
    const question: Question | undefined = query.questions?.[0];
    const entry: DnsQueryLogEntry = {
      name: question?.name ?? '',
      type: question?.type ?? '',
      transport,
      edns: opt ? opt.udpPayloadSize : null,
      do: opt?.flag_do ?? false,
      ad: query.flag_ad,
      outcome: 'NOERROR',
      truncated: false,
      at: new Date(),
    };
    this.queries.push(entry);

    let resolution: Resolution;
    const opcode = (query as DecodedPacket & { opcode?: string }).opcode;
    if (!question || query.questions?.length !== 1) {
      resolution = { rcode: 'FORMERR', answers: [], drop: false, secure: false };
    } else if (opcode !== undefined && opcode !== 'QUERY') {
      resolution = { rcode: 'NOTIMP', answers: [], drop: false, secure: false };
    } else {
      resolution = this.#resolve(question.name, question.type);
    }
    if (resolution.drop) {
      entry.outcome = 'dropped';
      return null;
    }
    entry.outcome = resolution.rcode;

    // Like a validating resolver, AD is only reported to clients that signal they understand it.
    const wantsAd = entry.do || entry.ad;
    const authenticated = resolution.secure && wantsAd && resolution.rcode !== 'SERVFAIL';
    let flags =
      dnsPacket.AUTHORITATIVE_ANSWER |
      dnsPacket.RECURSION_AVAILABLE |
      (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) |
      (query.flag_cd ? dnsPacket.CHECKING_DISABLED : 0) |
      (authenticated ? dnsPacket.AUTHENTIC_DATA : 0) |
      // dns-packet has no rcode field on encode: the rcode lives in the low four flag bits.
      RCODE[resolution.rcode];
    const additionals: Answer[] = opt
      ? [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: EDNS_UDP_SIZE,
            extendedRcode: 0,
            ednsVersion: 0,
            flags: entry.do ? dnsPacket.DNSSEC_OK : 0,
            flag_do: entry.do,
            options: [],
          },
        ]
      : [];
    const response: Packet = {
      type: 'response',
      id: query.id,
      flags,
      questions: question ? [question] : [],
      answers: resolution.answers,
      authorities: [],
      additionals,
    };
    const encoded = dnsPacket.encode(response);
    if (transport === 'tcp') return encoded;

    const clientLimit = opt ? Math.max(512, opt.udpPayloadSize) : 512;
    const limit = Math.min(clientLimit, this.#maxUdpSize ?? clientLimit);
    if (encoded.length <= limit) return encoded;
    entry.truncated = true;
    flags |= dnsPacket.TRUNCATED_RESPONSE;
    return dnsPacket.encode({ ...response, flags, answers: [] });
  }

  #onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const reply = this.#handle(msg, 'udp');
    if (reply) this.#udp.send(reply, rinfo.port, rinfo.address);
  }

  #onTcp(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => {});
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      // Several length-prefixed queries may arrive in one chunk, or one query across chunks.
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) break;
        const msg = pending.subarray(2, 2 + length);
        pending = pending.subarray(2 + length);
        const reply = this.#handle(msg, 'tcp');
        if (!reply) continue;
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(reply.length);
        socket.write(Buffer.concat([prefix, reply]));
      }
    });
  }
}
