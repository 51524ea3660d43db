// The TLS policy engine: one pure function that turns the evidence about a destination (the
// message's REQUIRETLS flag and TLS-Required header, DANE per MX host, MTA-STS, the operator's
// static policy) into what to do with each MX host, with the source and reason recorded. One
// precedence, in one place (docs/tls-policy.md):
//
//   1. REQUIRETLS on the message (RFC 8689)   — a verified path or no delivery at all
//   2. DANE (RFC 7672)                         — usable DNSSEC-secure TLSA records for the MX host
//   3. MTA-STS `enforce` (RFC 8461)
//   4. the operator's static policy (LACRE_TLS_POLICIES, the policy table)
//   5. the default (`may`)
//
// A `TLS-Required: No` header (RFC 8689 §5) sets 2–5 aside when the operator allows it.
// Pure: no I/O, no clock.
import type { DaneEvidence, ReportPolicy, StsEvidence, StsPolicy } from './evidence.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';
import type { PolicyDecision, TlsFailure, TlsLevel } from './levels.ts';
import { mxMatchesPolicy } from './mta-sts.ts';
import { formatTlsa } from './dane.ts';

export interface DomainEvidence {
  domain: string;
  /** The message carries REQUIRETLS (RFC 8689 §4). */
  requireTls: boolean;
  /** The message has `TLS-Required: No` (RFC 8689 §5). */
  tlsRequiredNo: boolean;
  /** `tls.allowTlsRequiredNo`: whether that header is honoured at all. */
  allowTlsRequiredNo: boolean;
  /** The MX RRset (or, for an implicit MX, its denial) was DNSSEC-secure. */
  mxSecure: boolean;
  sts: StsEvidence;
  /** The static policy or the default, as decidePolicy/StaticPolicies found it. */
  static: PolicyDecision;
}

export interface HopEvidence {
  host: string;
  /** The host's address records were DNSSEC-secure. */
  addressesSecure: boolean;
  dane: DaneEvidence;
}

export type HopPlan =
  | {
      action: 'connect';
      level: TlsLevel;
      /** Short and stable, for records and metrics: `dane`, `mta-sts:enforce`, `static:verify`, `requiretls:dane`… */
      source: string;
      /** One sentence for people. */
      why: string;
      /**
       * Level `dane`: the usable records, the names a DANE-TA chain must carry (RFC 7672 §3.2.2),
       * and the SNI name, which is the TLSA base domain (§8.1).
       */
      dane?: { tlsa: TlsaRecord[]; names: string[]; sni: string };
      /** How TLS reporting counts the session. */
      report: ReportPolicy;
      /**
       * MTA-STS `testing` (RFC 8461 §5): deliver as the level says, but judge the session against
       * the policy for the report.
       */
      stsTesting?: { mxMatches: boolean };
      /** A failure already known before connecting that makes the session count as failed (tlsa-invalid, sts fetch errors). */
      knownFailure?: { failure: TlsFailure; detail: string };
      /** The message's `TLS-Required: No` was honoured (RFC 8689 §5); recorded on the attempt. */
      tlsRequiredNo?: boolean;
    }
  | {
      action: 'skip';
      failure: TlsFailure;
      detail: string;
      source: string;
      report: ReportPolicy;
      /** No later attempt can do better (REQUIRETLS without a verifiable path): bounce rather than retry. */
      permanent: boolean;
    };

const NO_POLICY: ReportPolicy = { type: 'no-policy-found', strings: [], mxHosts: [] };

function stsReport(policy: StsPolicy): ReportPolicy {
  return { type: 'sts', strings: policy.lines, mxHosts: policy.mx };
}

/** The policy a domain's sessions are reported under (RFC 8460 §4.4); DANE outranks MTA-STS (RFC 8461 §2). */
export function reportPolicyFor(domain: DomainEvidence, dane: DaneEvidence): ReportPolicy {
  if (dane.kind === 'usable') return { type: 'tlsa', strings: dane.all.map(formatTlsa), mxHosts: [] };
  if (dane.kind === 'unusable') return { type: 'tlsa', strings: dane.all.map(formatTlsa), mxHosts: [] };
  if (dane.kind === 'failed') return { type: 'tlsa', strings: [], mxHosts: [] };
  if (domain.sts.kind === 'policy' && domain.sts.policy.mode !== 'none') return stsReport(domain.sts.policy);
  if (domain.sts.kind === 'failed') return { type: 'sts', strings: [], mxHosts: [] };
  return NO_POLICY;
}

