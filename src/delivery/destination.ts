// Where mail for a domain goes: static routes (LACRE_ROUTES), MX selection and ordering, null MX,
// implicit MX, and the address list of every next hop (RFC 5321 §5.1, RFC 7505). DNS failures
// become a verdict (temporary or permanent) here so the SMTP client never sees a DnsError.
import * as net from 'node:net';
import { DnsError, normalizeName, parseHostPort, type DnsResult, type MxRecord, type Resolver } from '../dns/resolver.ts';
import { domainOrUndefined } from '../mail/domain.ts';

export interface NextHop {
  /** MX name or route host */
  host: string;
  port: number;
  preference: number;
  /** IPs to try in order: IPv6 first, then IPv4. */
  addresses: string[];
  source: 'mx' | 'implicit-mx' | 'route';
  /**
   * Both the AAAA and A answers were DNSSEC-secure (and trusted). DANE looks up TLSA for a host only
   * when its address records are secure, RFC 7672 §2.2.2. False for IP literals.
   */
  addressesSecure: boolean;
  /**
   * The name a DNSSEC-secure CNAME chain led the address lookups to, when it differs from `host`.
   * RFC 7672 §2.2.2: DANE tries TLSA at this name first, then at `host`. Absent when insecure.
   */
  canonicalHost?: string;
}

export type Destination =
  | {
      kind: 'hops';
      hops: NextHop[];
      /** MX RRset DNSSEC-secure (for DANE later); for implicit MX, the authenticated denial of MX. */
      mxSecure: boolean;
      /** Records skipped on the way (IP-literal MX, hosts without addresses, the cap), for the log. */
      notes: string[];
    }
  /** RFC 7505: the domain accepts no mail; fail at once. */
  | { kind: 'null-mx' }
  /** e.g. 'dns-servfail: MX example.com', 'nxdomain: example.com'. */
  | { kind: 'unresolvable'; temporary: boolean; reason: string };

export interface Route {
  host: string;
  port: number;
}

export interface DestinationOptions {
  /** Anything with the Resolver's mx/a/aaaa lookups. */
  resolver: Pick<Resolver, 'mx' | 'a' | 'aaaa'>;
  routes: Map<string, Route>;
  /** Port for MX and implicit-MX hosts; default 25. */
  smtpPort?: number;
  /** For shuffling equal MX preferences; default Math.random. */
  random?: () => number;
  /** Most MX hosts to resolve and try; default 10. */
  maxMxHosts?: number;
}

const DEFAULT_SMTP_PORT = 25;
const DEFAULT_ROUTE_PORT = 25;
const DEFAULT_MAX_MX_HOSTS = 10;

/**
 * The domain's A-label key (../mail/domain.ts: a U-label is looked up as DNS carries it), or null
 * when the text is not a domain name. IP addresses are not domains.
 */
export function normalizeDomain(text: string): string | null {
  return domainOrUndefined(text) ?? null;
}

/**
 * Parses LACRE_ROUTES, "domain=host:port[,domain=host:port]" like a Postfix transport map. The host
 * is a name, an IPv4 address or a bracketed IPv6 address; "[name]" is accepted as in Postfix (a
 * route never looks up MX anyway). The port defaults to 25. Throws naming the first bad entry.
 */
export function parseRoutes(text: string): Map<string, Route> {
  const routes = new Map<string, Route>();
  if (text.trim() === '') return routes;
  text.split(',').forEach((raw, i) => {
    const entry = raw.trim();
    const fail = (why: string): never => {
      throw new Error(`LACRE_ROUTES: bad entry ${i + 1} "${entry}": ${why}`);
    };
    const eq = entry.indexOf('=');
    if (eq < 0) fail('expected domain=host:port');
    const domain = normalizeDomain(entry.slice(0, eq));
    if (!domain) fail(`invalid domain "${entry.slice(0, eq).trim()}"`);
    if (routes.has(domain!)) fail(`a second route for ${domain}`);
    const target = entry.slice(eq + 1).trim();
    if (target === '') fail('missing host');
    let hostPort: Route;
    try {
      hostPort = parseHostPort(target, DEFAULT_ROUTE_PORT);
    } catch (err) {
      return fail((err as Error).message);
    }
    let host = hostPort.host;
    if (net.isIP(host) === 0) {
      const name = normalizeDomain(host);
      if (!name) fail(`invalid host "${host}"`);
      host = name!;
    }
    routes.set(domain!, { host, port: hostPort.port });
  });
  return routes;
}

