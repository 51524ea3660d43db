// The HTTP API's one guard and one error vocabulary, installed on the root fastify instance so every
// route plugin registered into it inherits them (fastify's encapsulation: hooks, the error handler,
// the not-found handler and the content-type parser of a parent apply to its children):
// - authentication and scopes: each route declares `config: { scope }`; one onRequest hook checks
//   the Basic credentials (access/http-auth) before the body is read and sets `request.apiKey`;
// - one JSON body parser that keeps the exact bytes (`request.rawBody`, for Idempotency-Key);
// - every error in Mailjet's v3.1 shape ({ErrorIdentifier, ErrorCode, StatusCode, ErrorMessage,
//   ErrorRelatedTo?}): 400 bad JSON or invalid input, 401, 403, 404, 405 with Allow (RFC 9110
//   §15.5.6), 413, 415, 500; OPTIONS on a known path answers 204 with Allow (RFC 9110 §9.3.7).
// A route plugin maps only its own domain errors, by throwing an HttpError from its error handler
// (fastify passes what a child's handler throws to its parent's).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ApiKeys, AuthenticatedKey } from '../access/api-keys.ts';
import { authenticate, missingScope, UNAUTHORIZED_MESSAGE } from '../access/http-auth.ts';
import type { Scope } from '../access/scopes.ts';
import { errorsFromIssues, globalError, type MailjetCode } from '../intake/mailjet-errors.ts';

/** What a route needs: one of these scopes (a list: any of them), or nothing (`public`). */
export type RouteScope = Scope | readonly Scope[] | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Required on every route: registering one without it fails (fail closed). */
    scope?: RouteScope;
  }
  interface FastifyRequest {
    /** The key the request authenticated with; null on public routes. */
    apiKey: AuthenticatedKey | null;
    /** The body's exact bytes when it was JSON; null otherwise. */
    rawBody: Buffer | null;
  }
}

/** An HTTP error answered in Mailjet's shape; `kind` (with `message`) is the /v1 resources' own field. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly code: MailjetCode;
  readonly kind: string | undefined;
  readonly related: string[] | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: { code?: MailjetCode; kind?: string; related?: string[]; headers?: Record<string, string> } = {}) {
    super(message);
    this.status = status;
    this.code = options.code ?? codeOf(status);
    this.kind = options.kind;
    this.related = options.related;
    this.headers = options.headers ?? {};
  }
}

/** Lacre's code for a status Mailjet gives none: `lacre-0` + the status (mailjet-errors.ts). */
function codeOf(status: number): MailjetCode {
  const codes: Record<number, MailjetCode> = { 401: 'lacre-0401', 403: 'lacre-0403', 404: 'lacre-0404', 405: 'lacre-0405', 409: 'lacre-0409' };
  return codes[status] ?? (status >= 500 ? 'lacre-0500' : 'lacre-0400');
}

/** The body of an error answer. */
export function errorBody(error: HttpError): Record<string, unknown> {
  const body: Record<string, unknown> = { ...globalError(error.code, error.message, error.status, error.related) };
  if (error.kind !== undefined) {
    body.error = error.kind;
    body.message = error.message;
  }
  return body;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function sendError(reply: FastifyReply, error: HttpError): FastifyReply {
  // RFC 9110 §11.6.1: a 401 carries a challenge.
  if (error.status === 401) reply.header('WWW-Authenticate', 'Basic realm="lacre"');
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.code(error.status).type(JSON_TYPE).send(JSON.stringify(errorBody(error)));
}

/**
 * Parses `value` with a zod schema; invalid input is a 400 naming each offending property
 * (`where` names the whole value: `body`, `query`), with Mailjet's codes for the first issue.
 */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, where: 'body' | 'query'): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw invalidInput(result.error, where);
}

function invalidInput(err: z.ZodError, where: string): HttpError {
  const mailjet = errorsFromIssues(err.issues);
  return new HttpError(400, err.issues.map((i) => `${i.path.join('.') || where}: ${i.message}`).join('; '), {
    code: (mailjet[0]?.ErrorCode as MailjetCode | undefined) ?? 'mj-0004',
    kind: 'invalid-request',
    related: [...new Set(mailjet.flatMap((e) => e.ErrorRelatedTo).filter((r) => r !== ''))],
  });
}

/** The key the request authenticated with; throws on a public route (a bug, not an anonymous key). */
export function keyOf(request: FastifyRequest): AuthenticatedKey {
  if (!request.apiKey) throw new Error(`keyOf: ${request.routeOptions.url} is a public route`);
  return request.apiKey;
}

const MALFORMED_JSON = 'Malformed JSON, please review the syntax and properties types.';

/** What fastify and the parser throw, in Mailjet's terms; anything else is a 500. */
function fromFramework(err: FastifyError, request: FastifyRequest): HttpError | null {
  switch (err.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new HttpError(400, `${MALFORMED_JSON} (the request body is empty)`, { code: 'mj-0002' });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new HttpError(400, `${MALFORMED_JSON} (${err.message})`, { code: 'mj-0002' });
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = request.routeOptions.bodyLimit ?? 0;
      const size = limit % 1048576 === 0 ? `${limit / 1048576} MB` : `${limit} bytes`;
      return new HttpError(413, `The request body is larger than ${size}.`, { code: 'mj-0011' });
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpError(415, 'The request body must be JSON sent as Content-Type: application/json.', { code: 'mj-0002' });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new HttpError(400, 'The request body does not match its Content-Length.', { code: 'mj-0002' });
  }
  const status = err.statusCode;
  return status !== undefined && status >= 400 && status < 500 ? new HttpError(status, err.message) : null;
}

