import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TLS_FAILURES, type TlsFailure } from '../tls-policy/levels.ts';
import { RESULT_TYPES, failureDetailOf, reasonCodeIn, resultTypeOf } from './result-types.ts';

const EXPECTED: Record<TlsFailure, string | null> = {
  'starttls-not-supported': 'starttls-not-supported',
  'certificate-host-mismatch': 'certificate-host-mismatch',
  'certificate-expired': 'certificate-expired',
  'certificate-not-trusted': 'certificate-not-trusted',
  'validation-failure': 'validation-failure',
  'tlsa-invalid': 'tlsa-invalid',
  'dnssec-invalid': 'dnssec-invalid',
  'dane-required': 'dane-required',
  'sts-policy-fetch-error': 'sts-policy-fetch-error',
  'sts-policy-invalid': 'sts-policy-invalid',
  'sts-webpki-invalid': 'sts-webpki-invalid',
  'starttls-refused': 'starttls-not-supported',
  'tls-handshake-failed': 'validation-failure',
  'tls-version': 'validation-failure',
  'certificate-not-yet-valid': 'validation-failure',
  'sts-mx-mismatch': 'validation-failure',
  'requiretls-unverifiable': null,
};

test('every TlsFailure has a decided RFC 8460 result type, and only §4.3 words are used', () => {
  assert.deepEqual(Object.keys(EXPECTED).sort(), [...TLS_FAILURES].sort(), 'the table above covers every failure name');
  for (const failure of TLS_FAILURES) {
    const type = resultTypeOf(failure);
    assert.equal(type, EXPECTED[failure], failure);
    if (type !== null) assert.ok((RESULT_TYPES as readonly string[]).includes(type), `${failure} -> ${type}`);
  }
});

test('RFC 8460 names map to themselves and carry no reason code of their own', () => {
  for (const type of RESULT_TYPES) {
    const detail = failureDetailOf({ failure: type });
    assert.deepEqual(detail, { resultType: type });
  }
});

test("Lacre's own failures keep their name as the reason code, with a pointer to the check that failed", () => {
  assert.deepEqual(
    failureDetailOf({ failure: 'sts-mx-mismatch', detail: 'mx.evil.test matches no mx pattern', mxHost: 'MX.Evil.Test.' }),
    {
      resultType: 'validation-failure',
      receivingMxHostname: 'mx.evil.test',
      additionalInformation: 'https://www.rfc-editor.org/rfc/rfc8461#section-4.1',
      failureReasonCode: 'sts-mx-mismatch',
    },
  );
  assert.deepEqual(failureDetailOf({ failure: 'starttls-refused', detail: 'STARTTLS refused: 454 4.7.0 TLS not available now', receivingIp: '192.0.2.7' }), {
    resultType: 'starttls-not-supported',
    receivingIp: '192.0.2.7',
    additionalInformation: 'https://www.rfc-editor.org/rfc/rfc3207#section-4',
    failureReasonCode: 'starttls-refused 454 4.7.0',
  });
  assert.equal(failureDetailOf({ failure: 'certificate-not-yet-valid', detail: 'certificate verification failed: CERT_NOT_YET_VALID' })?.failureReasonCode, 'certificate-not-yet-valid CERT_NOT_YET_VALID');
  assert.equal(failureDetailOf({ failure: 'tls-handshake-failed', detail: 'socket hang up' })?.failureReasonCode, 'tls-handshake-failed');
  assert.equal(failureDetailOf({ failure: 'tls-handshake-failed', detail: 'socket hang up' })?.additionalInformation, undefined);
});

test('requiretls-unverifiable is not a TLS-RPT failure', () => {
  assert.equal(failureDetailOf({ failure: 'requiretls-unverifiable', detail: 'no DNSSEC or MTA-STS' }), null);
});

test('session facts become failure-details fields; the error code is picked out of the prose', () => {
  assert.deepEqual(
    failureDetailOf({
      failure: 'certificate-expired',
      detail: 'certificate verification failed: CERT_HAS_EXPIRED',
      mxHost: 'mx1.rcpt.test',
      receivingIp: '2001:db8::25',
      receivingHelo: 'mx1.internal',
      sendingIp: '198.51.100.4',
    }),
    {
      resultType: 'certificate-expired',
      receivingMxHostname: 'mx1.rcpt.test',
      receivingIp: '2001:db8::25',
      receivingMxHelo: 'mx1.internal',
      sendingMtaIp: '198.51.100.4',
      failureReasonCode: 'CERT_HAS_EXPIRED',
    },
  );
});

test('reason codes are codes: OpenSSL names and quoted SMTP replies, never other numbers or prose', () => {
  assert.equal(reasonCodeIn('write EPROTO ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION'), 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
  assert.equal(reasonCodeIn('X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED'), 'X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED');
  assert.equal(reasonCodeIn('STARTTLS refused: 530 Must issue a STARTTLS command first'), '530');
  assert.equal(reasonCodeIn('handshake timed out after 450 ms'), undefined);
  assert.equal(reasonCodeIn('the server did not offer STARTTLS'), undefined);
  assert.equal(reasonCodeIn(undefined), undefined);
});