/**
 * RFC 5321 §5.1: ascending preference; hosts of equal preference in random order to spread the
 * load. Returns a new array.
 */
export function orderMx<T extends { preference: number; exchange: string }>(records: readonly T[], random: () => number): T[] {
  const byPreference = new Map<number, T[]>();
  for (const record of records) {
    const group = byPreference.get(record.preference) ?? [];
    group.push(record);
    byPreference.set(record.preference, group);
  }
  const ordered: T[] = [];
  for (const preference of [...byPreference.keys()].sort((a, b) => a - b)) {
    const group = byPreference.get(preference)!;
    // Fisher-Yates; the clamp keeps a random() that returns 1 in range.
    for (let i = group.length - 1; i > 0; i--) {
      const j = Math.min(i, Math.floor(random() * (i + 1)));
      [group[i], group[j]] = [group[j], group[i]];
    }
    ordered.push(...group);
  }
  return ordered;
}

interface HostAddresses {
  addresses: string[];
  secure: boolean;
  /** Failures that may clear on a retry (SERVFAIL, timeout, …). */
  temporary: DnsError[];
  /** Why there are no addresses when nothing failed temporarily: 'nxdomain' or 'no-address'. */
  missing: string;
  /** Set only when secure and a CNAME chain led elsewhere (both lookups agreeing on where). */
  canonical?: { canonicalHost: string };
}

async function lookupAddresses(resolver: DestinationOptions['resolver'], host: string): Promise<HostAddresses> {
  const settled = await Promise.allSettled([resolver.aaaa(host), resolver.a(host)]);
  const results: DnsResult<string>[] = [];
  const temporary: DnsError[] = [];
  let nxdomain = false;
  for (const outcome of settled) {
    if (outcome.status === 'fulfilled') {
      results.push(outcome.value);
      continue;
    }
    if (!(outcome.reason instanceof DnsError)) throw outcome.reason;
    if (outcome.reason.temporary) temporary.push(outcome.reason);
    else nxdomain = true;
  }
  const addresses = [...new Set(results.flatMap((r) => r.records))];
  const secure = results.length === 2 && results.every((r) => r.secure);
  const targets = new Set(results.map((r) => r.canonicalName));
  const [target] = targets;
  const canonical =
    secure && targets.size === 1 && target !== undefined && target !== normalizeName(host) ? { canonicalHost: target } : undefined;
  return {
    addresses,
    secure,
    temporary,
    missing: nxdomain ? 'nxdomain' : 'no-address',
    canonical,
  };
}

function dnsReason(err: DnsError): string {
  return `dns-${err.code.toLowerCase()}: ${err.rrtype} ${err.name}`;
}

function unresolvable(temporary: boolean, reason: string): Destination {
  return { kind: 'unresolvable', temporary, reason };
}

async function viaRoute(domain: string, route: Route, options: DestinationOptions): Promise<Destination> {
  const hop = { host: route.host, port: route.port, preference: 0, source: 'route' as const };
  if (net.isIP(route.host) !== 0) {
    return { kind: 'hops', hops: [{ ...hop, addresses: [route.host], addressesSecure: false }], mxSecure: false, notes: [] };
  }
  const found = await lookupAddresses(options.resolver, route.host);
  if (found.addresses.length === 0) {
    // A route is the operator's configuration: defer rather than bounce, so fixing it saves the mail.
    const why = found.temporary.length > 0 ? found.temporary.map(dnsReason).join('; ') : found.missing;
    return unresolvable(true, `route-unresolvable: ${route.host} for ${domain} (${why})`);
  }
  return {
    kind: 'hops',
    hops: [{ ...hop, addresses: found.addresses, addressesSecure: found.secure, ...found.canonical }],
    mxSecure: false,
    notes: [],
  };
}

