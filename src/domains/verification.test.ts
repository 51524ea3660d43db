import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DkimKeyRecord } from '../store/domains-table.ts';
import { generateDkimKeyPair } from './dkim-keys.ts';
import { recordsToPublish, type SenderSettings } from './dns-records.ts';
import { judgeDomain, judgeDmarc, lookupKey, lookupsNeeded, type Lookup, type VerificationInput } from './verification.ts';

const settings: SenderSettings = {
  hostname: 'mta.lacre.test',
  returnPathSubdomain: 'bounces',
  returnPathLocalPart: 'bounce',
  spfIp4: ['192.0.2.10'],
  spfIp6: [],
  dmarcRua: 'mailto:dmarc@{domain}',
  tlsRptRua: 'mailto:tlsrpt@{domain}',
};

function key(algorithm: 'ed25519' | 'rsa', selector: string, state: DkimKeyRecord['state']): DkimKeyRecord {
  return { id: `${selector}-id`, selector, algorithm, publicKey: generateDkimKeyPair(algorithm).publicKey, state, createdAt: 0, activatedAt: null, retireAt: null };
}

const keys = [key('ed25519', 'lacre-ed-2026a', 'active'), key('rsa', 'lacre-rsa-2026a', 'active')];

/** Lookups as if the owner published exactly what Lacre printed, with `edit` applied. */
function published(edit: (lookups: Map<string, Lookup>) => void = () => {}, forKeys = keys): VerificationInput {
  const lookups = new Map<string, Lookup>();
  for (const [type, name] of lookupsNeeded('example.com', forKeys, settings)) lookups.set(lookupKey(type, name), { status: 'none' });
  for (const r of recordsToPublish({ domain: 'example.com', keys: forKeys, settings, createdAt: 0 })) {
    if (r.type === 'HTTPS') continue;
    lookups.set(lookupKey(r.type, r.name), { status: 'found', values: [r.value] });
  }
  edit(lookups);
  return { domain: 'example.com', keys: forKeys, settings, createdAt: 0, lookups };
}

const set = (type: string, name: string, lookup: Lookup) => (m: Map<string, Lookup>) => m.set(lookupKey(type, name), lookup);
const check = (report: ReturnType<typeof judgeDomain>, name: string) => report.records.find((r) => r.name === name)!;

test('a domain whose DKIM and SPF records are published as printed is verified', () => {
  const report = judgeDomain(published());
  assert.equal(report.verified, true);
  assert.equal(report.conclusive, true);
  assert.equal(report.spf, 'authorised');
  assert.ok(report.records.every((r) => r.status === 'ok'), JSON.stringify(report.records.filter((r) => r.status !== 'ok')));
  assert.equal(report.dmarc.policy, 'none');
});

test('a missing DKIM record leaves the domain unverified and says which one', () => {
  const report = judgeDomain(published(set('TXT', 'lacre-rsa-2026a._domainkey.example.com', { status: 'none' })));
  assert.equal(report.verified, false);
  assert.equal(report.conclusive, true);
  const rsa = check(report, 'lacre-rsa-2026a._domainkey.example.com');
  assert.equal(rsa.status, 'missing');
  assert.equal(check(report, 'lacre-ed-2026a._domainkey.example.com').status, 'ok');
});

test('a DKIM record with another key, a truncated key, a wrong k= or a revoked key is wrong, with the value found', () => {
  const name = 'lacre-ed-2026a._domainkey.example.com';
  const good = recordsToPublish({ domain: 'example.com', keys, settings, createdAt: 0 }).find((r) => r.name === name)!.value;
  const cases: Array<[string, RegExp]> = [
    [`v=DKIM1; k=ed25519; p=${generateDkimKeyPair('ed25519').publicKey}`, /different public key/],
    [good.slice(0, -6), /different public key/],
    [good.replace('k=ed25519', 'k=rsa'), /k=rsa, expected k=ed25519/],
    ['v=DKIM1; k=ed25519; p=', /revoked/],
    ['v=spf1 -all', /not a DKIM key record/],
  ];
  for (const [value, detail] of cases) {
    const report = judgeDomain(published(set('TXT', name, { status: 'found', values: [value] })));
    const dkim = check(report, name);
    assert.equal(dkim.status, 'wrong', value);
    assert.match(dkim.detail, detail);
    assert.deepEqual(dkim.found, [value]);
    assert.equal(report.verified, false);
  }
});

