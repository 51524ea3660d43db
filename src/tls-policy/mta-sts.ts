// MTA-STS (RFC 8461) as text: reading the `_mta-sts` TXT record, reading a fetched policy file, and
// deciding whether an MX host is one the policy names. Pure: no I/O, no clock; policy-lookup/
// fetches, tls-policy/ decides with the result.
//
// Written here rather than wrapping mailauth's parsePolicy (which is close): mailauth rejects a
// max_age above 31557600 where we cap it, takes the first of two conflicting `mode` lines where we
// refuse to guess, and it does not keep the policy lines TLS-RPT reports (RFC 8460 §4.4). The
// tests cross-check this parser against mailauth's strict mode on everything else.
import { domainOrUndefined } from '../mail/domain.ts';
import type { StsPolicy } from './evidence.ts';

/** RFC 8461 §3.2: max_age is at most one year (31557600 s); larger values are capped to it. */
export const MAX_AGE_LIMIT = 31_557_600;

// RFC 8461 §3.1 ABNF. sts-ext-name and sts-policy-ext-name share one grammar.
const EXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const TXT_ID = /^[A-Za-z0-9]{1,32}$/;
const TXT_EXT_VALUE = /^[\x21-\x3a\x3c\x3e-\x7e]+$/;
// "Records that do not begin with "v=STSv1;" MUST be discarded"; sts-sep allows WSP before ";".
const TXT_PREFIX = /^v=STSv1[ \t]*;/;
const WSP_EDGES = /^[ \t]+|[ \t]+$/g;
// RFC 5321 §4.1.2 sub-domain, at most 63 octets (RFC 1035 §2.3.4).
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export type StsTxt = { id: string } | { reason: string };

/**
 * Reads the `_mta-sts.<domain>` TXT records (each already joined from its character-strings).
 * RFC 8461 §3.1: records not starting `v=STSv1;` are discarded; unless exactly one remains and it
 * is valid, the domain has no available policy.
 */
export function parseStsTxt(records: string[]): StsTxt {
  const candidates = records.filter((r) => TXT_PREFIX.test(r));
  if (candidates.length === 0) return { reason: 'no TXT record starts with "v=STSv1;"' };
  if (candidates.length > 1) {
    return { reason: `${candidates.length} TXT records start with "v=STSv1;"; RFC 8461 §3.1 allows exactly one` };
  }
  const parts = candidates[0].split(';');
  let id: string | undefined;
  for (let i = 1; i < parts.length; i++) {
    // WSP around ";" belongs to the separator (sts-sep = *WSP ";" *WSP).
    const field = parts[i].replace(WSP_EDGES, '');
    if (field === '') {
      if (i === parts.length - 1) continue; // the optional trailing separator
      return { reason: 'empty field between two ";"' };
    }
    const eq = field.indexOf('=');
    const name = eq < 0 ? field : field.slice(0, eq);
    const value = eq < 0 ? '' : field.slice(eq + 1);
    if (eq < 1 || !EXT_NAME.test(name)) return { reason: `"${field}" is not a name=value field` };
    if (name === 'id') {
      if (!TXT_ID.test(value)) return { reason: `id "${value}" is not 1-32 letters and digits` };
      // A repeated id: the first wins, as in other readers; the later one need only be well formed.
      id ??= value;
    } else if (!TXT_EXT_VALUE.test(value)) {
      return { reason: `field ${name} has a value outside printable ASCII or containing "=" or ";"` };
    }
  }
  if (id === undefined) return { reason: 'the record has no id field' };
  return { id };
}

export type StsPolicyResult = { policy: StsPolicy } | { error: string };

/** `["*."] Domain` (RFC 8461 §3.2), lower-cased, or undefined. */
function mxPattern(value: string): string | undefined {
  const lower = value.toLowerCase();
  const domain = lower.startsWith('*.') ? lower.slice(2) : lower;
  if (domain === '' || domain.length > 253) return undefined;
  return domain.split('.').every((l) => LABEL.test(l)) ? lower : undefined;
}