/** The STS policy in force for decisions, if any (a `none` policy is no policy, RFC 8461 §5). */
function activeSts(sts: StsEvidence): StsPolicy | undefined {
  return sts.kind === 'policy' && sts.policy.mode !== 'none' ? sts.policy : undefined;
}

function daneParams(hop: HopEvidence, dane: Extract<DaneEvidence, { kind: 'usable' }>): { tlsa: TlsaRecord[]; names: string[]; sni: string } {
  // RFC 7672 §3.2.2: the MX host name, and the TLSA base domain when CNAME expansion changed it.
  const names = [hop.host.replace(/\.$/, '').toLowerCase()];
  const base = dane.qname.replace(/^_\d+\._tcp\./, '').replace(/\.$/, '').toLowerCase();
  if (!names.includes(base)) names.push(base);
  return { tlsa: dane.usable, names, sni: base };
}

/** Decides what to do with one MX host. Every branch names its source and reason. */
export function planHop(domain: DomainEvidence, hop: HopEvidence): HopPlan {
  const report = reportPolicyFor(domain, hop.dane);
  const sts = activeSts(domain.sts);
  const stsMatch = sts ? mxMatchesPolicy(hop.host, sts.mx) : false;

  // 1. RFC 8689 §4.2.1: REQUIRETLS needs the MX authenticated by DNSSEC or MTA-STS and the
  // certificate verified by DANE or the WebPKI. A TLS-Required header is ignored alongside it (§5).
  if (domain.requireTls) {
    if (hop.dane.kind === 'usable') {
      return { action: 'connect', level: 'dane', source: 'requiretls:dane', why: 'REQUIRETLS, authenticated by DANE', dane: daneParams(hop, hop.dane), report };
    }
    if (hop.dane.kind === 'failed') {
      return { action: 'skip', failure: hop.dane.failure, detail: hop.dane.detail, source: 'requiretls:dane', report, permanent: false };
    }
    if (sts) {
      if (!stsMatch) {
        return { action: 'skip', failure: 'sts-mx-mismatch', detail: `REQUIRETLS: ${hop.host} is not among the MTA-STS policy's mx patterns (${sts.mx.join(', ')})`, source: 'requiretls:mta-sts', report, permanent: false };
      }
      return { action: 'connect', level: 'verify', source: 'requiretls:mta-sts', why: `REQUIRETLS, MX matched by the MTA-STS policy (${sts.mode}) and verified by the WebPKI`, report };
    }
    if (domain.mxSecure && hop.addressesSecure) {
      return { action: 'connect', level: 'verify', source: 'requiretls:dnssec', why: 'REQUIRETLS, MX authenticated by DNSSEC and certificate verified by the WebPKI', report };
    }
    return {
      action: 'skip',
      failure: 'requiretls-unverifiable',
      detail: `REQUIRETLS: ${domain.domain} has neither DNSSEC-signed MX records nor an MTA-STS policy, so ${hop.host} cannot be authenticated (RFC 8689 §4.2.1)`,
      source: 'requiretls',
      report,
      permanent: true,
    };
  }

  // RFC 8689 §5: the sender asks for delivery even if policy fails. Opportunistic TLS still.
  if (domain.tlsRequiredNo && domain.allowTlsRequiredNo) {
    return {
      action: 'connect',
      level: 'may',
      source: 'tls-required-no',
      why: 'the message says TLS-Required: No and tls.allowTlsRequiredNo is on: policies set aside, TLS opportunistic',
      report,
      tlsRequiredNo: true,
      ...(sts && domain.sts.kind === 'policy' && sts.mode !== 'none' ? { stsTesting: { mxMatches: stsMatch } } : {}),
    };
  }

  // 2. DANE (RFC 7672 §2.2).
  switch (hop.dane.kind) {
    case 'usable':
      return { action: 'connect', level: 'dane', source: 'dane', why: `${hop.dane.usable.length} usable TLSA record(s) at ${hop.dane.qname}`, dane: daneParams(hop, hop.dane), report };
    case 'failed':
      // A failed lookup on a signed chain may hide TLSA records: never read it as "no DANE".
      return { action: 'skip', failure: hop.dane.failure, detail: hop.dane.detail, source: 'dane', report, permanent: false };
    case 'unusable':
      // RFC 7672 §2.2: TLSA records exist but none can be used: TLS stays mandatory, unauthenticated.
      return {
        action: 'connect',
        level: 'encrypt',
        source: 'dane:unusable',
        why: `TLSA records at ${hop.dane.qname} are all unusable (${hop.dane.detail}): TLS mandatory, unauthenticated`,
        report,
        knownFailure: { failure: 'tlsa-invalid', detail: hop.dane.detail },
      };
    case 'none':
      break;
  }
  if (domain.static.level === 'dane-only') {
    return { action: 'skip', failure: 'dane-required', detail: `the static policy for ${domain.domain} requires DANE and ${hop.host} has no usable DNSSEC-secure TLSA records (${hop.dane.reason})`, source: `static:dane-only`, report, permanent: false };
  }

  // 3. MTA-STS enforce (RFC 8461 §4.1, §5).
  // RFC 8460 §4.3.2.3: a policy host that fails is reported, whether the domain fell back to no
  // policy (RFC 8461 §5) or kept its cached one (§5.1): the domain's operators need to know.
  const knownStsFailure =
    domain.sts.kind === 'failed'
      ? { failure: domain.sts.failure, detail: domain.sts.detail }
      : domain.sts.kind === 'policy' && domain.sts.refreshFailure
        ? { failure: domain.sts.refreshFailure.failure, detail: `cached policy kept: ${domain.sts.refreshFailure.detail}` }
        : undefined;
  if (sts && sts.mode === 'enforce') {
    if (!stsMatch) {
      return { action: 'skip', failure: 'sts-mx-mismatch', detail: `${hop.host} matches none of the MTA-STS policy's mx patterns (${sts.mx.join(', ')})`, source: 'mta-sts:enforce', report, permanent: false };
    }
    return {
      action: 'connect',
      level: 'verify',
      source: 'mta-sts:enforce',
      why: `MTA-STS policy ${sts.id} in enforce mode${domain.sts.kind === 'policy' && domain.sts.fromCache ? ' (cached)' : ''}; MX matched`,
      report,
      ...(knownStsFailure ? { knownFailure: knownStsFailure } : {}),
    };
  }

  // 4–5. Static policy, else the default. MTA-STS `testing` rides along for the report.
  const level = domain.static.level;
  const testing = sts && sts.mode === 'testing' ? { stsTesting: { mxMatches: stsMatch } } : {};
  const origin = domain.static.source.startsWith('static:') ? `static policy${domain.static.match ? ` (${domain.static.match})` : ''}` : 'the default policy';
  return {
    action: 'connect',
    level,
    source: domain.static.source,
    why: `${origin}: ${level}${sts?.mode === 'testing' ? '; MTA-STS in testing mode is judged for the report only' : ''}${knownStsFailure ? `; MTA-STS policy unavailable (${knownStsFailure.failure}), delivered as if there were none (RFC 8461 §5)` : ''}`,
    report,
    ...testing,
    ...(knownStsFailure ? { knownFailure: knownStsFailure } : {}),
  };
}

