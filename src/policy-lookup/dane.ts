// policy-lookup/ gathers the evidence TLS policy is decided on (DNSSEC TLSA, MTA-STS, static table);
//
// This module: the TLSA lookup for one MX host (RFC 7672 §2.2), turned into DaneEvidence. Which
// records count is decided by ../tls-policy/dane.ts; what the evidence means for the session, by
// ../tls-policy/engine.ts.
import { isIP } from 'node:net';
import { DnsError, normalizeName, type Resolver } from '../dns/resolver.ts';
import { isUsableTlsa } from '../tls-policy/dane.ts';
import type { DaneEvidence } from '../tls-policy/evidence.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';

export interface DaneHop {
  /** The MX host (or route host) as it was looked up. */
  host: string;
  /** Its AAAA and A answers were both DNSSEC-secure. */
  addressesSecure: boolean;
  /** Where a secure CNAME chain led the address lookups, when elsewhere (NextHop.canonicalHost). */
  canonicalHost?: string;
  /** The SMTP port, for the `_<port>._tcp` prefix; 25 when absent. */
  port?: number;
}

const DEFAULT_PORT = 25;
// RFC 1035 §2.3.4: a longer owner name cannot exist, so neither can TLSA records at it.
const MAX_NAME = 253;

/**
 * RFC 7672 §2.2.3: the TLSA name carries the port the service runs on, `_<port>._tcp.<host>`. A
 * route names its own port; an MX host is SMTP on 25 whatever port the connection uses (the
 * smtpPort setting only redirects test rigs).
 */
export function danePort(hop: { source?: string; port?: number }): number {
  return hop.source === 'route' && hop.port ? hop.port : DEFAULT_PORT;
}

function whyUnusable(r: TlsaRecord): string {
  const text = `${r.usage} ${r.selector} ${r.matchingType}`;
  if (r.usage === 0 || r.usage === 1) return `${text} (PKIX usage, not for SMTP: RFC 7672 §3.1.3)`;
  if (r.usage !== 2 && r.usage !== 3) return `${text} (unknown usage)`;
  if (r.selector !== 0 && r.selector !== 1) return `${text} (unknown selector)`;
  if (r.matchingType > 2) return `${text} (unknown matching type)`;
  return `${text} (${r.data.length} bytes of data do not fit the matching type)`;
}

/**
 * RFC 7672 §2.2: TLSA records for `hop` on `port`.
 *
 * - Only when the host's address records were DNSSEC-secure (§2.2); otherwise `none`.
 * - Candidate base domains (§2.2.2): the secure CNAME target of the address lookups first, then the
 *   host name itself. A candidate whose answer is insecure, empty or NXDOMAIN passes to the next
 *   (§2.2.3); none left means `none`.
 * - A lookup that fails (SERVFAIL, timeout, refused) is never read as "no TLSA": the zone is
 *   signed, so the failure may be an attacker hiding the records (§2.1.1). `failed`, and the
 *   host is not used.
 * - A secure RRset with usable records is `usable`; one with none usable is `unusable` (§2.2:
 *   TLS is still mandatory, without authentication), and its search ends there.
 */
export async function lookupDane(resolver: Pick<Resolver, 'tlsa'>, hop: DaneHop, port: number = hop.port ?? DEFAULT_PORT): Promise<DaneEvidence> {
  const host = normalizeName(hop.host);
  if (isIP(host) !== 0) return { kind: 'none', reason: `${host} is an address literal; DANE needs a host name` };
  if (!hop.addressesSecure) {
    return { kind: 'none', reason: `the address records of ${host} are not DNSSEC-secure (RFC 7672 §2.2)` };
  }
  const candidates = [...new Set([hop.canonicalHost ? normalizeName(hop.canonicalHost) : undefined, host].filter((n): n is string => !!n))];
  const notes: string[] = [];
  for (const base of candidates) {
    const qname = `_${port}._tcp.${base}`;
    if (qname.length > MAX_NAME) {
      notes.push(`${qname.slice(0, 40)}…: name too long for TLSA`);
      continue;
    }
    let answer: Awaited<ReturnType<Resolver['tlsa']>>;
    try {
      answer = await resolver.tlsa(qname);
    } catch (err) {
      if (!(err instanceof DnsError)) throw err;
      if (err.code === 'NXDOMAIN') {
        notes.push(`${qname}: no such name`);
        continue;
      }
      return { kind: 'failed', failure: 'dnssec-invalid', detail: `TLSA lookup of ${qname} failed (${err.code}) although ${host} is in a signed zone` };
    }
    if (!answer.secure) {
      notes.push(`${qname}: ${answer.records.length > 0 ? 'TLSA records not DNSSEC-secure' : 'no secure answer'}`);
      continue;
    }
    if (answer.records.length === 0) {
      notes.push(`${qname}: securely no TLSA records`);
      continue;
    }
    const usable = answer.records.filter(isUsableTlsa);
    if (usable.length > 0) return { kind: 'usable', qname, usable, all: answer.records };
    return {
      kind: 'unusable',
      qname,
      all: answer.records,
      detail: `${answer.records.length} TLSA record(s) at ${qname}, none usable: ${answer.records.map(whyUnusable).join('; ')}`,
    };
  }
  return { kind: 'none', reason: notes.join('; ') };
}