/**
 * Reads a policy file (RFC 8461 §3.2) fetched under TXT id `id`. Fields the RFC does not define
 * are ignored, as §3.2 requires; the defined ones are held to their grammar. Field names and
 * values are case-sensitive (%s in the ABNF), so `Mode: Enforce` is not a mode.
 */
export function parseStsPolicy(text: string, id: string): StsPolicyResult {
  // sts-policy-term is LF or CRLF; a final terminator leaves an empty last element.
  const raw = text.split(/\r?\n/);
  const lines = raw.filter((l) => l.trim() !== '');
  const single: Partial<Record<'version' | 'mode' | 'max_age', string>> = {};
  const mx: string[] = [];
  for (let n = 0; n < raw.length; n++) {
    const line = raw[n];
    const colon = line.indexOf(':');
    if (colon < 0) continue; // not a field the RFC defines: ignored like any unknown field
    const name = line.slice(0, colon);
    if (!EXT_NAME.test(name)) continue;
    const value = line.slice(colon + 1).replace(WSP_EDGES, '');
    if (name === 'mx') {
      const pattern = mxPattern(value);
      if (pattern === undefined) return { error: `line ${n + 1}: mx "${value}" is not a host name or *.domain pattern` };
      if (!mx.includes(pattern)) mx.push(pattern);
    } else if (name === 'version' || name === 'mode' || name === 'max_age') {
      // "required once": a second, different value leaves the policy ambiguous, and guessing
      // which one the domain meant could weaken (or strengthen) it without the domain knowing.
      const previous = single[name];
      if (previous !== undefined && previous !== value) {
        return { error: `line ${n + 1}: ${name} appears twice with different values ("${previous}", "${value}")` };
      }
      single[name] = value;
    }
  }
  if (single.version === undefined) return { error: 'no version field' };
  if (single.version !== 'STSv1') return { error: `version "${single.version}" is not STSv1` };
  const mode = single.mode;
  if (mode === undefined) return { error: 'no mode field' };
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') {
    return { error: `mode "${mode}" is not enforce, testing or none` };
  }
  if (single.max_age === undefined) return { error: 'no max_age field' };
  if (!/^[0-9]{1,10}$/.test(single.max_age)) return { error: `max_age "${single.max_age}" is not 1-10 digits` };
  const maxAge = Math.min(Number(single.max_age), MAX_AGE_LIMIT);
  // §3.2: mx is "required at least once, except when mode is none".
  if (mode !== 'none' && mx.length === 0) return { error: `mode ${mode} without any mx field` };
  return { policy: { id, mode, mx, maxAge, lines } };
}

// MX names travel as A-labels; a U-label from elsewhere is compared in that form. '' for a name
// that is none, which matches nothing; a `*.` pattern keeps its wildcard in front of the name.
function hostName(raw: string): string {
  const trimmed = raw.trim();
  if (trimmed.startsWith('*.')) {
    const rest = domainOrUndefined(trimmed.slice(2));
    return rest === undefined ? '' : `*.${rest}`;
  }
  return domainOrUndefined(trimmed) ?? '';
}

/**
 * RFC 8461 §4.1: whether `host` (an MX host name) matches one of the policy's `mx` patterns. A
 * `*.` pattern matches exactly one whole leftmost label: `*.example.net` matches
 * `mx1.example.net`, not `example.net` nor `a.b.example.net`. Case and a trailing dot do not matter.
 */
export function mxMatchesPolicy(host: string, patterns: readonly string[]): boolean {
  const name = hostName(host);
  if (name === '' || name.includes('*')) return false;
  for (const raw of patterns) {
    const pattern = hostName(raw);
    if (pattern.startsWith('*.')) {
      const suffix = pattern.slice(1); // ".example.net"
      if (name.length <= suffix.length || !name.endsWith(suffix)) continue;
      const label = name.slice(0, name.length - suffix.length);
      if (!label.includes('.')) return true;
    } else if (pattern !== '' && pattern === name) {
      return true;
    }
  }
  return false;
}
