// Lacre's Resolver behind the calling convention of `dns.promises.resolve(name, rrtype)`, which
// mailauth's SPF, DKIM and DMARC code expects. Every lookup still goes to the configured servers
// (LACRE_DNS_SERVERS), never to the system's. Errors carry the codes Node's resolver uses
// (ENOTFOUND for NXDOMAIN, ENODATA for an empty answer), which mailauth maps to SPF/DKIM results.
import { DnsError, type Resolver } from './resolver.ts';

export type NodeStyleResolve = (name: string, rrtype?: string) => Promise<unknown[]>;

const CODES: Record<string, string> = {
  NXDOMAIN: 'ENOTFOUND',
  SERVFAIL: 'ESERVFAIL',
  TIMEOUT: 'ETIMEOUT',
  REFUSED: 'EREFUSED',
  FORMERR: 'EFORMERR',
  NETWORK: 'ECONNREFUSED',
};

function nodeError(code: string, name: string, rrtype: string): Error {
  return Object.assign(new Error(`query${rrtype} ${code} ${name}`), { code, hostname: name });
}

export function nodeStyleResolver(resolver: Resolver): NodeStyleResolve {
  return async (name: string, rrtype = 'A') => {
    const type = rrtype.toUpperCase();
    try {
      let records: unknown[];
      switch (type) {
        case 'TXT':
          // dns.promises.resolveTxt gives each record as its character-strings; joined is equivalent
          // for every consumer, which joins them again (RFC 7208 §3.3).
          records = (await resolver.txt(name)).records.map((r) => [r]);
          break;
        case 'MX':
          records = (await resolver.mx(name)).records.map((r) => ({ exchange: r.exchange, priority: r.preference }));
          break;
        case 'A':
          records = (await resolver.a(name)).records;
          break;
        case 'AAAA':
          records = (await resolver.aaaa(name)).records;
          break;
        default:
          throw nodeError('ENOTIMP', name, type);
      }
      if (records.length === 0) throw nodeError('ENODATA', name, type);
      return records;
    } catch (err) {
      if (err instanceof DnsError) throw nodeError(CODES[err.code] ?? 'ESERVFAIL', name, type);
      throw err;
    }
  };
}
