// HTTP Basic credentials and the scope rule against real API keys in a throwaway store. The HTTP
// answers they lead to (401 with a challenge, 403) are proven on every route in
// server/http-errors.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { ApiKeys, type CreatedApiKey } from './api-keys.ts';
import { authenticate, missingScope, parseBasicAuth } from './http-auth.ts';

let data: TempData;
let keys: ApiKeys;
let sender: CreatedApiKey;
let admin: CreatedApiKey;

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

before(async () => {
  data = await openTempData();
  keys = new ApiKeys(data.store);
  sender = await keys.create({ name: 'sender', scopes: ['send'], actor: 'test' });
  admin = await keys.create({ name: 'admin', scopes: ['admin'], actor: 'test' });
});

after(async () => {
  await data.close();
});

test('no header and malformed Basic credentials authenticate nobody: bad base64, no colon, another scheme, empty', async () => {
  const headers = [
    undefined,
    'Basic !!!not-base64!!!',
    `Basic ${Buffer.from(`${admin.apiKey}${admin.secretKey}`).toString('base64')}`,
    `Bearer ${admin.secretKey}`,
    'Basic ',
    'Basic',
    basic(admin.apiKey, ''),
  ];
  for (const header of headers) assert.equal(await authenticate(keys, header), null, String(header));
});

test('wrong secret or unknown key authenticate nobody, alike', async () => {
  assert.equal(await authenticate(keys, basic(admin.apiKey, sender.secretKey)), null);
  assert.equal(await authenticate(keys, basic('f'.repeat(32), admin.secretKey)), null);
});

test('the right pair authenticates its key; the scheme name is case-insensitive', async () => {
  assert.deepEqual(await authenticate(keys, basic(admin.apiKey, admin.secretKey)), { id: admin.apiKey, name: 'admin', scopes: ['admin'] });
  const lower = `basic  ${Buffer.from(`${sender.apiKey}:${sender.secretKey}`).toString('base64')}`;
  assert.equal((await authenticate(keys, lower))?.id, sender.apiKey);
});

test('a disabled key authenticates nobody from its next request on', async () => {
  const temp = await keys.create({ name: 'temp', scopes: ['admin'], actor: 'test' });
  const header = basic(temp.apiKey, temp.secretKey);
  assert.equal((await authenticate(keys, header))?.id, temp.apiKey);
  await keys.disable(temp.apiKey, 'test');
  assert.equal(await authenticate(keys, header), null);
});

test('scopes are exactly what was granted: admin does not imply send; a list needs any one of them', () => {
  const key = { id: admin.apiKey, name: 'admin', scopes: ['admin' as const] };
  assert.equal(missingScope(key, ['admin']), null);
  assert.equal(missingScope(key, ['send']), 'this API key lacks the "send" scope');
  assert.equal(missingScope({ ...key, scopes: ['send'] }, ['read', 'send']), null);
  assert.equal(missingScope(key, ['read', 'send']), 'this API key lacks the "read" scope');
});

test('parseBasicAuth splits at the first colon and refuses what is not Basic', () => {
  assert.deepEqual(parseBasicAuth(basic('user', 'pa:ss')), { apiKey: 'user', secretKey: 'pa:ss' });
  assert.equal(parseBasicAuth(undefined), null);
  assert.equal(parseBasicAuth('Basic a'), null);
  assert.equal(parseBasicAuth('Digest abc'), null);
});
