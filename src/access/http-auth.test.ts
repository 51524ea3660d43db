// HTTP Basic authentication and scopes on a real fastify app (app.inject, no sockets).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { ApiKeys, type CreatedApiKey } from './api-keys.ts';
import { UNAUTHORIZED_MESSAGE, keyOf, parseBasicAuth, requireScope } from './http-auth.ts';

let data: TempData;
let keys: ApiKeys;
let sender: CreatedApiKey;
let admin: CreatedApiKey;
const app = Fastify();

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

before(async () => {
  data = await openTempData();
  keys = new ApiKeys(data.store);
  sender = await keys.create({ name: 'sender', scopes: ['send'], actor: 'test' });
  admin = await keys.create({ name: 'admin', scopes: ['admin'], actor: 'test' });
  app.post('/send', { preHandler: requireScope(keys, 'send') }, async (request) => ({ key: keyOf(request) }));
  app.get('/admin', { preHandler: requireScope(keys, 'admin') }, async (request) => ({ key: keyOf(request) }));
  app.get('/open', async (request) => {
    try {
      return { key: keyOf(request) };
    } catch (err) {
      return { error: (err as Error).message };
    }
  });
  await app.ready();
});

after(async () => {
  await app.close();
  await data.close();
});

function assertUnauthorized(response: Awaited<ReturnType<typeof app.inject>>) {
  assert.equal(response.statusCode, 401);
  assert.equal(response.headers['www-authenticate'], 'Basic realm="lacre"');
  const body = response.json();
  assert.equal(body.StatusCode, 401);
  assert.equal(body.ErrorMessage, UNAUTHORIZED_MESSAGE);
  assert.match(body.ErrorIdentifier, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
}

test('no Authorization header → 401 with a Basic challenge in Mailjet\'s error shape', async () => {
  assertUnauthorized(await app.inject({ method: 'GET', url: '/admin' }));
});

test('malformed Basic credentials → 401: bad base64, no colon, another scheme, empty', async () => {
  const headers = [
    'Basic !!!not-base64!!!',
    `Basic ${Buffer.from(`${admin.apiKey}${admin.secretKey}`).toString('base64')}`,
    `Bearer ${admin.secretKey}`,
    'Basic ',
    'Basic',
    basic(admin.apiKey, ''),
  ];
  for (const authorization of headers) {
    assertUnauthorized(await app.inject({ method: 'GET', url: '/admin', headers: { authorization } }));
  }
});

test('wrong secret or unknown key → 401, indistinguishable', async () => {
  const wrong = await app.inject({ method: 'GET', url: '/admin', headers: { authorization: basic(admin.apiKey, sender.secretKey) } });
  const unknown = await app.inject({ method: 'GET', url: '/admin', headers: { authorization: basic('f'.repeat(32), admin.secretKey) } });
  assertUnauthorized(wrong);
  assertUnauthorized(unknown);
  assert.equal(wrong.json().ErrorMessage, unknown.json().ErrorMessage);
});

test('a send-only key on an admin route → 403 naming the missing scope', async () => {
  const response = await app.inject({ method: 'GET', url: '/admin', headers: { authorization: basic(sender.apiKey, sender.secretKey) } });
  assert.equal(response.statusCode, 403);
  assert.equal(response.headers['www-authenticate'], undefined);
  assert.equal(response.json().StatusCode, 403);
  assert.equal(response.json().ErrorMessage, 'this API key lacks the "admin" scope');
});

test('an admin key on an admin route → 200, and the handler sees which key it was', async () => {
  const response = await app.inject({ method: 'GET', url: '/admin', headers: { authorization: basic(admin.apiKey, admin.secretKey) } });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), { key: { id: admin.apiKey, name: 'admin', scopes: ['admin'] } });
});

test('an admin key on a send route → 403: admin does not imply send', async () => {
  const response = await app.inject({ method: 'POST', url: '/send', headers: { authorization: basic(admin.apiKey, admin.secretKey) } });
  assert.equal(response.statusCode, 403);
  assert.equal(response.json().ErrorMessage, 'this API key lacks the "send" scope');
  const ok = await app.inject({ method: 'POST', url: '/send', headers: { authorization: `basic  ${Buffer.from(`${sender.apiKey}:${sender.secretKey}`).toString('base64')}` } });
  assert.equal(ok.statusCode, 200, 'the scheme name is case-insensitive');
  assert.equal(ok.json().key.id, sender.apiKey);
});

test('a disabled key → 401 on its next request', async () => {
  const temp = await keys.create({ name: 'temp', scopes: ['admin'], actor: 'test' });
  const authorization = basic(temp.apiKey, temp.secretKey);
  assert.equal((await app.inject({ method: 'GET', url: '/admin', headers: { authorization } })).statusCode, 200);
  await keys.disable(temp.apiKey, 'test');
  assertUnauthorized(await app.inject({ method: 'GET', url: '/admin', headers: { authorization } }));
});

test('keyOf on a route without requireScope is a programming error, not an anonymous key', async () => {
  const response = await app.inject({ method: 'GET', url: '/open' });
  assert.match(response.json().error, /not guarded by requireScope/);
});

test('parseBasicAuth splits at the first colon and refuses what is not Basic', () => {
  assert.deepEqual(parseBasicAuth(basic('user', 'pa:ss')), { apiKey: 'user', secretKey: 'pa:ss' });
  assert.equal(parseBasicAuth(undefined), null);
  assert.equal(parseBasicAuth('Basic a'), null);
  assert.equal(parseBasicAuth('Digest abc'), null);
});
