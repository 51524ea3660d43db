// POST /v3.1/send without the HTTP: takes the parsed JSON body of a Mailjet Send API v3.1 request
// and answers with Mailjet's response body and status. Each message stands alone (one bad message
// does not sink the others) and is all-or-nothing: validated, templated, built into MIME and then
// handed to compose, which checks the sender, signs and queues it durably before it counts as
// sent. Property names match case-insensitively, as Mailjet's JSON decoding does.
import type { Composer } from '../compose/outgoing.ts';
import { MessageRejected, SenderRefused } from '../compose/outgoing.ts';
import { SubmissionError } from '../queue/queue.ts';
import type { Store } from '../store/store.ts';
import type { Logger } from '../log/logger.ts';
import { normalizeAddress } from '../mail/address.ts';
import {
  ADDRESS_KEYS,
  ATTACHMENT_KEYS,
  MESSAGE_KEYS,
  ROOT_KEYS,
  globalsSchema,
  messageSchema,
  rootSchema,
  type Address,
  type ValidMessage,
} from './mailjet-schema.ts';
import { errorsFromIssues, globalError, mailjetError, type MailjetError, type MailjetGlobalError } from './mailjet-errors.ts';
import { renderTemplate } from './mailjet-template.ts';
import { buildMime } from './mailjet-mime.ts';

export interface SentRecipient {
  Email: string;
  MessageUUID: string;
  MessageID: number;
  MessageHref: string;
}

export type MessageResult =
  | { Status: 'success'; CustomID: string; To: SentRecipient[]; Cc: SentRecipient[]; Bcc: SentRecipient[] }
  | { Errors: MailjetError[]; Status: 'error' };

export type SendBody = { Messages: MessageResult[] } | MailjetGlobalError;

export interface SendOutcome {
  status: number;
  body: SendBody;
  /** Messages queued by this request (0 in sandbox mode). */
  queued: number;
}

export interface MailjetSendDeps {
  composer: Composer;
  store: Store;
  logger?: Logger;
  /** Called after a request queued at least one message (the lead wires it to runner.nudge()). */
  onQueued?: () => void;
}

