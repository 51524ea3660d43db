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
