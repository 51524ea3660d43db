// Judges what a sender domain's DNS says against what it should publish. Pure: the lookups are
// done elsewhere (sender-domains.ts) and passed in, so every kind of wrong record is testable
// without a network.
import type { DkimKeyRecord } from '../store/domains-table.ts';
import { parseDkimRecord } from './dkim-keys.ts';
import { recordsToPublish, spfTerms, type PublishedRecord, type SenderSettings } from './dns-records.ts';

export type Lookup =
  | { status: 'found'; values: string[] }
  /** NXDOMAIN or no record of the type: an answer, not an error. */
  | { status: 'none' }
  /** SERVFAIL, timeout: nothing can be concluded. */
  | { status: 'error'; message: string };

export type CheckStatus = 'ok' | 'missing' | 'wrong' | 'error';

export interface RecordCheck {
  purpose: PublishedRecord['purpose'];
  name: string;
  type: PublishedRecord['type'];
  expected: string;
  status: CheckStatus;
  found: string[];
  detail: string;
  required: boolean;
  selector?: string;
  keyState?: DkimKeyRecord['state'];
}

export type DmarcPolicy = 'absent' | 'none' | 'quarantine' | 'reject' | 'invalid' | 'unknown';

export interface VerificationReport {
  domain: string;
  /** DKIM of the signing (or the new) keys matches and SPF authorises Lacre. */
  verified: boolean;
  /** False when a required lookup failed: the domain's status should not change on it. */
  conclusive: boolean;
  spf: 'authorised' | 'missing' | 'not-authorised' | 'error';
  dmarc: { policy: DmarcPolicy; record: string | null; recommendation: string };
  records: RecordCheck[];
  /** Pending keys whose records verified: signing switches to them. */
  activate: string[];
}

export interface VerificationInput {
  domain: string;
  keys: DkimKeyRecord[];
  settings: SenderSettings;
  createdAt: number;
  /** `TYPE name` → what DNS answered. */
  lookups: Map<string, Lookup>;
  /**
   * SPF evaluations (RFC 7208 check_host) of the return-path domain for each configured sending
   * address, for a record that authorises Lacre through terms other than the printed ones.
   */
  spfEvaluations?: Array<{ ip: string; result: string }>;
}

export const lookupKey = (type: string, name: string) => `${type} ${name.toLowerCase()}`;

/** The lookups verification needs: `[type, name]` pairs. */
export function lookupsNeeded(domain: string, keys: DkimKeyRecord[], settings: SenderSettings): Array<['TXT' | 'MX', string]> {
  return recordsToPublish({ domain, keys, settings, createdAt: 0 })
    .filter((r) => r.type !== 'HTTPS')
    .map((r) => [r.type as 'TXT' | 'MX', r.name]);
}

export function judgeDomain(input: VerificationInput): VerificationReport {
  const published = recordsToPublish({ domain: input.domain, keys: input.keys, settings: input.settings, createdAt: input.createdAt });
  const records: RecordCheck[] = [];
  let spf: VerificationReport['spf'] = 'missing';
  let dmarc: VerificationReport['dmarc'] = { policy: 'unknown', record: null, recommendation: 'the DMARC lookup failed; try again' };

  for (const record of published) {
    if (record.type === 'HTTPS') continue; // the MTA-STS policy file is fetched by the MTA-STS checks
    const lookup = input.lookups.get(lookupKey(record.type, record.name)) ?? { status: 'error', message: 'not looked up' };
    const base = {
      purpose: record.purpose,
      name: record.name,
      type: record.type,
      expected: record.value,
      required: record.required,
      ...(record.selector ? { selector: record.selector, keyState: record.keyState } : {}),
    };
    if (lookup.status === 'error') {
      records.push({ ...base, status: 'error', found: [], detail: `lookup failed: ${lookup.message}` });
      if (record.purpose === 'spf') spf = 'error';
      continue;
    }
    const found = lookup.status === 'found' ? lookup.values : [];
    const verdict = judgeRecord(record, found, input);
    records.push({ ...base, ...verdict, found });
    if (record.purpose === 'spf') spf = verdict.status === 'ok' ? 'authorised' : verdict.status === 'missing' ? 'missing' : 'not-authorised';
    if (record.purpose === 'dmarc') dmarc = judgeDmarc(found);
  }

  const dkim = records.filter((r) => r.purpose === 'dkim');
  const active = dkim.filter((r) => r.keyState === 'active');
  const pending = dkim.filter((r) => r.keyState === 'pending');
  const allOk = (list: RecordCheck[]) => list.length > 0 && list.every((r) => r.status === 'ok');
  const activate = allOk(pending)
    ? input.keys.filter((k) => k.state === 'pending').map((k) => k.id)
    : [];
  const dkimOk = allOk(active) || activate.length > 0;
  const verified = dkimOk && spf === 'authorised';
  const relevant = [...active, ...pending, ...records.filter((r) => r.purpose === 'spf')];
  const conclusive = verified || !relevant.some((r) => r.status === 'error');
  return { domain: input.domain, verified, conclusive, spf, dmarc, records, activate };
}