export interface SendContext {
  apiKeyId: string;
  /** Where GET /v3/REST/message/{MessageID} is served, for MessageHref (no trailing slash). */
  baseUrl: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Renames properties written in another case to their canonical names (Go's encoding/json, which
 * Mailjet's API is written in, matches names case-insensitively). An exact name wins; a second
 * spelling of the same property is left as it is and refused as unknown.
 */
function canonical(value: unknown, known: readonly string[]): unknown {
  if (!isObject(value)) return value;
  const { names, byLower } = lookupOf(known);
  const out: Json = {};
  const taken = new Set(Object.keys(value).filter((k) => names.has(k)));
  for (const [key, v] of Object.entries(value)) {
    const name = names.has(key) ? key : byLower.get(key.toLowerCase());
    const target = name !== undefined && (name === key || !taken.has(name)) ? name : key;
    if (target !== key) taken.add(target);
    // defineProperty: a "__proto__" key stays an own property and is refused as unknown.
    Object.defineProperty(out, target, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

// Built once per list of names rather than for every object of every message.
const lookups = new WeakMap<readonly string[], { names: Set<string>; byLower: Map<string, string> }>();
function lookupOf(known: readonly string[]): { names: Set<string>; byLower: Map<string, string> } {
  let lookup = lookups.get(known);
  if (!lookup) {
    lookup = { names: new Set(known), byLower: new Map(known.map((k) => [k.toLowerCase(), k])) };
    lookups.set(known, lookup);
  }
  return lookup;
}

function canonicalMessage(value: unknown): unknown {
  const message = canonical(value, MESSAGE_KEYS);
  if (!isObject(message)) return message;
  for (const key of ['From', 'Sender', 'ReplyTo', 'TemplateErrorReporting']) {
    if (key in message) message[key] = canonical(message[key], ADDRESS_KEYS);
  }
  for (const key of ['To', 'Cc', 'Bcc']) {
    if (Array.isArray(message[key])) message[key] = (message[key] as unknown[]).map((a) => canonical(a, ADDRESS_KEYS));
  }
  for (const key of ['Attachments', 'InlinedAttachments']) {
    if (Array.isArray(message[key])) message[key] = (message[key] as unknown[]).map((a) => canonical(a, ATTACHMENT_KEYS));
  }
  return message;
}

const MERGED_OBJECTS = new Set(['From', 'Sender', 'ReplyTo', 'TemplateErrorReporting', 'Headers', 'Variables']);
const APPENDED_ARRAYS = new Set(['Cc', 'Bcc', 'Attachments', 'InlinedAttachments']);

/**
 * Mailjet's Globals rules: scalars are overridden by the message, objects merged (the message's
 * entries win), arrays appended (Globals first).
 */
export function mergeGlobals(globals: Json, message: Json): Json {
  const merged: Json = { ...message };
  for (const [key, value] of Object.entries(globals)) {
    if (!(key in message)) merged[key] = value;
    else if (MERGED_OBJECTS.has(key) && isObject(value) && isObject(message[key])) merged[key] = { ...value, ...(message[key] as Json) };
    else if (APPENDED_ARRAYS.has(key) && Array.isArray(value) && Array.isArray(message[key])) merged[key] = [...value, ...(message[key] as unknown[])];
  }
  return merged;
}

/** Several request-level problems become one Mailjet global error (it has room for one). */
function oneGlobalError(errors: MailjetError[]): MailjetGlobalError {
  const first = errors[0];
  const related = [...new Set(errors.flatMap((e) => e.ErrorRelatedTo))].filter(Boolean);
  return {
    ErrorIdentifier: first.ErrorIdentifier,
    ErrorCode: first.ErrorCode,
    StatusCode: first.StatusCode,
    ErrorMessage: errors.map((e) => e.ErrorMessage).join(' '),
    ...(related.length > 0 ? { ErrorRelatedTo: related } : {}),
  };
}

/**
 * The HTTP status of a whole response: 200 when every message succeeded; 400 when some did and
 * some did not (Mailjet answers a batch with a failed message with 400, the successes listed
 * too); when all failed, the status their errors share (a sender refusal is 403, as from
 * Mailjet), else 400. A server fault makes it 500.
 */
export function responseStatus(results: MessageResult[]): number {
  const statuses = new Set(results.flatMap((r) => (r.Status === 'error' ? r.Errors.map((e) => e.StatusCode) : [])));
  if (statuses.size === 0) return 200;
  if (statuses.has(500)) return 500;
  if (results.some((r) => r.Status === 'success')) return 400;
  return statuses.size === 1 ? [...statuses][0] : 400;
}

export class MailjetSend {
  readonly #deps: MailjetSendDeps;

  constructor(deps: MailjetSendDeps) {
    this.#deps = deps;
  }

  async send(body: unknown, context: SendContext): Promise<SendOutcome> {
    if (!isObject(body)) {
      return this.#global(globalError('mj-0004', 'Type mismatch. The request body must be a JSON object with a "Messages" array.'));
    }
    const root = canonical(body, ROOT_KEYS) as Json;
    const parsedRoot = rootSchema.safeParse(root, { reportInput: true });
    if (!parsedRoot.success) return this.#global(oneGlobalError(errorsFromIssues(parsedRoot.error.issues)));
    let globals: Json = {};
    if (parsedRoot.data.Globals !== undefined) {
      globals = canonicalMessage(parsedRoot.data.Globals) as Json;
      if ('To' in globals) {
        return this.#global(globalError('mj-0004', 'Globals cannot hold To: every message names its own recipients.', 400, ['Globals.To']));
      }
      const parsedGlobals = globalsSchema.safeParse(globals, { reportInput: true });
      if (!parsedGlobals.success) return this.#global(oneGlobalError(errorsFromIssues(parsedGlobals.error.issues, ['Globals'])));
    }
    const sandbox = parsedRoot.data.SandboxMode === true;

    const results: MessageResult[] = [];
    let queued = 0;
    for (const raw of parsedRoot.data.Messages) {
      const result = await this.#one(raw, globals, sandbox, context);
      if (result.Status === 'success' && !sandbox) queued++;
      results.push(result);
    }
    const status = responseStatus(results);
    this.#deps.logger?.info(
      { apiKey: context.apiKeyId, messages: results.length, queued, failed: results.filter((r) => r.Status === 'error').length, sandbox, status },
      'send API request',
    );
    if (queued > 0) this.#deps.onQueued?.();
    return { status, body: { Messages: results }, queued };
  }

  #global(error: MailjetGlobalError): SendOutcome {
    return { status: error.StatusCode, body: error, queued: 0 };
  }

  async #one(raw: unknown, globals: Json, sandbox: boolean, context: SendContext): Promise<MessageResult> {
    if (!isObject(raw)) {
      return { Errors: [mailjetError('mj-0004', 'Type mismatch. Each entry of "Messages" must be a JSON object.', ['Messages'])], Status: 'error' };
    }
    const merged = mergeGlobals(globals, canonicalMessage(raw) as Json);
    const parsed = messageSchema.safeParse(merged, { reportInput: true });
    if (!parsed.success) return { Errors: errorsFromIssues(parsed.error.issues), Status: 'error' };
    const message = parsed.data;

    const parts = { subject: message.Subject, text: message.TextPart, html: message.HTMLPart };
    if (message.TemplateLanguage) {
      const errors: MailjetError[] = [];
      for (const [field, key] of [['Subject', 'subject'], ['TextPart', 'text'], ['HTMLPart', 'html']] as const) {
        const text = parts[key];
        if (text === undefined) continue;
        const rendered = renderTemplate(text, message.Variables ?? {}, field);
        if (rendered.ok) parts[key] = rendered.text;
        else errors.push(mailjetError(rendered.code, rendered.message, [rendered.related]));
      }
      if (parts.subject !== undefined && /[\r\n\0]/.test(parts.subject)) {
        errors.push(mailjetError('mj-0005', 'the Subject contains a line break or NUL once its variables are filled in', ['Subject', 'Variables']));
      }
      for (const [field, text] of [['TextPart', parts.text], ['HTMLPart', parts.html]] as const) {
        if (text?.includes('\0')) errors.push(mailjetError('mj-0005', `${field} contains a NUL character once its variables are filled in (RFC 5322 §2.3)`, [field, 'Variables']));
      }
      if (errors.length > 0) return { Errors: errors, Status: 'error' };
    }

    const lists = { To: message.To, Cc: message.Cc ?? [], Bcc: message.Bcc ?? [] };
    const suppressed = await this.#deps.store.findSuppressed([...lists.To, ...lists.Cc, ...lists.Bcc].map((a) => a.Email));
    if (suppressed.size > 0) {
      const errors: MailjetError[] = [];
      for (const [field, list] of Object.entries(lists)) {
        list.forEach((a, i) => {
          const entry = suppressed.get(a.Email);
          if (entry) {
            errors.push(
              mailjetError(
                'lacre-0001',
                `"${a.Email}" is suppressed: it bounced hard (${entry.reason}) on ${entry.since}. Remove it, or ask the operator to lift the suppression.`,
                [`${field}[${i}].Email`],
              ),
            );
          }
        });
      }
      return { Errors: errors, Status: 'error' };
    }

    try {
      const content = await buildMime(message, parts);
      const submission = {
        content,
        envelopeSender: null,
        recipients: [...lists.To, ...lists.Cc, ...lists.Bcc].map((a) => a.Email),
        requireTls: message.RequireTLS ?? false,
        source: 'api' as const,
        metadata: {
          apiKeyId: context.apiKeyId,
          ...(message.CustomID !== undefined ? { customId: message.CustomID } : {}),
          ...(message.EventPayload !== undefined ? { eventPayload: message.EventPayload } : {}),
          ...(message.CustomCampaign !== undefined ? { customCampaign: message.CustomCampaign } : {}),
        },
      };
      if (sandbox) {
        await this.#deps.composer.compose(submission);
        const none = (a: Address): SentRecipient => ({ Email: a.Email, MessageUUID: '', MessageID: 0, MessageHref: `${context.baseUrl}/v3/REST/message/0` });
        return { Status: 'success', CustomID: message.CustomID ?? '', To: lists.To.map(none), Cc: lists.Cc.map(none), Bcc: lists.Bcc.map(none) };
      }
      const accepted = await this.#deps.composer.submit(submission);
      // Queued from here on: whatever fails now must not turn the answer into an error.
      const publicIds = await this.#deps.store.sendApi.publicIdsOf(accepted.messageId).catch((err: unknown) => {
        this.#deps.logger?.error({ err, messageId: accepted.messageId }, 'send API: reading the MessageIDs of a queued message failed');
        return new Map<string, number>();
      });
      const byAddress = new Map(accepted.recipients.map((r) => [normalizeAddress(r.address), r.id]));
      const sent = (a: Address): SentRecipient => {
        // A recipient refused between the suppression check and the commit has no row: id 0.
        const id = byAddress.get(normalizeAddress(a.Email));
        const publicId = id === undefined ? 0 : (publicIds.get(id) ?? 0);
        return { Email: a.Email, MessageUUID: id ?? '', MessageID: publicId, MessageHref: `${context.baseUrl}/v3/REST/message/${publicId}` };
      };
      return { Status: 'success', CustomID: message.CustomID ?? '', To: lists.To.map(sent), Cc: lists.Cc.map(sent), Bcc: lists.Bcc.map(sent) };
    } catch (err) {
      return { Errors: [this.#errorOf(err, message)], Status: 'error' };
    }
  }

  #errorOf(err: unknown, message: ValidMessage): MailjetError {
    if (err instanceof SenderRefused) {
      return err.field === 'Sender'
        ? mailjetError('send-0007', `"${message.Sender?.Email}" is not an authorized sender: ${err.message}`, ['Sender'])
        : mailjetError('send-0008', `"${message.From.Email}" is not an authorized sender email address: ${err.message}`, ['From']);
    }
    if (err instanceof MessageRejected) return mailjetError('mj-0005', `The message was refused: ${err.message}`, []);
    if (err instanceof SubmissionError) return mailjetError('mj-0013', `A recipient was refused: ${err.message}`, ['To', 'Cc', 'Bcc']);
    const error = mailjetError('lacre-0500', 'The message could not be queued because of a server error; it was not sent. Retry later.', []);
    this.#deps.logger?.error({ err, errorIdentifier: error.ErrorIdentifier }, 'send API: queueing a message failed');
    return error;
  }
}
