// Turns one validated Send API message into RFC 5322 / MIME bytes with nodemailer's MailComposer:
// multipart/alternative for text and HTML, multipart/related for inline images, multipart/mixed
// for attachments. Only in-memory content is handed to the composer (file and URL access are
// switched off), Bcc never enters the bytes, and Date and Message-ID are left to compose, which
// adds them under the sending domain and its own clock before signing.
import MailComposer from 'nodemailer/lib/mail-composer';
import { parseMessage, serializeMessage } from '../compose/message-headers.ts';
import type { Address, ValidMessage } from './mailjet-schema.ts';

/** The message after templating: the texts that travel. */
export interface RenderedParts {
  subject: string | undefined;
  text: string | undefined;
  html: string | undefined;
}

const mailbox = (a: Address) => ({ name: a.Name ?? '', address: a.Email });

export async function buildMime(message: ValidMessage, parts: RenderedParts): Promise<Buffer> {
  const attachments = [
    ...(message.Attachments ?? []).map((a) => ({
      filename: a.Filename,
      contentType: a.ContentType,
      content: Buffer.from(a.Base64Content, 'base64'),
      contentDisposition: 'attachment',
    })),
    // Mailjet: "cid:FILENAME" works when no ContentID is given.
    ...(message.InlinedAttachments ?? []).map((a) => ({
      filename: a.Filename,
      contentType: a.ContentType,
      content: Buffer.from(a.Base64Content, 'base64'),
      contentDisposition: 'inline',
      cid: a.ContentID ?? a.Filename,
    })),
  ];
  const composer = new MailComposer({
    from: mailbox(message.From),
    sender: message.Sender ? mailbox(message.Sender) : undefined,
    to: message.To.map(mailbox),
    cc: message.Cc && message.Cc.length > 0 ? message.Cc.map(mailbox) : undefined,
    replyTo: message.ReplyTo ? mailbox(message.ReplyTo) : undefined,
    subject: parts.subject,
    text: parts.text,
    html: parts.html,
    headers: Object.entries(message.Headers ?? {}).map(([key, value]) => ({ key, value })),
    attachments,
    disableFileAccess: true,
    disableUrlAccess: true,
    // No `newline` option: its transform (one more stream and a byte-by-byte pass over the message)
    // only turns bare LFs from the texts into CRLF, which compose does for the whole message anyway
    // (normalizeLineEndings); nodemailer writes its own headers and boundaries with CRLF.
  });
  const built = await composer.compile().build();
  // MimeNode always writes a Date and a Message-ID; compose writes its own (RFC 5322 §3.6.4:
  // the id names the domain that signs it).
  const parsed = parseMessage(built);
  const headers = parsed.headers.filter((h) => !['date', 'message-id', 'bcc'].includes(h.name.toLowerCase()));
  return serializeMessage({ headers, body: parsed.body });
}
