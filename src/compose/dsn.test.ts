import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn } from './dsn.ts';

const original = Buffer.from('From: App <app@sender.test>\r\nTo: <gone@rcpt.test>\r\nSubject: Invoice 42\r\n\r\nSECRET BODY\r\n');

test('a bounce DSN is a multipart/report with a delivery-status part and only the original headers', () => {
  const dsn = buildDsn({
    reportingMta: 'mta.lacre.test',
    queueId: 'q1',
    arrivalDate: new Date('2026-11-21T10:00:00Z'),
    originalSender: 'app@sender.test',
    recipients: [
      {
        address: 'gone@rcpt.test',
        action: 'failed',
        status: '5.1.1',
        remoteMta: 'mx.rcpt.test',
        diagnostic: '550 5.1.1 <gone@rcpt.test>: no such user\r\nInjected: header',
        lastAttemptAt: new Date('2026-11-21T10:00:05Z'),
      },
    ],
    originalContent: original,
  }).toString();
  const boundary = /boundary="([^"]+)"/.exec(dsn)![1];
  assert.match(dsn, /^From: Mail Delivery System <MAILER-DAEMON@mta\.lacre\.test>\r\n/);
  assert.match(dsn, /\r\nTo: <app@sender\.test>\r\n/);
  assert.match(dsn, /\r\nAuto-Submitted: auto-replied\r\n/);
  assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
  assert.match(dsn, /\r\nContent-Type: message\/delivery-status\r\n\r\nReporting-MTA: dns; mta\.lacre\.test\r\n/);
  assert.match(dsn, /\r\nFinal-Recipient: rfc822; gone@rcpt\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx\.rcpt\.test\r\n/);
  assert.match(dsn, /Diagnostic-Code: smtp; 550 5\.1\.1 <gone@rcpt\.test>: no such user Injected: header\r\n/, 'remote text cannot inject header lines');
  assert.match(dsn, /Content-Type: text\/rfc822-headers\r\n\r\nFrom: App <app@sender\.test>\r\nTo: <gone@rcpt\.test>\r\nSubject: Invoice 42\r\n/);
  assert.ok(!dsn.includes('SECRET BODY'), 'the original body is never returned');
  assert.ok(dsn.endsWith(`--${boundary}--\r\n`));
  assert.equal(dsn.split(`--${boundary}\r\n`).length, 4);
});

test('non-ASCII recipients use the utf-8 address type and global delivery status (RFC 6533)', () => {
  const dsn = buildDsn({
    reportingMta: 'mta.lacre.test',
    queueId: 'q2',
    arrivalDate: new Date(),
    originalSender: 'app@sender.test',
    recipients: [{ address: 'josé@rcpt.test', action: 'failed', status: '4.4.7', lastAttemptAt: new Date() }],
    originalContent: null,
  }).toString();
  assert.match(dsn, /Content-Type: message\/global-delivery-status/);
  assert.match(dsn, /Final-Recipient: utf-8; josé@rcpt\.test/);
  assert.match(dsn, /expired in the queue/);
  assert.ok(!dsn.includes('rfc822-headers'));
});
