// TLS levels as pure functions: the policy map's syntax and matching, every level against every
// connection fact, and the naming of Node/OpenSSL errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TLS_FAILURES,
  TLS_LEVELS,
  classifyTlsError,
  decidePolicy,
  judgeTls,
  meetsTlsFloor,
  parseTlsPolicies,
  type TlsJudgement,
  type TlsLevel,
  type TlsStepFacts,
} from './levels.ts';

test('the five levels, weakest first; dane is chosen by evidence, never configured', () => {
  assert.deepEqual([...TLS_LEVELS], ['none', 'may', 'encrypt', 'verify', 'dane']);
});

test('parses domain=level lists, normalising case, spaces, trailing dots and Unicode names', () => {
  const p = parseTlsPolicies(' Example.COM = verify , .bank.example= ENCRYPT,legacy.example.=none, bücher.example=may,');
  assert.deepEqual(
    [...p],
    [
      ['example.com', 'verify'],
      ['.bank.example', 'encrypt'],
      ['legacy.example', 'none'],
      ['xn--bcher-kva.example', 'may'],
    ],
  );
  assert.equal(parseTlsPolicies('').size, 0);
  assert.equal(parseTlsPolicies('  ').size, 0);
});

test('a bad entry is refused with the entry and the allowed levels named', () => {
  assert.throws(() => parseTlsPolicies('example.com=verify,example.org=secure'), (err: Error) => {
    assert.match(err.message, /"example\.org=secure"/);
    assert.match(err.message, /unknown level "secure"/);
    assert.match(err.message, /none, may, encrypt, verify/);
    return true;
  });
  assert.throws(() => parseTlsPolicies('example.com'), /"example\.com": expected domain=level .*none, may, encrypt, verify/);
  assert.throws(() => parseTlsPolicies('=verify'), /"=verify": "" is not a domain name/);
  assert.throws(() => parseTlsPolicies('exa mple.com=verify'), /"exa mple\.com=verify": .* is not a domain name/);
  assert.throws(() => parseTlsPolicies('-bad.example=may'), /not a domain name/);
  assert.throws(() => parseTlsPolicies('..example.com=may'), /not a domain name/);
  assert.throws(() => parseTlsPolicies('example.com='), /unknown level ""/);
});

test('a domain given two different levels is refused; the same level twice is harmless', () => {
  assert.throws(() => parseTlsPolicies('example.com=verify,EXAMPLE.com=may'), /example\.com is already set to verify/);
  assert.deepEqual([...parseTlsPolicies('example.com=verify,example.com.=verify')], [['example.com', 'verify']]);
  // The apex and its subdomains are different keys.
  assert.equal(parseTlsPolicies('example.com=verify,.example.com=may').size, 2);
});

test('exact match beats the nearest .parent match, which beats the default', () => {
  const p = parseTlsPolicies('example.com=verify,.example.com=encrypt,.mx.example.com=none,other.example=may');
  assert.deepEqual(decidePolicy('example.com', p, 'may'), { level: 'verify', source: 'static:verify', match: 'example.com' });
  assert.deepEqual(decidePolicy('a.example.com', p, 'may'), { level: 'encrypt', source: 'static:encrypt', match: '.example.com' });
  assert.deepEqual(decidePolicy('deep.a.example.com', p, 'may'), { level: 'encrypt', source: 'static:encrypt', match: '.example.com' });
  assert.deepEqual(decidePolicy('x.mx.example.com', p, 'may'), { level: 'none', source: 'static:none', match: '.mx.example.com' });
  // ".mx.example.com" covers subdomains of mx.example.com only; mx.example.com itself falls to ".example.com".
  assert.deepEqual(decidePolicy('mx.example.com', p, 'may'), { level: 'encrypt', source: 'static:encrypt', match: '.example.com' });
  assert.deepEqual(decidePolicy('notexample.com', p, 'may'), { level: 'may', source: 'default:may' });
  assert.deepEqual(decidePolicy('elsewhere.test', p, 'verify'), { level: 'verify', source: 'default:verify' });
});

