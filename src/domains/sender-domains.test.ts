// SenderDomains against real DNS lookups (the harness's fake authoritative server) and a real
// SQLite store: the lifecycle a domain owner goes through.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { Resolver } from '../dns/resolver.ts';
import { SenderDomains, DomainError, normalizeDomain, nextSelectorSuffix } from './sender-domains.ts';
import type { SenderSettings } from './dns-records.ts';

let dns: FakeDnsServer;
before(async () => {
  dns = await FakeDnsServer.start();
});
after(async () => {
  await dns.close();
});

const settings: SenderSettings = {
  hostname: 'mta.lacre.test',
  returnPathSubdomain: 'bounces',
  returnPathLocalPart: 'bounce',
  spfIp4: [],
  spfIp6: [],
  dmarcRua: 'mailto:dmarc@{domain}',
  tlsRptRua: 'mailto:tlsrpt@{domain}',
};

const DAY = 86_400_000;

async function setup(clock = { now: Date.parse('2026-11-21T10:00:00Z') }): Promise<{ data: TempData; domains: SenderDomains; clock: { now: number } }> {
  const data = await openTempData();
  const domains = new SenderDomains({
    store: data.store,
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }),
    settings,
    rotationGraceMs: 7 * DAY,
    clock: () => clock.now,
  });
  return { data, domains, clock };
}

test('add generates an Ed25519 and an RSA key with dated selectors and lists every record to publish', async () => {
  const { data, domains } = await setup();
  try {
    const view = await domains.add('Shop.Example.TEST.', 'cli:alice');
    assert.equal(view.domain, 'shop.example.test');
    assert.equal(view.status, 'pending');
    assert.deepEqual(view.dkimKeys.map((k) => [k.selector, k.algorithm, k.state]), [
      ['lacre-ed-2026a', 'ed25519', 'active'],
      ['lacre-rsa-2026a', 'rsa', 'active'],
    ]);
    assert.deepEqual(view.records.map((r) => [r.purpose, r.type, r.name]), [
      ['dkim', 'TXT', 'lacre-ed-2026a._domainkey.shop.example.test'],
      ['dkim', 'TXT', 'lacre-rsa-2026a._domainkey.shop.example.test'],
      ['spf', 'TXT', 'bounces.shop.example.test'],
      ['return-path-mx', 'MX', 'bounces.shop.example.test'],
      ['dmarc', 'TXT', '_dmarc.shop.example.test'],
      ['mta-sts', 'TXT', '_mta-sts.shop.example.test'],
      ['mta-sts-policy', 'HTTPS', 'https://mta-sts.shop.example.test/.well-known/mta-sts.txt'],
      ['tls-rpt', 'TXT', '_smtp._tls.shop.example.test'],
    ]);
    assert.match(view.records[0].value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    assert.match(view.records[2].value, /^v=spf1 a:mta\.lacre\.test -all$/);
    assert.match(view.records[4].value, /^v=DMARC1; p=none; rua=mailto:dmarc@shop\.example\.test/);
    await assert.rejects(domains.add('shop.example.test', 'cli:alice'), (err: DomainError) => err.kind === 'exists');
    const audit = await data.store.audit.list({ subject: 'shop.example.test' });
    assert.deepEqual(audit.map((a) => [a.actor, a.action]), [['cli:alice', 'domain.add']]);
  } finally {
    await data.close();
  }
});

test('DKIM private keys are sealed at rest: no PEM in the database files', async () => {
  const { data, domains } = await setup();
  try {
    await domains.add('sealed.test', 'cli:alice');
    const keys = await data.store.domains.signingKeys('sealed.test');
    assert.equal(keys.length, 2);
    assert.match(keys[0].privateKeyPem, /BEGIN PRIVATE KEY/);
    const body = /BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/]{40})/.exec(keys[1].privateKeyPem)![1];
    for (const file of readdirSync(data.dataDir).filter((f) => f.startsWith('lacre.db'))) {
      const bytes = readFileSync(join(data.dataDir, file)).toString('latin1');
      assert.equal(bytes.includes('PRIVATE KEY'), false, file);
      assert.equal(bytes.includes(body), false, file);
    }
  } finally {
    await data.close();
  }
});

