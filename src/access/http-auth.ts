// HTTP Basic authentication with API keys (user name: API key, password: secret key), like
// Mailjet's API, and scope checks. Owns the 401/403 answers and the per-request authenticated key.
// May import: ./api-keys, ./scopes, node built-ins; fastify types only.
import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiKeys, AuthenticatedKey } from './api-keys.ts';
import type { Scope } from './scopes.ts';

/** Mailjet's wording, so clients written for it recognise the failure. */
export const UNAUTHORIZED_MESSAGE =
  'API key authentication/authorization failure. You may be unauthorized to access the API or your API key may be expired. Visit API keys management section to check your keys.';

const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i;

const authenticated = new WeakMap<FastifyRequest, AuthenticatedKey>();

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
 * A fastify preHandler that lets the request through only with valid credentials of a key that
 * was granted `scope` (scopes are exactly what was granted: `admin` does not imply `send`).
 * Missing, malformed or wrong credentials → 401 with a Basic challenge; a valid key without the
 * scope → 403. On success keyOf(request) is the key.
 */
export function requireScope(keys: ApiKeys, scope: Scope) {
  return async function checkApiKey(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const credentials = parseBasicAuth(request.headers.authorization);
    const key = credentials ? await keys.authenticate(credentials.apiKey, credentials.secretKey) : null;
    if (!key) {
      return reply
        .code(401)
        .header('WWW-Authenticate', 'Basic realm="lacre"')
        .send({ StatusCode: 401, ErrorIdentifier: randomUUID(), ErrorMessage: UNAUTHORIZED_MESSAGE });
    }
    if (!key.scopes.includes(scope)) {
      return reply.code(403).send({ StatusCode: 403, ErrorIdentifier: randomUUID(), ErrorMessage: `this API key lacks the "${scope}" scope` });
    }
    authenticated.set(request, key);
    return undefined;
  };
}

/** The key a request authenticated with; throws on a route not guarded by requireScope (a bug). */
export function keyOf(request: FastifyRequest): AuthenticatedKey {
  const key = authenticated.get(request);
  if (!key) throw new Error('keyOf: this route is not guarded by requireScope');
  return key;
}
