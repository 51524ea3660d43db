// What SMTP submission does to a message before compose sees it: takes out the Mailjet relay
// headers that are instructions to Lacre, not part of the mail (X-MJ-CustomID, X-MJ-EventPayload),
// and adds the trace field every SMTP server adds when it takes a message in (RFC 5321 §4.4).
// Pure: bytes in, bytes and values out.
import { fieldValue, fieldsNamed, makeField, normalizeLineEndings, parseMessage, serializeMessage } from '../compose/message-headers.ts';
import { rfc5322Date } from '../compose/outgoing.ts';
import libmime from 'libmime';

/** Mailjet's relay headers and the metadata keys they fill (the send API's CustomID and EventPayload). */
const RELAY_HEADERS = [
  ['X-MJ-CustomID', 'customId'],
  ['X-MJ-EventPayload', 'eventPayload'],
] as const;

/** The send API's limits for CustomID and EventPayload (mailjet-schema.ts), in characters. */
const RELAY_LIMITS = { customId: 255, eventPayload: 65_535 } as const;

export type RelayMetadata = Partial<Record<(typeof RELAY_HEADERS)[number][1], string>>;

export class RelayHeaderError extends Error {
  override name = 'RelayHeaderError';
}

export interface PreparedMessage {
  content: Buffer;
  metadata: RelayMetadata;
}

export interface TraceInfo {
  /** Our name (the `by` clause). */
  hostname: string;
  /** The SMTP session id, so a message can be matched with the listener's log. */
  sessionId: string;
  at: Date;
}

/**
 * Removes the relay headers (their values become metadata) and prepends a Received field.
 * Throws MessageFormatError for a header section that cannot be parsed, and RelayHeaderError for
 * a relay header given twice (which of the two was meant cannot be told) or longer than the send
 * API allows for the same value.
 */
export function prepareSubmittedMessage(raw: Buffer, trace: TraceInfo): PreparedMessage {
  const parsed = parseMessage(normalizeLineEndings(raw));
  const metadata: RelayMetadata = {};
  let headers = parsed.headers;
  for (const [name, key] of RELAY_HEADERS) {
    const fields = fieldsNamed(headers, name);
    if (fields.length > 1) throw new RelayHeaderError(`the message has more than one ${name} header`);
    if (fields.length === 1) {
      // Clients encode values with quotes or non-ASCII as RFC 2047 encoded words (nodemailer
      // does for a JSON payload); the metadata holds what the client meant.
      const value = decodeWords(fieldValue(fields[0]));
      if (value.length > RELAY_LIMITS[key]) throw new RelayHeaderError(`${name} is longer than ${RELAY_LIMITS[key]} characters`);
      if (value !== '') metadata[key] = value;
      headers = headers.filter((h) => h !== fields[0]);
    }
  }
  // RFC 5321 §4.4 asks every SMTP server for a trace field. This one names no client address or
  // client host name: submitters are Lacre's own users, and where they sent from is theirs to keep
  // (RFC 5322 §3.6.7 allows a Received field of any tokens). ESMTPSA: ESMTP with TLS and AUTH
  // (RFC 3848 §2).
  const received = makeField('Received', `by ${trace.hostname} (Lacre) with ESMTPSA id ${trace.sessionId};\r\n\t${rfc5322Date(trace.at)}`);
  return { content: serializeMessage({ headers: [received, ...headers], body: parsed.body }), metadata };
}

function decodeWords(value: string): string {
  try {
    return libmime.decodeWords(value);
  } catch {
    // An encoded word that does not decode is kept as written rather than lost.
    return value;
  }
}
