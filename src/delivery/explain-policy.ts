// Resolves and explains the effective TLS policy for a domain without sending anything: the same
// destination lookup, evidence and engine the agent uses for a delivery, laid out with the
// evidence (MX records and their DNSSEC status, TLSA records, MTA-STS TXT and policy, static
// entry) so an operator can see why mail to a domain would travel the way it does.
// Behind `lacre policy show`.
import type { Resolver } from '../dns/resolver.ts';
import { planHop, type DomainEvidence, type HopPlan } from '../tls-policy/engine.ts';
import { formatTlsa } from '../tls-policy/dane.ts';
import type { DaneEvidence } from '../tls-policy/evidence.ts';
import type { PolicySources } from '../policy-lookup/sources.ts';
import { resolveDestination, type NextHop } from './destination.ts';

export interface ExplainOptions {
  resolver: Resolver;
  trustAd: boolean;
  routes: Map<string, { host: string; port: number }>;
  smtpPort: number;
  sources: PolicySources;
  /** Raw MTA-STS evidence (TXT and policy text), when the source can show it. */
  mtaStsRaw?: (domain: string) => Promise<Record<string, unknown>>;
  allowTlsRequiredNo: boolean;
  /** Plan as for a message with REQUIRETLS. */
  requireTls?: boolean;
}

function describePlan(plan: HopPlan): Record<string, unknown> {
  if (plan.action === 'skip') {
    return { action: 'skip', source: plan.source, failure: plan.failure, detail: plan.detail, retry: !plan.permanent };
  }
  return {
    action: 'connect',
    level: plan.level,
    source: plan.source,
    why: plan.why,
    ...(plan.stsTesting ? { mtaStsTesting: plan.stsTesting } : {}),
    ...(plan.knownFailure ? { reportedFailure: plan.knownFailure } : {}),
    report: { policyType: plan.report.type },
  };
}

function describeDane(dane: DaneEvidence): Record<string, unknown> {
  switch (dane.kind) {
    case 'usable':
      return { kind: 'usable', qname: dane.qname, usable: dane.usable.map(formatTlsa), all: dane.all.map(formatTlsa) };
    case 'unusable':
      return { kind: 'unusable', qname: dane.qname, all: dane.all.map(formatTlsa), detail: dane.detail };
    case 'none':
      return { kind: 'none', reason: dane.reason };
    case 'failed':
      return { kind: 'failed', failure: dane.failure, detail: dane.detail };
  }
}

export async function explainPolicy(domain: string, o: ExplainOptions): Promise<Record<string, unknown>> {
  const staticPolicy = await o.sources.staticPolicy(domain);
  const destination = await resolveDestination(domain, { resolver: o.resolver, routes: o.routes, smtpPort: o.smtpPort });
  const sts = await o.sources.mtaSts(domain);
  const out: Record<string, unknown> = {
    domain,
    dnssec: { trustAd: o.trustAd, note: o.trustAd ? 'AD bit trusted (LACRE_DNSSEC_TRUST_AD=1)' : 'AD bit not trusted: DANE is off (set LACRE_DNSSEC_TRUST_AD=1 with a local validating resolver)' },
    requireTls: o.requireTls ?? false,
    static: staticPolicy,
    mtaSts: o.mtaStsRaw ? await o.mtaStsRaw(domain) : sts,
  };
  if (destination.kind !== 'hops') {
    out.destination = destination;
    out.effective = { deliverable: false, reason: destination.kind === 'null-mx' ? 'null MX (RFC 7505)' : destination.reason };
    return out;
  }
  const evidence: DomainEvidence = {
    domain,
    requireTls: o.requireTls ?? false,
    tlsRequiredNo: false,
    allowTlsRequiredNo: o.allowTlsRequiredNo,
    mxSecure: destination.mxSecure,
    sts,
    static: staticPolicy,
  };
  const hops: Record<string, unknown>[] = [];
  const plans: HopPlan[] = [];
  for (const hop of destination.hops as NextHop[]) {
    const dane = await o.sources.dane(hop);
    const plan = planHop(evidence, { host: hop.host, addressesSecure: hop.addressesSecure, dane });
    plans.push(plan);
    hops.push({
      host: hop.host,
      port: hop.port,
      preference: hop.preference,
      source: hop.source,
      addresses: hop.addresses,
      addressesSecure: hop.addressesSecure,
      tlsa: describeDane(dane),
      plan: describePlan(plan),
    });
  }
  out.mx = { secure: destination.mxSecure, notes: destination.notes, hosts: hops };
  const usable = plans.filter((p) => p.action === 'connect');
  out.effective = usable.length
    ? { deliverable: true, level: usable[0].level, source: usable[0].source, why: usable[0].why }
    : { deliverable: false, reason: plans.map((p) => (p.action === 'skip' ? `${p.failure}: ${p.detail}` : '')).join('; ') };
  return out;
}
