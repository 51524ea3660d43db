// HTTP Basic authentication with API keys (user name: API key, password: secret key), like
// Mailjet's API, and the scope rule. Decides only: the HTTP answers (401 with a challenge, 403)
// belong to the server's one guard (server/http-errors.ts), which calls these for every route.
import type { ApiKeys, AuthenticatedKey } from './api-keys.ts';
import type { Scope } from './scopes.ts';

/** Mailjet's wording, so clients written for it recognise the failure. */
export const UNAUTHORIZED_MESSAGE =
  'API key authentication/authorization failure. You may be unauthorized to access the API or your API key may be expired. Visit API keys management section to check your keys.';

const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i;

/** The (API key, secret key) pair in an Authorization header, or null when it is not well-formed Basic. */
export function parseBasicAuth(header: string | undefined): { apiKey: string; secretKey: string } | null {
  if (typeof header !== 'string') return null;
  const match = BASIC.exec(header);
  if (!match || match[1].length % 4 === 1) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { apiKey: decoded.slice(0, colon), secretKey: decoded.slice(colon + 1) };
}

/**
 * The key an Authorization header authenticates, or null: missing, malformed (not Basic, bad
 * base64, no colon) and wrong credentials all give null, so a caller cannot tell them apart.
 */
export async function authenticate(keys: ApiKeys, header: string | undefined): Promise<AuthenticatedKey | null> {
  const credentials = parseBasicAuth(header);
  return credentials ? keys.authenticate(credentials.apiKey, credentials.secretKey) : null;
}

/**
 * Null when `key` was granted one of `needed`, else the refusal's message naming the first.
 * Scopes are exactly what was granted: `admin` does not imply `send`.
 */
export function missingScope(key: AuthenticatedKey, needed: readonly Scope[]): string | null {
  if (needed.some((scope) => key.scopes.includes(scope))) return null;
  return `this API key lacks the "${needed[0]}" scope`;
}
