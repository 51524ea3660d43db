// The JSON the store keeps in sealed columns, checked when it is read back (zod): a message's
// metadata, an attempt's detail (see ./records.ts for what they mean) and an event's facts
// (./events-table.ts). Objects are loose so
// that what `lacre messages show` prints keeps every field a row was written with (certificate
// facts, timings, …); the fields later stages read are checked. A row that does not match is an
// error naming the row, never a silently wrong event or access decision.
// Part of the store.
import { z } from 'zod';
import { ATTEMPT_STAGES } from '../mail/smtp-stage.ts';
import type { AttemptDetail, MessageMetadata } from './records.ts';
import type { EventFacts } from './events-table.ts';

const policy = z.looseObject({ level: z.string().optional(), source: z.string(), why: z.string().optional() });
const reply = z.looseObject({ code: z.number(), enhanced: z.string().nullable().optional(), text: z.string() });
const tls = z.looseObject({
  tls: z.boolean(),
  protocol: z.string().optional(),
  cipher: z.string().optional(),
  verified: z.boolean().optional(),
  verificationError: z.string().optional(),
  downgrade: z.looseObject({ reason: z.string(), detail: z.string(), retried: z.boolean().optional() }).optional(),
});
const hopFailure = z.looseObject({
  host: z.string(),
  address: z.string(),
  port: z.number(),
  stage: z.enum(ATTEMPT_STAGES),
  temporary: z.boolean(),
  reason: z.string(),
  failure: z.string().optional(),
  permanentPolicy: z.boolean().optional(),
  unreachable: z.boolean().optional(),
  policy: policy.optional(),
  reply: reply.optional(),
  tls: tls.optional(),
});
const policyEvidence = z.looseObject({
  requireTls: z.boolean(),
  tlsRequiredNo: z.boolean(),
  mxSecure: z.boolean(),
  static: z.looseObject({ level: z.string(), source: z.string(), match: z.string().optional() }),
  mtaSts: z
    .union([
      z.looseObject({ mode: z.string(), id: z.string(), fromCache: z.boolean(), refreshFailure: z.string().optional() }),
      z.looseObject({ failure: z.string(), detail: z.string() }),
    ])
    .nullable(),
});

export const attemptDetailSchema = z.looseObject({
  domain: z.string().optional(),
  site: z.string().nullable().optional(),
  destination: z.enum(['null-mx', 'unresolvable']).optional(),
  policyEvidence: policyEvidence.optional(),
  policy: policy.optional(),
  mx: z.string().optional(),
  ip: z.string().optional(),
  port: z.number().optional(),
  hopSource: z.string().optional(),
  reused: z.boolean().optional(),
  tls: tls.optional(),
  hopFailures: z.array(hopFailure).optional(),
  reply: reply.optional(),
  durationMs: z.number().optional(),
  leaseLost: z.boolean().optional(),
  unknownOutcome: z.boolean().optional(),
  stage: z.enum(ATTEMPT_STAGES).optional(),
  error: z.string().optional(),
  suspended: z.boolean().optional(),
});

export const messageMetadataSchema = z.looseObject({
  apiKeyId: z.string().optional(),
  customId: z.string().optional(),
  // Rows queued through the queue API directly may hold a JSON value: it travels as its JSON text.
  eventPayload: z.unknown().transform((v) => (v === undefined || typeof v === 'string' ? v : JSON.stringify(v))).optional(),
  customCampaign: z.string().optional(),
  kind: z.enum(['dsn', 'tlsrpt']).optional(),
  about: z.string().optional(),
  recipientId: z.string().optional(),
  signingDomain: z.string().optional(),
  dkimSelectors: z.array(z.string()).optional(),
});

export const eventFactsSchema = z.looseObject({
  email: z.string(),
  publicId: z.union([z.number(), z.string()]).optional(),
  source: z.string().optional(),
  customId: z.string().optional(),
  payload: z.string().optional(),
  campaign: z.string().optional(),
  attempt: z.number().optional(),
  replyCode: z.number().nullable().optional(),
  enhancedCode: z.string().nullable().optional(),
  replyText: z.string().optional(),
  reason: z.string().nullable().optional(),
  mx: z.string().optional(),
  ip: z.string().optional(),
  policy: z.object({ level: z.string(), source: z.string() }).optional(),
  tls: z
    .object({
      encrypted: z.boolean(),
      protocol: z.string().optional(),
      cipher: z.string().optional(),
      verified: z.boolean().optional(),
      verificationError: z.string().optional(),
      downgrade: z.string().optional(),
    })
    .optional(),
  hardBounce: z.boolean().optional(),
  suppressed: z.boolean().optional(),
  expired: z.boolean().optional(),
  nextAttemptAt: z.number().optional(),
  refusal: z.enum(['suppressed', 'failed']).optional(),
  afterDelivery: z.boolean().optional(),
});

// The schemas read what the records declare (a mismatch is a compile error here). (a mismatch is a compile error here).
const _detail: (v: z.infer<typeof attemptDetailSchema>) => AttemptDetail = (v) => v;
const _metadata: (v: z.infer<typeof messageMetadataSchema>) => MessageMetadata = (v) => v;
const _facts: (v: z.infer<typeof eventFactsSchema>) => EventFacts = (v) => v;
void _detail;
void _metadata;
void _facts;

function parse<T>(schema: z.ZodType<T>, json: string, what: string): T {
  const result = schema.safeParse(JSON.parse(json));
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new Error(`${what} does not have the shape Lacre writes (${issue.path.join('.') || 'value'}: ${issue.message}); was the database written by another program?`);
}

export function readAttemptDetail(json: string, attemptId: string): AttemptDetail {
  return parse(attemptDetailSchema, json, `the stored detail of attempt ${attemptId}`);
}

export function readEventFacts(json: string, eventId: string): EventFacts {
  return parse(eventFactsSchema, json, `the stored facts of event ${eventId}`);
}

export function readMessageMetadata(json: string, messageId: string): MessageMetadata {
  return parse(messageMetadataSchema, json, `the stored metadata of message ${messageId}`);
}
