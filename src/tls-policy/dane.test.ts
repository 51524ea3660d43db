// DANE matching as pure functions over real certificates from the test CA: which TLSA records are
// usable, DANE-EE against the leaf alone, DANE-TA along a verified path with name and date checks,
// and digest algorithm agility.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { agileRecords, formatTlsa, isUsableTlsa, matchDane, type DaneMatch } from './dane.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';

const MX = 'mx.dane.test';
const DAY = 24 * 60 * 60 * 1000;

let ca: TestCA;
let other: TestCA;
let leaf: IssuedCert;
let chained: IssuedCert;
let wildcard: IssuedCert;
let expired: IssuedCert;
let stranger: IssuedCert;
/** leaf + intermediate, as the 'intermediate-chain' kind serves it. */
let chain: Buffer[];
let intermediate: Buffer;
let root: Buffer;

function ders(pem: string): Buffer[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p).raw);
}
const spki = (der: Buffer) => new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });

/** The record of `usage selector mtype` for `der`, computed independently of dane.ts. */
function tlsa(usage: number, selector: number, matchingType: number, der: Buffer): TlsaRecord {
  const selected = selector === 0 ? der : spki(der);
  const data = matchingType === 0 ? selected : createHash(matchingType === 1 ? 'sha256' : 'sha512').update(selected).digest();
  return { usage, selector, matchingType, data };
}
function flipped(r: TlsaRecord): TlsaRecord {
  const data = Buffer.from(r.data);
  data[data.length - 1] ^= 0x01;
  return { ...r, data };
}

before(async () => {
  ca = await TestCA.create();
  other = await TestCA.create({ commonName: 'Other Test Root CA' });
  leaf = await ca.issue({ names: [MX] });
  chained = await ca.issue({ names: [MX], kind: 'intermediate-chain' });
  wildcard = await ca.issue({ names: ['*.dane.test'], kind: 'intermediate-chain' });
  expired = await ca.issue({ names: ['somewhere.else.test'], kind: 'expired' });
  stranger = await other.issue({ names: [MX], kind: 'intermediate-chain' });
  chain = ders(chained.chainPem);
  intermediate = chain[1];
  root = ders(ca.certPem)[0];
});

const NOW = () => Date.now();
const opts = (names: string[] = [MX], now = NOW()) => ({ names, now });

function failed(m: DaneMatch): Extract<DaneMatch, { matched: false }> {
  assert.equal(m.matched, false, `expected no match, got ${JSON.stringify(m)}`);
  return m as Extract<DaneMatch, { matched: false }>;
}
function matched(m: DaneMatch): Extract<DaneMatch, { matched: true }> {
  assert.equal(m.matched, true, `expected a match, got ${JSON.stringify(m)}`);
  return m as Extract<DaneMatch, { matched: true }>;
}

// ---------------------------------------------------------------------------------------------
// Usable records

test('usable: DANE-TA and DANE-EE with selector 0/1 and matching type 0/1/2 only; PKIX usages never', () => {
  const lengths: Record<number, number> = { 0: 70, 1: 32, 2: 64, 3: 32 };
  for (let usage = 0; usage <= 4; usage++) {
    for (let selector = 0; selector <= 2; selector++) {
      for (let matchingType = 0; matchingType <= 3; matchingType++) {
        const r = { usage, selector, matchingType, data: Buffer.alloc(lengths[matchingType], 1) };
        const expected = (usage === 2 || usage === 3) && selector <= 1 && matchingType <= 2;
        assert.equal(isUsableTlsa(r), expected, formatTlsa(r).slice(0, 5));
      }
    }
  }
});

test('usable: the data length must fit the matching type', () => {
  const r = (matchingType: number, length: number) => ({ usage: 3, selector: 1, matchingType, data: Buffer.alloc(length, 2) });
  assert.equal(isUsableTlsa(r(1, 32)), true);
  assert.equal(isUsableTlsa(r(2, 64)), true);
  assert.equal(isUsableTlsa(r(0, 1)), true);
  for (const [mtype, length] of [[1, 31], [1, 33], [1, 64], [2, 32], [2, 63], [0, 0]]) {
    assert.equal(isUsableTlsa(r(mtype, length)), false, `${mtype} with ${length} bytes`);
  }
});

