// Asynchronous bounces: a DSN sent to a message's return path over real SMTP marks the failed
// recipient bounced and suppresses a dead address; forged return paths are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { openTempData } from '../../test/harness/temp-data.ts';
import { createLogger } from '../log/logger.ts';
import { returnPathAddress } from '../compose/return-path.ts';
import { startBounceReceiver } from './bounce-receiver.ts';
import { parseDeliveryStatus } from './dsn-report.ts';

function dsn(recipients: Array<{ address: string; action: string; status: string; diagnostic?: string }>): Buffer {
  const blocks = recipients
    .map((r) => [`Final-Recipient: rfc822; ${r.address}`, `Action: ${r.action}`, `Status: ${r.status}`, ...(r.diagnostic ? [`Diagnostic-Code: smtp; ${r.diagnostic}`] : [])].join('\r\n'))
    .join('\r\n\r\n');
  return Buffer.from(
    [
      'From: MAILER-DAEMON@mx.rcpt.test',
      'To: bounces',
      'Subject: Undelivered Mail Returned to Sender',
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"',
      '',
      '--BOUNDARY',
      'Content-Type: text/plain',
      '',
      'Your message could not be delivered.',
      '--BOUNDARY',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.rcpt.test',
      '',
      blocks,
      '',
      '--BOUNDARY--',
      '',
    ].join('\r\n'),
  );
}

test('parseDeliveryStatus reads each recipient block of a multipart/report', () => {
  const parsed = parseDeliveryStatus(
    dsn([
      { address: 'gone@rcpt.test', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 no such user' },
      { address: '<slow@rcpt.test>', action: 'delayed', status: '4.4.1' },
    ]),
  );
  assert.deepEqual(parsed, [
    { finalRecipient: 'gone@rcpt.test', action: 'failed', status: '5.1.1', diagnostic: 'smtp; 550 5.1.1 no such user' },
    { finalRecipient: 'slow@rcpt.test', action: 'delayed', status: '4.4.1', diagnostic: null },
  ]);
  assert.deepEqual(parseDeliveryStatus(Buffer.from('Subject: out of office\r\n\r\nI am away.\r\n')), []);
});

test('a DSN to the return path bounces the delivered recipient and suppresses it; other recipients and forged addresses are untouched', async () => {
  const data = await openTempData();
  const tag = (id: string) => data.sealer.lookupHash('return-path', id);
  const receiver = await startBounceReceiver({
    host: '127.0.0.1',
    port: 0,
    hostname: 'mta.lacre.test',
    store: data.store,
    localPart: 'bounce',
    tag,
    logger: createLogger({ level: 'silent' }),
  });
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: receiver.port, secure: false, ignoreTLS: true });
  try {
    const messageId = '019a0000-0000-7000-8000-000000000001';
    const rp = returnPathAddress({ localPart: 'bounce', domain: 'bounces.shop.test', messageId }, tag);
    await data.queue.enqueue({ messageId, sender: rp, recipients: ['gone@rcpt.test', 'fine@rcpt.test'], content: Buffer.from('Subject: x\r\n\r\nx\r\n'), source: 'api' });
    // Both were accepted by the recipient's server.
    const claimed = await data.store.claimDue({ owner: 't', now: Date.now(), leaseMs: 60_000, limit: 10 });
    for (const c of claimed) {
      await data.store.completeAttempt({
        recipientId: c.recipientId,
        attemptId: c.attemptId,
        outcome: 'delivered',
        state: 'delivered',
        nextAttemptAt: 0,
        reason: null,
        replyCode: 250,
        enhancedCode: '2.0.0',
        detail: {},
        endedAt: Date.now(),
      });
    }

    await transport.sendMail({
      envelope: { from: '', to: [rp] },
      raw: dsn([
        { address: 'gone@rcpt.test', action: 'failed', status: '5.1.1', diagnostic: '550 5.1.1 user unknown' },
        { address: 'fine@rcpt.test', action: 'delayed', status: '4.2.2' },
      ]),
    });
    const view = await data.store.getMessage(messageId);
    const states = Object.fromEntries(view!.recipients.map((r) => [r.address, r.state]));
    assert.deepEqual(states, { 'gone@rcpt.test': 'bounced', 'fine@rcpt.test': 'delivered' });
    assert.match(view!.recipients.find((r) => r.address === 'gone@rcpt.test')!.reason!, /bounced after delivery: 5\.1\.1/);
    assert.equal((await data.store.findSuppressed(['gone@rcpt.test', 'fine@rcpt.test'])).size, 1);

    const forged = rp.replace(/\.[0-9a-f]{12}@/, '.0123456789ab@');
    await assert.rejects(
      transport.sendMail({ envelope: { from: '', to: [forged] }, raw: dsn([{ address: 'fine@rcpt.test', action: 'failed', status: '5.1.1' }]) }),
      (err: { responseCode?: number }) => err.responseCode === 550,
    );
    await assert.rejects(
      transport.sendMail({ envelope: { from: '', to: ['postmaster@bounces.shop.test'] }, raw: dsn([]) }),
      (err: { responseCode?: number }) => err.responseCode === 550,
    );
    assert.equal((await data.store.getMessage(messageId))!.recipients.find((r) => r.address === 'fine@rcpt.test')!.state, 'delivered');
  } finally {
    transport.close();
    await receiver.close();
    await data.close();
  }
});