test('verify reports every record missing until published, then verifies; a broken record later demotes the domain', async () => {
  const { data, domains } = await setup();
  try {
    const view = await domains.add('verify.test', 'cli:alice');
    const first = await domains.verify('verify.test', { actor: 'cli:alice' });
    assert.equal(first.domain.status, 'pending');
    assert.equal(first.report!.conclusive, true);
    assert.deepEqual(first.report!.records.filter((r) => r.required).map((r) => r.status), ['missing', 'missing', 'missing']);

    publishRecords(dns, view.records);
    const second = await domains.verify('verify.test', { actor: 'cli:alice' });
    assert.equal(second.domain.status, 'verified');
    assert.equal(second.domain.verifiedBy, 'dns');
    assert.ok(second.report!.records.every((r) => r.status === 'ok'), JSON.stringify(second.report!.records));
    assert.equal(second.report!.dmarc.policy, 'none');
    assert.equal((await domains.checkSender('billing@verify.test')).allowed, true);

    // A transient failure proves nothing and leaves the verified domain sending.
    dns.fail('lacre-ed-2026a._domainkey.verify.test', 'SERVFAIL');
    const flaky = await domains.verify('verify.test', { actor: 'cli:alice' });
    assert.equal(flaky.report!.conclusive, false);
    assert.equal(flaky.domain.status, 'verified');
    dns.fail('lacre-ed-2026a._domainkey.verify.test', null);

    dns.remove('lacre-ed-2026a._domainkey.verify.test', 'TXT');
    dns.add('lacre-ed-2026a._domainkey.verify.test', { type: 'TXT', data: 'v=DKIM1; k=ed25519; p=' });
    const broken = await domains.verify('verify.test', { actor: 'cli:alice' });
    assert.equal(broken.domain.status, 'pending');
    assert.match(broken.report!.records[0].detail, /revoked/);
    const refused = await domains.checkSender('billing@verify.test');
    assert.equal(refused.allowed, false);
    assert.equal(refused.allowed === false && refused.reason, 'unverified');
  } finally {
    await data.close();
  }
});

test('force marks a domain verified without DNS and records who did it', async () => {
  const { data, domains } = await setup();
  try {
    await domains.add('trial.test', 'cli:alice');
    const outcome = await domains.verify('trial.test', { actor: 'key:0123', force: true });
    assert.equal(outcome.forced, true);
    assert.equal(outcome.domain.status, 'verified');
    assert.equal(outcome.domain.verifiedBy, 'force');
    const audit = await data.store.audit.list({ subject: 'trial.test' });
    assert.deepEqual(audit.map((a) => [a.actor, a.action]), [['cli:alice', 'domain.add'], ['key:0123', 'domain.force-verify']]);
    // A DNS check that fails does not take away a trial the operator granted.
    const checked = await domains.verify('trial.test', { actor: 'cli:alice' });
    assert.equal(checked.report!.verified, false);
    assert.equal(checked.domain.status, 'verified');
  } finally {
    await data.close();
  }
});

test('rotate-dkim publishes a new pair beside the old, switches signing when it verifies, and retires the old keys after the grace period', async () => {
  const { data, domains, clock } = await setup();
  try {
    const added = await domains.add('rotate.test', 'cli:alice');
    publishRecords(dns, added.records);
    await domains.verify('rotate.test', { actor: 'cli:alice' });

    clock.now += DAY;
    const rotating = await domains.rotateDkim('rotate.test', 'cli:alice');
    assert.deepEqual(rotating.dkimKeys.map((k) => [k.selector, k.state]), [
      ['lacre-ed-2026a', 'active'],
      ['lacre-rsa-2026a', 'active'],
      ['lacre-ed-2026b', 'pending'],
      ['lacre-rsa-2026b', 'pending'],
    ]);
    const dkimNames = rotating.records.filter((r) => r.purpose === 'dkim').map((r) => r.name.split('.')[0]);
    assert.deepEqual(dkimNames, ['lacre-ed-2026a', 'lacre-rsa-2026a', 'lacre-ed-2026b', 'lacre-rsa-2026b']);

    // Not yet published: signing stays with the old keys.
    const early = await domains.verify('rotate.test', { actor: 'cli:alice' });
    assert.deepEqual(early.activated, []);
    const before = await domains.checkSender('a@rotate.test');
    assert.deepEqual(before.allowed && before.signingKeys.map((k) => k.selector), ['lacre-ed-2026a', 'lacre-rsa-2026a']);

    publishRecords(dns, rotating.records, (r) => r.purpose === 'dkim' && r.keyState === 'pending');
    const switched = await domains.verify('rotate.test', { actor: 'cli:alice' });
    assert.equal(switched.activated.length, 2);
    const states = Object.fromEntries(switched.domain.dkimKeys.map((k) => [k.selector, [k.state, k.retireAt]]));
    assert.deepEqual(states['lacre-ed-2026b'], ['active', null]);
    assert.deepEqual(states['lacre-ed-2026a'], ['retiring', new Date(clock.now + 7 * DAY).toISOString()]);
    const after = await domains.checkSender('a@rotate.test');
    assert.deepEqual(after.allowed && after.signingKeys.map((k) => k.selector), ['lacre-ed-2026b', 'lacre-rsa-2026b']);
    // The old records stay in the printed list until they retire.
    assert.equal(switched.domain.records.filter((r) => r.purpose === 'dkim').length, 4);

    clock.now += 7 * DAY;
    await domains.checkSender('a@rotate.test');
    const retired = await domains.show('rotate.test');
    assert.deepEqual(retired.dkimKeys.filter((k) => k.state === 'retired').map((k) => k.selector), ['lacre-ed-2026a', 'lacre-rsa-2026a']);
    assert.equal(retired.records.filter((r) => r.purpose === 'dkim').length, 2);
    const rows = await data.store.engine.all<{ selector: string; sealed: number }>(
      `SELECT selector, private_key_sealed IS NOT NULL AS sealed FROM dkim_keys WHERE domain = 'rotate.test' ORDER BY selector`,
    );
    assert.deepEqual(rows.map((r) => [r.selector, Number(r.sealed)]), [
      ['lacre-ed-2026a', 0],
      ['lacre-ed-2026b', 1],
      ['lacre-rsa-2026a', 0],
      ['lacre-rsa-2026b', 1],
    ]);
  } finally {
    await data.close();
  }
});

