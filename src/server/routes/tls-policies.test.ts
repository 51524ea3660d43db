import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../../test/harness/temp-data.ts';
import { createLogger } from '../../log/logger.ts';
import { ApiKeys } from '../../access/api-keys.ts';
import { TlsPoliciesTable } from '../../store/tls-policies-table.ts';
import { StaticPolicies } from '../../policy-lookup/static-policies.ts';
import { parseTlsPolicies } from '../../tls-policy/levels.ts';
import { buildHttpServer } from '../http.ts';
import { registerTlsPolicyRoutes } from './tls-policies.ts';

const basic = (k: { apiKey: string; secretKey: string }) => `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}`;

async function setup() {
  const data = await openTempData();
  const keys = new ApiKeys(data.store);
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, keys });
  const table = new TlsPoliciesTable(data.store.engine, data.store.sealer);
  // A long refresh period: only invalidate() can make a change visible at once.
  const policies = new StaticPolicies({ table, configured: parseTlsPolicies('legacy.example=none,bank.example=verify'), defaultLevel: 'encrypt', refreshMs: 3_600_000 });
  await registerTlsPolicyRoutes(app, { table, audit: data.store.audit, policies });
  const admin = await keys.create({ name: 'ops', scopes: ['admin'], actor: 'cli:test' });
  const others = [await keys.create({ name: 'app', scopes: ['send'], actor: 'cli:test' }), await keys.create({ name: 'reader', scopes: ['read'], actor: 'cli:test' })];
  return {
    data,
    app,
    table,
    policies,
    admin,
    others,
    as: (k: { apiKey: string; secretKey: string }) => ({ authorization: basic(k) }),
    async close() {
      await app.close();
      await data.close();
    },
  };
}

test('/v1/tls-policies answers admin keys only: 401 without credentials, 403 for send and read keys', async () => {
  const s = await setup();
  try {
    const requests = [
      { method: 'GET' as const, url: '/v1/tls-policies' },
      { method: 'PUT' as const, url: '/v1/tls-policies/x.example', payload: { level: 'verify' } },
      { method: 'DELETE' as const, url: '/v1/tls-policies/legacy.example' },
    ];
    for (const request of requests) {
      assert.equal((await s.app.inject(request)).statusCode, 401, `${request.method} without credentials`);
      for (const key of s.others) {
        const res = await s.app.inject({ ...request, headers: s.as(key) });
        assert.equal(res.statusCode, 403, `${request.method} with ${key.scopes.join(',')}`);
        assert.match(res.json().ErrorMessage, /lacks the "admin" scope/);
      }
    }
    assert.deepEqual(await s.table.list(), []);
    assert.deepEqual(await s.data.store.audit.list({ subject: 'x.example' }), []);
  } finally {
    await s.close();
  }
});

