// The Mailjet Send API v3.1 request, as zod schemas: the single description that validates
// requests and, through z.toJSONSchema, documents them in /openapi.json. Property names, limits
// and error codes follow Mailjet's "Send API v3.1" guide (its error table gives the codes used in
// `params.mailjet`); where Lacre refuses something Mailjet would do (stored templates, tracking,
// SMTPUTF8 addresses) the error says so. Lacre adds one property: RequireTLS (RFC 8689).
import { z } from 'zod';
import { FORBIDDEN_HEADERS, type MailjetCode } from './mailjet-errors.ts';

/** The schemas that /openapi.json names in components.schemas (and refers to by $ref). */
export const openApiSchemas = z.registry<{ id: string }>();

export const LIMITS = {
  /** Messages in one request (Mailjet: 50). */
  messages: 50,
  /** Recipients of one message, To, Cc and Bcc together (send-0015). */
  recipients: 50,
  /** Items of Attachments, InlinedAttachments, Headers and Variables each (mj-0008). */
  items: 50,
  /** Attachments and inline attachments of one message together, decoded (Mailjet: 15 MB). */
  attachmentBytes: 15 * 1024 * 1024,
  /** The request body: 15 MB of attachments in base64 plus the message text. */
  requestBytes: 24 * 1024 * 1024,
  /** RFC 5322 §2.1.1: a line is at most 998 characters; a subject longer than that is not meant. */
  subject: 998,
  name: 255,
  customId: 255,
  customCampaign: 255,
  eventPayload: 65_535,
  filename: 255,
  headerValue: 998,
} as const;

/** Attaches a Mailjet error code to a custom zod issue. */
function fail(ctx: z.RefinementCtx, code: MailjetCode, message: string, path: PropertyKey[] = []): void {
  ctx.addIssue({ code: 'custom', message, params: { mailjet: code }, path });
}

// ---- addresses ----------------------------------------------------------------------------

const ATOM = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-";
const DOT_ATOM = new RegExp(`^[${ATOM}]+(\\.[${ATOM}]+)*$`);
const LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why an address cannot be used in the envelope and headers, or null when it can. Plain
 * addr-spec only (RFC 5321 §4.1.2, RFC 5322 §3.4.1): a dot-atom local part and a fully
 * qualified host name; no quoted local parts, no address literals, no non-ASCII (SMTPUTF8).
 */
export function addressProblem(address: string): string | null {
  if (/[^\x20-\x7e]/.test(address)) {
    return /[\r\n\0]/.test(address) || /[\x00-\x1f\x7f]/.test(address)
      ? 'it contains control characters or line breaks'
      : 'it has non-ASCII characters: internationalised addresses need SMTPUTF8 (RFC 6531), which the send API does not offer (write the domain in its ASCII xn-- form)';
  }
  const at = address.lastIndexOf('@');
  if (at < 1 || at === address.length - 1) return 'it is not of the form local-part@domain';
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (local.length > 64) return 'its local part is longer than 64 characters (RFC 5321 §4.5.3.1.1)';
  if (!DOT_ATOM.test(local)) return 'its local part is not a dot-atom (quoted local parts are not accepted)';
  if (domain.length > 253) return 'its domain is longer than 253 characters';
  const labels = domain.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels[labels.length - 1])) {
    return 'its domain is not a fully qualified host name';
  }
  return null;
}

const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

const email = z
  .string()
  .min(1)
  .superRefine((value, ctx) => {
    if (value === '') return;
    const problem = addressProblem(value);
    if (problem) fail(ctx, 'mj-0013', `"${printable(value)}" is an invalid email address: ${problem}.`);
  })
  .meta({ description: 'An ASCII addr-spec (local-part@domain).', examples: ['pilot@example.com'] });

const displayName = z
  .string()
  .max(LIMITS.name)
  .superRefine((value, ctx) => {
    if (CONTROL.test(value)) fail(ctx, 'mj-0005', 'a display name cannot contain line breaks or control characters');
  });

export const addressSchema = z
  .object({ Email: email, Name: displayName.optional() })
  .strict()
  .meta({ description: 'A mailbox: address and optional display name.' });
openApiSchemas.add(addressSchema, { id: 'EmailAddress' });

// ---- attachments --------------------------------------------------------------------------

const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*$/;
const TOKEN = "[A-Za-z0-9!#$&^_.+-]";
// RFC 2045 §5.1: type/subtype, optionally with parameters (no line breaks, so no header injection).
const MIME_TYPE = new RegExp(`^${TOKEN}{1,127}/${TOKEN}{1,127}(\\s*;\\s*${TOKEN}+=(${TOKEN}+|"[^"\\\\\\r\\n]*"))*$`);

