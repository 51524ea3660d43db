import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasTlsRequiredNo } from './tls-required-header.ts';

const msg = (headers: string, body = 'Hello\r\n') => Buffer.from(`${headers}\r\n\r\n${body}`);

test('finds TLS-Required: No in any letter case and with folding', () => {
  assert.equal(hasTlsRequiredNo(msg('From: a@example.com\r\nTLS-Required: No')), true);
  assert.equal(hasTlsRequiredNo(msg('tls-required:no\r\nSubject: x')), true);
  assert.equal(hasTlsRequiredNo(msg('Subject: x\r\nTLS-Required:\r\n  NO')), true);
});

test('ignores other values, other fields and the body', () => {
  assert.equal(hasTlsRequiredNo(msg('TLS-Required: Yes')), false);
  assert.equal(hasTlsRequiredNo(msg('TLS-Required: No thanks')), false);
  assert.equal(hasTlsRequiredNo(msg('X-TLS-Required: No')), false);
  assert.equal(hasTlsRequiredNo(msg('Subject: x', 'TLS-Required: No\r\n')), false);
  assert.equal(hasTlsRequiredNo(Buffer.from('Subject: x\n\nTLS-Required: No\n')), false);
});
