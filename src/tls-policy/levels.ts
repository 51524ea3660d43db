// TLS security levels for outbound delivery: which level applies to a destination (static map and
// default today; MTA-STS, DANE and REQUIRETLS add sources later without touching SMTP code) and
// what the facts of one connection mean under a level. Pure: no I/O, no clock, no sockets.
// Imported by config/ (syntax), delivery/, store/ and
// policy-lookup/ (the policy table keys).
//
// The levels follow Postfix's smtp_tls_security_level: `none` never starts TLS; `may` is
// opportunistic; `encrypt` demands TLS with any certificate; `verify` demands TLS with a
// certificate that chains to a trusted CA and names the MX host. TLS 1.2 is the floor for every
// level that uses TLS (RFC 8996 deprecates 1.0 and 1.1).
import { domainOrUndefined } from '../mail/domain.ts';

/**
 * Levels a session runs at. `dane` (RFC 7672 §3) is never configured: the engine chooses it when
 * the MX host has usable DNSSEC-secure TLSA records, and the session then authenticates the peer
 * against those records instead of the WebPKI.
 */
export const TLS_LEVELS = ['none', 'may', 'encrypt', 'verify', 'dane'] as const;
export type TlsLevel = (typeof TLS_LEVELS)[number];

/**
 * Levels an operator can set for a domain (LACRE_TLS_POLICIES, the policy table). `dane-only`
 * (Postfix's name) demands DANE: an MX host without usable secure TLSA records is not used, and the
 * session is reported as `dane-required` (RFC 8460 §4.3.2.2).
 */
export const STATIC_TLS_LEVELS = ['none', 'may', 'encrypt', 'verify', 'dane-only'] as const;
export type StaticTlsLevel = (typeof STATIC_TLS_LEVELS)[number];

export function isTlsLevel(value: string): value is TlsLevel {
  return (TLS_LEVELS as readonly string[]).includes(value);
}

export function isStaticTlsLevel(value: string): value is StaticTlsLevel {
  return (STATIC_TLS_LEVELS as readonly string[]).includes(value);
}

export interface PolicyDecision {
  level: StaticTlsLevel;
  /** Where the level came from: `static:verify`, `default:may`. Later: `mta-sts:enforce`, `dane`. */
  source: string;
  /** The policy key that matched (`example.com` or `.example.com`), when a static entry did. */
  match?: string;
}

/**
 * Failure names. Where one exists, the RFC 8460 (TLS-RPT) result type is used verbatim so the
 * reports issue can aggregate them unchanged; `certificate-not-trusted` is TLS-RPT's
 * `certificate-not-trusted`, the others are Lacre's own.
 */
export const TLS_FAILURES = [
  // RFC 8460 §4.3.2.1 negotiation failures.
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  // RFC 8460 §4.3.2.2 DANE policy failures.
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  // RFC 8460 §4.3.2.3 MTA-STS policy failures.
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
  // Lacre's own, finer than RFC 8460 has words for; reports map them (tls-reporting/).
  'starttls-refused',
  'tls-handshake-failed',
  'tls-version',
  'certificate-not-yet-valid',
  /** MTA-STS `enforce`: the MX host matches none of the policy's `mx` patterns (RFC 8461 §4.1). */
  'sts-mx-mismatch',
  /** REQUIRETLS (RFC 8689 §4.2.1): no DNSSEC or MTA-STS path to authenticate the MX by. */
  'requiretls-unverifiable',
] as const;
export type TlsFailure = (typeof TLS_FAILURES)[number];

/** The lowest protocol any level accepts; what every TLS connection passes as `minVersion`. */
export const MIN_TLS_VERSION = 'TLSv1.2';

// ---------------------------------------------------------------------------------------------
// Choosing a level

/**
 * A policy key as LACRE_TLS_POLICIES and the policy table store it: `example.com`, or
 * `.example.com` for every subdomain of example.com. Undefined when the name is not a domain.
 */
export function normalisePolicyKey(rawKey: string): string | undefined {
  const key = rawKey.trim();
  const parent = key.startsWith('.');
  const domain = domainOrUndefined(parent ? key.slice(1) : key);
  if (domain === undefined) return undefined;
  return parent ? `.${domain}` : domain;
}

