// A real validating recursive resolver on loopback for the DANE tests: Debian's unbound, serving
// zones that ldns-keygen/ldns-signzone (ldnsutils) signed, with each signed zone's DS as a trust
// anchor, so answers carry the AD bit only after unbound has checked the signatures (RFC 4035 §3.2.3).
// It replaces FakeDnsServer where the AD bit must be earned rather than scripted. Owns the temp
// dir, the keys and the unbound process; may import node built-ins and dns-packet only (never
// Lacre's resolver, which is what the tests check against it).
//
// How it stays offline: every zone, and an unsigned local root ".", is an unbound `auth-zone` with
// `for-upstream: yes`, so the iterator answers from the zone files and never sends a packet; a name
// outside the zones is NXDOMAIN from the local root (insecure) rather than a trip to the real root
// servers (which unbound otherwise primes from its built-in hints, e.g. to chase a CNAME out of a
// zone). `outgoing-interface: 127.0.0.1` is the backstop: a query to any Internet address fails
// with EINVAL instead of leaving the machine.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, RecordType } from 'dns-packet';

const UNBOUND = '/usr/sbin/unbound';
const LDNS_KEYGEN = '/usr/bin/ldns-keygen';
const LDNS_SIGNZONE = '/usr/bin/ldns-signzone';
const TIMEOUT = '/usr/bin/timeout';
const ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' };

const HOST = '127.0.0.1';
const DEFAULT_TTL = 300;
const TOOL_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 5;
const READY_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 100;
const STOP_TIMEOUT_MS = 3_000;
// Hard cap on an unbound that outlives its test process (killed -9 before stop() ran): coreutils
// `timeout` ends it. Far above the runner's 120 s per-test limit.
const MAX_LIFETIME_S = 900;
const LOG_LIMIT = 64 * 1024;

export type ZoneRecord =
  | { name: string; type: 'A'; address: string; ttl?: number }
  | { name: string; type: 'AAAA'; address: string; ttl?: number }
  | { name: string; type: 'MX'; preference: number; exchange: string; ttl?: number }
  /** A string longer than 255 bytes is split into 255-byte character-strings; an array is sent as given. */
  | { name: string; type: 'TXT'; data: string | string[]; ttl?: number }
  | { name: string; type: 'TLSA'; usage: number; selector: number; matchingType: number; data: Buffer; ttl?: number }
  | { name: string; type: 'CNAME'; target: string; ttl?: number }
  /** A delegation below the apex (the apex SOA and NS are generated). */
  | { name: string; type: 'NS'; host: string; ttl?: number };

/**
 * bogus-<type>: every RRSIG over that type has its signature bytes corrupted after signing, so
 * those answers fail validation (SERVFAIL) while the rest of the zone stays secure.
 * wrong-anchor: the zone is signed correctly but unbound trusts the DS of an unrelated key, so
 * every answer from the zone is bogus.
 */
export type Tamper = 'bogus-tlsa' | 'bogus-mx' | 'bogus-a' | 'bogus-aaaa' | 'bogus-txt' | 'bogus-cname' | 'wrong-anchor';

export interface ZoneSpec {
  /** e.g. "example.test". Zones are separate islands of trust, each with its own anchor; a zone
   * nested in another needs its delegation (NS, and DS if wanted) written in the parent's records. */
  origin: string;
  /**
   * Zone-file lines (`$ORIGIN` is the zone, `$TTL` 300, so relative owners work: "mx IN A 127.0.0.1"),
   * or structured records whose names are absolute without the trailing dot (as FakeDnsServer's).
   * Do not add the apex SOA or NS: they are generated.
   */
  records: (string | ZoneRecord)[];
  /** Default true: DNSSEC-signed (ECDSAP256SHA256 KSK + ZSK, NSEC) with its DS as trust anchor. */
  sign?: boolean;
  tamper?: Tamper;
}

export interface ValidatingResolverOptions {
  zones: ZoneSpec[];
}