/** Facts of one finished TLS negotiation, as the session recorded them. */
export interface SessionTlsFacts {
  tls: boolean;
  verified?: boolean;
  verificationFailure?: TlsFailure;
  dane?: { matched: boolean };
  downgrade?: { reason: TlsFailure; detail: string };
}

/**
 * Whether a session that got through the TLS stage met the policy it is reported under, and if
 * not, why (RFC 8460 §4.3). `sessionFailure` is the session's own TLS failure when it was refused.
 */
export function judgeForReport(
  plan: Extract<HopPlan, { action: 'connect' }>,
  facts: SessionTlsFacts | undefined,
  sessionFailure?: { failure: TlsFailure; detail: string },
): { success: true } | { success: false; failure: TlsFailure; detail: string } {
  if (plan.knownFailure) return { success: false, ...plan.knownFailure };
  if (sessionFailure) return { success: false, ...sessionFailure };
  if (!facts?.tls) {
    const reason = facts?.downgrade;
    return { success: false, failure: reason?.reason ?? 'starttls-not-supported', detail: reason?.detail ?? 'delivered without TLS' };
  }
  if (plan.stsTesting) {
    if (!plan.stsTesting.mxMatches) return { success: false, failure: 'sts-mx-mismatch', detail: 'MX not in the MTA-STS policy (testing mode)' };
    if (!facts.verified) return { success: false, failure: facts.verificationFailure ?? 'validation-failure', detail: 'certificate not verified (MTA-STS testing mode)' };
  }
  if (plan.report.type === 'tlsa' && plan.level === 'dane' && !facts.dane?.matched) {
    return { success: false, failure: 'validation-failure', detail: 'no TLSA record matched' };
  }
  return { success: true };
}