const attachmentFields = {
  ContentType: z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      if (value !== '' && !MIME_TYPE.test(value)) fail(ctx, 'mj-0005', `"${printable(value)}" is not a MIME type such as application/pdf`);
    }),
  Filename: z
    .string()
    .min(1)
    .max(LIMITS.filename)
    .superRefine((value, ctx) => {
      if (CONTROL.test(value)) fail(ctx, 'mj-0005', 'a file name cannot contain line breaks or control characters');
    }),
  Base64Content: z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      const compact = value.replace(/[\r\n]/g, '');
      if (value !== '' && (!BASE64.test(value) || compact.length % 4 === 1)) fail(ctx, 'mj-0004', 'Type mismatch. Expected type "base64".');
    }),
};

export const attachmentSchema = z.object(attachmentFields).strict();
openApiSchemas.add(attachmentSchema, { id: 'Attachment' });

export const inlinedAttachmentSchema = z
  .object({
    ...attachmentFields,
    /** Referenced from HTML as cid:<ContentID>; the Filename when absent, as Mailjet does. */
    ContentID: z
      .string()
      .min(1)
      .max(LIMITS.filename)
      .superRefine((value, ctx) => {
        if (!/^[\x21-\x7e]+$/.test(value) || /[<>]/.test(value)) fail(ctx, 'mj-0005', 'a ContentID is printable ASCII without spaces or angle brackets');
      })
      .optional(),
  })
  .strict()
  .meta({ description: 'An attachment shown in the HTML part: <img src="cid:ContentID">.' });
openApiSchemas.add(inlinedAttachmentSchema, { id: 'InlinedAttachment' });

// ---- headers and variables ----------------------------------------------------------------

const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/; // RFC 5322 §3.6.8: printable ASCII but the colon

const headers = z
  .record(z.string(), z.string())
  .superRefine((value, ctx) => {
    const names = Object.keys(value);
    if (names.length > LIMITS.items) fail(ctx, 'mj-0008', `Headers has ${names.length} entries; at most ${LIMITS.items} are allowed`);
    for (const name of names) {
      if (!FIELD_NAME.test(name) || name.length > 76) {
        fail(ctx, 'mj-0005', `"${printable(name)}" is not a header field name (printable ASCII without colon or space, RFC 5322 §3.6.8)`, [name]);
        continue;
      }
      const forbidden = FORBIDDEN_HEADERS.get(name.toLowerCase());
      if (forbidden !== undefined) {
        fail(ctx, 'send-0011', `The header "${name}" cannot be set in Headers: ${forbidden}`, [name]);
        continue;
      }
      const text = value[name];
      if (/[\r\n\0]/.test(text)) fail(ctx, 'mj-0005', `the value of header "${name}" contains a line break or NUL (header injection)`, [name]);
      else if (CONTROL.test(text)) fail(ctx, 'mj-0005', `the value of header "${name}" contains control characters`, [name]);
      else if (text.length > LIMITS.headerValue) fail(ctx, 'mj-0006', `the value of header "${name}" is longer than ${LIMITS.headerValue} characters`, [name]);
    }
  })
  .meta({ description: 'Extra header fields, name → value. Fields that have a property of their own, and a few more, are refused (send-0011).' });

const variables = z
  .record(z.string(), z.unknown())
  .superRefine((value, ctx) => {
    const names = Object.keys(value);
    if (names.length > LIMITS.items) fail(ctx, 'mj-0008', `Variables has ${names.length} entries; at most ${LIMITS.items} are allowed`);
  })
  .meta({ description: 'Values for {{var:name}} and {{var:name:"default"}} in Subject, TextPart and HTMLPart when TemplateLanguage is true.' });

// ---- messages -----------------------------------------------------------------------------

const tracking = z.enum(['account_default', 'disabled', 'enabled']);

