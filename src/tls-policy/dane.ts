// DANE for SMTP, the decision half: which TLSA records count (RFC 7672 §3.1, RFC 7671 §9) and
// whether a presented certificate chain matches them (RFC 6698 §2.1, RFC 7672 §3). Pure: the clock
// comes in as `now`, the chain as DER bytes; node:crypto only parses and checks signatures.
// Used by delivery/smtp-session.ts
// and policy-lookup/dane.ts.
import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import type { TlsaRecord } from '../mail/tlsa.ts';
import type { TlsFailure } from './levels.ts';

/** RFC 7218 §2 acronyms, for details a person reads. */
const USAGE_NAMES: Record<number, string> = { 0: 'PKIX-TA(0)', 1: 'PKIX-EE(1)', 2: 'DANE-TA(2)', 3: 'DANE-EE(3)' };

// RFC 6698 §2.1.3: the digest lengths of matching types 1 and 2.
const DIGEST_LENGTH: Record<number, number> = { 1: 32, 2: 64 };

// Bounds the work one hostile chain can cause; real chains are three or four deep.
const MAX_CHAIN = 16;

/**
 * A record an SMTP client may authenticate with. RFC 7672 §3.1.3 makes PKIX-TA(0) and PKIX-EE(1)
 * unusable for SMTP (there is no agreed set of WebPKI roots between MTAs); unknown selectors and
 * matching types are unusable (RFC 6698 §4.1), and so is data whose length cannot be a digest of
 * the announced kind (RFC 7671 §5: malformed records are ignored).
 */
export function isUsableTlsa(r: TlsaRecord): boolean {
  if (r.usage !== 2 && r.usage !== 3) return false;
  if (r.selector !== 0 && r.selector !== 1) return false;
  if (r.matchingType === 0) return r.data.length > 0;
  const length = DIGEST_LENGTH[r.matchingType];
  return length !== undefined && r.data.length === length;
}

/**
 * Presentation form (RFC 6698 §2.2), hex in upper case as dig prints it: "3 1 1 0C72…". Also the
 * TLS-RPT `policy-string` of a `tlsa` policy (RFC 8460 §4.4).
 */
export function formatTlsa(r: TlsaRecord): string {
  return `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString('hex').toUpperCase()}`;
}

export type DaneMatch =
  | {
      matched: true;
      /** The record that authenticated the peer, in presentation form. */
      record: string;
      usage: 2 | 3;
      detail: string;
    }
  | { matched: false; failure: TlsFailure; detail: string };

export interface DaneMatchOptions {
  /**
   * DANE-TA(2) reference identifiers (RFC 7672 §3.2.2): the MX host name as found in the MX
   * record, and the TLSA base domain when a secure CNAME made it differ. Not used by DANE-EE(3).
   */
  names: string[];
  /** Milliseconds since the epoch, for the validity of certificates below a DANE-TA(2) anchor. */
  now: number;
}

/**
 * RFC 7671 §9 digest algorithm agility: for each usage and selector, only the strongest digest
 * present is used, so publishing a SHA-512 record retires the SHA-256 one beside it (an attacker
 * who can find a SHA-256 collision gains nothing). Full(0) is no digest and always stays.
 */
export function agileRecords(records: TlsaRecord[]): TlsaRecord[] {
  const strongest = new Map<string, number>();
  for (const r of records) {
    if (r.matchingType === 0) continue;
    const key = `${r.usage} ${r.selector}`;
    strongest.set(key, Math.max(strongest.get(key) ?? 0, r.matchingType));
  }
  return records.filter((r) => r.matchingType === 0 || r.matchingType === strongest.get(`${r.usage} ${r.selector}`));
}

function digest(matchingType: number, data: Buffer): Buffer {
  if (matchingType === 1) return createHash('sha256').update(data).digest();
  if (matchingType === 2) return createHash('sha512').update(data).digest();
  return data;
}

interface Parsed {
  cert: X509Certificate;
  der: Buffer;
  /** SubjectPublicKeyInfo DER; undefined when Node cannot read the key type. */
  spki: Buffer | undefined;
}

