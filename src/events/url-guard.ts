// Where webhooks may point (SSRF defence). A webhook URL must be https:// (plain http:// only to
// a loopback receiver), carry no credentials, and every address its host resolves to must be a
// public unicast address: private (RFC 1918, RFC 6598), link-local (RFC 3927, RFC 4291 §2.5.6, the
// cloud metadata address 169.254.169.254 among them), unique-local (RFC 4193), multicast,
// unspecified, documentation and other special-purpose addresses (RFC 6890) are refused, and so are
// IPv6 forms that embed one (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16).
// Loopback is the one exception, allowed by default (tests and receivers on the same machine) and
// switched off with webhooks.allowLoopback=false. The check runs when a webhook is registered and
// again before every delivery, whose connection then goes to the vetted address only (DNS
// rebinding cannot swap it afterwards).
import { isIP } from 'node:net';
import type { Resolver } from '../dns/resolver.ts';

export type AddressClass =
  | 'public'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'unique-local'
  | 'multicast'
  | 'unspecified'
  | 'reserved';

export class WebhookUrlError extends Error {
  override name = 'WebhookUrlError';
}

/** Resolves a host name to its IPv4 and IPv6 addresses. */
export type HostLookup = (host: string) => Promise<string[]>;

export interface VettedUrl {
  url: URL;
  /** The host as it appears in the URL, without brackets: the TLS server name and Host header. */
  host: string;
  /** Every address the host resolved to, each allowed. */
  addresses: string[];
  /** Every address is loopback. */
  loopback: boolean;
}

export interface UrlGuardOptions {
  lookup: HostLookup;
  /** Allow loopback receivers (http or https). Default true. */
  allowLoopback?: boolean;
}

const MAX_URL_LENGTH = 2048;

/** Lookups through Lacre's own resolver (the configured DNS servers), A and AAAA together. */
export function resolverLookup(resolver: Resolver): HostLookup {
  return async (host) => {
    const [a, aaaa] = await Promise.allSettled([resolver.a(host), resolver.aaaa(host)]);
    const addresses = [
      ...(a.status === 'fulfilled' ? a.value.records : []),
      ...(aaaa.status === 'fulfilled' ? aaaa.value.records : []),
    ];
    if (addresses.length === 0) {
      const failure = a.status === 'rejected' ? a.reason : aaaa.status === 'rejected' ? aaaa.reason : null;
      throw new WebhookUrlError(`${host} does not resolve${failure ? ` (${(failure as Error).message})` : ' to any address'}`);
    }
    return addresses;
  };
}

/** Checks a webhook URL and resolves its host; throws WebhookUrlError saying what is wrong. */
export async function vetWebhookUrl(raw: string, options: UrlGuardOptions): Promise<VettedUrl> {
  const allowLoopback = options.allowLoopback ?? true;
  if (raw.length > MAX_URL_LENGTH) throw new WebhookUrlError(`the URL is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new WebhookUrlError(`"${raw}" is not an absolute URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new WebhookUrlError(`${url.protocol} URLs are not allowed: use https://`);
  }
  if (url.username || url.password) {
    throw new WebhookUrlError('the URL must not carry credentials (user:password@): the signature authenticates Lacre to the receiver');
  }
  if (url.hash) throw new WebhookUrlError('the URL must not have a #fragment');
  const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (host === '') throw new WebhookUrlError('the URL has no host');

  let addresses: string[];
  if (isIP(host)) addresses = [host];
  // RFC 6761 §6.3: localhost names are loopback, whatever a DNS server says.
  else if (host === 'localhost' || host.endsWith('.localhost')) addresses = ['127.0.0.1', '::1'];
  else {
    try {
      addresses = await options.lookup(host);
    } catch (err) {
      if (err instanceof WebhookUrlError) throw err;
      throw new WebhookUrlError(`${host} does not resolve (${(err as Error).message})`);
    }
    if (addresses.length === 0) throw new WebhookUrlError(`${host} does not resolve to any address`);
  }

  for (const address of addresses) {
    const kind = classifyAddress(address);
    if (kind === 'public') continue;
    if (kind === 'loopback' && allowLoopback) continue;
    const via = address === host ? '' : `${host} resolves to `;
    throw new WebhookUrlError(
      kind === 'loopback'
        ? `${via}${address}, a loopback address, and loopback receivers are switched off (webhooks.allowLoopback)`
        : `${via}${address}, a ${DESCRIPTIONS[kind]} address: webhooks may only go to public addresses`,
    );
  }
  const loopback = addresses.every((a) => classifyAddress(a) === 'loopback');
  if (url.protocol === 'http:' && !loopback) {
    throw new WebhookUrlError('http:// is allowed only for loopback receivers: use https://');
  }
  return { url, host, addresses, loopback };
}

