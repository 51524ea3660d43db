// SMTP submission replies: the reply (code, enhanced status code RFC 3463, text) for every way a
// submission can fail, and the adaptation of smtp-server's connections that lets those replies
// go out as written.
//
// smtp-server adds an enhanced status code to each reply itself once ENHANCEDSTATUSCODES is on
// (RFC 2034 §3: then every reply must carry one), but for errors from application handlers it
// can only derive it from the reply code (550 → 5.1.1), so a refused sender would read "550 5.1.1".
// Its connections write every reply through one method, `send(code, text, context)`; wrapping it
// per connection lets our replies (whose text starts with their enhanced code) go out unchanged,
// answers AUTH before TLS with RFC 4954's 538 5.7.11, and keeps AUTH out of the EHLO reply until
// TLS is up, so a client configured without TLS never sees an invitation to send its secret in
// the clear. `send` is declared in smtp-server's typings but internal; the tests of this listener
// assert each of these replies on the wire, so an upgrade that moves it fails loudly.
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { MessageRejected, SenderRefused } from '../compose/outgoing.ts';
import { SubmissionError } from '../queue/queue.ts';
import { MessageFormatError } from '../compose/message-headers.ts';
import { RelayHeaderError } from './smtp-message.ts';

/** An SMTP reply as an error for smtp-server's handler callbacks. */
export class SmtpReply extends Error {
  override name = 'SmtpReply';
  readonly responseCode: number;
  readonly enhancedCode: string;
  readonly text: string;
  constructor(code: number, enhancedCode: string, text: string) {
    // One line: smtp-server turns control characters into spaces anyway.
    const line = text.replace(/[\r\n]+/g, ' ').trim();
    super(`${enhancedCode} ${line}`);
    this.responseCode = code;
    this.enhancedCode = enhancedCode;
    this.text = line;
  }
}

const OWN_REPLY = /^[245]\.\d{1,3}\.\d{1,3} /;

export const AUTH_REQUIRED = () => new SmtpReply(530, '5.7.0', 'Authentication required: AUTH with an API key and its secret key (RFC 4954)');
export const TEMPORARY_FAILURE = () => new SmtpReply(451, '4.3.0', 'the message was not queued because of a local error; try again later');
export const SHUTTING_DOWN = () => new SmtpReply(421, '4.3.2', 'Lacre is shutting down; try again later');

/**
 * The reply for a submission that compose or the queue refused; null for an unexpected error (the
 * caller logs it and answers 451 4.3.0, so the client keeps the message and retries).
 */
export function replyForSubmitError(err: unknown): SmtpReply | null {
  if (err instanceof SmtpReply) return err;
  // RFC 3463 §3.8 X.7.1: delivery not authorized; the sender may not send as this address.
  if (err instanceof SenderRefused) return new SmtpReply(550, '5.7.1', err.message);
  // X.6.0: other or undefined media error; the message itself is malformed.
  if (err instanceof MessageRejected || err instanceof MessageFormatError || err instanceof RelayHeaderError) {
    return new SmtpReply(550, '5.6.0', err.message);
  }
  // The queue refuses envelopes: every recipient suppressed (checked at RCPT too, so only a race
  // gets here) or an address it cannot take. X.1.1: bad destination mailbox.
  if (err instanceof SubmissionError) return new SmtpReply(550, '5.1.1', err.message);
  return null;
}

const adapted = new WeakSet<SMTPConnection>();

/** Wraps one connection's `send` (see the header comment); idempotent. */
export function adaptConnectionReplies(connection: SMTPConnection): void {
  if (adapted.has(connection)) return;
  adapted.add(connection);
  const send = connection.send.bind(connection);
  connection.send = (code: number, data?: string | string[] | null, context?: string | false) => {
    // Ours: the enhanced code is already in the text.
    if (typeof data === 'string' && OWN_REPLY.test(data)) return send(code, data, false);
    // RFC 4954 §6: 538 5.7.11 Encryption required for requested authentication mechanism.
    if (code === 538) return send(538, '5.7.11 Encryption required: use STARTTLS (or the implicit TLS port) before AUTH', false);
    // The EHLO reply (the only multi-line 250 sent with context false) before TLS: no AUTH keyword.
    if (code === 250 && context === false && Array.isArray(data) && !connection.secure) {
      return send(code, data.filter((line) => !/^AUTH\b/i.test(line)), context);
    }
    return send(code, data, context);
  };
}
