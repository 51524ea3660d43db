// policy-lookup/ gathers the evidence TLS policy is decided on (DNSSEC TLSA, MTA-STS, static table);
//
// This file: the three sources together, built once from configuration and the store, as the
// delivery agent and `lacre policy show` consume them. One builder, so the CLI explains exactly what
// a delivery would do.
import type { Resolver } from '../dns/resolver.ts';
import { DnsCache } from '../dns/cache.ts';
import type { Store } from '../store/store.ts';
import type { DaneEvidence, StsEvidence } from '../tls-policy/evidence.ts';
import type { PolicyDecision, StaticTlsLevel } from '../tls-policy/levels.ts';
import { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import { MtaStsTable } from '../store/mta-sts-table.ts';
import { StaticPolicies } from './static-policies.ts';
import { MtaStsPolicies, type StsLogger } from './mta-sts.ts';
import { danePort, lookupDane } from './dane.ts';

/** An MX host as DANE needs to know it. */
export interface DaneHop {
  host: string;
  addressesSecure: boolean;
  canonicalHost?: string;
  port?: number;
  /** How the hop was found: MX hosts are SMTP on 25 whatever port a test rig dials (LACRE_SMTP_PORT). */
  source?: 'mx' | 'implicit-mx' | 'route';
}

/** Where the evidence comes from, one method per source. */
export interface PolicySources {
  staticPolicy(domain: string): Promise<PolicyDecision>;
  mtaSts(domain: string): Promise<StsEvidence>;
  dane(hop: DaneHop): Promise<DaneEvidence>;
}

export interface PolicySourcesSettings {
  store: Store;
  resolver: Resolver;
  /** LACRE_TLS_POLICIES and LACRE_TLS_DEFAULT_POLICY. */
  configured: Record<string, StaticTlsLevel>;
  defaultLevel: StaticTlsLevel;
  /** Extra trusted CA certificates (LACRE_CA_FILE) for the MTA-STS policy fetch. */
  ca: string[];
  mtaStsPort: number;
  mtaStsFetchTimeoutMs: number;
  logger?: StsLogger;
  /** Told when this process changed the policy table (see StaticPolicies.onInvalidate). */
  onStaticPoliciesChanged?: () => void;
  /** Milliseconds clock for the DNS memo; tests step it past a TTL instead of waiting. */
  now?: () => number;
}

export interface BuiltPolicySources {
  sources: PolicySources;
  staticPolicies: StaticPolicies;
  tlsPolicyTable: TlsPoliciesTable;
  mtaSts: MtaStsPolicies;
  /** The memo of `_mta-sts` TXT and TLSA answers the sources share. */
  dnsCache: DnsCache;
}

export function buildPolicySources(s: PolicySourcesSettings): BuiltPolicySources {
  const tlsPolicyTable = new TlsPoliciesTable(s.store.engine, s.store.sealer);
  const staticPolicies = new StaticPolicies({
    table: tlsPolicyTable,
    configured: new Map(Object.entries(s.configured)),
    defaultLevel: s.defaultLevel,
    onInvalidate: s.onStaticPoliciesChanged,
  });
  // Every delivery batch asks for its domain's `_mta-sts` TXT and every hop for its TLSA records:
  // kept for their TTLs (negative answers for RFC 2308's), not asked again each time.
  const dnsCache = new DnsCache(s.resolver, s.now ? { now: s.now } : {});
  const mtaSts = new MtaStsPolicies({
    resolver: { txt: (name) => dnsCache.txt(name), a: (name) => s.resolver.a(name), aaaa: (name) => s.resolver.aaaa(name) },
    cache: new MtaStsTable(s.store.engine, s.store.sealer),
    ca: s.ca,
    httpsPort: s.mtaStsPort,
    fetchTimeoutMs: s.mtaStsFetchTimeoutMs,
    logger: s.logger,
  });
  return {
    staticPolicies,
    tlsPolicyTable,
    mtaSts,
    dnsCache,
    sources: {
      staticPolicy: (domain) => staticPolicies.decide(domain),
      mtaSts: (domain) => mtaSts.lookup(domain),
      dane: (hop) => lookupDane(dnsCache, hop, danePort(hop)),
    },
  };
}
