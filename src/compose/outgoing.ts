// Compose (like Postfix's cleanup): turns a client's message into the exact bytes that travel.
// It refuses senders whose domain is not verified (From, Sender and the envelope sender are all
// checked), adds what a well-formed message needs (Date, Message-ID under the sending domain),
// removes what must not travel (Bcc, Return-Path), DKIM-signs once with every active key of the
// domain, sets the return path under the domain (SPF alignment, bounces come back to Lacre) and
// only then hands the message to the queue. Retries send these same signed bytes.
import emailAddresses from 'email-addresses';
import type { Queue, Submission, Accepted } from '../queue/queue.ts';
import { uuidv7 } from '../store/ids.ts';
import type { SenderDomains, SenderVerdict } from '../domains/sender-domains.ts';
import { returnPathDomain } from '../domains/dns-records.ts';
import { dkimSign } from './dkim-signer.ts';
import { checkLineForm, fieldValue, fieldsNamed, makeField, normalizeLineEndings, parseMessage, serializeMessage, MessageFormatError } from './message-headers.ts';
import { returnPathAddress } from './return-path.ts';

export type SenderField = 'From' | 'Sender' | 'envelope sender';

/** The message may not be sent as this sender (SMTP 550 5.7.1, Mailjet send-0008). */
export class SenderRefused extends Error {
  override name = 'SenderRefused';
  readonly field: SenderField;
  readonly reason: Extract<SenderVerdict, { allowed: false }>['reason'];
  readonly domain: string;
  constructor(field: SenderField, verdict: Extract<SenderVerdict, { allowed: false }>) {
    super(`${field}: ${verdict.message}`);
    this.field = field;
    this.reason = verdict.reason;
    this.domain = verdict.domain;
  }
}

/** The message itself is malformed (SMTP 550 5.6.0). */
export class MessageRejected extends Error {
  override name = 'MessageRejected';
}

export interface OutgoingMessage {
  /** The message as the client gave it (headers and body). */
  content: Buffer;
  /** The sender the client named in the envelope (SMTP MAIL FROM); checked, then replaced. */
  envelopeSender: string | null;
  recipients: string[];
  requireTls?: boolean;
  source: Submission['source'];
  metadata?: Submission['metadata'];
}

export interface ComposerOptions {
  queue: Queue;
  domains: SenderDomains;
  /** Keyed hash for return-path tags (the store's lookup HMAC). */
  tag: (messageId: string) => string;
  clock?: () => number;
}

export interface Composed {
  messageId: string;
  content: Buffer;
  envelopeSender: string;
  signingDomain: string;
  selectors: string[];
}

export class Composer {
  readonly #queue: Queue;
  readonly #domains: SenderDomains;
  readonly #tag: (messageId: string) => string;
  readonly #clock: () => number;

  constructor(options: ComposerOptions) {
    this.#queue = options.queue;
    this.#domains = options.domains;
    this.#tag = options.tag;
    this.#clock = options.clock ?? Date.now;
  }