export interface ValidatingResolver {
  /** "127.0.0.1:PORT", for LACRE_DNS_SERVERS / `new Resolver({ servers: [server] })`. */
  server: string;
  host: string;
  port: number;
  /** The DS records unbound trusts, one zone-file line each. */
  trustAnchors: string[];
  /** unbound's stderr so far (verbosity 1, validation failures with their reason). */
  log(): string;
  /** Ends unbound and removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

export interface ProbeResult {
  rcode: string;
  /** Authenticated Data bit of the response. */
  ad: boolean;
  /** TC bit: the answer did not fit the 1232-octet EDNS size asked for. */
  truncated: boolean;
  answers: Answer[];
}

let available: boolean | undefined;

/** Whether unbound, ldns-keygen and ldns-signzone are installed; checked once. */
export function validatingResolverAvailable(): boolean {
  if (available === undefined) {
    try {
      for (const tool of [UNBOUND, LDNS_KEYGEN, LDNS_SIGNZONE, TIMEOUT]) accessSync(tool, constants.X_OK);
      available = true;
    } catch {
      available = false;
    }
  }
  return available;
}

/** Writes, keys, signs and serves `zones`; resolves once unbound answers on its port. */
export async function startValidatingResolver(options: ValidatingResolverOptions): Promise<ValidatingResolver> {
  if (!validatingResolverAvailable()) {
    throw new Error(`unbound or ldnsutils is missing (${UNBOUND}, ${LDNS_SIGNZONE}): apt-get install unbound ldnsutils`);
  }
  const origins = new Set<string>();
  for (const zone of options.zones) {
    const origin = checkOrigin(zone.origin);
    if (origins.has(origin)) throw new Error(`zone ${origin} given twice`);
    origins.add(origin);
    if (zone.tamper && zone.sign === false) throw new Error(`zone ${origin}: tamper needs a signed zone`);
  }

  const dir = mkdtempSync(join(tmpdir(), 'lacre-unbound-'));
  try {
    const anchors: string[] = [];
    const zoneFiles: { origin: string; file: string }[] = [];
    for (const zone of options.zones) {
      const prepared = await prepareZone(dir, zone);
      zoneFiles.push({ origin: checkOrigin(zone.origin), file: prepared.file });
      if (prepared.anchor) anchors.push(prepared.anchor);
    }
    const rootFile = join(dir, 'root.zone');
    writeFileSync(rootFile, `. ${DEFAULT_TTL} IN SOA invalid. hostmaster.invalid. 1 3600 600 86400 ${DEFAULT_TTL}\n. ${DEFAULT_TTL} IN NS invalid.\n`);
    const anchorFile = join(dir, 'anchors.ds');
    writeFileSync(anchorFile, anchors.map((a) => `${a}\n`).join(''));

    let lastError: Error | undefined;
    const confFile = join(dir, 'unbound.conf');
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      try {
        const port = await freePort();
        writeFileSync(confFile, unboundConf({ dir, port, anchorFile: anchors.length > 0 ? anchorFile : null, zoneFiles, rootFile }));
        return await launch(dir, confFile, port, anchors);
      } catch (err) {
        lastError = err as Error;
        // Only a lost race for the port is worth another try.
        if (!/bind|address already in use/i.test(lastError.message)) break;
      }
    }
    throw lastError ?? new Error('unbound did not start');
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** One UDP query with the DO bit (RFC 3225), for readiness and for tests that need the raw flags. */
export function probe(server: string, name: string, type: RecordType, timeoutMs = 2_000): Promise<ProbeResult> {
  const [host, portText] = server.split(':');
  const id = Math.floor(Math.random() * 65536);
  const query = dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: [
      { type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] },
    ],
  });
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const finish = (err: Error | null, result?: ProbeResult) => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(result!);
    };
    const timer = setTimeout(() => finish(new Error(`no answer from ${server} within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (err) => finish(err));
    socket.on('message', (msg) => {
      let packet: DecodedPacket;
      try {
        packet = dnsPacket.decode(msg);
      } catch {
        return;
      }
      if (packet.id !== id) return;
      const rcode = (packet as { rcode?: string }).rcode ?? 'NOERROR';
      finish(null, { rcode, ad: Boolean(packet.flag_ad), truncated: Boolean(packet.flag_tc), answers: packet.answers ?? [] });
    });
    socket.send(query, Number(portText), host);
  });
}

function checkOrigin(raw: string): string {
  const origin = raw.replace(/\.$/, '').toLowerCase();
  // Goes into unbound.conf and file names: plain LDH-and-underscore labels only.
  if (!/^[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$/.test(origin) || origin.length > 253) {
    throw new Error(`bad zone origin "${raw}"`);
  }
  return origin;
}

function fqdn(name: string): string {
  return name.endsWith('.') ? name : `${name}.`;
}

function owner(name: string, origin: string): string {
  const n = name.replace(/\.$/, '').toLowerCase();
  if (n !== origin && !n.endsWith(`.${origin}`)) throw new Error(`record ${name} is outside zone ${origin}`);
  return `${n}.`;
}

// RFC 1035 §5.1: a quoted character-string; backslash and quote escaped, 255 octets at most.
function characterStrings(data: string | string[]): string {
  const chunks: Buffer[] = [];
  if (Array.isArray(data)) chunks.push(...data.map((d) => Buffer.from(d)));
  else {
    const bytes = Buffer.from(data);
    for (let i = 0; i < bytes.length || i === 0; i += 255) chunks.push(bytes.subarray(i, i + 255));
  }
  return chunks
    .map((chunk) => {
      if (chunk.length > 255) throw new Error('TXT character-string over 255 octets');
      let out = '"';
      for (const byte of chunk) {
        if (byte === 0x22 || byte === 0x5c) out += `\\${String.fromCharCode(byte)}`;
        else if (byte < 0x20 || byte > 0x7e) out += `\\${String(byte).padStart(3, '0')}`;
        else out += String.fromCharCode(byte);
      }
      return `${out}"`;
    })
    .join(' ');
}

