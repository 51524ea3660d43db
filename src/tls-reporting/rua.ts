// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports.
//
// This file: where a domain wants its reports, from its `_smtp._tls.<domain>` TXT record
// (RFC 8460 §3). Pure: TXT strings in, report URIs out.
import { domainKey } from '../mail/domain.ts';

export type RuaUri =
  | { scheme: 'mailto'; uri: string; address: string }
  | { scheme: 'https'; uri: string; url: string };

export type RuaResult =
  | { kind: 'rua'; uris: RuaUri[] }
  /** The domain does not take reports, and why (for the report state, never for a sender). */
  | { kind: 'none'; reason: string };

/** The name the record lives at. */
export function tlsRptName(domain: string): string {
  return `_smtp._tls.${domainKey(domain)}`;
}

// A domain cannot make us send a report to more places than this.
const MAX_URIS = 10;
const MAX_URI_LENGTH = 2048;
// field-delim = *WSP ";" *WSP
const VERSION = /^v=TLSRPTv1[ \t]*;/;
const EXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const EXT_VALUE = /^[\x21-\x3a\x3c\x3e-\x7e]+$/;
// A plain addr-spec: dot-atom local part (no quoted strings in report addresses) at a host name.
const ADDRESS = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/**
 * Reads the TXT records found at `_smtp._tls.<domain>`. Records not starting `v=TLSRPTv1;` are
 * not ours; anything but exactly one of ours means no reporting (§3). Unknown fields are
 * ignored, and so are URIs of schemes other than mailto and https.
 */
export function parseTlsRptRecords(records: string[]): RuaResult {
  const ours = records.filter((r) => VERSION.test(r));
  if (ours.length === 0) return { kind: 'none', reason: 'no v=TLSRPTv1 record' };
  if (ours.length > 1) return { kind: 'none', reason: `${ours.length} v=TLSRPTv1 records (RFC 8460 §3 wants exactly one)` };
  const fields = ours[0].split(';').slice(1).map((f) => f.replace(/^[ \t]+|[ \t]+$/g, ''));
  let rua: string | undefined;
  for (const [i, field] of fields.entries()) {
    // A trailing ";" leaves one empty field, which the grammar allows; an empty one elsewhere is not.
    if (field === '') {
      if (i === fields.length - 1) continue;
      return { kind: 'none', reason: 'empty field in the record' };
    }
    const eq = field.indexOf('=');
    if (eq <= 0) return { kind: 'none', reason: `malformed field "${field.slice(0, 40)}"` };
    const name = field.slice(0, eq);
    const value = field.slice(eq + 1);
    if (name === 'rua') {
      if (rua !== undefined) return { kind: 'none', reason: 'more than one rua field' };
      rua = value;
    } else if (!EXT_NAME.test(name) || !EXT_VALUE.test(value)) {
      return { kind: 'none', reason: `malformed field "${field.slice(0, 40)}"` };
    }
  }
  if (rua === undefined) return { kind: 'none', reason: 'the record has no rua field' };
  const uris: RuaUri[] = [];
  const seen = new Set<string>();
  for (const raw of rua.split(',').map((u) => u.replace(/^[ \t]+|[ \t]+$/g, ''))) {
    if (uris.length >= MAX_URIS) break;
    for (const uri of parseRuaUri(raw)) {
      if (seen.has(uri.uri) || uris.length >= MAX_URIS) continue;
      seen.add(uri.uri);
      uris.push(uri);
    }
  }
  if (uris.length === 0) return { kind: 'none', reason: 'no usable mailto: or https: URI in rua' };
  return { kind: 'rua', uris };
}

/** One rua URI; a mailto with several addresses gives one entry each. Unusable: none. */
export function parseRuaUri(raw: string): RuaUri[] {
  if (raw === '' || raw.length > MAX_URI_LENGTH || /[\s\x00-\x1f\x7f]/.test(raw)) return [];
  const colon = raw.indexOf(':');
  if (colon <= 0) return [];
  const scheme = raw.slice(0, colon).toLowerCase();
  if (scheme === 'mailto') return parseMailto(raw.slice(colon + 1));
  if (scheme === 'https') {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      return [];
    }
    // Credentials in a URI published in DNS are neither secret nor ours to send.
    if (url.protocol !== 'https:' || url.hostname === '' || url.username || url.password) return [];
    url.hash = '';
    return [{ scheme: 'https', uri: url.href, url: url.href }];
  }
  return [];
}

// RFC 6068 §2: `mailto:` to ["?" hfields]; addresses are percent-encoded, several joined by ",".
function parseMailto(rest: string): RuaUri[] {
  const to = rest.split('?')[0];
  let decoded: string;
  try {
    decoded = decodeURIComponent(to);
  } catch {
    return [];
  }
  const out: RuaUri[] = [];
  for (const part of decoded.split(',')) {
    const address = part.trim();
    if (!ADDRESS.test(address) || address.length > 254) continue;
    // The local part as the domain wrote it (RFC 5321 §2.4); the domain part as its A-label.
    const normalized = `${address.slice(0, address.lastIndexOf('@'))}@${domainKey(address.slice(address.lastIndexOf('@') + 1))}`;
    out.push({ scheme: 'mailto', uri: `mailto:${normalized}`, address: normalized });
  }
  return out;
}
