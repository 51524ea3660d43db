// Delivery status notifications (RFC 3464): the bounce message sent to the envelope sender when a
// recipient bounced or expired. Built by hand rather than with nodemailer's MailComposer, whose
// root part cannot be multipart/report; the format is small and fixed.
import { randomBytes } from 'node:crypto';

export interface FailedRecipient {
  address: string;
  /** 'failed' for bounces and expiries (RFC 3464 §2.3.3). */
  action: 'failed' | 'delayed';
  /** Enhanced status code, e.g. 5.1.1; 4.4.7 when the message expired in the queue. */
  status: string;
  remoteMta?: string;
  /** The reply that decided it, e.g. "550 5.1.1 no such user"; reported as `smtp; …`. */
  diagnostic?: string;
  lastAttemptAt: Date;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  arrivalDate: Date;
  originalSender: string;
  recipients: FailedRecipient[];
  /** The original message; only its header section is returned (never the body). */
  originalContent: Buffer | null;
  now?: Date;
}

/** RFC 5322 date, e.g. "Sat, 21 Nov 2026 11:22:33 +0000". */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

/** The header section of a message (up to the first empty line), CRLF line ends. */
export function headerSection(content: Buffer): Buffer {
  const end = content.indexOf('\r\n\r\n');
  if (end >= 0) return content.subarray(0, end + 2);
  const lf = content.indexOf('\n\n');
  return lf >= 0 ? content.subarray(0, lf + 1) : content;
}

const isAscii = (s: string) => /^[\x20-\x7e]*$/.test(s);

// RFC 3464 §2.1.2 / RFC 6533: address types; non-ASCII addresses use the utf-8 type.
const addressField = (address: string) => (isAscii(address) ? `rfc822; ${address}` : `utf-8; ${address}`);

/** One-line, printable: remote replies are untrusted text headed into a header field. */
function clean(text: string): string {
  return text.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e\u00a0-\uffff]/g, '?').slice(0, 900);
}

export function buildDsn(input: DsnInput): Buffer {
  const now = input.now ?? new Date();
  const boundary = `lacre-dsn-${randomBytes(12).toString('hex')}`;
  const expired = input.recipients.some((r) => r.status === '4.4.7');
  const human = [
    `This is the mail system at ${input.reportingMta}.`,
    '',
    expired
      ? 'Your message could not be delivered before it expired in the queue, to the recipients below.'
      : 'Your message could not be delivered to the recipients below.',
    '',
    ...input.recipients.map((r) => `<${r.address}>: ${r.diagnostic ? clean(r.diagnostic) : `status ${r.status}`}`),
    '',
  ];
  const perMessage = [
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Lacre-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
  ];
  const perRecipient = input.recipients.map((r) =>
    [
      `Final-Recipient: ${addressField(r.address)}`,
      `Action: ${r.action}`,
      `Status: ${r.status}`,
      ...(r.remoteMta ? [`Remote-MTA: dns; ${r.remoteMta}`] : []),
      ...(r.diagnostic ? [`Diagnostic-Code: smtp; ${clean(r.diagnostic)}`] : []),
      `Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`,
    ].join('\r\n'),
  );
  const needsUtf8 = !isAscii(input.originalSender) || input.recipients.some((r) => !isAscii(r.address));
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${input.originalSender}>`,
    `Subject: Undelivered Mail Returned to Sender`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.queueId}.dsn.${randomBytes(6).toString('hex')}@${input.reportingMta}>`,
    // RFC 3834 §5: automatic responses are marked so that nobody auto-replies to them.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
  ];
  const parts = [
    [
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      human.join('\r\n'),
    ].join('\r\n'),
    [
      // RFC 6533 §6.3: message/global-delivery-status when addresses are not ASCII.
      `Content-Type: ${needsUtf8 ? 'message/global-delivery-status' : 'message/delivery-status'}`,
      '',
      perMessage.join('\r\n'),
      '',
      perRecipient.join('\r\n\r\n'),
      '',
    ].join('\r\n'),
  ];
  const chunks: Buffer[] = [Buffer.from(head.join('\r\n') + '\r\n\r\n')];
  for (const part of parts) chunks.push(Buffer.from(`--${boundary}\r\n${part}\r\n`));
  if (input.originalContent) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n`));
    chunks.push(headerSection(input.originalContent));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}