function judgeRecord(record: PublishedRecord, found: string[], input: VerificationInput): { status: CheckStatus; detail: string } {
  switch (record.purpose) {
    case 'dkim':
      return judgeDkim(record.value, found);
    case 'spf':
      return judgeSpf(found, input);
    case 'return-path-mx': {
      const target = input.settings.hostname.toLowerCase();
      if (found.length === 0) return { status: 'missing', detail: 'no MX: bounces to the return path cannot reach Lacre' };
      const hosts = found.map((v) => v.split(/\s+/).pop()!.replace(/\.$/, '').toLowerCase());
      return hosts.includes(target)
        ? { status: 'ok', detail: `MX points to ${target}` }
        : { status: 'wrong', detail: `MX points to ${hosts.join(', ')}, not ${target}` };
    }
    case 'dmarc': {
      const verdict = judgeDmarc(found);
      if (verdict.policy === 'absent') return { status: 'missing', detail: verdict.recommendation };
      if (verdict.policy === 'invalid') return { status: 'wrong', detail: verdict.recommendation };
      return { status: 'ok', detail: `p=${verdict.policy}. ${verdict.recommendation}` };
    }
    case 'mta-sts': {
      const sts = found.filter((v) => /^v=STSv1\s*;/i.test(v));
      if (sts.length === 0) return { status: 'missing', detail: 'no MTA-STS policy for inbound mail (recommended)' };
      if (sts.length > 1) return { status: 'wrong', detail: 'more than one v=STSv1 record: RFC 8461 §3.1 treats that as no policy' };
      return { status: 'ok', detail: 'MTA-STS record present' };
    }
    case 'tls-rpt': {
      const rpt = found.filter((v) => /^v=TLSRPTv1\s*;/i.test(v));
      if (rpt.length === 0) return { status: 'missing', detail: 'no TLS-RPT record (recommended)' };
      if (rpt.length > 1) return { status: 'wrong', detail: 'more than one v=TLSRPTv1 record: RFC 8460 §3 ignores them all' };
      return /rua=\s*(mailto|https):/i.test(rpt[0])
        ? { status: 'ok', detail: 'TLS-RPT record present' }
        : { status: 'wrong', detail: 'the TLS-RPT record has no mailto: or https: rua' };
    }
    default:
      return { status: 'ok', detail: '' };
  }
}

function judgeDkim(expected: string, found: string[]): { status: CheckStatus; detail: string } {
  if (found.length === 0) return { status: 'missing', detail: 'no TXT record at this name' };
  const want = parseDkimRecord(expected)!;
  const parsed = found.map((v) => parseDkimRecord(v));
  if (parsed.some((p) => p && p.publicKey === want.publicKey && p.keyType === want.keyType)) {
    return { status: 'ok', detail: 'public key matches' };
  }
  const first = parsed.find((p) => p !== null);
  if (!first) return { status: 'wrong', detail: 'the TXT record is not a DKIM key record (RFC 6376 §3.6.1)' };
  if (first.publicKey === '') return { status: 'wrong', detail: 'the record has an empty p=: the key is revoked' };
  if (first.keyType !== want.keyType) return { status: 'wrong', detail: `k=${first.keyType}, expected k=${want.keyType}` };
  return { status: 'wrong', detail: 'a different public key is published (truncated or from another key?)' };
}

function judgeSpf(found: string[], input: VerificationInput): { status: CheckStatus; detail: string } {
  const spf = found.filter((v) => /^v=spf1(\s|$)/i.test(v.trim()));
  if (spf.length === 0) return { status: 'missing', detail: 'no v=spf1 record' };
  // RFC 7208 §4.5: more than one record is a permerror for every receiver.
  if (spf.length > 1) return { status: 'wrong', detail: 'more than one v=spf1 record: receivers treat that as a permanent error' };
  const terms = spf[0].trim().split(/\s+/).slice(1).map((t) => t.toLowerCase());
  if (terms.some((t) => t === 'all' || t === '+all')) {
    return { status: 'wrong', detail: '"+all" authorises every host on the Internet to send as this domain' };
  }
  const missing = spfTerms(input.settings).filter((t) => !terms.includes(t.toLowerCase()));
  if (missing.length === 0) return { status: 'ok', detail: 'authorises Lacre' };
  const evaluations = input.spfEvaluations ?? [];
  if (evaluations.length > 0 && evaluations.every((e) => e.result === 'pass')) {
    return { status: 'ok', detail: `authorises Lacre's addresses (${evaluations.map((e) => e.ip).join(', ')}) through other terms` };
  }
  return { status: 'wrong', detail: `does not authorise Lacre: missing ${missing.join(' ')}` };
}

export function judgeDmarc(found: string[]): VerificationReport['dmarc'] {
  const records = found.filter((v) => /^v=DMARC1\s*(;|$)/i.test(v.trim()));
  if (records.length === 0) {
    return {
      policy: 'absent',
      record: null,
      recommendation: 'publish a DMARC record, starting with p=none and a rua= address to receive reports',
    };
  }
  // RFC 7489 §6.6.3: several records mean no DMARC policy at all.
  if (records.length > 1) {
    return { policy: 'invalid', record: records.join(' | '), recommendation: 'keep only one v=DMARC1 record' };
  }
  const p = /(?:^|;)\s*p\s*=\s*([a-z]+)/i.exec(records[0])?.[1]?.toLowerCase();
  const advice: Record<string, string> = {
    none: 'monitoring only; once reports show your mail passing, move to p=quarantine',
    quarantine: 'failing mail goes to spam; move to p=reject when reports stay clean',
    reject: 'failing mail is refused: the strongest protection against spoofing',
  };
  if (!p || !(p in advice)) {
    return { policy: 'invalid', record: records[0], recommendation: 'the record has no valid p= tag (none, quarantine or reject)' };
  }
  return { policy: p as DmarcPolicy, record: records[0], recommendation: advice[p] };
}
