// The envelope sender Lacre puts on outgoing mail: `<local>+<message id>.<tag>@<return-path domain>`
// (VERP-style). The tag is a keyed hash of the message id, so a bounce can be traced to its
// message and a forged bounce to a made-up id is recognised and dropped.

export interface ReturnPathParts {
  localPart: string;
  domain: string;
  messageId: string;
}

const TAG_LENGTH = 12;

function compactId(messageId: string): string {
  return messageId.replaceAll('-', '').toLowerCase();
}

function expandId(compact: string): string {
  return `${compact.slice(0, 8)}-${compact.slice(8, 12)}-${compact.slice(12, 16)}-${compact.slice(16, 20)}-${compact.slice(20)}`;
}

/** `tag(messageId)` is a keyed hash (hex); only its first characters travel. */
export function returnPathAddress(parts: ReturnPathParts, tag: (messageId: string) => string): string {
  // RFC 5321 §4.5.3.1.1: a local part is at most 64 octets; this one is at most 20 + 46.
  return `${parts.localPart}+${compactId(parts.messageId)}.${tag(parts.messageId).slice(0, TAG_LENGTH)}@${parts.domain}`;
}

/** The message id a return-path address names, or null if it is not one of ours (or forged). */
export function parseReturnPath(address: string, localPart: string, tag: (messageId: string) => string): string | null {
  const match = /^([^+@]+)\+([0-9a-f]{32})\.([0-9a-f]+)@[^@]+$/i.exec(address);
  if (!match || match[1].toLowerCase() !== localPart.toLowerCase()) return null;
  const messageId = expandId(match[2].toLowerCase());
  const expected = tag(messageId).slice(0, TAG_LENGTH);
  const given = match[3].toLowerCase();
  // Compared in constant time: the tag is a secret-derived value.
  if (given.length !== expected.length) return null;
  let diff = 0;
  for (let i = 0; i < given.length; i++) diff |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return diff === 0 ? messageId : null;
}
