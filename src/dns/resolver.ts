// Lacre's DNS stub resolver: owns the wire exchange with the configured recursive resolvers
// (LACRE_DNS_SERVERS) over UDP with TCP fallback, and the reading of their answers. It exists because
// Node's `dns` module neither sends EDNS nor shows the AD bit, and DANE (RFC 7672) needs both.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { randomInt } from 'node:crypto';
import { getServers } from 'node:dns';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, RecordType } from 'dns-packet';
import type { TlsaRecord } from '../mail/tlsa.ts';

export interface DnsResult<T> {
  records: T[];
  /** AD bit set and trustAd on */
  secure: boolean;
  /** CNAME chain followed, if any */
  canonicalName: string;
  /**
   * Seconds the answer may be kept: the lowest TTL of the records and CNAMEs it was read from; for
   * an empty answer (NODATA) the negative TTL of RFC 2308 §5 when the server sent its SOA.
   */
  ttl?: number;
}

export type DnsErrorCode = 'NXDOMAIN' | 'SERVFAIL' | 'TIMEOUT' | 'REFUSED' | 'FORMERR' | 'NETWORK';

export class DnsError extends Error {
  code: DnsErrorCode;
  /** The name queried (not the error class name, as it would be on a plain Error). */
  override name: string;
  rrtype: string;
  /** NXDOMAIN with the zone's SOA: how many seconds the answer may be kept (RFC 2308 §5). */
  negativeTtl?: number;

  constructor(code: DnsErrorCode, name: string, rrtype: string, detail?: string) {
    super(`DNS ${code}: ${rrtype} ${name}${detail ? ` (${detail})` : ''}`);
    this.code = code;
    this.name = name;
    this.rrtype = rrtype;
  }

  /** Only NXDOMAIN is an answer about the name; everything else may go away on a retry. */
  get temporary(): boolean {
    return this.code !== 'NXDOMAIN';
  }
}

export interface ResolverOptions {
  /** "host:port" or "host" (port 53); IPv6 as "[::1]:53". Empty: the system's resolvers. */
  servers: string[];
  /** Per try and per transport (the TCP retry after truncation gets its own). Default 5000. */
  timeoutMs?: number;
  /** Rounds through the server list, as `attempts` in resolv.conf. Default 2. */
  tries?: number;
  /**
   * Believe the AD bit. Only safe when the path to a validating resolver is trusted (loopback),
   * RFC 6698 §4 / RFC 7672 §1.3. Default false.
   */
  trustAd?: boolean;
}

export interface MxRecord {
  preference: number;
  exchange: string;
}


interface Server {
  host: string;
  port: number;
  family: 4 | 6;
  /** Canonical "host:port" / "[v6]:port". */
  label: string;
}

const DEFAULT_PORT = 53;
const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_TRIES = 2;
// DNS Flag Day 2020: the EDNS buffer size that avoids IP fragmentation on common paths.
const EDNS_UDP_SIZE = 1232;
const MAX_CNAME_CHAIN = 16;

export function normalizeName(name: string): string {
  return name.trim().replace(/\.$/, '').toLowerCase();
}

/** Splits "host", "host:port", "[v6]", "[v6]:port" and (when allowed) a bare IPv6 address. */
export function parseHostPort(
  entry: string,
  defaultPort: number,
  opts: { bareIpv6?: boolean } = {},
): { host: string; port: number } {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::([^:]*))?$/.exec(entry);
  if (bracketed) {
    host = bracketed[1];
    portText = bracketed[2];
  } else if (net.isIPv6(entry)) {
    if (!opts.bareIpv6) throw new Error('an IPv6 address must be written in brackets, e.g. [2001:db8::1]:25');
    host = entry;
  } else {
    const parts = entry.split(':');
    if (parts.length > 2) throw new Error('an IPv6 address must be written in brackets, e.g. [2001:db8::1]:25');
    host = parts[0];
    portText = parts[1];
  }
  if (host === '') throw new Error('missing host');
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new Error(`bad port "${portText}"`);
    }
    port = Number(portText);
  }
  return { host, port };
}

function parseServer(entry: string): Server {
  const { host, port } = parseHostPort(entry, DEFAULT_PORT, { bareIpv6: true });
  // A stub resolver cannot look up its own resolver's name.
  const family = net.isIP(host);
  if (family !== 4 && family !== 6) throw new Error(`"${host}" is not an IP address`);
  return { host, port, family, label: family === 6 ? `[${host}]:${port}` : `${host}:${port}` };
}