/** Every message property, all optional: the shape of Globals, and of a message before merging. */
const messageFields = {
  From: addressSchema,
  Sender: addressSchema,
  To: z.array(addressSchema).min(1),
  Cc: z.array(addressSchema),
  Bcc: z.array(addressSchema).meta({ description: 'Recipients who receive the message without appearing in it.' }),
  ReplyTo: addressSchema,
  Subject: z.string().max(LIMITS.subject),
  TextPart: z.string(),
  HTMLPart: z.string(),
  TemplateID: z.number().int().meta({ description: 'Refused: Lacre stores no templates (send-0010).' }),
  TemplateLanguage: z.boolean(),
  TemplateErrorReporting: addressSchema.meta({ description: 'Accepted for compatibility; template errors are refused at once instead (the request gets the error).' }),
  TemplateErrorDeliver: z.boolean(),
  Attachments: z.array(attachmentSchema).max(LIMITS.items),
  InlinedAttachments: z.array(inlinedAttachmentSchema).max(LIMITS.items),
  Priority: z.number().int().min(0).max(3).meta({ description: 'Accepted and ignored: Lacre has one queue.' }),
  CustomCampaign: z.string().max(LIMITS.customCampaign),
  DeduplicateCampaign: z.boolean(),
  TrackOpens: tracking.meta({ description: 'Lacre never tracks opens: "enabled" is refused.' }),
  TrackClicks: tracking.meta({ description: 'Lacre never rewrites links: "enabled" is refused.' }),
  CustomID: z.string().max(LIMITS.customId),
  EventPayload: z.string().max(LIMITS.eventPayload),
  MonitoringCategory: z.string().max(LIMITS.customCampaign).meta({ description: 'Accepted and ignored.' }),
  URLTags: z.string().max(LIMITS.headerValue).meta({ description: 'Refused when not empty: Lacre does not rewrite links.' }),
  Headers: headers,
  Variables: variables,
  RequireTLS: z.boolean().meta({
    description: 'Lacre extension (RFC 8689): deliver only over TLS to servers that offer REQUIRETLS, and pass REQUIRETLS on; bounce rather than send in the clear.',
  }),
};

export type MessageKey = keyof typeof messageFields;
export const MESSAGE_KEYS = Object.keys(messageFields) as MessageKey[];
export const ADDRESS_KEYS = ['Email', 'Name'];
export const ATTACHMENT_KEYS = ['ContentType', 'Filename', 'Base64Content', 'ContentID'];
export const ROOT_KEYS = ['Messages', 'Globals', 'SandboxMode', 'AdvanceErrorHandling'];

/** Message-level rules that span properties, checked once Globals are merged in. */
function checkMessage(m: z.infer<typeof messageObject>, ctx: z.RefinementCtx): void {
  if (m.TextPart === undefined && m.HTMLPart === undefined && m.TemplateID === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: 'At least "HTMLPart", "TextPart" or "TemplateID" must be provided.',
      params: { mailjet: 'send-0003', related: ['TextPart', 'HTMLPart', 'TemplateID'] },
      path: [],
    });
  }
  if (m.TemplateID !== undefined) {
    fail(ctx, 'send-0010', 'Lacre keeps no stored templates: send the content in TextPart and/or HTMLPart (with TemplateLanguage and Variables for {{var:...}}).', ['TemplateID']);
  }
  const recipients = m.To.length + (m.Cc?.length ?? 0) + (m.Bcc?.length ?? 0);
  if (recipients > LIMITS.recipients) {
    ctx.addIssue({
      code: 'custom',
      message: `This message has ${recipients} recipients in To, Cc and Bcc together; at most ${LIMITS.recipients} are allowed.`,
      params: { mailjet: 'send-0015', related: ['To', 'Cc', 'Bcc'] },
      path: [],
    });
  }
  if (!m.TemplateLanguage && (m.TemplateErrorReporting !== undefined || m.TemplateErrorDeliver !== undefined)) {
    ctx.addIssue({
      code: 'custom',
      message: 'TemplateErrorReporting and TemplateErrorDeliver need TemplateLanguage set to true.',
      params: { mailjet: 'send-0016', related: ['TemplateLanguage'] },
      path: [],
    });
  }
  if (m.DeduplicateCampaign) {
    if (m.CustomCampaign === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: 'DeduplicateCampaign is true but no CustomCampaign is given.',
        params: { mailjet: 'send-0012', related: ['CustomCampaign', 'DeduplicateCampaign'] },
        path: [],
      });
    } else fail(ctx, 'mj-0005', 'Lacre does not deduplicate campaigns: leave DeduplicateCampaign false.', ['DeduplicateCampaign']);
  }
  if (m.TrackOpens === 'enabled') fail(ctx, 'mj-0005', 'Lacre never tracks opens: use "disabled" or "account_default".', ['TrackOpens']);
  if (m.TrackClicks === 'enabled') fail(ctx, 'mj-0005', 'Lacre never rewrites links to track clicks: use "disabled" or "account_default".', ['TrackClicks']);
  if (m.URLTags) fail(ctx, 'mj-0005', 'Lacre does not rewrite links: URLTags must be empty.', ['URLTags']);
  if (m.Subject !== undefined && /[\r\n\0]/.test(m.Subject)) fail(ctx, 'mj-0005', 'the Subject contains a line break or NUL', ['Subject']);
  // RFC 5322 §2.3: a body carries no NUL. The MIME encoding would hide it (=00 in quoted-printable)
  // and hand it to the reader's client anyway, so it is refused here, as SMTP submission refuses it.
  for (const part of ['TextPart', 'HTMLPart'] as const) {
    if (m[part]?.includes('\0')) fail(ctx, 'mj-0005', `${part} contains a NUL character, which a message cannot carry (RFC 5322 §2.3)`, [part]);
  }
  let bytes = 0;
  for (const a of [...(m.Attachments ?? []), ...(m.InlinedAttachments ?? [])]) bytes += base64DecodedLength(a.Base64Content);
  if (bytes > LIMITS.attachmentBytes) {
    ctx.addIssue({
      code: 'custom',
      message: `The attachments of this message are ${(bytes / 1024 / 1024).toFixed(1)} MB decoded; at most ${LIMITS.attachmentBytes / 1024 / 1024} MB are allowed together.`,
      params: { mailjet: 'mj-0011', related: ['Attachments', 'InlinedAttachments'] },
      path: [],
    });
  }
}

