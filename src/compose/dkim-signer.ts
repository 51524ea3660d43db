// DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463), one DKIM-Signature per
// key, so a message can carry an Ed25519 and an RSA signature side by side (dual signing).
// Lacre's own signer rather than mailauth's dkimSign: mailauth's signer puts into h= only the
// header instances that exist in the message, so it cannot over-sign, i.e. list From once more
// than it occurs so that a From added later breaks the signature (RFC 6376 §5.4.2, §8.15); Lacre
// over-signs From and the other fields in OVERSIGNED_HEADERS. Relaxed canonicalization (§3.4.2,
// §3.4.4) is implemented here too instead of deep-importing mailauth's lib/ internals: they are
// not a public API (no exports map by omission, not by promise), the input here is whole and
// CRLF-checked so the code is a few lines, and the tests verify with mailauth and dkimpy, which
// only stays an independent check if the signer does not share mailauth's canonicalizer.
// The signatures are made with the callback form of crypto.sign, which runs in libuv's thread
// pool: an RSA-2048 signature costs about half a millisecond of CPU, which would otherwise stall
// the event loop (and every other client) once per message.
import { createHash, createPrivateKey, KeyObject, sign } from 'node:crypto';

/** A signing key: its PEM, or a KeyObject parsed from it once by a caller that signs often. */
export type DkimSigningKey = {
  /** d=, the signing domain (ASCII, A-labels for IDNs). */
  domain: string;
  /** s=, the selector. */
  selector: string;
  algorithm: 'ed25519' | 'rsa';
} & (
  | {
      /** PKCS#8 (or PKCS#1 for RSA) PEM. */
      privateKeyPem: string;
      privateKey?: undefined;
    }
  | {
      privateKey: KeyObject;
      privateKeyPem?: undefined;
    }
);

export interface DkimSignOptions {
  /** t= (seconds are kept); default now. */
  signTime?: Date;
}

export class DkimSignError extends Error {
  override name = 'DkimSignError';
}

/**
 * Fields signed, each instance present (RFC 6376 §5.4.1). Trace and transport fields (Received,
 * Return-Path) are left out; they are added on the way and would break the signature.
 */
export const SIGNED_HEADERS: readonly string[] = Object.freeze([
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'subject',
  'date',
  'message-id',
  'in-reply-to',
  'references',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-disposition',
  'list-id',
  'list-unsubscribe',
  'list-unsubscribe-post',
  'feedback-id',
]);

/**
 * Fields listed once more than they occur, so that adding an instance (a second From prepended by
 * a spoofer replaying the message) breaks the signature. Only fields nobody on the way has a
 * legitimate reason to add: Lacre signs at the last hop before the recipient's MX. Not Sender or
 * List-*, which mailing lists add; a list that also rewrites Subject or the body breaks the
 * signature anyway, but one that only adds its own fields should not.
 */
export const OVERSIGNED_HEADERS: readonly string[] = Object.freeze([
  'from',
  'reply-to',
  'to',
  'cc',
  'subject',
  'date',
  'message-id',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
]);

// RFC 5322 §2.1.1 recommends lines of at most 78 characters, excluding the CRLF.
const MAX_LINE = 78;
const CRLF = '\r\n';
// RFC 5322 §3.6.8 field-name: printable US-ASCII except the colon.
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
// Selectors are sub-domains too (RFC 6376 §3.1), and may start with an underscore in practice.
const SELECTOR = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/;
// RFC 8301 §3.2.
const MIN_RSA_BITS = 1024;

interface HeaderField {
  /** Lower-cased field name. */
  key: string;
  /** The whole field as 'latin1' text (one char per byte), folds kept, without the final CRLF. */
  raw: string;
}

interface PreparedKey {
  key: DkimSigningKey;
  privateKey: KeyObject;
}

/**
 * Prepends one DKIM-Signature per key to `message` (a complete RFC 5322 message with CRLF line
 * endings), whose bytes are otherwise returned unchanged. relaxed/relaxed, no l=, no x=. The body
 * is canonicalized and hashed once for all the keys.
 */
