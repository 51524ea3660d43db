import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../../test/harness/temp-data.ts';
import { FakeDnsServer } from '../../../test/harness/dns-server.ts';
import { createLogger } from '../../log/logger.ts';
import { ApiKeys } from '../../access/api-keys.ts';
import { Resolver } from '../../dns/resolver.ts';
import { Webhooks } from '../../events/webhooks.ts';
import { resolverLookup } from '../../events/url-guard.ts';
import { buildHttpServer } from '../http.ts';
import { webhookRoutes } from './webhooks.ts';

const basic = (k: { apiKey: string; secretKey: string }) => ({ authorization: `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}` });

test('/v1/webhooks registers, lists, shows and removes the key\'s own webhooks; refuses unsafe URLs and unknown events', async () => {
  const data = await openTempData();
  const dns = await FakeDnsServer.start();
  dns.add('intranet.hooks.test', { type: 'A', address: '192.168.1.10' });
  const keys = new ApiKeys(data.store);
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, keys });
  try {
    const lookup = resolverLookup(new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 }));
    await app.register(webhookRoutes({ webhooks: new Webhooks(data.store, { lookup }) }));
    const a = await keys.create({ name: 'a', scopes: ['send', 'read'], actor: 'cli:test' });
    const b = await keys.create({ name: 'b', scopes: ['read'], actor: 'cli:test' });
    const sendOnly = await keys.create({ name: 's', scopes: ['send'], actor: 'cli:test' });
    const call = (method: 'GET' | 'POST' | 'DELETE', url: string, key?: typeof a, payload?: unknown) =>
      app.inject({ method, url, headers: key ? basic(key) : {}, ...(payload === undefined ? {} : { payload: payload as object }) });

    assert.equal((await call('GET', '/v1/webhooks')).statusCode, 401);
    assert.equal((await call('POST', '/v1/webhooks', sendOnly, { url: 'http://127.0.0.1:9/h', events: 'sent' })).statusCode, 403);

    const created = await call('POST', '/v1/webhooks', a, { url: 'http://127.0.0.1:9/h?token=abc', events: ['sent', 'bounce'] });
    assert.equal(created.statusCode, 201, created.body);
    const hook = created.json();
    assert.match(hook.secret, /^whsec_/);
    assert.deepEqual([hook.apiKey, hook.url, hook.events], [a.apiKey, 'http://127.0.0.1:9/h?token=abc', ['sent', 'bounce']]);
    assert.deepEqual(hook.deliveries, { pending: 0, delivered: 0, failed: 0 });

    const listed = (await call('GET', '/v1/webhooks', a)).json().webhooks;
    assert.equal(listed.length, 1);
    assert.equal(listed[0].secret, undefined);
    assert.equal((await call('GET', `/v1/webhooks/${hook.id}`, a)).json().id, hook.id);
    // Another key neither sees nor removes it.
    assert.deepEqual((await call('GET', '/v1/webhooks', b)).json().webhooks, []);
    assert.equal((await call('GET', `/v1/webhooks/${hook.id}`, b)).statusCode, 404);
    assert.equal((await call('DELETE', `/v1/webhooks/${hook.id}`, b)).statusCode, 404);

    const refusals: Array<[unknown, RegExp]> = [
      [{ url: 'https://10.0.0.1/h', events: 'sent' }, /webhook URL refused: 10\.0\.0\.1, a private address/],
      [{ url: 'https://169.254.169.254/', events: 'sent' }, /link-local/],
      [{ url: 'https://[fc00::5]/', events: 'sent' }, /unique-local/],
      [{ url: 'https://[::ffff:10.0.0.1]/', events: 'sent' }, /private/],
      [{ url: 'https://intranet.hooks.test/', events: 'sent' }, /intranet\.hooks\.test resolves to 192\.168\.1\.10, a private address/],
      [{ url: 'http://hooks.example.test/', events: 'sent' }, /refused/],
      [{ url: 'http://127.0.0.1:9/', events: 'sent,clicked' }, /unknown event type "clicked"/],
      [{ url: 'http://127.0.0.1:9/' }, /events/],
      [{ url: 'http://127.0.0.1:9/', events: 'sent', secret: 'mine' }, /secret|Unrecognized/i],
    ];
    for (const [payload, pattern] of refusals) {
      const res = await call('POST', '/v1/webhooks', a, payload);
      assert.equal(res.statusCode, 400, JSON.stringify(payload));
      assert.match(res.json().message, pattern, JSON.stringify(payload));
    }

    const audit = await data.store.audit.list({ subject: hook.id });
    assert.deepEqual(audit.map((e) => [e.actor, e.action]), [[`key:${a.apiKey}`, 'webhook.add']]);
    // The audit keeps the origin only: a path or query may carry the receiver's token.
    assert.ok(!JSON.stringify(audit).includes('token=abc'));

    assert.equal((await call('DELETE', `/v1/webhooks/${hook.id}`, a)).statusCode, 204);
    assert.deepEqual((await call('GET', '/v1/webhooks', a)).json().webhooks, []);
    assert.equal((await call('DELETE', `/v1/webhooks/${hook.id}`, a)).statusCode, 404);
  } finally {
    await app.close();
    await dns.close();
    await data.close();
  }
});