test('checkSender refuses unregistered, unverified and malformed senders, and lets subdomains of a verified domain send', async () => {
  const { data, domains } = await setup();
  try {
    await domains.add('brand.test', 'cli:alice');
    const unverified = await domains.checkSender('a@brand.test');
    assert.equal(unverified.allowed === false && unverified.reason, 'unverified');
    assert.match(unverified.allowed === false ? unverified.message : '', /not verified.*lacre domains verify brand\.test/);
    await domains.verify('brand.test', { actor: 'cli:alice', force: true });
    const sub = await domains.checkSender('news@mail.brand.test');
    assert.equal(sub.allowed && sub.domain, 'brand.test');
    const other = await domains.checkSender('ceo@brand-test.test');
    assert.equal(other.allowed === false && other.reason, 'unregistered');
    const lookalike = await domains.checkSender('ceo@notbrand.test');
    assert.equal(lookalike.allowed, false);
    assert.equal((await domains.checkSender('no-domain')).allowed, false);
    assert.equal((await domains.checkSender('a@[127.0.0.1]')).allowed, false);
  } finally {
    await data.close();
  }
});

test('domain names are normalised to lower-case A-labels and bad ones are refused with the reason', () => {
  assert.equal(normalizeDomain('Bücher.Example.'), 'xn--bcher-kva.example');
  assert.throws(() => normalizeDomain('localhost'), /fully qualified/);
  assert.throws(() => normalizeDomain('-bad.example'), /not a valid domain/);
  assert.throws(() => normalizeDomain('a..b'), /not a valid domain/);
  assert.throws(() => normalizeDomain('exa mple.com'), /not a valid domain/);
  assert.throws(() => normalizeDomain('192.0.2.1'), DomainError);
  assert.equal(nextSelectorSuffix(2026, []), '2026a');
  assert.equal(nextSelectorSuffix(2026, ['lacre-ed-2026a', 'lacre-rsa-2026a', 'lacre-rsa-2026b']), '2026c');
  assert.equal(nextSelectorSuffix(2027, ['lacre-ed-2026a']), '2027a');
});

test('the periodic recheck switches a rotation once the new records appear, and leaves settled domains alone', async () => {
  const { data, domains } = await setup();
  try {
    const settled = await domains.add('settled.test', 'cli:alice');
    publishRecords(dns, settled.records);
    await domains.verify('settled.test', { actor: 'cli:alice' });
    const added = await domains.add('auto.test', 'cli:alice');
    publishRecords(dns, added.records);
    await domains.verify('auto.test', { actor: 'cli:alice' });
    const rotating = await domains.rotateDkim('auto.test', 'cli:alice');

    assert.deepEqual((await domains.recheckWaiting()).map((o) => [o.domain.domain, o.activated.length]), [['auto.test', 0]]);
    publishRecords(dns, rotating.records, (r) => r.purpose === 'dkim' && r.keyState === 'pending');
    assert.deepEqual((await domains.recheckWaiting()).map((o) => [o.domain.domain, o.activated.length]), [['auto.test', 2]]);
    assert.deepEqual(await domains.recheckWaiting(), []);
    const audit = await data.store.audit.list({ subject: 'auto.test' });
    assert.equal(audit.at(-1)?.actor, 'system');
  } finally {
    await data.close();
  }
});
