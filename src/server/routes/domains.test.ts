import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../../test/harness/temp-data.ts';
import { createLogger } from '../../log/logger.ts';
import { ApiKeys } from '../../access/api-keys.ts';
import { Resolver } from '../../dns/resolver.ts';
import { SenderDomains } from '../../domains/sender-domains.ts';
import { buildHttpServer } from '../http.ts';
import { domainRoutes } from './domains.ts';

const basic = (k: { apiKey: string; secretKey: string }) => `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}`;

test('/v1/domains manages sender domains for admin keys only, with the actor in the audit log', async () => {
  const data = await openTempData();
  const keys = new ApiKeys(data.store);
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, keys });
  try {
    const domains = new SenderDomains({
      store: data.store,
      // Nothing listens there: a DNS check fails fast and inconclusively.
      resolver: new Resolver({ servers: ['127.0.0.1:9'], timeoutMs: 200, tries: 1 }),
      settings: { hostname: 'mta.lacre.test', returnPathSubdomain: 'bounces', returnPathLocalPart: 'bounce', spfIp4: [], spfIp6: [], dmarcRua: 'mailto:d@{domain}', tlsRptRua: 'mailto:t@{domain}' },
      rotationGraceMs: 1000,
    });
    await app.register(domainRoutes({ domains }));
    const admin = await keys.create({ name: 'ops', scopes: ['admin'], actor: 'cli:test' });
    const sender = await keys.create({ name: 'app', scopes: ['send', 'read'], actor: 'cli:test' });
    const as = (k: typeof admin) => ({ authorization: basic(k) });

    assert.equal((await app.inject({ method: 'GET', url: '/v1/domains' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/domains', headers: as(sender), payload: { domain: 'x.test' } })).statusCode, 403);

    const created = await app.inject({ method: 'POST', url: '/v1/domains', headers: as(admin), payload: { domain: 'Api.Test' } });
    assert.equal(created.statusCode, 201);
    const view = created.json();
    assert.equal(view.domain, 'api.test');
    assert.equal(view.records.filter((r: { purpose: string }) => r.purpose === 'dkim').length, 2);

    const dup = await app.inject({ method: 'POST', url: '/v1/domains', headers: as(admin), payload: { domain: 'api.test' } });
    assert.equal(dup.statusCode, 409);
    const bad = await app.inject({ method: 'POST', url: '/v1/domains', headers: as(admin), payload: { domain: 'localhost' } });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /fully qualified/);
    const wrongShape = await app.inject({ method: 'POST', url: '/v1/domains', headers: as(admin), payload: { name: 'x.test' } });
    assert.equal(wrongShape.statusCode, 400);
    assert.match(wrongShape.json().message, /domain/);

    const list = await app.inject({ method: 'GET', url: '/v1/domains', headers: as(admin) });
    assert.deepEqual(list.json().domains.map((d: { domain: string; status: string }) => [d.domain, d.status]), [['api.test', 'pending']]);

    const checked = await app.inject({ method: 'POST', url: '/v1/domains/api.test/verify', headers: as(admin) });
    assert.equal(checked.statusCode, 200);
    assert.equal(checked.json().report.conclusive, false);
    assert.equal(checked.json().domain.status, 'pending');

    const forced = await app.inject({ method: 'POST', url: '/v1/domains/api.test/verify', headers: as(admin), payload: { force: true } });
    assert.equal(forced.json().domain.status, 'verified');
    const audit = await data.store.audit.list({ subject: 'api.test' });
    assert.deepEqual(audit.map((a) => [a.actor, a.action]).at(-1), [`key:${admin.apiKey}`, 'domain.force-verify']);

    const rotated = await app.inject({ method: 'POST', url: '/v1/domains/api.test/rotate-dkim', headers: as(admin) });
    assert.equal(rotated.json().dkimKeys.filter((k: { state: string }) => k.state === 'pending').length, 2);

    assert.equal((await app.inject({ method: 'GET', url: '/v1/domains/nope.test', headers: as(admin) })).statusCode, 404);
    assert.equal((await app.inject({ method: 'DELETE', url: '/v1/domains/api.test', headers: as(sender) })).statusCode, 403);
    assert.equal((await app.inject({ method: 'DELETE', url: '/v1/domains/api.test', headers: as(admin) })).statusCode, 204);
    assert.equal((await app.inject({ method: 'GET', url: '/v1/domains/api.test', headers: as(admin) })).statusCode, 404);
  } finally {
    await app.close();
    await data.close();
  }
});