test('a DKIM record split into strings or with tags reordered and spaced still matches', () => {
  const name = 'lacre-rsa-2026a._domainkey.example.com';
  const good = recordsToPublish({ domain: 'example.com', keys, settings, createdAt: 0 }).find((r) => r.name === name)!.value;
  const p = /p=(.*)$/.exec(good)![1];
  const variant = `p = ${p.slice(0, 100)} ${p.slice(100)} ;  k=rsa;v=DKIM1`;
  assert.equal(check(judgeDomain(published(set('TXT', name, { status: 'found', values: [variant] }))), name).status, 'ok');
});

test('SPF: missing, two records, +all, and a record without Lacre are each reported; other terms that evaluate to pass count', () => {
  const name = 'bounces.example.com';
  const cases: Array<[Lookup, string, RegExp]> = [
    [{ status: 'none' }, 'missing', /no v=spf1/],
    [{ status: 'found', values: ['v=spf1 ip4:192.0.2.10 -all', 'v=spf1 -all'] }, 'wrong', /more than one/],
    [{ status: 'found', values: ['v=spf1 ip4:192.0.2.10 +all'] }, 'wrong', /every host/],
    [{ status: 'found', values: ['v=spf1 include:_spf.google.com -all'] }, 'wrong', /missing ip4:192.0.2.10/],
  ];
  for (const [lookup, status, detail] of cases) {
    const report = judgeDomain(published(set('TXT', name, lookup)));
    assert.equal(check(report, name).status, status);
    assert.match(check(report, name).detail, detail);
    assert.equal(report.verified, false);
  }
  const viaOtherTerms = published(set('TXT', name, { status: 'found', values: ['v=spf1 ip4:192.0.2.0/24 -all'] }));
  assert.equal(judgeDomain(viaOtherTerms).verified, false);
  assert.equal(judgeDomain({ ...viaOtherTerms, spfEvaluations: [{ ip: '192.0.2.10', result: 'pass' }] }).verified, true);
  assert.equal(judgeDomain({ ...viaOtherTerms, spfEvaluations: [{ ip: '192.0.2.10', result: 'softfail' }] }).verified, false);
});

test('a failed lookup of a required record makes the check inconclusive, never a verdict', () => {
  const report = judgeDomain(published(set('TXT', 'lacre-ed-2026a._domainkey.example.com', { status: 'error', message: 'DNS SERVFAIL' })));
  assert.equal(report.verified, false);
  assert.equal(report.conclusive, false);
  assert.equal(check(report, 'lacre-ed-2026a._domainkey.example.com').status, 'error');
  // A failure of a recommended record alone does not matter.
  const dmarcDown = judgeDomain(published(set('TXT', '_dmarc.example.com', { status: 'error', message: 'timeout' })));
  assert.equal(dmarcDown.verified, true);
  assert.equal(dmarcDown.dmarc.policy, 'unknown');
});

test('DMARC is reported as absent, none, quarantine, reject or invalid, with advice', () => {
  assert.equal(judgeDmarc([]).policy, 'absent');
  assert.equal(judgeDmarc(['v=DMARC1; p=none; rua=mailto:x@example.com']).policy, 'none');
  assert.equal(judgeDmarc(['v=DMARC1;p=quarantine']).policy, 'quarantine');
  assert.equal(judgeDmarc(['v=DMARC1; p=reject; sp=reject']).policy, 'reject');
  assert.equal(judgeDmarc(['v=DMARC1; rua=mailto:x@example.com']).policy, 'invalid');
  assert.equal(judgeDmarc(['v=DMARC1; p=none', 'v=DMARC1; p=reject']).policy, 'invalid');
  assert.equal(judgeDmarc(['some other text']).policy, 'absent');
  assert.match(judgeDmarc(['v=DMARC1; p=none']).recommendation, /p=quarantine/);
  // DMARC does not decide verification.
  assert.equal(judgeDomain(published(set('TXT', '_dmarc.example.com', { status: 'none' }))).verified, true);
});