/** A fastify route path (`/v1/domains/:domain`) as a matcher of request paths. */
function pathMatcher(url: string): RegExp {
  const pattern = url
    .split('/')
    .map((part) => (part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${pattern}$`);
}

/** A registered route, as the guard saw it. */
export interface RouteEntry {
  method: string;
  url: string;
  scope: RouteScope;
  bodyLimit: number;
}

const registries = new WeakMap<FastifyInstance, RouteEntry[]>();

/** Every route registered on an app built with installHttpConventions (HEAD included), in order. */
export function routesOf(app: FastifyInstance): readonly RouteEntry[] {
  return registries.get(app) ?? [];
}

/**
 * Installs the guard and the error vocabulary on the root instance; call before registering any
 * route. Without `keys`, only public routes may be registered.
 */
export function installHttpConventions(app: FastifyInstance, options: { keys?: ApiKeys }): void {
  const routes: Array<{ matcher: RegExp; methods: string[] }> = [];
  const entries: RouteEntry[] = [];
  registries.set(app, entries);
  app.decorateRequest('apiKey', null);
  app.decorateRequest('rawBody', null);

  app.addHook('onRoute', (route) => {
    const scope = route.config?.scope;
    if (scope === undefined) throw new Error(`route ${route.method} ${route.url} declares no config.scope (use 'public' for an open route)`);
    if (scope !== 'public' && !options.keys) throw new Error(`route ${route.method} ${route.url} needs API keys, and the HTTP server was built without them`);
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const bodyLimit = route.bodyLimit ?? app.initialConfig.bodyLimit ?? 1048576;
    for (const method of methods) entries.push({ method, url: route.url, scope, bodyLimit });
    const known = routes.find((r) => r.matcher.source === pathMatcher(route.url).source);
    if (known) known.methods.push(...methods);
    else routes.push({ matcher: pathMatcher(route.url), methods: [...methods] });
  });

  // Nothing but JSON is read: fastify's text/plain parser goes too, so any other body is a 415.
  app.removeAllContentTypeParsers();
  // Fastify's own parser (it refuses __proto__ and constructor.prototype keys), after the bytes are kept.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    request.rawBody = bytes;
    const text = bytes.toString('utf8');
    parseJson(request, text, (err, value) => {
      if (err && (err as FastifyError).code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
        // The parser's own message says where the syntax broke.
        let detail = 'a __proto__ or constructor.prototype property';
        try {
          JSON.parse(text);
        } catch (syntax) {
          detail = (syntax as Error).message;
        }
        (err as FastifyError).message = detail;
      }
      done(err as FastifyError | null, value);
    });
  });

  // onRequest: before the body is read, so a request without credentials cannot make us read 24 MB.
  app.addHook('onRequest', async (request) => {
    if (request.is404) return;
    const scope = request.routeOptions.config.scope;
    if (scope === undefined || scope === 'public') return;
    const key = await authenticate(options.keys!, request.headers.authorization);
    if (!key) throw new HttpError(401, UNAUTHORIZED_MESSAGE);
    const refusal = missingScope(key, typeof scope === 'string' ? [scope as Scope] : scope);
    if (refusal !== null) throw new HttpError(403, refusal);
    request.apiKey = key;
  });

  app.setErrorHandler((err, request, reply) => {
    if (err instanceof HttpError) return sendError(reply, err);
    if (err instanceof z.ZodError) return sendError(reply, invalidInput(err, 'request'));
    const known = fromFramework(err as FastifyError, request);
    if (known) return sendError(reply, known);
    const error = new HttpError(500, 'Internal server error: retry later. The ErrorIdentifier names this failure in the server log.');
    const body = errorBody(error);
    request.log.error({ err, errorIdentifier: body.ErrorIdentifier, route: request.routeOptions.url }, 'HTTP request failed');
    return reply.code(500).type(JSON_TYPE).send(JSON.stringify(body));
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allowed = [...new Set(routes.filter((r) => r.matcher.test(path)).flatMap((r) => r.methods))];
    // A known method the router still refused (a parameter over its length limit): not found.
    if (allowed.length === 0 || allowed.includes(request.method)) {
      return sendError(reply, new HttpError(404, `Not found: there is no ${request.method} ${path}.`));
    }
    const allow = [...allowed, 'OPTIONS'].join(', ');
    if (request.method === 'OPTIONS') return reply.code(204).header('Allow', allow).send();
    return sendError(reply, new HttpError(405, `Method not allowed: ${path} accepts ${allow}.`, { headers: { Allow: allow } }));
  });
}

/** Fastify's framework errors before routing (a malformed URL, an over-long parameter), in the same shape. */
export function frameworkErrors(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  sendError(reply, new HttpError(err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 404 : 400, err.message));
}
