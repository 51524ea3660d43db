// API key scopes: what a key may do. Exactly what was granted, no scope implies another (an
// `admin` key cannot send unless it was also given `send`). Pure.

/**
 * `send`: submit mail. `read`: messages and events. `admin`: keys, domains, policies.
 * The order here is the canonical order scopes are stored and shown in.
 */
export const SCOPES = ['send', 'read', 'admin'] as const;

export type Scope = (typeof SCOPES)[number];

export class ScopeError extends Error {
  override name = 'ScopeError';
}

export function isScope(value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value);
}

/**
 * Parses a comma-separated scope list (`send,read`): whitespace around names is ignored, names are
 * case-sensitive, duplicates collapse, and the result is in canonical order. Throws ScopeError
 * naming the first unknown scope, or when the list is empty.
 */
export function parseScopes(text: string): Scope[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) throw new ScopeError(`no scopes given: expected a comma-separated list of ${SCOPES.join(', ')}`);
  for (const name of names) {
    if (!isScope(name)) throw new ScopeError(`unknown scope "${name}": expected one of ${SCOPES.join(', ')}`);
  }
  return SCOPES.filter((s) => names.includes(s));
}