test('the return-path MX, MTA-STS and TLS-RPT records are checked but only recommended', () => {
  const report = judgeDomain(
    published((m) => {
      m.set(lookupKey('MX', 'bounces.example.com'), { status: 'found', values: ['10 mx.elsewhere.test'] });
      m.set(lookupKey('TXT', '_mta-sts.example.com'), { status: 'found', values: ['v=STSv1; id=1', 'v=STSv1; id=2'] });
      m.set(lookupKey('TXT', '_smtp._tls.example.com'), { status: 'found', values: ['v=TLSRPTv1;'] });
    }),
  );
  assert.equal(report.verified, true);
  assert.match(report.records.find((r) => r.purpose === 'return-path-mx')!.detail, /mx\.elsewhere\.test, not mta\.lacre\.test/);
  assert.equal(report.records.find((r) => r.purpose === 'mta-sts')!.status, 'wrong');
  assert.match(report.records.find((r) => r.purpose === 'tls-rpt')!.detail, /no mailto: or https: rua/);
});

test('during a rotation the new keys are activated once their records verify, even if the old ones are gone', () => {
  const rotating = [...keys, key('ed25519', 'lacre-ed-2026b', 'pending'), key('rsa', 'lacre-rsa-2026b', 'pending')];
  const both = judgeDomain(published(() => {}, rotating));
  assert.deepEqual(both.activate, ['lacre-ed-2026b-id', 'lacre-rsa-2026b-id']);
  assert.equal(both.verified, true);
  const onlyOld = judgeDomain(published(set('TXT', 'lacre-rsa-2026b._domainkey.example.com', { status: 'none' }), rotating));
  assert.deepEqual(onlyOld.activate, []);
  assert.equal(onlyOld.verified, true, 'the current keys still verify');
  const onlyNew = judgeDomain(
    published((m) => {
      m.set(lookupKey('TXT', 'lacre-ed-2026a._domainkey.example.com'), { status: 'none' });
      m.set(lookupKey('TXT', 'lacre-rsa-2026a._domainkey.example.com'), { status: 'none' });
    }, rotating),
  );
  assert.equal(onlyNew.verified, true);
  assert.equal(onlyNew.activate.length, 2);
});

test('the printed records name the return-path subdomain, or the domain itself when the subdomain is empty', () => {
  const sub = recordsToPublish({ domain: 'example.com', keys, settings, createdAt: 0 });
  assert.deepEqual(sub.filter((r) => r.purpose === 'spf' || r.purpose === 'return-path-mx').map((r) => [r.type, r.name, r.value]), [
    ['TXT', 'bounces.example.com', 'v=spf1 ip4:192.0.2.10 -all'],
    ['MX', 'bounces.example.com', '10 mta.lacre.test'],
  ]);
  const apex = recordsToPublish({ domain: 'example.com', keys, settings: { ...settings, returnPathSubdomain: '', spfIp4: [], spfInclude: 'spf.lacre.test' }, createdAt: 0 });
  assert.deepEqual(apex.filter((r) => r.purpose === 'spf').map((r) => [r.name, r.value]), [['example.com', 'v=spf1 include:spf.lacre.test -all']]);
  assert.equal(apex.some((r) => r.purpose === 'return-path-mx'), false);
  const retired = recordsToPublish({ domain: 'example.com', keys: [{ ...keys[0], state: 'retired' }, keys[1]], settings, createdAt: 0 });
  assert.equal(retired.filter((r) => r.purpose === 'dkim').length, 1);
});