/**
 * Parses LACRE_TLS_POLICIES: `domain=level,...`. A key `.example.com` covers every subdomain of
 * example.com (not example.com itself), like a Postfix policy-map key with a leading dot.
 * Throws on the first bad entry, naming it and the allowed levels.
 */
export function parseTlsPolicies(text: string): Map<string, StaticTlsLevel> {
  const policies = new Map<string, StaticTlsLevel>();
  const allowed = `allowed levels: ${STATIC_TLS_LEVELS.join(', ')}`;
  for (const rawEntry of text.split(',')) {
    const entry = rawEntry.trim();
    if (entry === '') continue; // a trailing comma is a typing habit, not an error
    const eq = entry.indexOf('=');
    if (eq < 0) throw new Error(`TLS policy entry "${entry}": expected domain=level (${allowed})`);
    const rawKey = entry.slice(0, eq).trim();
    const rawLevel = entry.slice(eq + 1).trim().toLowerCase();
    const key = normalisePolicyKey(rawKey);
    if (!key) throw new Error(`TLS policy entry "${entry}": "${rawKey}" is not a domain name (use example.com or .example.com)`);
    if (!isStaticTlsLevel(rawLevel)) throw new Error(`TLS policy entry "${entry}": unknown level "${rawLevel}" (${allowed})`);
    const previous = policies.get(key);
    if (previous !== undefined && previous !== rawLevel) {
      throw new Error(`TLS policy entry "${entry}": ${key} is already set to ${previous}`);
    }
    policies.set(key, rawLevel);
  }
  return policies;
}

/** Exact domain beats the nearest `.parent` key, which beats the default. */
export function decidePolicy(domain: string, policies: Map<string, StaticTlsLevel>, defaultLevel: StaticTlsLevel): PolicyDecision {
  const name = domainOrUndefined(domain);
  if (name !== undefined) {
    const exact = policies.get(name);
    if (exact !== undefined) return { level: exact, source: `static:${exact}`, match: name };
    // Walk up one label at a time so the most specific parent wins.
    for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
      const key = name.slice(dot);
      const level = policies.get(key);
      if (level !== undefined) return { level, source: `static:${level}`, match: key };
    }
  }
  return { level: defaultLevel, source: `default:${defaultLevel}` };
}

// ---------------------------------------------------------------------------------------------
// Judging one connection

/** What the SMTP session knows at each step where the level has a say. */
export type TlsStepFacts =
  /**
   * After the (pre-TLS) EHLO or HELO. `plaintextRetry` is set on the second connection of a `may`
   * delivery whose first TLS handshake failed.
   */
  | { step: 'ehlo'; starttlsOffered: boolean; plaintextRetry?: { failure: TlsFailure; detail: string } }
  /** The reply to STARTTLS. */
  | { step: 'starttls-reply'; code: number; text: string }
  /** The handshake failed (error from the TLS socket, or a timeout). */
  | { step: 'handshake'; failure: TlsFailure; detail: string }
  /** The handshake completed; verification was done by the session with rejectUnauthorized off. */
  | {
      step: 'established';
      protocol: string | null;
      /** The chain verified against the trusted CAs and every certificate is within its validity. */
      chainVerified: boolean;
      /** Node/OpenSSL code of the chain failure, e.g. CERT_HAS_EXPIRED. */
      chainError?: string;
      /** tls.checkServerIdentity(mxHost, cert) passed. */
      hostnameMatches: boolean;
      /**
       * Level `dane` only: the peer's chain against the MX host's TLSA records (RFC 7672 §3).
       * `failure` names a mismatch more finely (host mismatch or dates under DANE-TA(2)).
       */
      dane?: { matched: boolean; detail: string; failure?: TlsFailure };
    };

export type TlsJudgement =
  /** Go on without TLS. `failure` says why when TLS was wanted but is not there (`may`). */
  | { action: 'plaintext'; failure?: TlsFailure; detail?: string }
  /** Go to the next step (send STARTTLS / handshake / carry on over TLS). */
  | { action: 'proceed' }
  /** End the session without MAIL FROM: the destination does not meet the level now. */
  | { action: 'defer'; failure: TlsFailure; detail: string }
  /** The connection is unusable; a fresh one in plaintext is allowed (`may` only). */
  | { action: 'retry-plaintext'; failure: TlsFailure; detail: string };

