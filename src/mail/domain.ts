// Domain names as every stage compares, stores and hashes them: one normaliser, whose result — the
// lower-case A-label without a final dot — is the key everywhere (RFC 5890 §2.3.2.1: the A-label
// is the form DNS and the MX records carry; a U-label and its A-label name the same domain, so
// counting them under two keys would split one domain's suppressions, policies or reports).
// Callers that need more (a fully qualified name, room for a prefix) check that on the result.
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';

export type DomainProblem = 'empty' | 'invalid' | 'too-long' | 'ip-address';

export class InvalidDomainError extends Error {
  readonly problem: DomainProblem;
  readonly input: string;
  constructor(problem: DomainProblem, input: string, message: string) {
    super(message);
    this.name = 'InvalidDomainError';
    this.problem = problem;
    this.input = input;
  }
}

export type DomainCheck = { ok: true; domain: string } | { ok: false; problem: DomainProblem; message: string };

// RFC 1035 §2.3.1 as RFC 1123 §2.1 relaxed it: letters, digits and inner hyphens, 1-63 octets.
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// Plain ASCII that UTS-46 leaves as it is: only the A-label check is needed.
const LDH_TEXT = /^[a-z0-9.-]*$/;
// The ASCII a U-label name may mix in; anything else ASCII (%, _, spaces, brackets) is refused
// before UTS-46, which would percent-decode or pass it.
const ASCII_OUTSIDE_LDH = /[\x00-\x2c\x2f\x3a-\x60\x7b-\x7f]/;
// RFC 3696 §2: a top-level label is never all-numeric; URL parsing (which domainToASCII follows)
// reads such a name, or a 0x-hex last label, as an IPv4 address.
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;

/** The A-label form of `raw` (trimmed, one final dot dropped, lower-cased, UTS-46), or the problem. */
export function checkDomain(raw: string): DomainCheck {
  const trimmed = raw.trim();
  const name = (trimmed.endsWith('.') ? trimmed.slice(0, -1) : trimmed).toLowerCase();
  const bad = (problem: DomainProblem, why: string): DomainCheck => ({ ok: false, problem, message: `"${raw}" is ${why}` });
  if (name === '') return bad('empty', 'not a valid domain name (empty)');
  if (isIP(name) !== 0 || (name.startsWith('[') && name.endsWith(']'))) return bad('ip-address', 'an IP address, not a domain name');
  let ascii: string;
  if (LDH_TEXT.test(name) && !name.includes('xn--')) ascii = name;
  else if (ASCII_OUTSIDE_LDH.test(name)) return bad('invalid', 'not a valid domain name (letters, digits and hyphens, labels of 1-63 characters)');
  else ascii = domainToASCII(name);
  if (ascii === '') return bad('invalid', 'not a valid domain name (no IDNA A-label form)');
  if (ascii.length > 253) return bad('too-long', 'not a valid domain name (longer than 253 characters)');
  const labels = ascii.split('.');
  if (!labels.every((l) => LDH_LABEL.test(l))) {
    return bad('invalid', 'not a valid domain name (letters, digits and hyphens, labels of 1-63 characters)');
  }
  if (NUMERIC_LABEL.test(labels[labels.length - 1]) || isIP(ascii) !== 0) return bad('ip-address', 'an IP address, not a domain name');
  return { ok: true, domain: ascii };
}

/** The A-label key of a domain name; throws InvalidDomainError saying what is wrong. */
export function normaliseDomain(raw: string): string {
  const check = checkDomain(raw);
  if (!check.ok) throw new InvalidDomainError(check.problem, raw, check.message);
  return check.domain;
}

/** The A-label key of a domain name, or undefined when `raw` is not one. */
export function domainOrUndefined(raw: string): string | undefined {
  const check = checkDomain(raw);
  return check.ok ? check.domain : undefined;
}

/**
 * The key to file a domain under when the text need not be valid (a lookup, a count, a hash): its
 * A-label when it is a domain name, else the text trimmed, lower-cased and without a final dot,
 * so that an odd name is still counted under one key rather than lost.
 */
export function domainKey(raw: string): string {
  const check = checkDomain(raw);
  if (check.ok) return check.domain;
  const trimmed = raw.trim().toLowerCase();
  return trimmed.endsWith('.') ? trimmed.slice(0, -1) : trimmed;
}
