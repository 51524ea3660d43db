// Every route of the HTTP API as `lacre serve` mounts it (api.ts on buildHttpServer), walked over
// real HTTP on loopback: the route list comes from the app itself, so a route added later is walked
// too, and one that answers an error in fastify's shape ({statusCode, error, message}) fails here.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { SENDER_SETTINGS } from '../../test/harness/send-api.ts';
import { createLogger } from '../log/logger.ts';
import { ApiKeys, type CreatedApiKey } from '../access/api-keys.ts';
import { UNAUTHORIZED_MESSAGE } from '../access/http-auth.ts';
import type { Scope } from '../access/scopes.ts';
import { Resolver } from '../dns/resolver.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import { Composer } from '../compose/outgoing.ts';
import { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import { StaticPolicies } from '../policy-lookup/static-policies.ts';
import { Webhooks } from '../events/webhooks.ts';
import { resolverLookup } from '../events/url-guard.ts';
import { buildHttpServer } from './http.ts';
import { registerApiRoutes } from './api.ts';
import { IntakeMetrics } from './metrics.ts';
import { routesOf, type RouteEntry } from './http-errors.ts';
import { QueueActions } from '../queue/operator-actions.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let data: TempData;
let app: FastifyInstance;
let base: string;
const keys: Record<Scope, CreatedApiKey> = {} as Record<Scope, CreatedApiKey>;

before(async () => {
  data = await openTempData();
  const apiKeys = new ApiKeys(data.store);
  // Nothing listens there: no DNS answer is needed to reach any error below.
  const resolver = new Resolver({ servers: ['127.0.0.1:9'], timeoutMs: 200, tries: 1 });
  const domains = new SenderDomains({ store: data.store, resolver, settings: SENDER_SETTINGS, rotationGraceMs: 1000 });
  const tlsPolicyTable = new TlsPoliciesTable(data.store.engine, data.store.sealer);
  app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, keys: apiKeys });
  await registerApiRoutes(app, {
    domains,
    composer: new Composer({ queue: data.queue, domains, tag: (id) => data.sealer.lookupHash('return-path', id) }),
    store: data.store,
    tlsPolicyTable,
    staticPolicies: new StaticPolicies({ table: tlsPolicyTable, configured: new Map(), defaultLevel: 'may', refreshMs: 3_600_000 }),
    webhooks: new Webhooks(data.store, { lookup: resolverLookup(resolver) }),
    version: 'test',
    metrics: { intake: new IntakeMetrics(data.store), delivery: async () => null },
    queueActions: new QueueActions({ store: data.store }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  for (const scope of ['send', 'read', 'admin'] as const) keys[scope] = await apiKeys.create({ name: scope, scopes: [scope], actor: 'cli:test' });
});

after(async () => {
  await app?.close();
  await data?.close();
});

const basic = (k: CreatedApiKey) => `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}`;

/** A concrete path for a route pattern: each parameter gets a harmless value. */
const concrete = (url: string) => url.replace(/:[^/]+/g, 'x.test');

/** The walked routes: HEAD answers have no body to check, and fastify adds one for every GET. */
function walked(): RouteEntry[] {
  const routes = routesOf(app).filter((r) => r.method !== 'HEAD');
  assert.ok(routes.length >= 15, `the API's routes are registered (${routes.length})`);
  return routes;
}

/** Needed scopes of a route; [] for a public one. */
const needed = (r: RouteEntry): Scope[] => (r.scope === 'public' ? [] : typeof r.scope === 'string' ? [r.scope as Scope] : [...r.scope]);

async function call(method: string, path: string, init: { auth?: CreatedApiKey; type?: string; body?: string | Buffer } = {}) {
  const headers: Record<string, string> = {};
  if (init.auth) headers.authorization = basic(init.auth);
  if (init.type) headers['content-type'] = init.type;
  const response = await fetch(`${base}${path}`, { method, headers, body: init.body });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

/** Mailjet's v3.1 error object, with Lacre's or Mailjet's code, and nothing of fastify's shape. */
function assertMailjetShaped(what: string, res: { status: number; headers: Headers; text: string }, status: number, code?: string): Record<string, unknown> {
  assert.equal(res.status, status, `${what}: ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, what);
  const body = JSON.parse(res.text) as Record<string, unknown>;
  assert.match(String(body.ErrorIdentifier), UUID, `${what}: ${res.text}`);
  assert.match(String(body.ErrorCode), /^(mj|send|lacre)-\d{4}$/, `${what}: ${res.text}`);
  if (code !== undefined) assert.equal(body.ErrorCode, code, `${what}: ${res.text}`);
  assert.equal(body.StatusCode, status, what);
  assert.ok(typeof body.ErrorMessage === 'string' && body.ErrorMessage.length > 10, `${what}: ${res.text}`);
  assert.equal(body.statusCode, undefined, `${what}: fastify's shape: ${res.text}`);
  assert.equal(body.code, undefined, `${what}: fastify's shape: ${res.text}`);
  return body;
}

test('every route without credentials → 401 with a Basic challenge and ErrorCode, unless it is public', async () => {
  const publicRoutes: string[] = [];
  for (const route of walked()) {
    const what = `${route.method} ${route.url}`;
    if (needed(route).length === 0) {
      publicRoutes.push(what);
      assert.notEqual((await call(route.method, concrete(route.url))).status, 401, what);
      continue;
    }
    const res = await call(route.method, concrete(route.url));
    const body = assertMailjetShaped(what, res, 401, 'lacre-0401');
    assert.equal(body.ErrorMessage, UNAUTHORIZED_MESSAGE, what);
    assert.equal(res.headers.get('www-authenticate'), 'Basic realm="lacre"', what);
    const wrong = await call(route.method, concrete(route.url), { auth: { ...keys.admin, secretKey: keys.send.secretKey } });
    assertMailjetShaped(`${what} with a wrong secret`, wrong, 401, 'lacre-0401');
  }
  assert.deepEqual(publicRoutes.sort(), ['GET /healthz', 'GET /livez', 'GET /openapi.json']);
});

test('every route with a key lacking its scope → 403 with ErrorCode, naming the scope', async () => {
  for (const route of walked()) {
    const scopes = needed(route);
    if (scopes.length === 0) continue;
    const what = `${route.method} ${route.url}`;
    const outsider = (['send', 'read', 'admin'] as const).find((s) => !scopes.includes(s));
    assert.ok(outsider, `${what}: some key lacks its scopes`);
    const res = await call(route.method, concrete(route.url), { auth: keys[outsider] });
    const body = assertMailjetShaped(what, res, 403, 'lacre-0403');
    assert.match(String(body.ErrorMessage), new RegExp(`lacks the "${scopes[0]}" scope`), what);
    assert.equal(res.headers.get('www-authenticate'), null, what);
  }
});

test('every route path with a method it does not take → 405 with Allow; OPTIONS → 204 with Allow', async () => {
  for (const route of walked()) {
    const path = concrete(route.url);
    const what = `PATCH ${route.url}`;
    const res = await call('PATCH', path, { auth: keys.admin });
    assertMailjetShaped(what, res, 405, 'lacre-0405');
    const allow = (res.headers.get('allow') ?? '').split(', ');
    assert.ok(allow.includes(route.method) && allow.includes('OPTIONS') && !allow.includes('PATCH'), `${what}: Allow ${allow.join(', ')}`);
    const options = await call('OPTIONS', path);
    assert.equal(options.status, 204, `OPTIONS ${route.url}`);
    assert.deepEqual(options.headers.get('allow'), res.headers.get('allow'), `OPTIONS ${route.url}`);
  }
  const send = await call('GET', '/v3.1/send', { auth: keys.send });
  assertMailjetShaped('GET /v3.1/send', send, 405, 'lacre-0405');
  assert.equal(send.headers.get('allow'), 'POST, OPTIONS');
});

test('every POST and PUT route refuses an empty JSON body (400), another content type (415) and an oversized body (413)', async () => {
  const withBody = walked().filter((r) => r.method === 'POST' || r.method === 'PUT');
  assert.ok(withBody.length >= 6, withBody.map((r) => r.url).join(' '));
  for (const route of withBody) {
    const path = concrete(route.url);
    const auth = keys[needed(route)[0]];
    const what = `${route.method} ${route.url}`;
    assertMailjetShaped(`${what} empty`, await call(route.method, path, { auth, type: 'application/json', body: '' }), 400, 'mj-0002');
    assertMailjetShaped(`${what} bad JSON`, await call(route.method, path, { auth, type: 'application/json', body: '{"a":' }), 400, 'mj-0002');
    assertMailjetShaped(`${what} text/plain`, await call(route.method, path, { auth, type: 'text/plain', body: 'hello' }), 415, 'mj-0002');
    const huge = Buffer.alloc(route.bodyLimit + 1, 0x20);
    assertMailjetShaped(`${what} oversized`, await call(route.method, path, { auth, type: 'application/json', body: huge }), 413, 'mj-0011');
  }
});

test('a /v1 body that fails its schema → 400 in Mailjet\'s shape with the property named, and the resource\'s error and message', async () => {
  const res = await call('POST', '/v1/domains', { auth: keys.admin, type: 'application/json', body: JSON.stringify({ name: 'x.test' }) });
  const body = assertMailjetShaped('POST /v1/domains {name}', res, 400);
  assert.equal(body.error, 'invalid-request');
  assert.equal(body.message, body.ErrorMessage);
  assert.match(String(body.ErrorMessage), /domain/);
});

test('an unknown path → 404 and a malformed URL → 400, both Mailjet-shaped, with or without credentials', async () => {
  for (const [method, path] of [['GET', '/'], ['GET', '/nope'], ['POST', '/v3.1/send/extra'], ['DELETE', '/v1/domains'], ['GET', '/v3/REST/message']] as const) {
    assertMailjetShaped(`${method} ${path}`, await call(method, path), method === 'DELETE' ? 405 : 404);
    assertMailjetShaped(`${method} ${path} with a key`, await call(method, path, { auth: keys.admin }), method === 'DELETE' ? 405 : 404);
  }
  assertMailjetShaped('GET /nope', await call('GET', '/nope'), 404, 'lacre-0404');
  assertMailjetShaped('a bad percent-encoding', await call('GET', '/v1/domains/%E0%A4%A'), 400);
});

test('a route that declares no scope does not register: the server fails closed at start-up', async () => {
  const bare = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true } });
  try {
    await assert.rejects(
      (async () => {
        bare.get('/unguarded', async () => ({}));
        await bare.ready();
      })(),
      /declares no config\.scope/,
    );
  } finally {
    await bare.close().catch(() => {});
  }
  const keyless = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true } });
  try {
    await assert.rejects(
      (async () => {
        keyless.get('/guarded', { config: { scope: 'read' } }, async () => ({}));
        await keyless.ready();
      })(),
      /built without them/,
    );
  } finally {
    await keyless.close().catch(() => {});
  }
});