function parse(der: Buffer): Parsed | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    return undefined;
  }
  let spki: Buffer | undefined;
  try {
    spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  } catch {
    spki = undefined;
  }
  return { cert, der, spki };
}

/** RFC 6698 §2.1.2/§2.1.3: the selected part of the certificate, hashed as the record says. */
function recordMatches(r: TlsaRecord, c: Parsed): boolean {
  const selected = r.selector === 0 ? c.der : c.spki;
  if (!selected) return false;
  return digest(r.matchingType, selected).equals(r.data);
}

function normaliseName(name: string): string {
  return name.trim().replace(/\.$/, '').toLowerCase();
}

/**
 * RFC 7672 §3.2.3: the certificate's DNS subjectAltNames (the subject CN only when it has none),
 * a wildcard only as the whole leftmost label and matching exactly one label.
 */
function namesHost(cert: X509Certificate, names: string[]): string | undefined {
  for (const raw of names) {
    const name = normaliseName(raw);
    if (name === '') continue;
    const hit = cert.checkHost(name, {
      subject: 'default',
      wildcards: true,
      partialWildcards: false,
      multiLabelWildcards: false,
      singleLabelSubdomains: false,
    });
    if (hit !== undefined) return name;
  }
  return undefined;
}

function outsideValidity(cert: X509Certificate, now: number): 'certificate-expired' | 'certificate-not-yet-valid' | undefined {
  if (now > cert.validToDate.getTime()) return 'certificate-expired';
  if (now < cert.validFromDate.getTime()) return 'certificate-not-yet-valid';
  return undefined;
}

function short(record: TlsaRecord): string {
  const text = formatTlsa(record);
  return text.length > 24 ? `${text.slice(0, 21)}…` : text;
}

function verifies(cert: X509Certificate, key: KeyObject): boolean {
  try {
    return cert.verify(key);
  } catch {
    // A key of another algorithm than the signature's: not a signer of this certificate.
    return false;
  }
}

type PathFailure = { failure: TlsFailure; detail: string; rank: number };

/**
 * RFC 7672 §3.1.2 / RFC 7671 §5.2.2: the path from the leaf up to the anchor at `depth` verifies by
 * signatures, every certificate below the anchor is within its validity, and the leaf names one
 * of the reference identifiers. `anchorKey` is set for a bare-key anchor (2 1 0) that signed the
 * certificate at `depth - 1` without being presented itself.
 */
function checkPath(chain: Parsed[], depth: number, anchorKey: KeyObject | undefined, opts: DaneMatchOptions): PathFailure | undefined {
  for (let i = 0; i < depth; i++) {
    const child = chain[i].cert;
    if (anchorKey && i === depth - 1) {
      if (!verifies(child, anchorKey)) {
        return { failure: 'validation-failure', detail: `certificate at depth ${i} is not signed by the DANE-TA(2) key`, rank: 0 };
      }
      continue;
    }
    const issuer = chain[i + 1].cert;
    // An anchor or intermediate that is no CA cannot issue; OpenSSL's DANE code refuses it too.
    if (!issuer.ca) return { failure: 'validation-failure', detail: `certificate at depth ${i + 1} is not a CA`, rank: 0 };
    if (!child.checkIssued(issuer) || !verifies(child, issuer.publicKey)) {
      return { failure: 'validation-failure', detail: `certificate at depth ${i} is not signed by the one at depth ${i + 1}`, rank: 0 };
    }
  }
  // The anchor's own dates do not count (RFC 7671 §5.2.2 treats it as a trust anchor, not as part
  // of the path); everything it vouches for must be current.
  for (let i = 0; i < depth; i++) {
    const bad = outsideValidity(chain[i].cert, opts.now);
    if (bad) {
      const when = bad === 'certificate-expired' ? `expired ${chain[i].cert.validTo}` : `not valid before ${chain[i].cert.validFrom}`;
      return { failure: bad, detail: `certificate at depth ${i} ${when}`, rank: 1 };
    }
  }
  if (namesHost(chain[0].cert, opts.names) === undefined) {
    return {
      failure: 'certificate-host-mismatch',
      detail: `the certificate names none of ${opts.names.map(normaliseName).join(', ') || '(no names given)'}`,
      rank: 2,
    };
  }
  return undefined;
}