const PROTOCOL_RANK: Record<string, number> = { SSLv2: 0, SSLv3: 1, TLSv1: 2, 'TLSv1.1': 3, 'TLSv1.2': 4, 'TLSv1.3': 5 };

/** True for TLSv1.2 and later, including versions this table does not know yet. */
export function meetsTlsFloor(protocol: string | null | undefined): boolean {
  if (!protocol) return false;
  const rank = PROTOCOL_RANK[protocol];
  if (rank !== undefined) return rank >= PROTOCOL_RANK[MIN_TLS_VERSION];
  return /^TLSv1\.[4-9]$|^TLSv[2-9]/.test(protocol);
}

export function judgeTls(level: TlsLevel, facts: TlsStepFacts): TlsJudgement {
  const mandatory = level === 'encrypt' || level === 'verify' || level === 'dane';
  switch (facts.step) {
    case 'ehlo': {
      if (level === 'none') return { action: 'plaintext' };
      if (facts.plaintextRetry) {
        // The retry exists for `may` alone; any other level asking for it is a caller bug that
        // must not turn into a plaintext delivery.
        if (level === 'may') return { action: 'plaintext', ...facts.plaintextRetry };
        return { action: 'defer', ...facts.plaintextRetry };
      }
      if (facts.starttlsOffered) return { action: 'proceed' };
      // RFC 3207 §4: a missing STARTTLS may be a stripping attacker; only `may` tolerates it.
      const detail = 'the server did not offer STARTTLS';
      return mandatory
        ? { action: 'defer', failure: 'starttls-not-supported', detail }
        : { action: 'plaintext', failure: 'starttls-not-supported', detail };
    }
    case 'starttls-reply': {
      if (level === 'none') return { action: 'plaintext' };
      // RFC 3207 §4: 220 means "go ahead"; anything else leaves the session in plaintext.
      if (facts.code === 220) return { action: 'proceed' };
      const detail = `STARTTLS refused: ${facts.code} ${facts.text}`.trim();
      return mandatory
        ? { action: 'defer', failure: 'starttls-refused', detail }
        : { action: 'plaintext', failure: 'starttls-refused', detail };
    }
    case 'handshake': {
      // A failed handshake leaves the connection unusable: `may` gets one new plaintext connection
      // (and `none`, which never starts TLS, would have wanted plaintext all along).
      if (!mandatory) return { action: 'retry-plaintext', failure: facts.failure, detail: facts.detail };
      return { action: 'defer', failure: facts.failure, detail: facts.detail };
    }
    case 'established': {
      if (!meetsTlsFloor(facts.protocol)) {
        // minVersion should make this unreachable; it stays as the second lock on the door.
        const detail = `negotiated ${facts.protocol ?? 'no protocol'}, below ${MIN_TLS_VERSION}`;
        return !mandatory
          ? { action: 'retry-plaintext', failure: 'tls-version', detail }
          : { action: 'defer', failure: 'tls-version', detail };
      }
      if (level === 'dane') {
        // RFC 7672 §3.1.1/§3.2: with usable TLSA records the records alone authenticate the peer;
        // WebPKI trust plays no part, and a mismatch is never softened to unauthenticated TLS.
        if (facts.dane?.matched) return { action: 'proceed' };
        return { action: 'defer', failure: facts.dane?.failure ?? 'validation-failure', detail: facts.dane?.detail ?? 'no TLSA record was checked' };
      }
      if (level !== 'verify') return { action: 'proceed' };
      if (!facts.chainVerified) {
        const failure = facts.chainError ? classifyTlsError(facts.chainError) : 'validation-failure';
        // A chain error code that is not about certificates would be a session bug; still a defer.
        return {
          action: 'defer',
          failure: failure === 'tls-handshake-failed' ? 'validation-failure' : failure,
          detail: `certificate verification failed: ${facts.chainError ?? 'unknown reason'}`,
        };
      }
      if (!facts.hostnameMatches) {
        return { action: 'defer', failure: 'certificate-host-mismatch', detail: 'certificate does not name the MX host' };
      }
      return { action: 'proceed' };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Naming Node/OpenSSL errors

const CODE_FAILURES: Record<string, TlsFailure> = {
  CERT_HAS_EXPIRED: 'certificate-expired',
  ERR_TLS_CERT_EXPIRED: 'certificate-expired',
  CERT_NOT_YET_VALID: 'certificate-not-yet-valid',
  ERR_TLS_CERT_ALTNAME_INVALID: 'certificate-host-mismatch',
  ERR_TLS_CERT_ALTNAME_FORMAT: 'certificate-host-mismatch',
  HOSTNAME_MISMATCH: 'certificate-host-mismatch',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'certificate-not-trusted',
  SELF_SIGNED_CERT_IN_CHAIN: 'certificate-not-trusted',
  UNABLE_TO_GET_ISSUER_CERT: 'certificate-not-trusted',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'certificate-not-trusted',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'certificate-not-trusted',
  CERT_UNTRUSTED: 'certificate-not-trusted',
  CERT_REJECTED: 'certificate-not-trusted',
  CERT_CHAIN_TOO_LONG: 'certificate-not-trusted',
  INVALID_CA: 'certificate-not-trusted',
  // Certificate problems with no TLS-RPT name of their own.
  CERT_SIGNATURE_FAILURE: 'validation-failure',
  CERT_REVOKED: 'validation-failure',
  INVALID_PURPOSE: 'validation-failure',
  PATH_LENGTH_EXCEEDED: 'validation-failure',
  UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY: 'validation-failure',
  UNABLE_TO_DECRYPT_CERT_SIGNATURE: 'validation-failure',
  ERROR_IN_CERT_NOT_BEFORE_FIELD: 'validation-failure',
  ERROR_IN_CERT_NOT_AFTER_FIELD: 'validation-failure',
  CERT_SIGNATURE_ALGORITHM_DISALLOWED: 'validation-failure',
  EE_KEY_TOO_SMALL: 'validation-failure',
  CA_KEY_TOO_SMALL: 'validation-failure',
  CA_MD_TOO_WEAK: 'validation-failure',
  // The peer and we share no protocol version at or above the floor.
  ERR_SSL_UNSUPPORTED_PROTOCOL: 'tls-version',
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: 'tls-version',
  ERR_SSL_NO_PROTOCOLS_AVAILABLE: 'tls-version',
  ERR_SSL_UNSUPPORTED_SSL_VERSION: 'tls-version',
  ERR_SSL_VERSION_TOO_LOW: 'tls-version',
  ERR_TLS_INVALID_PROTOCOL_VERSION: 'tls-version',
};

/**
 * Names a TLS error: an Error from a TLS socket (its `code`), or a bare code string such as
 * TLSSocket#authorizationError. Anything unrecognised is a plain handshake failure.
 */
export function classifyTlsError(err: unknown): TlsFailure {
  let code: string | undefined;
  let message = '';
  if (typeof err === 'string') code = err;
  else if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown; reason?: unknown };
    if (typeof e.code === 'string') code = e.code;
    if (typeof e.message === 'string') message = e.message;
    if (typeof e.reason === 'string') message += ` ${e.reason}`;
  }
  if (code !== undefined) {
    const known = CODE_FAILURES[code];
    if (known) return known;
    // OpenSSL alert codes come with the alert name inside; version alerts carry "PROTOCOL_VERSION".
    if (/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|VERSION_TOO_LOW/.test(code)) return 'tls-version';
  }
  if (/unsupported protocol|protocol version|no protocols available|version too low/i.test(message)) return 'tls-version';
  if (/certificate has expired/i.test(message)) return 'certificate-expired';
  if (/certificate is not yet valid/i.test(message)) return 'certificate-not-yet-valid';
  if (/Hostname\/IP does not match/i.test(message)) return 'certificate-host-mismatch';
  if (/self[- ]signed certificate|unable to (get|verify) .*(issuer|leaf)/i.test(message)) return 'certificate-not-trusted';
  return 'tls-handshake-failed';
}
