// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports.
//
// This file: the report itself, RFC 8460 §4.4 JSON, and its §5.1 file name. Pure: the same counts
// give the same bytes, whatever order the store returned them in.
import { domainOrUndefined } from '../mail/domain.ts';
import { dayBounds } from './days.ts';
import { RESULT_TYPES, type ResultType } from './result-types.ts';

export const POLICY_TYPES = ['sts', 'tlsa', 'no-policy-found'] as const;
export type PolicyType = (typeof POLICY_TYPES)[number];

/** A failure-details row as counted (the collector's and the store's shape). */
export interface CountedDetail {
  resultType: string;
  receivingMxHostname?: string;
  receivingIp?: string;
  receivingMxHelo?: string;
  sendingMtaIp?: string;
  additionalInformation?: string;
  failureReasonCode?: string;
}

export interface CountedPolicy {
  policy: { type: string; strings: string[]; mxHosts: string[] };
  success: number;
  failure: number;
  details: Array<{ detail: CountedDetail; count: number }>;
}

export interface ReportInput {
  organizationName: string;
  contactInfo: string;
  reportId: string;
  /** The UTC day covered, YYYY-MM-DD. */
  day: string;
  policyDomain: string;
  policies: CountedPolicy[];
}

export interface ReportFailureDetail {
  'result-type': ResultType;
  'sending-mta-ip'?: string;
  'receiving-mx-hostname'?: string;
  'receiving-mx-helo'?: string;
  'receiving-ip'?: string;
  'failed-session-count': number;
  'additional-information'?: string;
  'failure-reason-code'?: string;
}

export interface ReportPolicyEntry {
  policy: {
    'policy-type': PolicyType;
    'policy-string'?: string[];
    'policy-domain': string;
    'mx-host'?: string[];
  };
  summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
  'failure-details'?: ReportFailureDetail[];
}

/** RFC 8460 §4.4, members in the order the RFC's example gives them. */
export interface TlsRptReport {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: ReportPolicyEntry[];
}

// RFC 3339 in UTC with a Z and no fraction, as the RFC's example writes it.
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortKey = (parts: Array<string | undefined>) => JSON.stringify(parts.map((p) => p ?? ''));

function isPolicyType(value: string): value is PolicyType {
  return (POLICY_TYPES as readonly string[]).includes(value);
}

function isResultType(value: string): value is ResultType {
  return (RESULT_TYPES as readonly string[]).includes(value);
}

function failureDetail(detail: CountedDetail, count: number): ReportFailureDetail {
  if (!isResultType(detail.resultType)) throw new Error(`counted failure has no RFC 8460 result type: ${detail.resultType}`);
  const optional = (name: string, value: string | undefined) => (value ? { [name]: value } : {});
  // Spread in the RFC example's order: members keep the order they are written in.
  const out: ReportFailureDetail = {
    'result-type': detail.resultType,
    ...optional('sending-mta-ip', detail.sendingMtaIp),
    ...optional('receiving-mx-hostname', detail.receivingMxHostname),
    ...optional('receiving-mx-helo', detail.receivingMxHelo),
    ...optional('receiving-ip', detail.receivingIp),
    'failed-session-count': count,
    ...optional('additional-information', detail.additionalInformation),
    ...optional('failure-reason-code', detail.failureReasonCode),
  };
  return out;
}

function detailSortKey(d: CountedDetail): string {
  return sortKey([d.resultType, d.receivingMxHostname, d.receivingIp, d.receivingMxHelo, d.sendingMtaIp, d.additionalInformation, d.failureReasonCode]);
}

function policyEntry(counted: CountedPolicy, policyDomain: string): ReportPolicyEntry {
  const { type, strings, mxHosts } = counted.policy;
  if (!isPolicyType(type)) throw new Error(`counted policy has no RFC 8460 policy type: ${type}`);
  const policy: ReportPolicyEntry['policy'] = {
    'policy-type': type,
    ...(strings.length > 0 ? { 'policy-string': [...strings] } : {}),
    'policy-domain': policyDomain,
    ...(mxHosts.length > 0 ? { 'mx-host': [...mxHosts] } : {}),
  };
  const entry: ReportPolicyEntry = {
    policy,
    summary: { 'total-successful-session-count': counted.success, 'total-failure-session-count': counted.failure },
  };
  // Merged by content, not trusted to arrive grouped: two rows for one detail add up.
  const merged = new Map<string, { detail: CountedDetail; count: number }>();
  for (const { detail, count } of counted.details) {
    const key = detailSortKey(detail);
    const seen = merged.get(key);
    if (seen) seen.count += count;
    else merged.set(key, { detail, count });
  }
  const details = [...merged.entries()].sort(([a], [b]) => compare(a, b)).map(([, d]) => failureDetail(d.detail, d.count));
  if (details.length > 0) entry['failure-details'] = details;
  return entry;
}

export function buildReport(input: ReportInput): TlsRptReport {
  const { startMs, endMs } = dayBounds(input.day);
  const policies = input.policies
    .map((p) => ({ key: sortKey([p.policy.type, ...p.policy.strings, '\u0000', ...p.policy.mxHosts]), entry: policyEntry(p, input.policyDomain) }))
    .sort((a, b) => compare(a.key, b.key))
    .map((p) => p.entry);
  return {
    'organization-name': input.organizationName,
    'date-range': { 'start-datetime': rfc3339(startMs), 'end-datetime': rfc3339(endMs) },
    'contact-info': input.contactInfo,
    'report-id': input.reportId,
    policies,
  };
}

/** The bytes that travel (before gzip): compact JSON, members in a fixed order. */
export function serializeReport(report: TlsRptReport): string {
  return JSON.stringify(report);
}

/**
 * RFC 8460 §5.1: `sender "!" policy-domain "!" begin-timestamp "!" end-timestamp "!" unique-id
 * ".json.gz"`, the timestamps in seconds, the same instants as the report's date-range.
 */
export function reportFileName(options: { submitter: string; policyDomain: string; day: string; reportId: string }): string {
  const { startMs, endMs } = dayBounds(options.day);
  if (!/^[A-Za-z0-9]+$/.test(options.reportId)) throw new Error('a report-id in a file name must be letters and digits (RFC 8460 §5.1 unique-id)');
  return `${options.submitter}!${options.policyDomain}!${startMs / 1000}!${endMs / 1000}!${options.reportId}.json.gz`;
}

/**
 * A recipient domain as reports and the store name it: lower-case A-labels, no final dot; or
 * undefined when the text is not a domain name.
 */
export function policyDomainName(raw: string): string | undefined {
  const ascii = domainOrUndefined(raw);
  return ascii?.includes('.') ? ascii : undefined;
}