/**
 * Authenticates a peer by its TLSA records (RFC 7672 §3). `chain` is the certificates the server
 * presented, DER, leaf first. Unusable records passed in by mistake are ignored, never trusted.
 *
 * - DANE-EE(3) (RFC 7672 §3.1.1): the leaf matches; its names and dates are deliberately ignored.
 * - DANE-TA(2) (RFC 7672 §3.1.2): a certificate above the leaf matches (or, for a bare public key
 *   2 1 0, signed a presented certificate), the path verifies, the certificates below the anchor
 *   are current, and the leaf names one of `opts.names`.
 */
export function matchDane(usable: TlsaRecord[], chain: Buffer[], opts: DaneMatchOptions): DaneMatch {
  const records = agileRecords(usable.filter(isUsableTlsa));
  if (records.length === 0) return { matched: false, failure: 'tlsa-invalid', detail: 'no usable TLSA record to match against' };
  if (chain.length === 0) return { matched: false, failure: 'validation-failure', detail: 'the server presented no certificate' };

  const parsed: Parsed[] = [];
  for (const der of chain.slice(0, MAX_CHAIN)) {
    const p = parse(der);
    // A certificate that cannot be read ends the usable chain; anything above it cannot be linked.
    if (!p) break;
    parsed.push(p);
  }
  if (parsed.length === 0) return { matched: false, failure: 'validation-failure', detail: 'the server certificate could not be parsed' };
  const leaf = parsed[0];

  // RFC 7672 §3.1.1: DANE-EE first; it needs nothing but the leaf.
  for (const r of records) {
    if (r.usage === 3 && recordMatches(r, leaf)) {
      return { matched: true, record: formatTlsa(r), usage: 3, detail: `DANE-EE(3) record ${short(r)} matched the server certificate` };
    }
  }

  let best: PathFailure | undefined;
  const note = (f: PathFailure) => {
    if (!best || f.rank > best.rank) best = f;
  };
  for (const r of records) {
    if (r.usage !== 2) continue;
    // Depth ≥ 1: a DANE-TA record names an issuer; a leaf pinned by itself is what DANE-EE is for.
    for (let depth = 1; depth < parsed.length; depth++) {
      if (!recordMatches(r, parsed[depth])) continue;
      const failed = checkPath(parsed, depth, undefined, opts);
      if (!failed) {
        return { matched: true, record: formatTlsa(r), usage: 2, detail: `DANE-TA(2) record ${short(r)} matched the certificate at depth ${depth}` };
      }
      note(failed);
    }
    // RFC 7672 §3.1.2: a server may leave out the anchor when the record is its full public key;
    // the anchor then sits just above whichever presented certificate that key signed.
    if (r.selector === 1 && r.matchingType === 0) {
      let key: KeyObject;
      try {
        key = createPublicKey({ key: r.data, format: 'der', type: 'spki' });
      } catch {
        continue;
      }
      for (let signed = 0; signed < parsed.length; signed++) {
        if (!verifies(parsed[signed].cert, key)) continue;
        const failed = checkPath(parsed, signed + 1, key, opts);
        if (!failed) {
          return { matched: true, record: formatTlsa(r), usage: 2, detail: `DANE-TA(2) public key ${short(r)} signed the certificate at depth ${signed}` };
        }
        note(failed);
      }
    }
  }
  if (best) return { matched: false, failure: best.failure, detail: `DANE-TA(2) anchor found, but ${best.detail}` };

  const kinds = [...new Set(records.map((r) => USAGE_NAMES[r.usage]))].join(', ');
  return {
    matched: false,
    failure: 'validation-failure',
    detail: `no ${kinds} record of ${records.length} matched the ${parsed.length} certificate(s) presented`,
  };
}
