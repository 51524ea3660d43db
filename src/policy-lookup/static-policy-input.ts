// policy-lookup/: the operator's input to the policy table, checked before it is stored: keys are
// normalised exactly as LACRE_TLS_POLICIES is (../tls-policy/levels.ts), so the same domain
// written either way is the same key; levels are the static ones; notes are short and printable.
// `lacre policy` and /v1/tls-policies both come through here (via ./static-policy-changes.ts).
import { STATIC_TLS_LEVELS, isStaticTlsLevel, normalisePolicyKey, type StaticTlsLevel } from '../tls-policy/levels.ts';

/** Long enough for a ticket reference and a sentence; a note is not a document store. */
export const MAX_NOTE_LENGTH = 500;

/** Input an operator can fix: the message names the bad value and what is allowed. */
export class TlsPolicyInputError extends Error {
  override name = 'TlsPolicyInputError';
  readonly field: 'domain' | 'level' | 'note';
  constructor(field: 'domain' | 'level' | 'note', message: string) {
    super(message);
    this.field = field;
  }
}

/** The stored form of a key, or TlsPolicyInputError naming it. */
export function policyKeyOf(raw: string): string {
  const key = normalisePolicyKey(raw);
  if (key === undefined) {
    throw new TlsPolicyInputError('domain', `"${raw}" is not a domain name (use example.com, or .example.com for its subdomains)`);
  }
  return key;
}

/** The level, lower-cased, or TlsPolicyInputError naming it and the allowed levels. */
export function policyLevelOf(raw: string): StaticTlsLevel {
  const level = raw.trim().toLowerCase();
  if (!isStaticTlsLevel(level)) {
    throw new TlsPolicyInputError('level', `unknown TLS level "${raw}" (allowed levels: ${STATIC_TLS_LEVELS.join(', ')})`);
  }
  return level;
}

export function policyNoteOf(raw: string | null | undefined): string | null {
  const note = raw?.trim() ?? '';
  if (note === '') return null;
  if (note.length > MAX_NOTE_LENGTH) throw new TlsPolicyInputError('note', `the note is ${note.length} characters; at most ${MAX_NOTE_LENGTH}`);
  // Notes are printed on terminals by `lacre policy list`: no escape sequences or line breaks.
  if (/[\u0000-\u001f\u007f]/.test(note)) throw new TlsPolicyInputError('note', 'the note may not contain control characters or line breaks');
  return note;
}
