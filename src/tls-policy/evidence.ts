// The facts TLS policy is decided on, as plain data: what DNSSEC said about an MX host's TLSA
// records, what MTA-STS said about a domain, and how one SMTP session went (for TLS reporting).
// Gathered by policy-lookup/ (I/O), judged by tls-policy/ (pure), counted by tls-reporting/.
import type { TlsaRecord } from '../mail/tlsa.ts';
import type { TlsFailure } from './levels.ts';


/** What DANE (RFC 7672 §2.2) says about one MX host. */
export type DaneEvidence =
  /** Usable, DNSSEC-secure TLSA records: TLS is mandatory and is authenticated by them alone. */
  | { kind: 'usable'; qname: string; usable: TlsaRecord[]; all: TlsaRecord[] }
  /**
   * A secure TLSA RRset none of whose records is usable (PKIX-TA/EE, unknown parameters, bad data
   * lengths): RFC 7672 §2.2 makes TLS mandatory but unauthenticated; reported as `tlsa-invalid`.
   */
  | { kind: 'unusable'; qname: string; all: TlsaRecord[]; detail: string }
  /** Not DANE: the MX host, its addresses or its TLSA RRset are insecure, or securely absent. */
  | { kind: 'none'; reason: string }
  /** A lookup on a signed chain failed (SERVFAIL, bogus, timeout): defer, never read as "no TLSA". */
  | { kind: 'failed'; failure: Extract<TlsFailure, 'dnssec-invalid' | 'tlsa-invalid'>; detail: string };

/** An MTA-STS policy (RFC 8461 §3.2), as parsed. */
export interface StsPolicy {
  /** The TXT record's `id` the policy was fetched under. */
  id: string;
  mode: 'enforce' | 'testing' | 'none';
  /** `mx` patterns, lower case, possibly `*.example.net`. */
  mx: string[];
  /** Seconds. */
  maxAge: number;
  /** The policy's lines as served, CRLF removed: TLS-RPT's `policy-string` (RFC 8460 §4.4). */
  lines: string[];
}

/** What MTA-STS (RFC 8461 §5) says about one recipient domain. */
export type StsEvidence =
  /** No `_mta-sts` TXT and no cached policy: MTA-STS does not apply. */
  | { kind: 'none' }
  /**
   * A policy in force. `refreshFailure` is set when it came from the cache because a fetch failed
   * (RFC 8461 §5.1 keeps using it); the failure is still reported.
   */
  | {
      kind: 'policy';
      policy: StsPolicy;
      fromCache: boolean;
      fetchedAt: number;
      expiresAt: number;
      refreshFailure?: { failure: Extract<TlsFailure, 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'>; detail: string };
    }
  /**
   * A TXT record but no usable policy (and none cached): RFC 8461 §5 delivers as if there were no
   * policy, and the failure is reported.
   */
  | { kind: 'failed'; failure: Extract<TlsFailure, 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'>; detail: string };

/** RFC 8460 §4.4 `policy-type`. */
export type ReportPolicyType = 'sts' | 'tlsa' | 'no-policy-found';

/** The policy a session is counted under, as RFC 8460 §4.4 names it. */
export interface ReportPolicy {
  type: ReportPolicyType;
  /** `sts`: the policy lines; `tlsa`: each record as "3 1 1 <hex>"; otherwise empty. */
  strings: string[];
  /** `sts`: the policy's `mx` patterns; otherwise empty. */
  mxHosts: string[];
}

/** One SMTP session's outcome, as TLS reporting counts it (RFC 8460 §4.3, §4.4). */
export interface TlsSessionReport {
  /** The recipient (policy) domain, A-label. */
  domain: string;
  policy: ReportPolicy;
  /** The session met the policy (or, without a policy, established TLS). */
  success: boolean;
  /** When not successful: the failure, and the host and address it happened with. */
  failure?: TlsFailure;
  detail?: string;
  mxHost?: string;
  receivingIp?: string;
  /** The 250-EHLO name of the receiving MTA, when the session got that far. */
  receivingHelo?: string;
  /** Our address on the connection. */
  sendingIp?: string;
  at: number;
}
