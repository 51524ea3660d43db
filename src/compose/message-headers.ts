// Reading and editing the header block of an RFC 5322 message without touching its body bytes.
// Header text is handled as latin1 so every byte survives the round trip (UTF-8 headers under
// SMTPUTF8 included); values are decoded as UTF-8 only for reading addresses.

export interface HeaderField {
  /** As written (case preserved). */
  name: string;
  /** The whole field, folded lines included, without the final CRLF (latin1). */
  raw: string;
}

export interface ParsedMessage {
  headers: HeaderField[];
  body: Buffer;
}

export class MessageFormatError extends Error {
  override name = 'MessageFormatError';
}

/** CRLF everywhere: bare LF and bare CR become CRLF (RFC 5322 §2.3 allows CR and LF only together). */
export function normalizeLineEndings(message: Buffer): Buffer {
  if (!hasBareLineEnding(message)) return message;
  return Buffer.from(message.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
}

// Line by line with indexOf (memchr) rather than byte by byte in JavaScript.
function hasBareLineEnding(message: Buffer): boolean {
  for (let start = 0; ; ) {
    const lf = message.indexOf(0x0a, start);
    const cr = message.indexOf(0x0d, start);
    // A CR is allowed only right before the LF that ends its line.
    if (cr >= 0 && (lf < 0 || cr < lf - 1)) return true;
    if (lf < 0) return false;
    if (message[lf - 1] !== 0x0d) return true;
    start = lf + 1;
  }
}

/** RFC 5322 §2.1.1: at most 998 octets on a line, CRLF excluded. */
export const MAX_LINE_OCTETS = 998;

/**
 * Throws MessageFormatError for a NUL octet anywhere (RFC 5322 §2.2 and §2.3: header and body
 * characters exclude it; only BINARYMIME, which Lacre does not offer, could carry one) or a line
 * longer than 998 octets (RFC 5322 §2.1.1 MUST). `message` has CRLF line endings. The messages are
 * ASCII (they become SMTP reply text) and name the place in words a submitter can find: the
 * header field, or the body line counted from the body's start (compose's callers may have
 * prepended trace fields, so a line number of the whole message would not be the client's).
 */
export function checkLineForm(message: Buffer): void {
  const headerEnd = message.indexOf('\r\n\r\n');
  const bodyStart = headerEnd < 0 ? message.length : headerEnd + 4;
  const nul = message.indexOf(0);
  if (nul >= 0) {
    throw new MessageFormatError(`the message contains a NUL octet (in the ${nul < bodyStart ? 'header section' : 'body'}), which RFC 5322 section 2.3 does not allow`);
  }
  // Line by line with indexOf (memchr), as hasBareLineEnding does.
  for (let start = 0, bodyLine = 0; start < message.length; ) {
    if (start >= bodyStart) bodyLine++;
    const lf = message.indexOf(0x0a, start);
    const end = lf < 0 ? message.length : lf - 1;
    if (end - start > MAX_LINE_OCTETS) {
      const where =
        start < bodyStart
          ? `a line of the ${JSON.stringify(fieldNameAt(message, start))} header field`
          : `line ${bodyLine} of the body`;
      throw new MessageFormatError(`${where} is ${end - start} octets long; RFC 5322 section 2.1.1 allows at most ${MAX_LINE_OCTETS}`);
    }
    if (lf < 0) break;
    start = lf + 1;
  }
}

/** The name of the header field whose line starts at `offset` (folded lines belong to the field above). */
function fieldNameAt(message: Buffer, offset: number): string {
  let start = offset;
  while (start > 0 && (message[start] === 0x20 || message[start] === 0x09)) {
    const previous = message.lastIndexOf('\r\n', start - 3);
    start = previous < 0 ? 0 : previous + 2;
  }
  const line = message.subarray(start, Math.min(message.length, start + 80)).toString('latin1');
  const colon = line.indexOf(':');
  return (colon > 0 ? line.slice(0, colon) : line.slice(0, 40)).replace(/[^\x21-\x7e]/g, '?');
}

export function parseMessage(message: Buffer): ParsedMessage {
  const end = message.indexOf('\r\n\r\n');
  const headerText = (end === -1 ? message : message.subarray(0, end)).toString('latin1');
  const body = end === -1 ? Buffer.alloc(0) : message.subarray(end + 4);
  const headers: HeaderField[] = [];
  for (const line of headerText.split('\r\n')) {
    if (line === '') continue;
    if (/^[ \t]/.test(line)) {
      if (headers.length === 0) throw new MessageFormatError('the message starts with a folded (indented) header line');
      headers[headers.length - 1].raw += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    // RFC 5322 §2.2: field names are printable ASCII except colon, at least one character.
    if (colon < 1 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon))) {
      const shown = line.length > 40 ? `${line.slice(0, 40)}…` : line;
      throw new MessageFormatError(
        end === -1 && headers.length === 0
          ? 'the message has no header section'
          : `malformed header line ${JSON.stringify(shown)} (expected "Name: value")`,
      );
    }
    headers.push({ name: line.slice(0, colon), raw: line });
  }
  return { headers, body };
}

export function serializeMessage(message: ParsedMessage): Buffer {
  const head = message.headers.map((h) => h.raw).join('\r\n');
  return Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'latin1'), message.body]);
}

export function fieldsNamed(headers: HeaderField[], name: string): HeaderField[] {
  const lower = name.toLowerCase();
  return headers.filter((h) => h.name.toLowerCase() === lower);
}

/** The unfolded value, decoded as UTF-8. */
export function fieldValue(field: HeaderField): string {
  const value = field.raw.slice(field.raw.indexOf(':') + 1).replace(/\r\n(?=[ \t])/g, '');
  return Buffer.from(value, 'latin1').toString('utf8').trim();
}

export function makeField(name: string, value: string): HeaderField {
  return { name, raw: Buffer.from(`${name}: ${value}`, 'utf8').toString('latin1') };
}