/**
 * Validates LACRE_DNS_SERVERS ("host:port,host:port", port optional, IPv6 in brackets) and returns
 * the entries in canonical "host:port" form. Empty text means "use the system's resolvers": [].
 */
export function parseDnsServers(text: string): string[] {
  if (text.trim() === '') return [];
  return text.split(',').map((raw, i) => {
    const entry = raw.trim();
    try {
      if (entry === '') throw new Error('empty entry');
      return parseServer(entry).label;
    } catch (err) {
      throw new Error(`LACRE_DNS_SERVERS: bad entry ${i + 1} "${entry}": ${(err as Error).message}`);
    }
  });
}

// Labels of 1-63 octets, 253 in all (RFC 1035 §2.3.4), visible ASCII: names on the wire are
// A-labels. Underscores stay allowed for _25._tcp, _mta-sts and friends.
function checkName(name: string): void {
  if (name === '' || name.length > 253 || !/^[\x21-\x7e]+$/.test(name)) {
    throw new Error(`invalid DNS name: "${name}"`);
  }
  for (const label of name.split('.')) {
    if (label.length === 0 || label.length > 63) throw new Error(`invalid DNS name: "${name}"`);
  }
}

type Failure = { code: DnsErrorCode; detail: string };

class AttemptError extends Error {
  failure: Failure;
  constructor(failure: Failure) {
    super(failure.detail);
    this.failure = failure;
  }
}

interface Expected {
  id: number;
  name: string;
  type: RecordType;
}

function rcodeOf(packet: DecodedPacket): string {
  return (packet as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR';
}

// RFC 5452 §9.1: accept only a response to our question with our ID. Refusals that carry no
// question section are let through: they can only make us try the next server.
function matches(packet: DecodedPacket, expected: Expected): boolean {
  if (packet.type !== 'response' || packet.id !== expected.id) return false;
  const questions = packet.questions ?? [];
  if (questions.length === 0) return ['SERVFAIL', 'REFUSED', 'FORMERR', 'NOTIMP'].includes(rcodeOf(packet));
  if (questions.length !== 1) return false;
  const q = questions[0];
  return normalizeName(q.name) === expected.name && q.type === expected.type && (q.class ?? 'IN') === 'IN';
}

// Every answer but OPT has data; OPT never passes the type filters below.
function dataOf(answer: Answer): unknown {
  return (answer as { data?: unknown }).data;
}

function tryDecode(msg: Buffer): DecodedPacket | null {
  try {
    return dnsPacket.decode(msg);
  } catch {
    return null;
  }
}

function udpExchange(server: Server, query: Buffer, expected: Expected, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    // A fresh socket per query gets a fresh random source port from the OS (RFC 5452 §9.2).
    const socket = dgram.createSocket(server.family === 6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: Error | null, packet?: DecodedPacket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(packet!);
    };
    const timer = setTimeout(
      () => finish(new AttemptError({ code: 'TIMEOUT', detail: `${server.label} timed out after ${timeoutMs} ms` })),
      timeoutMs,
    );
    socket.on('error', (err) =>
      finish(new AttemptError({ code: 'NETWORK', detail: `${server.label}: ${err.message}` })),
    );
    socket.on('message', (msg) => {
      // Connected socket: the kernel drops datagrams from other peers; the ID and question
      // checks catch the rest. Anything else is ignored and we keep waiting until the timeout.
      const packet = tryDecode(msg);
      if (packet && matches(packet, expected)) finish(null, packet);
    });
    socket.connect(server.port, server.host, () => {
      if (done) return;
      try {
        socket.send(query, (err) => {
          if (err) finish(new AttemptError({ code: 'NETWORK', detail: `${server.label}: ${err.message}` }));
        });
      } catch (err) {
        finish(new AttemptError({ code: 'NETWORK', detail: `${server.label}: ${(err as Error).message}` }));
      }
    });
  });
}