export async function dkimSign(message: Buffer, keys: DkimSigningKey[], options: DkimSignOptions = {}): Promise<Buffer> {
  if (keys.length === 0) throw new DkimSignError('no signing keys given');
  const prepared = keys.map(prepareKey);
  checkLineEndings(message);
  const { fields, body } = splitMessage(message);

  const froms = fields.filter((f) => f.key === 'from').length;
  if (froms === 0) throw new DkimSignError('the message has no From header field');
  if (froms > 1) throw new DkimSignError(`the message has ${froms} From header fields; RFC 5322 §3.6 allows one`);

  const signTime = options.signTime ?? new Date();
  const t = Math.floor(signTime.getTime() / 1000);
  if (!Number.isFinite(t) || t < 0) throw new DkimSignError('signTime is not a valid date');

  const bh = relaxedBodyHash(body);
  const { names, canonical } = signedHeaders(fields);

  const signatures = prepared.map(async ({ key, privateKey }) => {
    const a = key.algorithm === 'ed25519' ? 'ed25519-sha256' : 'rsa-sha256';
    const folder = new Folder('DKIM-Signature:');
    folder.tag('v', '1');
    folder.tag('a', a);
    folder.tag('c', 'relaxed/relaxed');
    folder.tag('d', key.domain);
    folder.tag('s', key.selector);
    folder.tag('t', String(t));
    folder.list('h', names);
    folder.base64('bh', bh, true);
    folder.open('b');
    // RFC 6376 §3.7: the signature field itself is hashed last, with an empty b= and no CRLF.
    const data = Buffer.concat([canonical, Buffer.from(relaxedHeader(folder.text(), 'dkim-signature'), 'latin1')]);
    const signature =
      key.algorithm === 'ed25519'
        ? // RFC 8463 §3: PureEdDSA over the SHA-256 digest of the data.
          await signInPool(null, createHash('sha256').update(data).digest(), privateKey)
        : await signInPool('sha256', data, privateKey);
    folder.base64Continue(signature.toString('base64'));
    return folder.text() + CRLF;
  });

  return Buffer.concat([Buffer.from((await Promise.all(signatures)).join(''), 'latin1'), message]);
}

function signInPool(algorithm: string | null, data: Buffer, key: KeyObject): Promise<Buffer> {
  return new Promise((resolve, reject) => sign(algorithm, data, key, (err, signature) => (err ? reject(err) : resolve(signature))));
}

function prepareKey(key: DkimSigningKey): PreparedKey {
  const who = `key ${key.selector}._domainkey.${key.domain}`;
  if (!DOMAIN.test(key.domain) || key.domain.length > 253) throw new DkimSignError(`${who}: d= is not a domain name`);
  if (!SELECTOR.test(key.selector)) throw new DkimSignError(`${who}: s= is not a valid selector`);
  let privateKey: KeyObject;
  if (key.privateKey !== undefined) {
    if (!(key.privateKey instanceof KeyObject) || key.privateKey.type !== 'private') throw new DkimSignError(`${who}: not a private key`);
    privateKey = key.privateKey;
  } else {
    try {
      privateKey = createPrivateKey(key.privateKeyPem);
    } catch (err) {
      throw new DkimSignError(`${who}: unreadable private key (${(err as Error).message})`);
    }
  }
  if (privateKey.asymmetricKeyType !== key.algorithm) {
    throw new DkimSignError(`${who}: the private key is ${privateKey.asymmetricKeyType}, not ${key.algorithm}`);
  }
  const bits = privateKey.asymmetricKeyDetails?.modulusLength;
  if (key.algorithm === 'rsa' && (bits === undefined || bits < MIN_RSA_BITS)) {
    throw new DkimSignError(`${who}: RSA keys need at least ${MIN_RSA_BITS} bits, this one has ${bits}`);
  }
  return { key, privateKey };
}

// Line by line with indexOf (memchr) rather than byte by byte in JavaScript.
function checkLineEndings(message: Buffer): void {
  let line = 1;
  for (let start = 0; ; line++) {
    const lf = message.indexOf(0x0a, start);
    const end = lf < 0 ? message.length : lf;
    // Within the line, a CR is allowed only right before its LF.
    const cr = message.indexOf(0x0d, start);
    if (cr >= 0 && cr < end && (lf < 0 || cr < lf - 1)) {
      throw new DkimSignError(`bare CR at byte ${cr} (line ${line}); lines must end in CRLF`);
    }
    if (lf < 0) return;
    if (lf === start || message[lf - 1] !== 0x0d) throw new DkimSignError(`bare LF at byte ${lf} (line ${line}); lines must end in CRLF`);
    start = lf + 1;
  }
}

function splitMessage(message: Buffer): { fields: HeaderField[]; body: Buffer } {
  let headerEnd: number; // index of the CRLF that ends the last header line
  if (message.subarray(0, 2).toString('latin1') === CRLF) {
    headerEnd = -2;
  } else {
    const sep = message.indexOf('\r\n\r\n', 0, 'latin1');
    if (sep < 0) throw new DkimSignError('no empty line separates the header from the body');
    headerEnd = sep;
  }
  const body = message.subarray(headerEnd + 4);
  const fields: HeaderField[] = [];
  if (headerEnd < 0) return { fields, body };
  const lines = message.subarray(0, headerEnd).toString('latin1').split(CRLF);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line[0] === ' ' || line[0] === '\t') {
      if (fields.length === 0) throw new DkimSignError('the header starts with a continuation line');
      fields[fields.length - 1].raw += CRLF + line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon < 0) throw new DkimSignError(`header line ${i + 1} is not a field (no colon)`);
    const name = line.slice(0, colon);
    if (!FIELD_NAME.test(name)) throw new DkimSignError(`header line ${i + 1} has an invalid field name`);
    fields.push({ key: name.toLowerCase(), raw: line });
  }
  return { fields, body };
}

