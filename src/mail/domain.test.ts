import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidDomainError, checkDomain, domainKey, domainOrUndefined, normaliseDomain } from './domain.ts';
import { domainOf, normalizeAddress } from './address.ts';

test('a U-label and its A-label name one domain: both normalise to the A-label', () => {
  assert.equal(normaliseDomain('Bücher.Example.'), 'xn--bcher-kva.example');
  assert.equal(normaliseDomain('xn--bcher-kva.example'), 'xn--bcher-kva.example');
  assert.equal(normaliseDomain('  EXAMPLE.com. '), 'example.com');
  assert.equal(normaliseDomain('例え.テスト'), 'xn--r8jz45g.xn--zckzah');
  // A single label is a name; callers that need a fully qualified one check for the dot.
  assert.equal(normaliseDomain('localhost'), 'localhost');
});

test('refuses what is no domain name, saying why', () => {
  const cases: [string, string][] = [
    ['', 'empty'],
    ['.', 'empty'],
    ['a..b', 'invalid'],
    ['-bad.example', 'invalid'],
    ['exa mple.com', 'invalid'],
    ['a_b.example', 'invalid'],
    ['a%41.example', 'invalid'],
    ['bücher_x.example', 'invalid'],
    [`${'a'.repeat(64)}.example`, 'invalid'],
    [`${'a.'.repeat(127)}example`, 'too-long'],
    ['192.0.2.1', 'ip-address'],
    ['[::1]', 'ip-address'],
    ['::1', 'ip-address'],
    // URL parsing would turn these into 127.0.0.1 (RFC 3696 §2: a TLD is never all-numeric).
    ['0x7f.1', 'ip-address'],
    ['host.123', 'ip-address'],
  ];
  for (const [raw, problem] of cases) {
    const check = checkDomain(raw);
    assert.equal(check.ok, false, raw);
    assert.equal(!check.ok && check.problem, problem, raw);
    assert.equal(domainOrUndefined(raw), undefined, raw);
    assert.throws(() => normaliseDomain(raw), (err: unknown) => err instanceof InvalidDomainError && err.problem === problem && err.message.includes(`"${raw}"`));
  }
});

test('domainKey files an odd name under one key instead of failing', () => {
  assert.equal(domainKey('Bücher.Example.'), 'xn--bcher-kva.example');
  assert.equal(domainKey(' Under_Score.Example. '), 'under_score.example');
});

test('an address keeps its local part lower-cased and its domain as the A-label', () => {
  assert.equal(normalizeAddress(' Bob@Bücher.Example '), 'bob@xn--bcher-kva.example');
  assert.equal(normalizeAddress('Bob@Example.COM'), 'bob@example.com');
  assert.equal(normalizeAddress('no-at-sign'), 'no-at-sign');
  assert.equal(domainOf('bob@Bücher.Example'), 'xn--bcher-kva.example');
  assert.equal(domainOf('bob@EXAMPLE.com'), 'example.com');
  assert.equal(domainOf('"a@b"@Example.com'), 'example.com');
  assert.equal(domainOf('nobody'), '');
});