// RFC 1035 §4.2.2 / RFC 7766: the same query with a two-octet length prefix.
function tcpExchange(server: Server, query: Buffer, expected: Expected, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.host, port: server.port });
    let done = false;
    let pending = Buffer.alloc(0);
    const finish = (err: Error | null, packet?: DecodedPacket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(packet!);
    };
    const network = (what: string) =>
      finish(new AttemptError({ code: 'NETWORK', detail: `${server.label} (tcp): ${what}` }));
    const timer = setTimeout(
      () => finish(new AttemptError({ code: 'TIMEOUT', detail: `${server.label} (tcp) timed out after ${timeoutMs} ms` })),
      timeoutMs,
    );
    socket.on('error', (err) => network(err.message));
    socket.on('close', () => network('connection closed before an answer'));
    socket.on('connect', () => {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(query.length);
      socket.write(Buffer.concat([prefix, query]));
    });
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) return;
        const packet = tryDecode(pending.subarray(2, 2 + length));
        pending = pending.subarray(2 + length);
        if (!packet) return network('malformed response');
        if (matches(packet, expected)) return finish(null, packet);
      }
    });
  });
}

function buildQuery(id: number, name: string, type: RecordType, edns: boolean): Buffer {
  const packet: Packet = {
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    // RFC 6891 §6 OPT with the DO bit (RFC 3225): a validating resolver then reports AD.
    additionals: edns
      ? [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: EDNS_UDP_SIZE,
            extendedRcode: 0,
            ednsVersion: 0,
            flags: dnsPacket.DNSSEC_OK,
            flag_do: true,
            options: [],
          },
        ]
      : [],
  };
  return dnsPacket.encode(packet);
}

function rcodeFailure(rcode: string, server: Server): Failure {
  const code: DnsErrorCode = rcode === 'REFUSED' || rcode === 'FORMERR' ? rcode : 'SERVFAIL';
  return { code, detail: `${server.label} answered ${rcode}` };
}

// An answer from a server is final; a missing answer is less telling than an error rcode.
function worst(a: Failure | undefined, b: Failure): Failure {
  if (!a) return b;
  const rank = (f: Failure) => (f.code === 'TIMEOUT' || f.code === 'NETWORK' ? 0 : 1);
  return rank(b) >= rank(a) ? b : a;
}

/** Follows the CNAME chain from `qname` through the answer section; returns the final owner. */
function chainEnd(answers: Answer[], qname: string, qtype: RecordType): string {
  let owner = qname;
  if (qtype === 'CNAME') return owner;
  const seen = new Set([owner]);
  for (let i = 0; i < MAX_CNAME_CHAIN; i++) {
    const cname = answers.find((a) => a.type === 'CNAME' && normalizeName(a.name) === owner);
    if (!cname) break;
    const target = normalizeName(dataOf(cname) as string);
    if (seen.has(target)) break;
    seen.add(target);
    owner = target;
  }
  return owner;
}

function lowestTtl(answers: Answer[]): number | undefined {
  let lowest: number | undefined;
  for (const a of answers) {
    const ttl = (a as { ttl?: number }).ttl;
    if (typeof ttl === 'number' && (lowest === undefined || ttl < lowest)) lowest = ttl;
  }
  return lowest;
}

// RFC 2308 §5: a negative answer is kept for the lesser of the SOA record's own TTL and its
// MINIMUM field; the SOA comes in the authority section.
function negativeTtlOf(response: DecodedPacket): number | undefined {
  const soa = (response.authorities ?? []).find((a) => a.type === 'SOA') as { ttl?: number; data?: { minimum?: number } } | undefined;
  if (!soa || typeof soa.data?.minimum !== 'number') return undefined;
  return Math.min(soa.ttl ?? soa.data.minimum, soa.data.minimum);
}

export class Resolver {
  /** The servers in use, canonical "host:port". */
  readonly servers: readonly string[];
  readonly #servers: Server[];
  readonly #timeoutMs: number;
  readonly #tries: number;
  readonly #trustAd: boolean;