const DESCRIPTIONS: Record<Exclude<AddressClass, 'public'>, string> = {
  loopback: 'loopback',
  private: 'private',
  'link-local': 'link-local',
  'unique-local': 'unique-local (fc00::/7)',
  multicast: 'multicast',
  unspecified: 'unspecified',
  reserved: 'reserved (special-purpose, RFC 6890)',
};

/** What kind of address this is (RFC 6890 special-purpose registries); IPv6 forms embedding IPv4 are judged by the IPv4 address. */
export function classifyAddress(address: string): AddressClass {
  const family = isIP(address);
  if (family === 4) return classifyV4(v4Bytes(address));
  if (family === 6) return classifyV6(v6Bytes(address));
  return 'reserved';
}

function v4Bytes(address: string): number[] {
  return address.split('.').map(Number);
}

function classifyV4([a, b, c]: number[]): AddressClass {
  if (a === 0) return 'unspecified'; // 0.0.0.0/8 "this network" (RFC 1122 §3.2.1.3)
  if (a === 10) return 'private';
  if (a === 100 && b >= 64 && b <= 127) return 'private'; // shared address space (RFC 6598)
  if (a === 127) return 'loopback';
  if (a === 169 && b === 254) return 'link-local';
  if (a === 172 && b >= 16 && b <= 31) return 'private';
  if (a === 192 && b === 0 && (c === 0 || c === 2)) return 'reserved'; // IETF assignments, TEST-NET-1
  if (a === 192 && b === 88 && c === 99) return 'reserved'; // 6to4 relay anycast
  if (a === 192 && b === 168) return 'private';
  if (a === 198 && (b === 18 || b === 19)) return 'reserved'; // benchmarking (RFC 2544)
  if (a === 198 && b === 51 && c === 100) return 'reserved'; // TEST-NET-2
  if (a === 203 && b === 0 && c === 113) return 'reserved'; // TEST-NET-3
  if (a >= 224 && a <= 239) return 'multicast';
  if (a >= 240) return 'reserved'; // including 255.255.255.255
  return 'public';
}

/** 16 bytes of an IPv6 address (which isIP has already accepted). */
function v6Bytes(address: string): number[] {
  let text = address.split('%')[0];
  const bytes: number[] = [];
  // A trailing dotted quad stands for the last 32 bits.
  let tail: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    tail = v4Bytes(dotted[1]);
    text = text.slice(0, -dotted[1].length) + '0:0';
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const parse = (s: string | undefined) => (s ? s.split(':').filter((x) => x !== '').map((h) => parseInt(h, 16)) : []);
  const left = parse(head);
  const right = parse(rest);
  const groups = rest === undefined ? left : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  for (const g of groups) bytes.push(g >> 8, g & 0xff);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

function classifyV6(b: number[]): AddressClass {
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  if (zeros(0, 16)) return 'unspecified';
  if (zeros(0, 15) && b[15] === 1) return 'loopback';
  // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) and the deprecated ::a.b.c.d: really IPv4.
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return classifyV4(b.slice(12));
  if (zeros(0, 12)) return classifyV4(b.slice(12));
  // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052) reaches the embedded IPv4 address.
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return classifyV4(b.slice(12));
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && b[4] === 0 && b[5] === 1) return 'reserved'; // 64:ff9b:1::/48 local NAT64
  // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 reaches the IPv4 address AA.BB.CC.DD.
  if (b[0] === 0x20 && b[1] === 0x02) return classifyV4(b.slice(2, 6));
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0x00 && b[3] === 0x00) return 'reserved'; // Teredo 2001::/32 hides an IPv4 address
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0x0d && b[3] === 0xb8) return 'reserved'; // documentation 2001:db8::/32
  if (b[0] === 0x01 && b[1] === 0x00 && zeros(2, 8)) return 'reserved'; // discard-only 100::/64
  if ((b[0] & 0xfe) === 0xfc) return 'unique-local'; // fc00::/7
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return 'link-local'; // fe80::/10
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0xc0) return 'reserved'; // fec0::/10 site-local, deprecated
  if (b[0] === 0xff) return 'multicast';
  // Only 2000::/3 is global unicast today.
  if ((b[0] & 0xe0) !== 0x20) return 'reserved';
  return 'public';
}
