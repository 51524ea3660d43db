// Reads the machine-readable part of a bounce: the message/delivery-status part of a
// multipart/report (RFC 3464 §2, RFC 6522). Pure; the bounce receiver acts on what it returns.

export interface DsnRecipient {
  /** The address from Final-Recipient (`rfc822;` type only). */
  finalRecipient: string;
  /** RFC 3464 §2.3.3: failed, delayed, delivered, relayed, expanded. */
  action: string;
  /** RFC 3464 §2.3.4, e.g. 5.1.1. */
  status: string;
  diagnostic: string | null;
}

const MAX_PARTS = 50;

/** Header fields of a block (unfolded), lower-cased names. */
function fields(block: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of block.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) out.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return out;
}

function boundaryOf(contentType: string | undefined): string | null {
  const match = /boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))/i.exec(contentType ?? '');
  return match ? (match[1] ?? match[2]) : null;
}

function splitHead(text: string): [string, string] {
  const match = /\r?\n\r?\n/.exec(text);
  return match ? [text.slice(0, match.index), text.slice(match.index + match[0].length)] : [text, ''];
}

/** The delivery-status body inside a (possibly nested) multipart message, if any. */
function findDeliveryStatus(text: string, depth = 0): string | null {
  if (depth > 3) return null;
  const [head, body] = splitHead(text);
  const type = fields(head).get('content-type') ?? '';
  if (/^message\/(global-)?delivery-status/i.test(type)) return body;
  const boundary = boundaryOf(type);
  if (!/^multipart\//i.test(type) || !boundary) return null;
  const escaped = boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const parts = body.split(new RegExp(`(?:^|\\r?\\n)--${escaped}(?:--)?[ \\t]*(?:\\r?\\n|$)`)).slice(1, MAX_PARTS);
  for (const part of parts) {
    const found = findDeliveryStatus(part, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

export function parseDeliveryStatus(message: Buffer): DsnRecipient[] {
  const status = findDeliveryStatus(message.toString('utf8'));
  if (status === null) return [];
  // RFC 3464 §2.1: per-message fields, then one block per recipient, separated by blank lines.
  const blocks = status.split(/\r?\n[ \t]*\r?\n/).slice(1, 1 + 1000);
  const recipients: DsnRecipient[] = [];
  for (const block of blocks) {
    const f = fields(block);
    const final = /^rfc822\s*;\s*<?([^<>\s]+@[^<>\s]+?)>?\s*$/i.exec(f.get('final-recipient') ?? f.get('original-recipient') ?? '');
    const action = (f.get('action') ?? '').toLowerCase().split(/\s/)[0];
    const code = /^([245]\.\d{1,3}\.\d{1,3})/.exec(f.get('status') ?? '')?.[1];
    if (!final || !action || !code) continue;
    recipients.push({ finalRecipient: final[1], action, status: code, diagnostic: f.get('diagnostic-code') ?? null });
  }
  return recipients;
}