  constructor(options: ResolverOptions) {
    const entries = options.servers.length > 0 ? options.servers : getServers();
    this.#servers = entries.map((entry) => {
      try {
        return parseServer(entry.trim());
      } catch (err) {
        throw new Error(`bad DNS server "${entry}": ${(err as Error).message}`);
      }
    });
    // resolv.conf(5): with no nameserver line, the local machine.
    if (this.#servers.length === 0) this.#servers.push(parseServer('127.0.0.1'));
    this.servers = this.#servers.map((s) => s.label);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#tries = Math.max(1, options.tries ?? DEFAULT_TRIES);
    this.#trustAd = options.trustAd ?? false;
  }

  async mx(name: string): Promise<DnsResult<MxRecord>> {
    return this.#lookup(name, 'MX', (raw) => {
      const data = raw as { preference?: number; exchange: string };
      return { preference: data.preference ?? 0, exchange: normalizeName(data.exchange) };
    });
  }

  async a(name: string): Promise<DnsResult<string>> {
    return this.#lookup(name, 'A', (data) => data as string);
  }

  async aaaa(name: string): Promise<DnsResult<string>> {
    return this.#lookup(name, 'AAAA', (data) => data as string);
  }

  /** Each record's character-strings joined (RFC 7208 §3.3 and the others that split long values). */
  async txt(name: string): Promise<DnsResult<string>> {
    return this.#lookup(name, 'TXT', (raw) => {
      const data = raw as string | Buffer | (string | Buffer)[];
      const parts = Array.isArray(data) ? data : [data];
      // Concatenate bytes before decoding: a UTF-8 sequence may straddle a 255-octet boundary.
      return Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))).toString('utf8');
    });
  }

  async tlsa(name: string): Promise<DnsResult<TlsaRecord>> {
    return this.#lookup(name, 'TLSA', (raw) => {
      const data = raw as { usage: number; selector: number; matchingType: number; certificate: Buffer };
      return { usage: data.usage, selector: data.selector, matchingType: data.matchingType, data: data.certificate };
    });
  }

  async #lookup<T>(rawName: string, type: RecordType, read: (data: unknown) => T): Promise<DnsResult<T>> {
    const name = normalizeName(rawName);
    checkName(name);
    const response = await this.#query(name, type);
    const rcode = rcodeOf(response);
    if (rcode === 'NXDOMAIN') {
      const err = new DnsError('NXDOMAIN', name, type);
      const negativeTtl = negativeTtlOf(response);
      if (negativeTtl !== undefined) err.negativeTtl = negativeTtl;
      throw err;
    }
    const answers = response.answers ?? [];
    const owner = chainEnd(answers, name, type);
    const used = answers.filter((a) => a.type === type && normalizeName(a.name) === owner);
    const records = used.map((a) => read(dataOf(a)));
    const ttl = used.length > 0 ? lowestTtl([...used, ...answers.filter((a) => a.type === 'CNAME')]) : negativeTtlOf(response);
    return { records, secure: this.#trustAd && response.flag_ad, canonicalName: owner, ...(ttl !== undefined ? { ttl } : {}) };
  }

  // Returns a NOERROR or NXDOMAIN response; anything else moves on to the next server.
  async #query(name: string, type: RecordType): Promise<DecodedPacket> {
    let failure: Failure | undefined;
    const attempts = this.#tries * this.#servers.length;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const server = this.#servers[attempt % this.#servers.length];
      try {
        const response = await this.#exchange(server, name, type);
        const rcode = rcodeOf(response);
        if (rcode === 'NOERROR' || rcode === 'NXDOMAIN') return response;
        failure = worst(failure, rcodeFailure(rcode, server));
      } catch (err) {
        if (!(err instanceof AttemptError)) throw err;
        failure = worst(failure, err.failure);
      }
    }
    throw new DnsError(failure!.code, name, type, failure!.detail);
  }

  async #exchange(server: Server, name: string, type: RecordType): Promise<DecodedPacket> {
    let edns = true;
    for (;;) {
      const expected: Expected = { id: randomInt(0, 0x10000), name, type };
      const query = buildQuery(expected.id, name, type, edns);
      let response = await udpExchange(server, query, expected, this.#timeoutMs);
      // RFC 1035 §4.2.1 / RFC 7766 §5: a truncated answer is retried over TCP.
      if (response.flag_tc) response = await tcpExchange(server, query, expected, this.#timeoutMs);
      // RFC 6891 §7: a FORMERR without OPT comes from a server that does not know EDNS; ask
      // again plainly (AD then cannot be had, which is the honest answer from such a server).
      const hasOpt = (response.additionals ?? []).some((a) => a.type === 'OPT');
      if (edns && rcodeOf(response) === 'FORMERR' && !hasOpt) {
        edns = false;
        continue;
      }
      return response;
    }
  }
}