// RFC 6376 §3.4.2. Works on 'latin1' text so 8-bit bytes pass through; only SP and HTAB count as
// whitespace (String.prototype.trim would also eat 0xA0, half of a UTF-8 no-break space).
function relaxedHeader(raw: string, key: string): string {
  const value = raw
    .slice(raw.indexOf(':') + 1)
    .replace(/\r\n/g, '')
    .replace(/[ \t]+/g, ' ')
    .replace(/^ | $/g, '');
  return `${key}:${value}`;
}

/** h= names and the canonicalized fields they cover, in order (RFC 6376 §5.4, §5.4.2). */
function signedHeaders(fields: HeaderField[]): { names: string[]; canonical: Buffer } {
  const names: string[] = [];
  const parts: string[] = [];
  for (const name of SIGNED_HEADERS) {
    // Bottom-up: the n-th listing of a name covers its n-th instance counted from the bottom.
    const instances = fields.filter((f) => f.key === name).reverse();
    for (const field of instances) {
      names.push(name);
      parts.push(relaxedHeader(field.raw, name) + CRLF);
    }
    // A listing with no instance left hashes as the null string.
    if (OVERSIGNED_HEADERS.includes(name)) names.push(name);
  }
  return { names, canonical: Buffer.from(parts.join(''), 'latin1') };
}

// RFC 6376 §3.4.4: WSP runs become one SP, WSP at line ends goes, empty lines at the end go, and
// a non-empty body ends in CRLF. The input has only CRLF line endings (checked before). Done on
// the whole body at once: a body already in canonical form (most are) passes through untouched.
function relaxedBodyHash(body: Buffer): string {
  const canonical = body
    .toString('latin1')
    // A run of WSP that is not already a single SP.
    .replace(/\t[ \t]*| [ \t]+/g, ' ')
    .replace(/ (?=\r\n|$)/g, '')
    .replace(/(?:\r\n)+$/, '');
  return createHash('sha256')
    .update(canonical === '' ? '' : canonical + CRLF, 'latin1')
    .digest('base64');
}

/**
 * Builds a folded DKIM-Signature field: tags separated by "; ", a fold (CRLF + TAB) wherever the
 * next piece would pass column 78. h= folds only at its colons and base64 values anywhere (FWS is
 * allowed there, RFC 6376 §3.5), other values never.
 */
class Folder {
  #lines: string[] = [];
  #line: string;

  constructor(start: string) {
    this.#line = start;
  }

  text(): string {
    return [...this.#lines, this.#line].join(CRLF);
  }

  tag(name: string, value: string): void {
    this.#piece(`${name}=${value};`, true);
  }

  list(name: string, items: string[]): void {
    const pieces = items.map((item, i) => (i === 0 ? `${name}=` : '') + item + (i === items.length - 1 ? ';' : ':'));
    pieces.forEach((p, i) => this.#piece(p, i === 0));
  }

  base64(name: string, value: string, terminated: boolean): void {
    this.open(name);
    this.base64Continue(value + (terminated ? ';' : ''));
  }

  /** Starts a tag whose value comes later ("b="). */
  open(name: string): void {
    this.#piece(`${name}=`, true);
  }

  base64Continue(value: string): void {
    let rest = value;
    for (let guard = 0; rest.length > 0 && guard <= value.length; guard++) {
      let room = MAX_LINE - this.#line.length;
      if (room <= 0) {
        this.#fold();
        room = MAX_LINE - this.#line.length;
      }
      this.#line += rest.slice(0, room);
      rest = rest.slice(room);
    }
  }

  #piece(piece: string, spaced: boolean): void {
    const sep = spaced && this.#line !== '\t' ? ' ' : '';
    // A piece longer than a whole line (a very long d=) stays unbroken: only column 998 is a must.
    if (this.#line.length + sep.length + piece.length > MAX_LINE && this.#line !== '\t') {
      this.#fold();
      this.#line += piece;
    } else {
      this.#line += sep + piece;
    }
  }

  #fold(): void {
    this.#lines.push(this.#line);
    this.#line = '\t';
  }
}
