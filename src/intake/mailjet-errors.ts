// Mailjet's error vocabulary for the send API: the error codes of its "Send API v3.1" guide
// (send-00xx for sending rules, mj-00xx for payload validation), the error object shape
// ({ErrorIdentifier, ErrorCode, StatusCode, ErrorMessage, ErrorRelatedTo}), the forbidden header
// list, and the translation of zod issues into those errors, so clients written for Mailjet read
// Lacre's refusals unchanged.
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';

export type MailjetCode =
  | 'send-0003' // none of TextPart, HTMLPart, TemplateID
  | 'send-0007' // Sender given but not allowed
  | 'send-0008' // From not an authorized sender
  | 'send-0010' // the template cannot be used
  | 'send-0011' // forbidden header in Headers
  | 'send-0012' // DeduplicateCampaign without CustomCampaign
  | 'send-0015' // too many recipients
  | 'send-0016' // TemplateError* without TemplateLanguage
  | 'mj-0002' // malformed JSON
  | 'mj-0003' // mandatory property missing or null
  | 'mj-0004' // type mismatch (Lacre: also an unknown property)
  | 'mj-0005' // value not allowed
  | 'mj-0006' // string too long
  | 'mj-0007' // empty array not allowed
  | 'mj-0008' // too many array items
  | 'mj-0011' // payload too large
  | 'mj-0012' // empty string
  | 'mj-0013' // invalid email address
  /** Lacre's own: a recipient is suppressed after a hard bounce (Mailjet would accept and block it later). */
  | 'lacre-0001'
  /** Lacre's own: the message could not be queued for a reason the client cannot fix (storage). */
  | 'lacre-0500'
  // Lacre's own for what Mailjet answers without an ErrorCode, on every route: the HTTP status
  // after `lacre-0` (server/http-errors.ts).
  | 'lacre-0400' // a request a /v1 resource refused (its `error` field says why)
  | 'lacre-0401' // no, malformed or wrong credentials
  | 'lacre-0403' // the key lacks the route's scope
  | 'lacre-0404' // no such resource
  | 'lacre-0405' // the resource exists, the method does not (Allow lists those that do)
  | 'lacre-0409'; // a conflict with the resource's state (it exists, a limit is reached)

export interface MailjetError {
  ErrorIdentifier: string;
  ErrorCode: string;
  StatusCode: number;
  ErrorMessage: string;
  ErrorRelatedTo: string[];
}

/** A request-level error (no Messages array): bad JSON, bad root, bad Globals, oversize body. */
export interface MailjetGlobalError {
  ErrorIdentifier: string;
  ErrorCode: string;
  StatusCode: number;
  ErrorMessage: string;
  ErrorRelatedTo?: string[];
}

/** Mailjet answers sender authorization failures with 403, everything else in the table with 400. */
export function statusOf(code: string): number {
  return code === 'send-0006' || code === 'send-0007' || code === 'send-0008' ? 403 : code === 'lacre-0500' ? 500 : 400;
}

export function mailjetError(code: MailjetCode, message: string, related: string[]): MailjetError {
  return { ErrorIdentifier: randomUUID(), ErrorCode: code, StatusCode: statusOf(code), ErrorMessage: message, ErrorRelatedTo: related };
}

export function globalError(code: MailjetCode, message: string, status = statusOf(code), related?: string[]): MailjetGlobalError {
  return {
    ErrorIdentifier: randomUUID(),
    ErrorCode: code,
    StatusCode: status,
    ErrorMessage: message,
    ...(related && related.length > 0 ? { ErrorRelatedTo: related } : {}),
  };
}

/**
 * Headers that cannot be set through `Headers`, with why. Mailjet's list (fields with a property of
 * their own, and its internal X-MJ-* / X-Mailjet-* fields), plus what Lacre must write itself:
 * the MIME structure, and TLS-Required, whose "No" would ask receivers to ignore their TLS
 * policies (RFC 8689 §5), something Lacre does not offer.
 */
export const FORBIDDEN_HEADERS: ReadonlyMap<string, string> = new Map(
  [
    ...['From', 'Sender', 'Subject', 'To', 'Cc', 'Bcc'].map((h) => [h, `use the ${h} property`]),
    ['Reply-To', 'use the ReplyTo property'],
    ['Return-Path', 'the return path is set by Lacre under the sender domain'],
    ['Delivered-To', 'it is added by the receiving side'],
    ['DKIM-Signature', 'Lacre signs every message itself'],
    ['DomainKey-Status', 'it is added by the receiving side'],
    ['Received-SPF', 'it is added by the receiving side'],
    ['Authentication-Results', 'it is added by the receiving side'],
    ['Received', 'it is added by the servers a message passes'],
    ['Date', 'Lacre dates the message when it queues it'],
    ['Message-Id', 'Lacre gives every message its Message-ID under the sender domain'],
    ['MIME-Version', 'Lacre builds the MIME structure'],
    ['Content-Type', 'Lacre builds the MIME structure (use TextPart, HTMLPart and attachments)'],
    ['Content-Transfer-Encoding', 'Lacre builds the MIME structure'],
    ['TLS-Required', 'Lacre does not let a message ask receivers to ignore their TLS policies (RFC 8689 §5); use RequireTLS for the opposite'],
    ['User-Agent', 'reserved'],
    ['X-Mailer', 'reserved'],
    ['List-Id', 'reserved'],
    ['X-Feedback-Id', 'reserved'],
    ['X-CSA-Complaints', 'reserved'],
    ['X-MJ-CustomID', 'use the CustomID property'],
    ['X-MJ-EventPayload', 'use the EventPayload property'],
    ['X-MJ-Vars', 'use the Variables property'],
    ['X-MJ-TemplateLanguage', 'use the TemplateLanguage property'],
    ['X-MJ-TemplateID', 'reserved'],
    ['X-MJ-TemplateErrorDeliver', 'reserved'],
    ['X-MJ-TemplateErrorReporting', 'reserved'],
    ['X-MJ-WorkflowID', 'reserved'],
    ['X-MJ-MID', 'reserved'],
    ['X-MJ-ErrorMessage', 'reserved'],
    ['X-MJ-StatisticsContactsListID', 'reserved'],
    ['X-Mailjet-Prio', 'reserved'],
    ['X-Mailjet-Debug', 'reserved'],
    ['X-Mailjet-TrackOpen', 'reserved'],
    ['X-Mailjet-TrackClick', 'reserved'],
    ['X-Mailjet-Segmentation', 'reserved'],
    ['X-Mailjet-Campaign', 'use the CustomCampaign property'],
  ].map(([name, why]) => [name.toLowerCase(), why] as const),
);