// RFC 5321 §5.1: no MX records, so the domain itself is the single host, at preference 0.
async function implicitMx(domain: string, mxSecure: boolean, options: DestinationOptions): Promise<Destination> {
  const found = await lookupAddresses(options.resolver, domain);
  if (found.addresses.length > 0) {
    const hop: NextHop = {
      host: domain,
      port: options.smtpPort ?? DEFAULT_SMTP_PORT,
      preference: 0,
      addresses: found.addresses,
      source: 'implicit-mx',
      addressesSecure: found.secure,
      ...found.canonical,
    };
    return { kind: 'hops', hops: [hop], mxSecure, notes: [] };
  }
  if (found.temporary.length > 0) return unresolvable(true, dnsReason(found.temporary[0]));
  return unresolvable(false, `no-mx-no-address: ${domain}`);
}

// RFC 7505 §3: exactly one MX record, preference 0, exchange "." (the root, normalised to '').
function isNullMx(records: MxRecord[]): boolean {
  return records.length === 1 && records[0].exchange === '' && records[0].preference === 0;
}

export async function resolveDestination(domain: string, options: DestinationOptions): Promise<Destination> {
  const name = normalizeDomain(domain);
  if (!name) return unresolvable(false, `invalid-domain: ${domain}`);

  // A static route replaces the MX lookup altogether, as a Postfix transport map does.
  const route = options.routes.get(name);
  if (route) return viaRoute(name, route, options);

  let mx: DnsResult<MxRecord>;
  try {
    mx = await options.resolver.mx(name);
  } catch (err) {
    if (!(err instanceof DnsError)) throw err;
    if (err.code === 'NXDOMAIN') return unresolvable(false, `nxdomain: ${name}`);
    return unresolvable(true, dnsReason(err));
  }
  if (mx.records.length === 0) return implicitMx(name, mx.secure, options);
  if (isNullMx(mx.records)) return { kind: 'null-mx' };

  const notes: string[] = [];
  const usable: MxRecord[] = [];
  for (const record of mx.records) {
    if (record.exchange === '') {
      // RFC 7505 §3: a null MX must stand alone; beside other MX records it is only noise.
      notes.push(`null-mx-with-others: ${name}`);
    } else if (net.isIP(record.exchange) !== 0) {
      // RFC 5321 §5.1 / RFC 7505 §3: an MX exchange is a host name, never an address.
      notes.push(`mx-ip-literal: ${record.exchange}`);
    } else {
      usable.push(record);
    }
  }
  // A host listed twice is tried once, at its best preference.
  const seen = new Set<string>();
  let ordered: MxRecord[] = [];
  for (const record of orderMx(usable, options.random ?? Math.random)) {
    if (seen.has(record.exchange)) continue;
    seen.add(record.exchange);
    ordered.push(record);
  }
  const maxHosts = options.maxMxHosts ?? DEFAULT_MAX_MX_HOSTS;
  if (ordered.length > maxHosts) {
    notes.push(`mx-capped: ${ordered.length} hosts, using ${maxHosts}`);
    ordered = ordered.slice(0, maxHosts);
  }
  if (ordered.length === 0) return unresolvable(false, `no-valid-mx: ${name} (${notes.join('; ')})`);

  const port = options.smtpPort ?? DEFAULT_SMTP_PORT;
  const found = await Promise.all(ordered.map((r) => lookupAddresses(options.resolver, r.exchange)));
  const hops: NextHop[] = [];
  const failures: string[] = [];
  let anyTemporary = false;
  ordered.forEach((record, i) => {
    const { addresses, secure, temporary, missing, canonical } = found[i];
    if (addresses.length > 0) {
      hops.push({ host: record.exchange, port, preference: record.preference, addresses, source: 'mx', addressesSecure: secure, ...canonical });
      return;
    }
    anyTemporary ||= temporary.length > 0;
    const why = temporary.length > 0 ? [...new Set(temporary.map((e) => `dns-${e.code.toLowerCase()}`))].join(', ') : missing;
    failures.push(`${record.exchange}: ${why}`);
  });
  notes.push(...failures.map((f) => `mx-host-skipped: ${f}`));
  if (hops.length > 0) return { kind: 'hops', hops, mxSecure: mx.secure, notes };
  // One host that failed only for now may be the one that works: defer, as Postfix does.
  if (anyTemporary) return unresolvable(true, `mx-hosts-dns-failure: ${name} (${failures.join('; ')})`);
  return unresolvable(false, `mx-hosts-no-address: ${name} (${failures.join('; ')})`);
}