test('a parent key does not match the apex domain', () => {
  const p = parseTlsPolicies('.example.com=verify');
  assert.equal(decidePolicy('example.com', p, 'may').level, 'may');
  assert.equal(decidePolicy('mail.example.com', p, 'may').level, 'verify');
});

test('lookups ignore case and a trailing dot, and find Unicode domains by their A-label', () => {
  const p = parseTlsPolicies('example.com=verify,xn--bcher-kva.example=encrypt');
  assert.equal(decidePolicy('EXAMPLE.com.', p, 'none').level, 'verify');
  assert.equal(decidePolicy('bücher.example', p, 'none').level, 'encrypt');
  // Garbage never matches anything but the default.
  assert.deepEqual(decidePolicy('', p, 'may'), { level: 'may', source: 'default:may' });
  assert.deepEqual(decidePolicy('not a domain', p, 'may'), { level: 'may', source: 'default:may' });
});

// ---------------------------------------------------------------------------------------------
// judgeTls: every level against every kind of fact.

const plaintext = (failure?: string): TlsJudgement =>
  (failure ? { action: 'plaintext', failure, detail: DETAIL } : { action: 'plaintext' }) as TlsJudgement;
const proceed: TlsJudgement = { action: 'proceed' };
const defer = (failure: string): TlsJudgement => ({ action: 'defer', failure, detail: DETAIL }) as TlsJudgement;
const retry = (failure: string): TlsJudgement => ({ action: 'retry-plaintext', failure, detail: DETAIL }) as TlsJudgement;
const DETAIL = '<detail>';

function withoutDetail(j: TlsJudgement): TlsJudgement {
  return 'detail' in j ? ({ ...j, detail: DETAIL } as TlsJudgement) : j;
}

const established = (over: Partial<Extract<TlsStepFacts, { step: 'established' }>> = {}): TlsStepFacts => ({
  step: 'established',
  protocol: 'TLSv1.3',
  chainVerified: true,
  hostnameMatches: true,
  ...over,
});