export function zoneLine(record: ZoneRecord, origin: string): string {
  const head = `${owner(record.name, origin)} ${record.ttl ?? DEFAULT_TTL} IN ${record.type}`;
  switch (record.type) {
    case 'A':
    case 'AAAA':
      return `${head} ${record.address}`;
    case 'MX':
      return `${head} ${record.preference} ${fqdn(record.exchange)}`;
    case 'TXT':
      return `${head} ${characterStrings(record.data)}`;
    case 'TLSA':
      return `${head} ${record.usage} ${record.selector} ${record.matchingType} ${record.data.toString('hex')}`;
    case 'CNAME':
      return `${head} ${fqdn(record.target)}`;
    case 'NS':
      if (owner(record.name, origin) === `${origin}.`) throw new Error(`zone ${origin}: the apex NS is generated`);
      return `${head} ${fqdn(record.host)}`;
  }
}

function zoneText(zone: ZoneSpec, origin: string): string {
  const lines = [
    `$ORIGIN ${origin}.`,
    `$TTL ${DEFAULT_TTL}`,
    // The NS target is deliberately outside every zone: with auth-zone for-upstream, unbound never
    // needs the name server's address.
    `@ IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 ${DEFAULT_TTL}`,
    '@ IN NS ns.invalid.',
  ];
  for (const record of zone.records) lines.push(typeof record === 'string' ? record : zoneLine(record, origin));
  return `${lines.join('\n')}\n`;
}