  /** Checks, completes, signs and durably queues a message; resolves once it is committed. */
  async submit(message: OutgoingMessage): Promise<Accepted & { composed: Composed }> {
    const composed = await this.compose(message);
    const accepted = await this.#queue.enqueue({
      messageId: composed.messageId,
      sender: composed.envelopeSender,
      recipients: message.recipients,
      content: composed.content,
      requireTls: message.requireTls,
      source: message.source,
      metadata: { ...message.metadata, signingDomain: composed.signingDomain, dkimSelectors: composed.selectors },
    });
    return { ...accepted, composed };
  }

  /** Everything but queueing: exposed for the send API's sandbox mode and for tests. */
  async compose(message: OutgoingMessage): Promise<Composed> {
    const now = this.#clock();
    let parsed;
    try {
      const normalized = normalizeLineEndings(message.content);
      // NUL and over-long lines are refused before anything else: receivers truncate, split or
      // drop such lines, each differently, so what was signed would not be what is read.
      checkLineForm(normalized);
      parsed = parseMessage(normalized);
    } catch (err) {
      if (err instanceof MessageFormatError) throw new MessageRejected(err.message);
      throw err;
    }
    const { headers } = parsed;

    // RFC 5322 §3.6: exactly one From; with several mailboxes in it, exactly one Sender.
    const fromFields = fieldsNamed(headers, 'From');
    if (fromFields.length === 0) throw new MessageRejected('the message has no From header (RFC 5322 §3.6)');
    if (fromFields.length > 1) throw new MessageRejected('the message has more than one From header (RFC 5322 §3.6)');
    const from = mailboxList('From', fieldValue(fromFields[0]));
    const senderFields = fieldsNamed(headers, 'Sender');
    if (senderFields.length > 1) throw new MessageRejected('the message has more than one Sender header (RFC 5322 §3.6)');
    const sender = senderFields.length === 1 ? mailboxList('Sender', fieldValue(senderFields[0])) : [];
    if (senderFields.length === 1 && sender.length !== 1) {
      throw notAMailboxList('Sender', 'it must hold exactly one mailbox (RFC 5322 §3.6.2)');
    }
    if (from.length > 1 && sender.length === 0) {
      throw new MessageRejected('a From header with several addresses needs a Sender header (RFC 5322 §3.6.2)');
    }
    for (const field of ['Date', 'Message-ID', 'Subject', 'To', 'Cc', 'Reply-To'] as const) {
      if (fieldsNamed(headers, field).length > 1) throw new MessageRejected(`the message has more than one ${field} header (RFC 5322 §3.6)`);
    }

    // Every identity a receiver might show or check must belong to a verified domain.
    const checks: Array<[SenderField, string]> = [
      ...from.map((a): [SenderField, string] => ['From', a]),
      ...sender.map((a): [SenderField, string] => ['Sender', a]),
      ...(message.envelopeSender ? [['envelope sender', message.envelopeSender] as [SenderField, string]] : []),
    ];
    let signing: Extract<SenderVerdict, { allowed: true }> | null = null;
    for (const [field, address] of checks) {
      const verdict = await this.#domains.checkSender(address);
      if (!verdict.allowed) throw new SenderRefused(field, verdict);
      // The author's domain signs: DMARC aligns DKIM with From (RFC 7489 §3.1.1).
      if (field === 'From' && !signing) signing = verdict;
    }
    if (!signing) throw new MessageRejected('the From header holds no address');
    if (signing.signingKeys.length === 0) {
      throw new SenderRefused('From', {
        allowed: false,
        reason: 'unverified',
        domain: signing.domain,
        message: `sender domain ${signing.domain} has no active DKIM key: run \`lacre domains verify ${signing.domain}\``,
      });
    }

    const messageId = uuidv7(now);
    // What must not travel: Bcc would show every hidden recipient to all the others; Return-Path
    // is added by the final delivery (RFC 5321 §4.4), never by a submitter.
    let kept = headers.filter((h) => !['bcc', 'return-path'].includes(h.name.toLowerCase()));
    if (fieldsNamed(kept, 'Date').length === 0) kept = [...kept, makeField('Date', rfc5322Date(new Date(now)))];
    if (fieldsNamed(kept, 'Message-ID').length === 0) {
      kept = [...kept, makeField('Message-ID', `<${messageId}@${signing.domain}>`)];
    }
    const unsigned = serializeMessage({ headers: kept, body: parsed.body });
    const content = await dkimSign(
      unsigned,
      signing.signingKeys.map((k) => ({ domain: signing.domain, selector: k.selector, algorithm: k.algorithm, privateKey: k.privateKey })),
      { signTime: new Date(now) },
    );

    const settings = this.#domains.settings;
    const envelopeSender = returnPathAddress(
      { localPart: settings.returnPathLocalPart, domain: returnPathDomain(signing.domain, settings), messageId },
      this.#tag,
    );
    return { messageId, content, envelopeSender, signingDomain: signing.domain, selectors: signing.signingKeys.map((k) => k.selector) };
  }
}

/**
 * The addresses of a From or Sender value, parsed strictly as an RFC 5322 §3.4 mailbox-list
 * (email-addresses implements the grammar, RFC 6532 UTF-8 included). A lenient parser is the
 * hole here: nodemailer's addressparser reads `a@sender.test ceo@bank.test` or
 * `<a@sender.test> <ceo@bank.test>` as one mailbox with a display name, while a receiver's
 * parser may show the other address, so the domain checked would not be the one shown. Anything
 * that is not a mailbox-list is refused as a sender we cannot authorise (550 5.7.1, send-0008).
 * Groups are not mailboxes (RFC 6854 allows them in From only for mail nobody can reply to).
 */
function mailboxList(field: 'From' | 'Sender', value: string): string[] {
  const list = emailAddresses.parseAddressList({ input: value, startAt: 'mailbox-list', rfc6532: true });
  if (list === null || list.length === 0) throw notAMailboxList(field, 'it is not an RFC 5322 mailbox list (addresses separated by commas)');
  return list.map((m) => (m.type === 'mailbox' ? m.address : '')).filter((a) => a.length > 0);
}

function notAMailboxList(field: 'From' | 'Sender', why: string): SenderRefused {
  return new SenderRefused(field, { allowed: false, reason: 'invalid', domain: '', message: `the ${field} header cannot be checked: ${why}` });
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 §3.3 date-time in UTC, e.g. `Sat, 21 Nov 2026 10:00:00 +0000`. */
export function rfc5322Date(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[date.getUTCDay()]}, ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ${two(date.getUTCHours())}:${two(date.getUTCMinutes())}:${two(date.getUTCSeconds())} +0000`;
}