test('formatTlsa writes the presentation form with upper-case hex', () => {
  assert.equal(formatTlsa({ usage: 3, selector: 1, matchingType: 1, data: Buffer.from([0x0c, 0x72, 0xab]) }), '3 1 1 0C72AB');
  assert.equal(formatTlsa({ usage: 2, selector: 0, matchingType: 0, data: Buffer.alloc(0) }), '2 0 0 ');
});

// ---------------------------------------------------------------------------------------------
// DANE-EE(3)

for (const selector of [0, 1]) {
  for (const matchingType of [0, 1, 2]) {
    test(`DANE-EE 3 ${selector} ${matchingType}: matches the leaf, and a one-bit change does not`, () => {
      const good = tlsa(3, selector, matchingType, leaf.certDer);
      const m = matched(matchDane([good], [leaf.certDer], opts()));
      assert.equal(m.usage, 3);
      assert.equal(m.record, formatTlsa(good));
      const f = failed(matchDane([flipped(good)], [leaf.certDer], opts()));
      assert.equal(f.failure, 'validation-failure');
      assert.match(f.detail, /no DANE-EE\(3\) record of 1 matched the 1 certificate/);
    });
  }
}

test('DANE-EE 3 1 1 is the harness spkiSha256', () => {
  const r: TlsaRecord = { usage: 3, selector: 1, matchingType: 1, data: Buffer.from(leaf.spkiSha256, 'hex') };
  assert.equal(matched(matchDane([r], [leaf.certDer], opts())).usage, 3);
});

test('DANE-EE ignores the certificate names and dates (RFC 7672 §3.1.1)', () => {
  const r = tlsa(3, 1, 1, expired.certDer);
  const m = matched(matchDane([r], [expired.certDer], opts([MX])));
  assert.equal(m.usage, 3);
  // Even a clock ten years on does not matter.
  matched(matchDane([r], [expired.certDer], opts(['unrelated.test'], NOW() + 3650 * DAY)));
});

test('DANE-EE matches the leaf only, never a certificate above it', () => {
  const f = failed(matchDane([tlsa(3, 1, 1, intermediate)], chain, opts()));
  assert.equal(f.failure, 'validation-failure');
});

test('a mismatching digest among several records is a validation-failure that says how much was tried', () => {
  const records = [flipped(tlsa(3, 1, 1, chained.certDer)), tlsa(2, 0, 1, leaf.certDer)];
  const f = failed(matchDane(records, chain, opts()));
  assert.equal(f.failure, 'validation-failure');
  assert.match(f.detail, /DANE-EE\(3\), DANE-TA\(2\) record of 2 matched the 2 certificate/);
});

// ---------------------------------------------------------------------------------------------
// DANE-TA(2)

for (const selector of [0, 1]) {
  for (const matchingType of [0, 1, 2]) {
    test(`DANE-TA 2 ${selector} ${matchingType} on the intermediate: the path verifies and the leaf names the MX`, () => {
      const r = tlsa(2, selector, matchingType, intermediate);
      const m = matched(matchDane([r], chain, opts()));
      assert.equal(m.usage, 2);
      assert.equal(m.record, formatTlsa(r));
      assert.match(m.detail, /depth 1/);
    });
  }
}

test('DANE-TA with the right name among several reference identifiers, case and root dot aside', () => {
  matched(matchDane([tlsa(2, 0, 1, intermediate)], chain, opts(['mx-alias.dane.test', 'MX.Dane.Test.'])));
});

test('DANE-TA with a wrong name fails as certificate-host-mismatch', () => {
  const f = failed(matchDane([tlsa(2, 0, 1, intermediate)], chain, opts(['other.dane.test'])));
  assert.equal(f.failure, 'certificate-host-mismatch');
  assert.match(f.detail, /names none of other\.dane\.test/);
  assert.equal(failed(matchDane([tlsa(2, 0, 1, intermediate)], chain, opts([]))).failure, 'certificate-host-mismatch');
});

test('DANE-TA with an expired leaf fails as certificate-expired; a leaf not yet valid as certificate-not-yet-valid', () => {
  // The leaf is valid for 90 days, the intermediate for ten years: move the clock instead of the cert.
  const after = chained.notAfter.getTime() + DAY;
  const f = failed(matchDane([tlsa(2, 0, 1, intermediate)], chain, opts([MX], after)));
  assert.equal(f.failure, 'certificate-expired');
  assert.match(f.detail, /depth 0 expired/);
  const early = chained.notBefore.getTime() - DAY;
  assert.equal(failed(matchDane([tlsa(2, 0, 1, intermediate)], chain, opts([MX], early))).failure, 'certificate-not-yet-valid');
});