function run(file: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, env: ENV, timeout: TOOL_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message.trim()} ${stderr.trim()}`));
      else resolve(stdout.trim());
    });
  });
}

async function keygen(dir: string, origin: string, ksk: boolean): Promise<string> {
  // /dev/urandom: ldns-keygen seeds from /dev/random by default, which can block on old kernels.
  const args = ['-r', '/dev/urandom', '-a', 'ECDSAP256SHA256', ...(ksk ? ['-k'] : []), origin];
  const base = await run(LDNS_KEYGEN, args, dir);
  if (!/^K[a-z0-9_.-]+\+\d{3}\+\d{5}$/.test(base)) throw new Error(`ldns-keygen printed "${base}"`);
  return base;
}

// ldns-signzone's dates: YYYYMMDDhhmmss, UTC.
function signzoneDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

async function prepareZone(root: string, zone: ZoneSpec): Promise<{ file: string; anchor: string | null }> {
  const origin = checkOrigin(zone.origin);
  const dir = join(root, origin);
  mkdirSync(dir);
  const file = join(dir, 'zone');
  writeFileSync(file, zoneText(zone, origin));
  if (zone.sign === false) return { file, anchor: null };

  const ksk = await keygen(dir, origin, true);
  const zsk = await keygen(dir, origin, false);
  const now = Date.now();
  // Inception an hour back so a clock a little ahead of ours still finds the signatures valid.
  await run(
    LDNS_SIGNZONE,
    ['-i', signzoneDate(now - 3_600_000), '-e', signzoneDate(now + 30 * 86_400_000), '-f', `${file}.signed`, file, zsk, ksk],
    dir,
  );
  const bogusType = zone.tamper?.startsWith('bogus-') ? zone.tamper.slice('bogus-'.length).toUpperCase() : null;
  if (bogusType) corruptSignatures(`${file}.signed`, bogusType);

  // RFC 4033 §5: the DS of the key-signing key is the anchor; for wrong-anchor, that of a key
  // that signed nothing.
  const anchorKey = zone.tamper === 'wrong-anchor' ? await keygen(dir, origin, true) : ksk;
  const ds = readFileSync(join(dir, `${anchorKey}.ds`), 'utf8').trim();
  if (!/^\S+\s+(\d+\s+)?IN\s+DS\s/.test(ds)) throw new Error(`unexpected DS file for ${origin}: ${ds}`);
  return { file: `${file}.signed`, anchor: ds };
}

// Flips bits inside the signature field of every RRSIG covering `type`; the RRset itself is untouched.
function corruptSignatures(file: string, type: string): void {
  let count = 0;
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => {
      // owner ttl class RRSIG covered alg labels origttl exp inc tag signer signature
      const fields = line.split(/\s+/);
      if (fields[3] !== 'RRSIG' || fields[4] !== type || fields.length < 13) return line;
      const signature = Buffer.from(fields.slice(12).join(''), 'base64');
      signature[signature.length >> 1] ^= 0xff;
      count++;
      return [...fields.slice(0, 12), signature.toString('base64')].join(' ');
    });
  if (count === 0) throw new Error(`tamper bogus-${type.toLowerCase()}: the zone has no ${type} records to corrupt`);
  writeFileSync(file, lines.join('\n'));
}

function unboundConf(o: {
  dir: string;
  port: number;
  anchorFile: string | null;
  zoneFiles: { origin: string; file: string }[];
  rootFile: string;
}): string {
  const server = [
    'server:',
    `  interface: ${HOST}`,
    `  port: ${o.port}`,
    '  do-ip4: yes',
    '  do-ip6: no',
    '  do-udp: yes',
    '  do-tcp: yes',
    '  do-daemonize: no',
    '  num-threads: 1',
    // No privilege drop, no chroot: it runs as whoever runs the tests and reads the temp dir.
    '  username: ""',
    '  chroot: ""',
    `  directory: "${o.dir}"`,
    '  pidfile: ""',
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 1',
    // Logs each validation failure with its reason, for log().
    '  val-log-level: 2',
    '  module-config: "validator iterator"',
    // RFC 8145 key-tag queries would only be noise here.
    '  trust-anchor-signaling: no',
    `  outgoing-interface: ${HOST}`,
    '  access-control: 127.0.0.0/8 allow',
  ];
  if (o.anchorFile) server.push(`  trust-anchor-file: "${o.anchorFile}"`);
  // unbound answers RFC 6761 names such as test., invalid. and localhost. itself (static local
  // zones); transparent lets queries for our zones through to the auth-zones.
  for (const z of o.zoneFiles) server.push(`  local-zone: "${z.origin}." transparent`);
  const authZones = [...o.zoneFiles.map((z) => ({ name: `${z.origin}.`, file: z.file })), { name: '.', file: o.rootFile }].map(
    (z) =>
      [
        'auth-zone:',
        `  name: "${z.name}"`,
        `  zonefile: "${z.file}"`,
        // The iterator takes its answers from the zone (and the validator checks them, unlike
        // for-downstream answers, which are served as authoritative without validation).
        '  for-upstream: yes',
        '  for-downstream: no',
        '  fallback-enabled: no',
      ].join('\n'),
  );
  return `${server.join('\n')}\n${authZones.join('\n')}\n`;
}

// An ephemeral port free for both UDP and TCP on the loopback address, released for unbound to take.
async function freePort(): Promise<number> {
  const tcp = net.createServer();
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(0, HOST, () => resolve());
  });
  const port = (tcp.address() as net.AddressInfo).port;
  const udp = dgram.createSocket('udp4');
  const udpFree = await new Promise<boolean>((resolve) => {
    udp.once('error', () => resolve(false));
    udp.bind(port, HOST, () => resolve(true));
  });
  udp.close();
  await new Promise<void>((resolve) => tcp.close(() => resolve()));
  if (!udpFree) throw new Error(`bind: UDP port ${port} is in use`);
  return port;
}

async function launch(dir: string, confFile: string, port: number, anchors: string[]): Promise<ValidatingResolver> {
  const child = spawn(TIMEOUT, ['-k', '5', String(MAX_LIFETIME_S), UNBOUND, '-d', '-p', '-c', confFile], {
    cwd: dir,
    env: ENV,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const append = (chunk: Buffer) => {
    log = (log + chunk.toString('utf8')).slice(-LOG_LIMIT);
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  child.once('exit', () => (running = false));
  // A test that fails before stop() must not hang its process: unbound holds no reference to the
  // event loop, and the process's exit takes unbound and the temp dir with it. `timeout` runs in a
  // process group of its own with unbound, so the group is killed (SIGKILL to `timeout` alone would
  // orphan unbound).
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as unknown as net.Socket).unref();
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  };
  const onExit = () => {
    if (running) killGroup();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const server = `${HOST}:${port}`;
  const stop = async (removeDir: boolean) => {
    process.removeListener('exit', onExit);
    if (running) {
      // `timeout` passes SIGTERM on to unbound, which then exits cleanly.
      child.kill('SIGTERM');
      const timer = setTimeout(killGroup, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    if (removeDir) rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitReady(server, () => running);
  } catch (err) {
    await stop(false);
    const hint = /permission denied/i.test(log)
      ? ` (an AppArmor profile for ${UNBOUND} may forbid reading ${dir}: see /etc/apparmor.d/usr.sbin.unbound)`
      : '';
    throw new Error(`unbound did not start: ${(err as Error).message}${hint}\n${log.trim()}`);
  }

  let stopped: Promise<void> | undefined;
  return {
    server,
    host: HOST,
    port,
    trustAnchors: anchors,
    log: () => log,
    stop: () => (stopped ??= stop(true)),
  };
}

// The local root's SOA comes from an auth-zone, so an answer proves unbound has loaded its zones.
async function waitReady(server: string, running: () => boolean): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const attempts = Math.ceil(READY_TIMEOUT_MS / PROBE_TIMEOUT_MS);
  for (let i = 0; i < attempts && Date.now() < deadline; i++) {
    if (!running()) throw new Error('unbound exited');
    let answer: ProbeResult | undefined;
    try {
      answer = await probe(server, '.', 'SOA', PROBE_TIMEOUT_MS);
    } catch {
      // Not listening yet: the query goes unanswered.
    }
    if (answer?.rcode === 'NOERROR') return;
    if (answer) throw new Error(`unbound answered ${answer.rcode} for the local root's SOA`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(running() ? `no answer on ${server} within ${READY_TIMEOUT_MS} ms` : 'unbound exited');
}
