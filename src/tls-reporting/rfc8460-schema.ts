// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports.
//
// This file: the report format of RFC 8460 §4.4 as a JSON Schema (draft 2020-12), written from
// the RFC's text rather than from report.ts, so tests can hold what Lacre builds against the RFC.
// Stricter than the RFC in one way: no members beyond §4.4's (Lacre sends none). Imported by
// tests only (ajv comes with the dev tooling), never by the running service.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { TlsRptReport } from './report.ts';
import { RESULT_TYPES } from './result-types.ts';

const ip = { type: 'string', anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }] };

const failureDetails = {
  type: 'object',
  required: ['result-type', 'failed-session-count'],
  additionalProperties: false,
  properties: {
    // §4.3 result types, the registry RFC 8460 §6.6 creates.
    'result-type': { enum: [...RESULT_TYPES] },
    'sending-mta-ip': ip,
    'receiving-mx-hostname': { type: 'string', format: 'hostname' },
    'receiving-mx-helo': { type: 'string', minLength: 1 },
    'receiving-ip': ip,
    'failed-session-count': { type: 'integer', minimum: 0 },
    // "A URI [RFC3986] that points to additional information around the relevant results."
    'additional-information': { type: 'string', format: 'uri' },
    'failure-reason-code': { type: 'string', minLength: 1 },
  },
};

export const RFC8460_REPORT_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'RFC 8460 §4.4 SMTP TLS report',
  type: 'object',
  required: ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies'],
  additionalProperties: false,
  properties: {
    'organization-name': { type: 'string', minLength: 1 },
    'date-range': {
      type: 'object',
      required: ['start-datetime', 'end-datetime'],
      additionalProperties: false,
      properties: {
        // RFC 3339 date-time.
        'start-datetime': { type: 'string', format: 'date-time' },
        'end-datetime': { type: 'string', format: 'date-time' },
      },
    },
    'contact-info': { type: 'string', minLength: 1 },
    'report-id': { type: 'string', minLength: 1 },
    policies: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['policy', 'summary'],
        additionalProperties: false,
        properties: {
          policy: {
            type: 'object',
            required: ['policy-type', 'policy-domain'],
            additionalProperties: false,
            properties: {
              'policy-type': { enum: ['tlsa', 'sts', 'no-policy-found'] },
              'policy-string': { type: 'array', items: { type: 'string' } },
              'policy-domain': { type: 'string', format: 'hostname' },
              'mx-host': { type: 'array', items: { type: 'string', minLength: 1 } },
            },
          },
          summary: {
            type: 'object',
            required: ['total-successful-session-count', 'total-failure-session-count'],
            additionalProperties: false,
            properties: {
              'total-successful-session-count': { type: 'integer', minimum: 0 },
              'total-failure-session-count': { type: 'integer', minimum: 0 },
            },
          },
          'failure-details': { type: 'array', items: failureDetails },
        },
      },
    },
  },
} as const;

/** A validator for RFC8460_REPORT_SCHEMA with the formats (date-time, ipv4/6, hostname, uri) checked. */
export function rfc8460Validator(): ValidateFunction<TlsRptReport> {
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  // ajv-formats is CommonJS: its function arrives as the default import or as its `default`.
  const plugin = ((addFormats as unknown as { default?: unknown }).default ?? addFormats) as (a: Ajv2020) => void;
  plugin(ajv);
  return ajv.compile<TlsRptReport>(RFC8460_REPORT_SCHEMA);
}