test('PUT, GET and DELETE edit the table for admin keys, apply at once in this process, and audit as key:<id>', async () => {
  const s = await setup();
  try {
    const actor = `key:${s.admin.apiKey}`;
    assert.equal((await s.policies.decide('bank.example')).origin, 'config');

    const created = await s.app.inject({ method: 'PUT', url: '/v1/tls-policies/Bank.Example', headers: s.as(s.admin), payload: { level: 'dane-only', note: 'TLSA live' } });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json().entry.domain, 'bank.example');
    assert.equal(created.json().entry.updatedBy, actor);
    assert.equal(created.json().overrides, 'verify');
    assert.deepEqual(await s.policies.decide('bank.example'), { level: 'dane-only', source: 'static:dane-only', match: 'bank.example', origin: 'table' });

    const replaced = await s.app.inject({ method: 'PUT', url: '/v1/tls-policies/bank.example', headers: s.as(s.admin), payload: { level: 'verify' } });
    assert.equal(replaced.statusCode, 200);
    assert.equal(replaced.json().previous.level, 'dane-only');
    assert.equal(replaced.json().entry.note, null);

    const parent = await s.app.inject({ method: 'PUT', url: '/v1/tls-policies/.b%C3%BCcher.example', headers: s.as(s.admin), payload: { level: 'encrypt' } });
    assert.equal(parent.statusCode, 201, parent.body);
    assert.equal(parent.json().entry.domain, '.xn--bcher-kva.example');
    assert.equal((await s.policies.decide('mx.bücher.example')).match, '.xn--bcher-kva.example');

    const listed = await s.app.inject({ method: 'GET', url: '/v1/tls-policies', headers: s.as(s.admin) });
    assert.equal(listed.statusCode, 200);
    assert.equal(listed.json().defaultLevel, 'encrypt');
    assert.deepEqual(
      listed.json().policies.map((p: { domain: string; level: string; origin: string }) => [p.domain, p.level, p.origin]),
      [
        ['bank.example', 'verify', 'table'],
        ['legacy.example', 'none', 'config'],
        ['.xn--bcher-kva.example', 'encrypt', 'table'],
      ],
    );

    assert.equal((await s.app.inject({ method: 'DELETE', url: '/v1/tls-policies/bank.example', headers: s.as(s.admin) })).statusCode, 204);
    assert.equal((await s.policies.decide('bank.example')).origin, 'config');
    const again = await s.app.inject({ method: 'DELETE', url: '/v1/tls-policies/bank.example', headers: s.as(s.admin) });
    assert.equal(again.statusCode, 409, 'only the configured entry is left');
    assert.match(again.json().message, /bank\.example=verify is set in LACRE_TLS_POLICIES/);
    const unknown = await s.app.inject({ method: 'DELETE', url: '/v1/tls-policies/nothing.example', headers: s.as(s.admin) });
    assert.equal(unknown.statusCode, 404);
    // Mailjet's fields, and the /v1 resources' own `error` and `message` as before.
    const { ErrorIdentifier: _id, ...rest } = unknown.json();
    assert.deepEqual(rest, { ErrorCode: 'lacre-0404', StatusCode: 404, ErrorMessage: 'no TLS policy for nothing.example in the policy table', error: 'unknown', message: 'no TLS policy for nothing.example in the policy table' });

    const audit = await s.data.store.audit.list({ subject: 'bank.example' });
    assert.deepEqual(
      audit.map((a) => [a.actor, a.action, a.detail]),
      [
        [actor, 'tls-policy.set', { level: 'dane-only', previous: null, overrides: 'verify', note: 'TLSA live' }],
        [actor, 'tls-policy.set', { level: 'verify', previous: 'dane-only', overrides: 'verify' }],
        [actor, 'tls-policy.remove', { previous: 'verify' }],
      ],
    );
  } finally {
    await s.close();
  }
});

test('bad bodies and domains are refused with 400 naming the problem, and nothing is stored', async () => {
  const s = await setup();
  try {
    const put = (url: string, payload: unknown) => s.app.inject({ method: 'PUT', url, headers: s.as(s.admin), payload: payload as object });
    const cases: [url: string, payload: unknown, message: RegExp][] = [
      ['/v1/tls-policies/x.example', { level: 'strict' }, /^level: .*"dane-only"/],
      ['/v1/tls-policies/x.example', { level: 'dane' }, /^level: /],
      ['/v1/tls-policies/x.example', {}, /^level: /],
      ['/v1/tls-policies/x.example', { level: 'verify', extra: true }, /extra/],
      ['/v1/tls-policies/x.example', { level: 'verify', note: 'x'.repeat(501) }, /^note: /],
      ['/v1/tls-policies/x.example', { level: 'verify', note: 'two\nlines' }, /control characters/],
      ['/v1/tls-policies/not%20a%20domain', { level: 'verify' }, /"not a domain" is not a domain name/],
      ['/v1/tls-policies/*.example', { level: 'verify' }, /"\*\.example" is not a domain name/],
    ];
    for (const [url, payload, message] of cases) {
      const res = await put(url, payload);
      assert.equal(res.statusCode, 400, `${url} ${JSON.stringify(payload)}: ${res.body}`);
      assert.match(res.json().message, message, `${url} ${JSON.stringify(payload)}`);
      assert.ok(['invalid', 'invalid-request'].includes(res.json().error));
    }
    const notJson = await s.app.inject({
      method: 'PUT',
      url: '/v1/tls-policies/x.example',
      headers: { ...s.as(s.admin), 'content-type': 'application/json' },
      payload: '{"level":',
    });
    assert.equal(notJson.statusCode, 400);
    const bad = await s.app.inject({ method: 'DELETE', url: '/v1/tls-policies/bad%20name', headers: s.as(s.admin) });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /"bad name" is not a domain name/);
    assert.deepEqual(await s.table.list(), []);
  } finally {
    await s.close();
  }
});
