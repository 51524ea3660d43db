// MTA-STS text as pure functions: the TXT record (RFC 8461 §3.1), the policy file (§3.2) and MX
// host matching (§4.1). The policy parser is cross-checked against mailauth's strict parser, which
// shares no code with it, wherever the two are meant to agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy as mailauthParsePolicy } from 'mailauth/lib/mta-sts.js';
import { formatMtaStsPolicy } from '../../test/harness/https-server.ts';
import { MAX_AGE_LIMIT, mxMatchesPolicy, parseStsPolicy, parseStsTxt } from './mta-sts.ts';

// ---------------------------------------------------------------------------------------------
// TXT

test('a TXT record yields its id; whitespace around ";" and a trailing ";" are allowed', () => {
  assert.deepEqual(parseStsTxt(['v=STSv1; id=20240101T000000']), { id: '20240101T000000' });
  assert.deepEqual(parseStsTxt(['v=STSv1 ;id=abc123 ; ']), { id: 'abc123' });
  assert.deepEqual(parseStsTxt(['v=STSv1;id=abc;ext.name=some-value']), { id: 'abc' });
});

test('records not starting "v=STSv1;" are discarded before counting', () => {
  assert.deepEqual(parseStsTxt(['v=spf1 -all', 'google-site-verification=xyz', 'v=STSv1; id=one']), { id: 'one' });
  // Case matters (%s"v=STSv1"), and so does the position.
  const r = parseStsTxt(['V=STSV1; id=one', ' v=STSv1; id=one', 'v=STSv10; id=one']);
  assert.ok('reason' in r);
  assert.match(r.reason, /no TXT record starts/);
});

test('two STSv1 records mean no policy, even when both are valid and agree', () => {
  const r = parseStsTxt(['v=STSv1; id=one', 'v=STSv1; id=one']);
  assert.ok('reason' in r);
  assert.match(r.reason, /2 TXT records/);
});

test('no records, a missing id, a bad id and bad fields each mean no policy, with the reason named', () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /no TXT record/],
    [['v=STSv1;'], /no id/],
    [['v=STSv1; ext=1'], /no id/],
    [['v=STSv1; ID=abc'], /no id/], // %s"id=": an "ID" field is an extension, not the id
    [['v=STSv1; id=has-dash'], /id "has-dash"/],
    [['v=STSv1; id='], /id ""/],
    [['v=STSv1; id=' + 'a'.repeat(33)], /1-32/],
    [['v=STSv1;; id=abc'], /empty field/],
    [['v=STSv1; id abc'], /not a name=value/],
    [['v=STSv1; id=abc; =x'], /not a name=value/],
    [['v=STSv1; id=abc; ext=a=b'], /value outside/],
    [['v=STSv1; id=abc; ext=caf\u00e9'], /value outside/],
  ];
  for (const [records, reason] of cases) {
    const r = parseStsTxt(records);
    assert.ok('reason' in r, `${JSON.stringify(records)} should have no policy`);
    assert.match(r.reason, reason, JSON.stringify(records));
  }
});

// ---------------------------------------------------------------------------------------------
// Policy file

test('enforce, testing and none policies parse, with patterns lower-cased and lines kept', () => {
  const enforce = parseStsPolicy(formatMtaStsPolicy({ mode: 'enforce', mx: ['MX1.Example.net', '*.backup.example.net'], maxAge: 86400 }), 'id1');
  assert.ok('policy' in enforce, JSON.stringify(enforce));
  assert.deepEqual(enforce.policy, {
    id: 'id1',
    mode: 'enforce',
    mx: ['mx1.example.net', '*.backup.example.net'],
    maxAge: 86400,
    lines: ['version: STSv1', 'mode: enforce', 'mx: MX1.Example.net', 'mx: *.backup.example.net', 'max_age: 86400'],
  });
  const testing = parseStsPolicy('version: STSv1\nmode: testing\nmx: mx.example.net\nmax_age: 0\n', 'id2');
  assert.ok('policy' in testing);
  assert.equal(testing.policy.mode, 'testing');
  assert.equal(testing.policy.maxAge, 0);
  // mode none needs no mx (§3.2).
  const none = parseStsPolicy('version: STSv1\r\nmode: none\r\nmax_age: 604800', 'id3');
  assert.ok('policy' in none);
  assert.deepEqual({ mode: none.policy.mode, mx: none.policy.mx }, { mode: 'none', mx: [] });
});