/** Mailjet's way of naming a property in ErrorRelatedTo: `To[0].Email`, `Headers["X-Tag"]`. */
export function relatedPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (let i = 0; i < path.length; i++) {
    const part = path[i];
    if (typeof part === 'number') out += `[${part}]`;
    else if (i > 0 && (path[i - 1] === 'Headers' || path[i - 1] === 'Variables')) out += `[${JSON.stringify(String(part))}]`;
    else out += `${out === '' ? '' : '.'}${String(part)}`;
  }
  return out;
}

const JSON_TYPES: Record<string, string> = { number: 'number', int: 'integer', boolean: 'boolean', string: 'string', array: 'array', object: 'object' };

/**
 * Mailjet errors for zod issues. `known` lists the property names valid where an unknown key was
 * found, to name a near miss; `prefix` is prepended to every path (e.g. `Globals`).
 */
export function errorsFromIssues(issues: z.core.$ZodIssue[], prefix: PropertyKey[] = []): MailjetError[] {
  const errors: MailjetError[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const where = relatedPath(path);
    const name = where || 'the request body';
    switch (issue.code) {
      case 'custom': {
        const params = (issue.params ?? {}) as { mailjet?: MailjetCode; related?: string[] };
        const related = params.related ? params.related.map((r) => relatedPath([...path, r])) : [where];
        errors.push(mailjetError(params.mailjet ?? 'mj-0005', issue.message, related));
        break;
      }
      case 'invalid_type': {
        const input = (issue as { input?: unknown }).input;
        if (input === undefined || input === null) {
          errors.push(mailjetError('mj-0003', `Missing mandatory property "${name}"${input === null ? ' (it is null)' : ''}.`, [where]));
        } else {
          errors.push(mailjetError('mj-0004', `Type mismatch. Expected type "${JSON_TYPES[issue.expected] ?? issue.expected}" for "${name}".`, [where]));
        }
        break;
      }
      case 'unrecognized_keys':
        for (const key of issue.keys) {
          errors.push(mailjetError('mj-0004', `Unknown property "${relatedPath([...path, key])}": not a property of the Send API v3.1${nearMiss(key)}.`, [relatedPath([...path, key])]));
        }
        break;
      case 'too_big':
        if (issue.origin === 'array') {
          errors.push(mailjetError('mj-0008', `"${name}" has more than ${issue.maximum} items.`, [where]));
        } else if (issue.origin === 'string') {
          errors.push(mailjetError('mj-0006', `"${name}" is longer than ${issue.maximum} characters.`, [where]));
        } else errors.push(mailjetError('mj-0005', `"${name}" must be at most ${issue.maximum}.`, [where]));
        break;
      case 'too_small':
        if (issue.origin === 'array') errors.push(mailjetError('mj-0007', `"${name}" cannot be empty.`, [where]));
        else if (issue.origin === 'string') errors.push(mailjetError('mj-0012', `"${name}" cannot be an empty string.`, [where]));
        else errors.push(mailjetError('mj-0005', `"${name}" must be at least ${issue.minimum}.`, [where]));
        break;
      case 'invalid_value':
        errors.push(mailjetError('mj-0005', `"${name}" must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}.`, [where]));
        break;
      default:
        errors.push(mailjetError('mj-0004', `"${name}": ${issue.message}.`, [where]));
    }
  }
  return errors;
}

/** Every property name the send API knows, for "did you mean" hints. */
const KNOWN = [
  'Messages', 'Globals', 'SandboxMode', 'From', 'Sender', 'To', 'Cc', 'Bcc', 'ReplyTo', 'Subject', 'TextPart', 'HTMLPart',
  'TemplateID', 'TemplateLanguage', 'TemplateErrorReporting', 'TemplateErrorDeliver', 'Attachments', 'InlinedAttachments',
  'CustomCampaign', 'CustomID', 'EventPayload', 'Headers', 'Variables', 'RequireTLS', 'Email', 'Name', 'ContentType',
  'Filename', 'Base64Content', 'ContentID',
];

function nearMiss(key: string): string {
  const k = key.toLowerCase().replace(/[^a-z0-9]/g, '');
  const hints: Record<string, string> = { inlineattachments: 'InlinedAttachments', replyto: 'ReplyTo', htmlbody: 'HTMLPart', textbody: 'TextPart', html: 'HTMLPart', text: 'TextPart', filename: 'Filename', content: 'Base64Content' };
  const guess = hints[k] ?? KNOWN.find((n) => n.toLowerCase() === k);
  return guess && guess !== key ? ` (did you mean "${guess}"?)` : '';
}