const JUDGEMENTS: { facts: string; input: TlsStepFacts; expect: Record<TlsLevel, TlsJudgement> }[] = [
  {
    facts: 'STARTTLS offered',
    input: { step: 'ehlo', starttlsOffered: true },
    expect: { none: plaintext(), may: proceed, encrypt: proceed, verify: proceed, dane: proceed },
  },
  {
    facts: 'STARTTLS not offered (or stripped)',
    input: { step: 'ehlo', starttlsOffered: false },
    expect: {
      none: plaintext(),
      may: plaintext('starttls-not-supported'),
      encrypt: defer('starttls-not-supported'),
      verify: defer('starttls-not-supported'),
      dane: defer('starttls-not-supported'),
    },
  },
  {
    facts: 'plaintext retry after a failed handshake',
    input: { step: 'ehlo', starttlsOffered: true, plaintextRetry: { failure: 'tls-version', detail: 'x' } },
    expect: { none: plaintext(), may: plaintext('tls-version'), encrypt: defer('tls-version'), verify: defer('tls-version'), dane: defer('tls-version') },
  },
  {
    facts: 'STARTTLS answered 220',
    input: { step: 'starttls-reply', code: 220, text: 'go ahead' },
    expect: { none: plaintext(), may: proceed, encrypt: proceed, verify: proceed, dane: proceed },
  },
  {
    facts: 'STARTTLS answered 454',
    input: { step: 'starttls-reply', code: 454, text: '4.7.0 TLS not available' },
    expect: {
      none: plaintext(),
      may: plaintext('starttls-refused'),
      encrypt: defer('starttls-refused'),
      verify: defer('starttls-refused'),
      dane: defer('starttls-refused'),
    },
  },
  {
    facts: 'STARTTLS answered 250 (not the 220 RFC 3207 requires)',
    input: { step: 'starttls-reply', code: 250, text: 'ok?' },
    expect: {
      none: plaintext(),
      may: plaintext('starttls-refused'),
      encrypt: defer('starttls-refused'),
      verify: defer('starttls-refused'),
      dane: defer('starttls-refused'),
    },
  },
  {
    facts: 'handshake failed on the protocol version',
    input: { step: 'handshake', failure: 'tls-version', detail: 'alert 70' },
    expect: { none: retry('tls-version'), may: retry('tls-version'), encrypt: defer('tls-version'), verify: defer('tls-version'), dane: defer('tls-version') },
  },
  {
    facts: 'handshake failed otherwise',
    input: { step: 'handshake', failure: 'tls-handshake-failed', detail: 'reset' },
    expect: {
      none: retry('tls-handshake-failed'),
      may: retry('tls-handshake-failed'),
      encrypt: defer('tls-handshake-failed'),
      verify: defer('tls-handshake-failed'),
      dane: defer('tls-handshake-failed'),
    },
  },
  {
    facts: 'TLS 1.3, trusted chain, matching name',
    input: established(),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('validation-failure') },
  },
  {
    facts: 'TLS 1.2, trusted chain, matching name',
    input: established({ protocol: 'TLSv1.2' }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('validation-failure') },
  },
  {
    facts: 'TLS 1.1 somehow negotiated',
    input: established({ protocol: 'TLSv1.1' }),
    expect: { none: retry('tls-version'), may: retry('tls-version'), encrypt: defer('tls-version'), verify: defer('tls-version'), dane: defer('tls-version') },
  },
  {
    facts: 'expired certificate',
    input: established({ chainVerified: false, chainError: 'CERT_HAS_EXPIRED' }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-expired'), dane: defer('validation-failure') },
  },
  {
    facts: 'not-yet-valid certificate',
    input: established({ chainVerified: false, chainError: 'CERT_NOT_YET_VALID' }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-not-yet-valid'), dane: defer('validation-failure') },
  },
  {
    facts: 'self-signed certificate',
    input: established({ chainVerified: false, chainError: 'DEPTH_ZERO_SELF_SIGNED_CERT' }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-not-trusted'), dane: defer('validation-failure') },
  },
  {
    facts: 'chain failure without a code',
    input: established({ chainVerified: false }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('validation-failure'), dane: defer('validation-failure') },
  },
  {
    facts: 'chain failure with an unknown code',
    input: established({ chainVerified: false, chainError: 'SOMETHING_NEW' }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('validation-failure'), dane: defer('validation-failure') },
  },
  {
    facts: 'trusted chain, wrong name',
    input: established({ hostnameMatches: false }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-host-mismatch'), dane: defer('validation-failure') },
  },
  {
    facts: 'expired and wrong name: the chain error is reported first',
    input: established({ chainVerified: false, chainError: 'CERT_HAS_EXPIRED', hostnameMatches: false }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-expired'), dane: defer('validation-failure') },
  },
  // Level `dane` (RFC 7672 §3): the TLSA match decides alone; the WebPKI facts do not count for or against.
  {
    facts: 'TLSA matched, although the WebPKI chain is expired and names another host',
    input: established({ chainVerified: false, chainError: 'CERT_HAS_EXPIRED', hostnameMatches: false, dane: { matched: true, detail: 'x' } }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: defer('certificate-expired'), dane: proceed },
  },
  {
    facts: 'TLSA not matched, although the WebPKI chain is trusted and names the host',
    input: established({ dane: { matched: false, detail: 'x', failure: 'validation-failure' } }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('validation-failure') },
  },
  {
    facts: 'DANE-TA anchored, but the leaf names another host',
    input: established({ dane: { matched: false, detail: 'x', failure: 'certificate-host-mismatch' } }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('certificate-host-mismatch') },
  },
  {
    facts: 'DANE-TA anchored, but the leaf has expired',
    input: established({ dane: { matched: false, detail: 'x', failure: 'certificate-expired' } }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('certificate-expired') },
  },
  {
    facts: 'TLSA not matched, failure unnamed',
    input: established({ dane: { matched: false, detail: 'x' } }),
    expect: { none: proceed, may: proceed, encrypt: proceed, verify: proceed, dane: defer('validation-failure') },
  },
  {
    facts: 'TLSA matched over TLS 1.1: the protocol floor comes first',
    input: established({ protocol: 'TLSv1.1', dane: { matched: true, detail: 'x' } }),
    expect: { none: retry('tls-version'), may: retry('tls-version'), encrypt: defer('tls-version'), verify: defer('tls-version'), dane: defer('tls-version') },
  },
];

for (const row of JUDGEMENTS) {
  test(`judgeTls: ${row.facts}`, () => {
    for (const level of TLS_LEVELS) {
      assert.deepEqual(withoutDetail(judgeTls(level, row.input)), row.expect[level], `level ${level}`);
    }
  });
}

test('judgements that refuse or downgrade always explain themselves', () => {
  for (const row of JUDGEMENTS) {
    for (const level of TLS_LEVELS) {
      const j = judgeTls(level, row.input);
      if (j.action === 'defer' || j.action === 'retry-plaintext' || (j.action === 'plaintext' && j.failure)) {
        assert.ok(j.detail && j.detail.length > 0, `${row.facts} / ${level}`);
        assert.ok(TLS_FAILURES.includes(j.failure!), `${row.facts} / ${level}`);
      }
    }
  }
});

test('encrypt, verify and dane never answer "plaintext" or "retry-plaintext", whatever the facts', () => {
  for (const row of JUDGEMENTS) {
    for (const level of ['encrypt', 'verify', 'dane'] as const) {
      const action = judgeTls(level, row.input).action;
      assert.ok(action === 'proceed' || action === 'defer', `${row.facts} / ${level}: ${action}`);
    }
  }
});

test('TLS 1.2 is the floor; unknown later versions pass, unknown older names fail', () => {
  assert.deepEqual(
    ['SSLv3', 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3', 'TLSv1.4', null, undefined, '', 'bogus'].map(meetsTlsFloor),
    [false, false, false, true, true, true, false, false, false, false],
  );
});

// ---------------------------------------------------------------------------------------------
// classifyTlsError

const CLASSIFY: [input: unknown, expected: string][] = [
  ['CERT_HAS_EXPIRED', 'certificate-expired'],
  ['CERT_NOT_YET_VALID', 'certificate-not-yet-valid'],
  ['ERR_TLS_CERT_ALTNAME_INVALID', 'certificate-host-mismatch'],
  ['HOSTNAME_MISMATCH', 'certificate-host-mismatch'],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', 'certificate-not-trusted'],
  ['SELF_SIGNED_CERT_IN_CHAIN', 'certificate-not-trusted'],
  ['UNABLE_TO_GET_ISSUER_CERT', 'certificate-not-trusted'],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'certificate-not-trusted'],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'certificate-not-trusted'],
  ['CERT_UNTRUSTED', 'certificate-not-trusted'],
  ['CERT_SIGNATURE_FAILURE', 'validation-failure'],
  ['CERT_REVOKED', 'validation-failure'],
  ['INVALID_PURPOSE', 'validation-failure'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' }), 'tls-version'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_UNSUPPORTED_PROTOCOL' }), 'tls-version'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_NO_PROTOCOLS_AVAILABLE' }), 'tls-version'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_SSLV3_ALERT_PROTOCOL_VERSION' }), 'tls-version'],
  [new Error('error:0A000102:SSL routines::unsupported protocol'), 'tls-version'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }), 'tls-handshake-failed'],
  [Object.assign(new Error('x'), { code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' }), 'tls-handshake-failed'],
  [Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'tls-handshake-failed'],
  [Object.assign(new Error('x'), { code: 'CERT_HAS_EXPIRED' }), 'certificate-expired'],
  [new Error('certificate has expired'), 'certificate-expired'],
  [new Error("Hostname/IP does not match certificate's altnames: Host: a. is not in the cert's altnames"), 'certificate-host-mismatch'],
  [new Error('self-signed certificate'), 'certificate-not-trusted'],
  [new Error('unable to verify the first certificate'), 'tls-handshake-failed'],
  [new Error('unable to get local issuer certificate'), 'certificate-not-trusted'],
  ['SOMETHING_NEW', 'tls-handshake-failed'],
  [undefined, 'tls-handshake-failed'],
  [null, 'tls-handshake-failed'],
  [42, 'tls-handshake-failed'],
];

test('classifyTlsError names Node and OpenSSL errors, from codes, Error objects and messages', () => {
  for (const [input, expected] of CLASSIFY) {
    assert.equal(classifyTlsError(input), expected, String((input as NodeJS.ErrnoException)?.code ?? (input as Error)?.message ?? input));
  }
});