const messageObject = z.object({ ...messageFields, From: addressSchema, To: z.array(addressSchema).min(1) }).partial().required({ From: true, To: true }).strict();

/** One message, after Globals are merged in: From, To and content are required. */
export const messageSchema = messageObject.superRefine(checkMessage);
openApiSchemas.add(messageSchema, { id: 'Message' });

/** Globals: any message property but To, applied to every message (message values win). */
export const globalsSchema = z
  .object(messageFields)
  .omit({ To: true })
  .partial()
  .strict()
  .meta({ description: 'Properties applied to every message; a message\'s own values win, objects are merged and arrays appended.' });
openApiSchemas.add(globalsSchema, { id: 'Globals' });

/** The request root as validated first; each message is validated on its own after merging. */
export const rootSchema = z
  .object({
    Messages: z.array(z.unknown()).min(1).max(LIMITS.messages),
    Globals: z.record(z.string(), z.unknown()).optional(),
    SandboxMode: z.boolean().optional(),
    AdvanceErrorHandling: z.boolean().optional(),
  })
  .strict();

/** The request as documented (OpenAPI): the same pieces, with the message schema in place. */
export const sendRequestSchema = z
  .object({
    Messages: z.array(messageSchema).min(1).max(LIMITS.messages),
    Globals: globalsSchema.optional(),
    SandboxMode: z.boolean().optional().meta({ description: 'Validate and compose without queueing anything.' }),
    AdvanceErrorHandling: z.boolean().optional().meta({ description: 'Accepted and ignored.' }),
  })
  .strict()
  .meta({ description: 'A Mailjet Send API v3.1 request.' });
openApiSchemas.add(sendRequestSchema, { id: 'SendRequest' });

export type ValidMessage = z.infer<typeof messageSchema>;
export type Address = z.infer<typeof addressSchema>;

// ---- responses (documentation) ------------------------------------------------------------

export const errorSchema = z
  .object({
    ErrorIdentifier: z.string(),
    ErrorCode: z.string(),
    StatusCode: z.number().int(),
    ErrorMessage: z.string(),
    ErrorRelatedTo: z.array(z.string()).optional(),
  })
  .meta({ description: 'A Mailjet error object.' });
openApiSchemas.add(errorSchema, { id: 'Error' });

const sentTo = z.object({ Email: z.string(), MessageUUID: z.string(), MessageID: z.number().int(), MessageHref: z.string() });

export const sendResponseSchema = z
  .object({
    Messages: z.array(
      z.union([
        z.object({ Status: z.literal('success'), CustomID: z.string(), To: z.array(sentTo), Cc: z.array(sentTo), Bcc: z.array(sentTo) }),
        z.object({ Errors: z.array(errorSchema), Status: z.literal('error') }),
      ]),
    ),
  })
  .meta({ description: 'One result per message, in request order.' });
openApiSchemas.add(sendResponseSchema, { id: 'SendResponse' });

// ---- helpers ------------------------------------------------------------------------------

export function base64DecodedLength(text: string): number {
  const compact = text.replace(/[\r\n]/g, '');
  const padding = compact.endsWith('==') ? 2 : compact.endsWith('=') ? 1 : 0;
  return Math.max(0, Math.floor((compact.length * 3) / 4) - padding);
}

/** A value safe to quote in an error message: control characters shown escaped, length capped. */
export function printable(value: string): string {
  const shown = value.length > 100 ? `${value.slice(0, 100)}…` : value;
  return JSON.stringify(shown).slice(1, -1);
}
