// What a sender domain must publish in DNS, as pure functions of the domain, its DKIM keys and the
// operator's settings. `lacre domains add|show` print these; verification.ts checks them.
import type { DkimKeyRecord } from '../store/domains-table.ts';
import { dkimRecordValue } from './dkim-keys.ts';

export interface SenderSettings {
  /** Lacre's host name (EHLO, MX target of the return-path domain). */
  hostname: string;
  returnPathSubdomain: string;
  returnPathLocalPart: string;
  spfInclude?: string;
  spfIp4: string[];
  spfIp6: string[];
  dmarcRua: string;
  tlsRptRua: string;
}

export type RecordPurpose = 'dkim' | 'spf' | 'return-path-mx' | 'dmarc' | 'mta-sts' | 'mta-sts-policy' | 'tls-rpt';

export interface PublishedRecord {
  purpose: RecordPurpose;
  /** Owner name; for the MTA-STS policy file, its URL. */
  name: string;
  type: 'TXT' | 'MX' | 'HTTPS';
  value: string;
  /** Needed for the domain to be verified (DKIM of the signing keys, SPF). */
  required: boolean;
  note?: string;
  selector?: string;
  keyState?: DkimKeyRecord['state'];
}

/** The domain of the envelope sender: the sender's domain or a subdomain whose MX is Lacre. */
export function returnPathDomain(domain: string, settings: Pick<SenderSettings, 'returnPathSubdomain'>): string {
  return settings.returnPathSubdomain ? `${settings.returnPathSubdomain}.${domain}` : domain;
}

/** The SPF terms that authorise Lacre: the configured include/ip4/ip6, else Lacre's own A record. */
export function spfTerms(settings: SenderSettings): string[] {
  const terms = [
    ...(settings.spfInclude ? [`include:${settings.spfInclude}`] : []),
    ...settings.spfIp4.map((ip) => `ip4:${ip}`),
    ...settings.spfIp6.map((ip) => `ip6:${ip}`),
  ];
  return terms.length > 0 ? terms : [`a:${settings.hostname}`];
}

// RFC 7208 §4.6.2: "-all" so that everything else fails; DMARC needs that to mean anything.
export function spfRecordValue(settings: SenderSettings): string {
  return `v=spf1 ${spfTerms(settings).join(' ')} -all`;
}

export function dkimRecordName(selector: string, domain: string): string {
  return `${selector}._domainkey.${domain}`;
}

function fill(template: string, domain: string): string {
  return template.replaceAll('{domain}', domain);
}

// RFC 8461 §3.1: the id must change whenever the policy does; a timestamp is the usual choice.
export function mtaStsId(at: number): string {
  return new Date(at).toISOString().replace(/[-:TZ.]/g, '').slice(0, 14);
}

export function mtaStsPolicyText(mxHosts: string[]): string {
  // RFC 8461 §3.2. `testing` first: failures are reported (TLS-RPT) but mail still flows.
  const mx = mxHosts.length > 0 ? mxHosts : ['<your inbound MX host>'];
  return ['version: STSv1', 'mode: testing', ...mx.map((h) => `mx: ${h}`), 'max_age: 604800', ''].join('\r\n');
}

/**
 * Every record the owner of `domain` should publish, in the order they matter. DKIM records are
 * listed for every key that is not retired: during a rotation both the old and the new pair.
 */
export function recordsToPublish(input: {
  domain: string;
  keys: DkimKeyRecord[];
  settings: SenderSettings;
  /** When the domain was added: the MTA-STS policy id. */
  createdAt: number;
  /** The domain's inbound MX hosts, if known, for the MTA-STS policy. */
  inboundMx?: string[];
}): PublishedRecord[] {
  const { domain, settings } = input;
  const records: PublishedRecord[] = [];
  for (const key of input.keys) {
    if (key.state === 'retired') continue;
    records.push({
      purpose: 'dkim',
      name: dkimRecordName(key.selector, domain),
      type: 'TXT',
      value: dkimRecordValue(key.algorithm, key.publicKey),
      required: key.state === 'active' || key.state === 'pending',
      selector: key.selector,
      keyState: key.state,
      note:
        key.state === 'pending'
          ? 'new key: signing switches to it once this record verifies'
          : key.state === 'retiring'
            ? 'old key: keep it published until the rotation grace period ends'
            : `${key.algorithm === 'ed25519' ? 'Ed25519 (RFC 8463)' : 'RSA-2048'} signing key`,
    });
  }
  const rpDomain = returnPathDomain(domain, settings);
  records.push({
    purpose: 'spf',
    name: rpDomain,
    type: 'TXT',
    value: spfRecordValue(settings),
    required: true,
    note:
      rpDomain === domain
        ? 'merge these terms into your existing SPF record if you have one: a name may have only one (RFC 7208 §3.2)'
        : 'the return-path domain: SPF aligns with the From domain for DMARC',
  });
  if (rpDomain !== domain) {
    records.push({
      purpose: 'return-path-mx',
      name: rpDomain,
      type: 'MX',
      value: `10 ${settings.hostname}`,
      required: false,
      note: 'bounces to the return path reach Lacre, which stops sending to dead addresses',
    });
  }
  records.push({
    purpose: 'dmarc',
    name: `_dmarc.${domain}`,
    type: 'TXT',
    value: `v=DMARC1; p=none; rua=${fill(settings.dmarcRua, domain)}; adkim=r; aspf=r`,
    required: false,
    note: 'start with p=none and read the reports; when all your mail passes, move to p=quarantine, then p=reject',
  });
  records.push({
    purpose: 'mta-sts',
    name: `_mta-sts.${domain}`,
    type: 'TXT',
    value: `v=STSv1; id=${mtaStsId(input.createdAt)}`,
    required: false,
    note: "for your domain's own inbound mail (RFC 8461); publish together with the policy file",
  });
  records.push({
    purpose: 'mta-sts-policy',
    name: `https://mta-sts.${domain}/.well-known/mta-sts.txt`,
    type: 'HTTPS',
    value: mtaStsPolicyText(input.inboundMx ?? []),
    required: false,
    note: 'served as text/plain with a valid certificate for mta-sts.' + domain + '; switch mode to enforce once TLS reports are clean',
  });
  records.push({
    purpose: 'tls-rpt',
    name: `_smtp._tls.${domain}`,
    type: 'TXT',
    value: `v=TLSRPTv1; rua=${fill(settings.tlsRptRua, domain)}`,
    required: false,
    note: 'daily reports on TLS failures of mail sent to your domain (RFC 8460)',
  });
  return records;
}
