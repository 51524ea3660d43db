// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports. It stands beside intake/ as a source of new messages: report mails are handed
// to compose, which signs and queues them.
//
// This file: what one failed session looks like in a report. Pure.
import type { TlsFailure } from '../tls-policy/levels.ts';

/** RFC 8460 §4.3 result types: the only words a report's `result-type` may use. */
export const RESULT_TYPES = [
  // §4.3.2.1 negotiation failures
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  // §4.3.2.2 DANE policy failures
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  // §4.3.2.3 MTA-STS policy failures
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;
export type ResultType = (typeof RESULT_TYPES)[number];

/** One row of a report's `failure-details` (RFC 8460 §4.4), without its count. */
export interface FailureDetail {
  resultType: ResultType;
  receivingMxHostname?: string;
  receivingIp?: string;
  receivingMxHelo?: string;
  sendingMtaIp?: string;
  /** A URI (§4.4 says so), pointing at where the check that failed is defined. */
  additionalInformation?: string;
  /** A short code, never free text: free text would split the counts and could carry anything. */
  failureReasonCode?: string;
}

interface Mapping {
  resultType: ResultType;
  /** Only for Lacre's own names, which have no RFC 8460 word and need saying what they were. */
  info?: string;
}

const RFC = (n: number, section?: string) => `https://www.rfc-editor.org/rfc/rfc${n}${section ? `#section-${section}` : ''}`;

/**
 * Every TlsFailure's report form; null for what is not a TLS-RPT failure at all. A Record over the
 * union, so adding a TlsFailure without deciding its report form does not compile.
 */
const MAPPINGS: Record<TlsFailure, Mapping | null> = {
  'starttls-not-supported': { resultType: 'starttls-not-supported' },
  'certificate-host-mismatch': { resultType: 'certificate-host-mismatch' },
  'certificate-expired': { resultType: 'certificate-expired' },
  'certificate-not-trusted': { resultType: 'certificate-not-trusted' },
  'validation-failure': { resultType: 'validation-failure' },
  'tlsa-invalid': { resultType: 'tlsa-invalid' },
  'dnssec-invalid': { resultType: 'dnssec-invalid' },
  'dane-required': { resultType: 'dane-required' },
  'sts-policy-fetch-error': { resultType: 'sts-policy-fetch-error' },
  'sts-policy-invalid': { resultType: 'sts-policy-invalid' },
  'sts-webpki-invalid': { resultType: 'sts-webpki-invalid' },
  // EHLO offered STARTTLS and the reply to it was not 220 (RFC 3207 §4): to the domain's owner
  // this is STARTTLS not being available, which is what the RFC 8460 word says.
  'starttls-refused': { resultType: 'starttls-not-supported', info: RFC(3207, '4') },
  // §4.3.2.1: validation-failure is "a general failure for a reason not matching a category
  // above"; a broken handshake and a protocol below TLS 1.2 (RFC 8996) are exactly that.
  'tls-handshake-failed': { resultType: 'validation-failure' },
  'tls-version': { resultType: 'validation-failure', info: RFC(8996) },
  // Not `certificate-expired`: a certificate whose notBefore is ahead is usually clock skew on
  // one side, and calling it expired would send its owner to renew a certificate that is new.
  'certificate-not-yet-valid': { resultType: 'validation-failure', info: RFC(5280, '4.1.2.5') },
  // The MX host is not among the policy's `mx` patterns (RFC 8461 §4.1). RFC 8460 has no word for
  // it (the sts-* types are about fetching the policy), so the general failure, saying which.
  'sts-mx-mismatch': { resultType: 'validation-failure', info: RFC(8461, '4.1') },
  // RFC 8689 §4.2.1: the *sender* demanded an authenticated path the domain does not publish.
  // The domain's TLS did not fail and no session was tried; it is not the domain's to hear about.
  'requiretls-unverifiable': null,
};

/** The RFC 8460 result type a failure is reported as, or null when it is not reported. */
export function resultTypeOf(failure: TlsFailure): ResultType | null {
  return MAPPINGS[failure]?.resultType ?? null;
}

// Node/OpenSSL error codes (CERT_HAS_EXPIRED, ERR_SSL_…, X509_V_ERR_…) and SMTP replies
// ("454 4.7.0") are what a receiving postmaster can search for; anything else in a detail is prose.
const ERROR_CODE = /\b(?:ERR_[A-Z0-9_]+|X509_V_ERR_[A-Z0-9_]+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b/;
// A reply is taken only where a detail quotes one (`…: 454 4.7.0 …`), not any number in prose.
const SMTP_REPLY = /(?:^|: )([45]\d\d(?:[ -][245]\.\d{1,3}\.\d{1,3})?)\b/;
const MAX_REASON = 100;

/** The searchable code in a failure's detail, if it carries one. */
export function reasonCodeIn(detail: string | undefined): string | undefined {
  if (!detail) return undefined;
  const code = ERROR_CODE.exec(detail)?.[0] ?? SMTP_REPLY.exec(detail)?.[1];
  return code?.slice(0, MAX_REASON);
}

export interface SessionFailure {
  failure: TlsFailure;
  detail?: string;
  mxHost?: string;
  receivingIp?: string;
  receivingHelo?: string;
  sendingIp?: string;
}

/**
 * The failure-details row one failed session counts under, or null when the failure is not a
 * TLS-RPT failure. Lacre's own names stay visible as the reason code (with the error code from
 * the detail, if any), because the result type alone would lose them.
 */
export function failureDetailOf(session: SessionFailure): FailureDetail | null {
  const mapping = MAPPINGS[session.failure];
  if (!mapping) return null;
  const code = reasonCodeIn(session.detail);
  const own = mapping.resultType !== session.failure ? session.failure : undefined;
  const reason = own && code ? `${own} ${code}` : (own ?? code);
  const detail: FailureDetail = { resultType: mapping.resultType };
  if (session.mxHost) detail.receivingMxHostname = session.mxHost.toLowerCase().replace(/\.$/, '');
  if (session.receivingIp) detail.receivingIp = session.receivingIp;
  if (session.receivingHelo) detail.receivingMxHelo = session.receivingHelo;
  if (session.sendingIp) detail.sendingMtaIp = session.sendingIp;
  if (mapping.info) detail.additionalInformation = mapping.info;
  if (reason) detail.failureReasonCode = reason.slice(0, MAX_REASON);
  return detail;
}