test('DANE-TA on the root: the path leaf → intermediate → root verifies, and everything below the anchor must be current', () => {
  const full = [...chain, root];
  matched(matchDane([tlsa(2, 1, 1, root)], full, opts()));
  // Twenty years on, the leaf and the intermediate have both expired.
  assert.equal(failed(matchDane([tlsa(2, 1, 1, root)], full, opts([MX], NOW() + 7300 * DAY))).failure, 'certificate-expired');
});

test('DANE-TA wildcards: only as the whole leftmost label, matching exactly one label', () => {
  const wchain = ders(wildcard.chainPem);
  const r = [tlsa(2, 0, 1, wchain[1])];
  matched(matchDane(r, wchain, opts(['mx.dane.test'])));
  assert.equal(failed(matchDane(r, wchain, opts(['a.mx.dane.test']))).failure, 'certificate-host-mismatch');
  assert.equal(failed(matchDane(r, wchain, opts(['dane.test']))).failure, 'certificate-host-mismatch');
});

test('DANE-TA never anchors at the leaf itself: pinning the leaf is DANE-EE', () => {
  const f = failed(matchDane([tlsa(2, 0, 1, chained.certDer)], chain, opts()));
  assert.equal(f.failure, 'validation-failure');
});

test('DANE-TA fails when the anchor did not sign the path (another CA\'s intermediate after our leaf)', () => {
  const foreign = ders(stranger.chainPem)[1];
  const f = failed(matchDane([tlsa(2, 0, 1, foreign)], [chained.certDer, foreign], opts()));
  assert.equal(f.failure, 'validation-failure');
  assert.match(f.detail, /anchor found, but certificate at depth 0 is not signed/);
});

test('DANE-TA 2 1 0 lets the server leave out the anchor: the bare key must have signed a presented certificate', () => {
  const bare = tlsa(2, 1, 0, intermediate);
  const m = matched(matchDane([bare], [chained.certDer], opts()));
  assert.match(m.detail, /signed the certificate at depth 0/);
  // The root's key signed the intermediate; the root itself was not presented.
  matched(matchDane([tlsa(2, 1, 0, root)], chain, opts()));
  // Another CA's key signed nothing here.
  const foreignRoot = ders(other.certPem)[0];
  assert.equal(failed(matchDane([tlsa(2, 1, 0, foreignRoot)], chain, opts())).failure, 'validation-failure');
  // A digest of the key is not enough without the anchor certificate to check signatures with.
  assert.equal(failed(matchDane([tlsa(2, 1, 1, intermediate)], [chained.certDer], opts())).failure, 'validation-failure');
});

// ---------------------------------------------------------------------------------------------
// Record hygiene

test('PKIX-TA/EE records handed in by mistake never authenticate', () => {
  const pkix = [tlsa(1, 1, 1, leaf.certDer), tlsa(0, 0, 1, root)];
  const f = failed(matchDane(pkix, [leaf.certDer, root], opts()));
  assert.equal(f.failure, 'tlsa-invalid');
});

test('digest agility (RFC 7671 §9): a SHA-512 record retires the SHA-256 one of the same usage and selector', () => {
  const sha256 = tlsa(3, 1, 1, leaf.certDer);
  const staleSha512 = flipped(tlsa(3, 1, 2, leaf.certDer));
  assert.deepEqual(agileRecords([sha256, staleSha512]), [staleSha512]);
  assert.equal(failed(matchDane([sha256, staleSha512], [leaf.certDer], opts())).failure, 'validation-failure');
  // Another selector is another family; Full(0) is no digest and always counts.
  matched(matchDane([sha256, flipped(tlsa(3, 0, 2, leaf.certDer))], [leaf.certDer], opts()));
  matched(matchDane([tlsa(3, 1, 0, leaf.certDer), staleSha512], [leaf.certDer], opts()));
});

test('an empty or unreadable chain is a validation-failure, never a match', () => {
  const r = [tlsa(3, 1, 1, leaf.certDer)];
  assert.equal(failed(matchDane(r, [], opts())).failure, 'validation-failure');
  assert.equal(failed(matchDane(r, [Buffer.from('not a certificate')], opts())).failure, 'validation-failure');
  // A record whose "certificate" is the same garbage still does not match it.
  const junk = Buffer.from('junk');
  assert.equal(failed(matchDane([{ usage: 3, selector: 0, matchingType: 0, data: junk }], [junk], opts())).failure, 'validation-failure');
});