test('max_age above one year is capped to 31557600, not refused', () => {
  const r = parseStsPolicy('version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 9999999999\n', 'x');
  assert.ok('policy' in r);
  assert.equal(r.policy.maxAge, MAX_AGE_LIMIT);
  assert.equal(MAX_AGE_LIMIT, 31557600);
});

test('unknown fields and lines are ignored; the defined fields keep their grammar', () => {
  const r = parseStsPolicy('version: STSv1\nmode: enforce\nfuture_field: anything at all\n# note\nmx:   mx.example.net  \nmax_age: 60\n', 'x');
  assert.ok('policy' in r, JSON.stringify(r));
  assert.deepEqual(r.policy.mx, ['mx.example.net']);
});

test('syntax errors are refused, naming what is wrong', () => {
  const base = { version: 'version: STSv1', mode: 'mode: enforce', mx: 'mx: mx.example.net', maxAge: 'max_age: 86400' };
  const cases: Array<[string[], RegExp]> = [
    [[], /no version/],
    [[base.mode, base.mx, base.maxAge], /no version/],
    [['version: STSv2', base.mode, base.mx, base.maxAge], /version "STSv2"/],
    [[base.version, base.mx, base.maxAge], /no mode/],
    [[base.version, 'mode: enforced', base.mx, base.maxAge], /mode "enforced"/],
    [[base.version, 'mode: Enforce', base.mx, base.maxAge], /mode "Enforce"/],
    [[base.version, 'Mode: enforce', base.mx, base.maxAge], /no mode/],
    [[base.version, base.mode, base.mx], /no max_age/],
    [[base.version, base.mode, base.mx, 'max_age: soon'], /max_age "soon"/],
    [[base.version, base.mode, base.mx, 'max_age: -1'], /max_age "-1"/],
    [[base.version, base.mode, base.mx, 'max_age: 12345678901'], /1-10 digits/],
    [[base.version, base.mode, base.maxAge], /mode enforce without any mx/],
    [[base.version, 'mode: testing', base.maxAge], /mode testing without any mx/],
    [[base.version, base.mode, 'mx: mx..example.net', base.maxAge], /line 3: mx "mx\.\.example\.net"/],
    [[base.version, base.mode, 'mx: mx.*.example.net', base.maxAge], /mx "mx\.\*\.example\.net"/],
    [[base.version, base.mode, 'mx: -mx.example.net', base.maxAge], /mx "-mx\.example\.net"/],
    [[base.version, base.mode, 'mx: ' + 'a'.repeat(64) + '.example.net', base.maxAge], /mx "a+/],
    [[base.version, base.mode, 'mode: none', base.mx, base.maxAge], /line 3: mode appears twice/],
  ];
  for (const [lines, error] of cases) {
    const r = parseStsPolicy(lines.join('\r\n'), 'x');
    assert.ok('error' in r, `${JSON.stringify(lines)} should be refused`);
    assert.match(r.error, error, JSON.stringify(lines));
  }
  // The same field repeated with the same value is not ambiguous.
  assert.ok('policy' in parseStsPolicy([base.version, base.mode, base.mode, base.mx, base.maxAge].join('\n'), 'x'));
});

test('the parser agrees with mailauth strict mode on acceptance and on the policy read', () => {
  const bodies = [
    formatMtaStsPolicy({ mode: 'enforce', mx: ['mx1.example.net', '*.example.org'], maxAge: 604800 }),
    formatMtaStsPolicy({ mode: 'testing', mx: ['MX.Example.NET'], maxAge: 1 }),
    formatMtaStsPolicy({ mode: 'none', mx: [], maxAge: 86400 }),
    formatMtaStsPolicy({ mode: 'enforce', mx: [], maxAge: 86400 }),
    formatMtaStsPolicy({ mode: 'enforce', mx: ['mx.example.net'], maxAge: 86400, version: 'STSv2' }),
    'version: STSv1\nmode: enforce\nmx: mx.example.net\nmx: mx.example.net\nmax_age: 31557600\nextension: yes\n',
    'version: STSv1\nmode: Enforce\nmx: mx.example.net\nmax_age: 100\n',
    'version: STSv1\nMode: enforce\nmx: mx.example.net\nmax_age: 100\n',
    'version: STSv1\nmode: enforce\nmx: bad_host.example.net\nmax_age: 100\n',
    'version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 1e3\n',
    'version: STSv1\nmode: enforce\nmx: mx.example.net\n',
    'version:STSv1\nmode:\tenforce\nmx:mx.example.net\nmax_age:\t100\t\n',
    'no fields here',
    '',
  ];
  for (const body of bodies) {
    const ours = parseStsPolicy(body, 'x');
    let theirs: { mode?: string; mx?: string[]; maxAge?: number } | undefined;
    try {
      theirs = mailauthParsePolicy(body, { strict: true }) as typeof theirs;
    } catch {
      theirs = undefined;
    }
    assert.equal('policy' in ours, theirs !== undefined, `acceptance differs for ${JSON.stringify(body)}`);
    if ('policy' in ours && theirs) {
      assert.equal(ours.policy.mode, theirs.mode, body);
      assert.equal(ours.policy.maxAge, theirs.maxAge, body);
      assert.deepEqual(ours.policy.mx, theirs.mx ?? [], body);
    }
  }
});

test('where we differ from mailauth strict mode, on purpose', () => {
  // A max_age over the limit: mailauth refuses the policy, we cap it (RFC 8461 §3.2 "maximum value").
  const big = 'version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 31557601\n';
  assert.throws(() => mailauthParsePolicy(big, { strict: true }));
  assert.ok('policy' in parseStsPolicy(big, 'x'));
  // Two different modes: mailauth takes the first, we refuse to guess.
  const twice = 'version: STSv1\nmode: none\nmode: enforce\nmx: mx.example.net\nmax_age: 100\n';
  assert.equal(mailauthParsePolicy(twice, { strict: true }).mode, 'none');
  assert.ok('error' in parseStsPolicy(twice, 'x'));
});

// ---------------------------------------------------------------------------------------------
// MX matching

test('an exact pattern matches its host, whatever the case and a trailing dot', () => {
  assert.equal(mxMatchesPolicy('mx1.example.net', ['mx1.example.net']), true);
  assert.equal(mxMatchesPolicy('MX1.Example.NET.', ['mx1.example.net']), true);
  assert.equal(mxMatchesPolicy('mx1.example.net', ['MX1.EXAMPLE.NET.']), true);
  assert.equal(mxMatchesPolicy('mx2.example.net', ['mx1.example.net']), false);
  assert.equal(mxMatchesPolicy('mx1.example.net.evil', ['mx1.example.net']), false);
  assert.equal(mxMatchesPolicy('evilmx1.example.net', ['mx1.example.net']), false);
});

test('a wildcard matches exactly one leftmost label', () => {
  const patterns = ['*.example.net'];
  assert.equal(mxMatchesPolicy('mx1.example.net', patterns), true);
  assert.equal(mxMatchesPolicy('MX1.EXAMPLE.NET.', patterns), true);
  assert.equal(mxMatchesPolicy('example.net', patterns), false);
  assert.equal(mxMatchesPolicy('a.b.example.net', patterns), false);
  assert.equal(mxMatchesPolicy('mx1.evilexample.net', patterns), false);
  assert.equal(mxMatchesPolicy('.example.net', patterns), false);
  // A host name never carries a wildcard itself.
  assert.equal(mxMatchesPolicy('*.example.net', patterns), false);
  assert.equal(mxMatchesPolicy('*.example.net', ['*.example.net', '*.*.example.net']), false);
});

test('any one matching pattern is enough; none is none', () => {
  assert.equal(mxMatchesPolicy('backup.example.org', ['mx1.example.net', '*.example.org']), true);
  assert.equal(mxMatchesPolicy('mx1.example.net', []), false);
  assert.equal(mxMatchesPolicy('', ['mx1.example.net']), false);
});

test('Unicode host names are compared as A-labels', () => {
  assert.equal(mxMatchesPolicy('mx.bücher.example', ['mx.xn--bcher-kva.example']), true);
  assert.equal(mxMatchesPolicy('mx.bücher.example', ['*.xn--bcher-kva.example']), true);
});
