// What submission changes in a message before compose: the Mailjet relay headers become metadata
// and leave the message, a Received field is added, and nothing else moves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageFormatError } from '../compose/message-headers.ts';
import { RelayHeaderError, prepareSubmittedMessage } from './smtp-message.ts';

const trace = { hostname: 'mta.example.test', sessionId: 'abc123', at: new Date(Date.UTC(2026, 10, 21, 10, 0, 0)) };

test('X-MJ-CustomID and X-MJ-EventPayload (folded, any case, RFC 2047 encoded) become metadata and are removed', () => {
  const raw = Buffer.from(
    'From: shop@example.test\r\n' +
      'x-mj-customid: order-42\r\n' +
      'X-MJ-EventPayload: =?UTF-8?Q?=7B=22order=22=3A42=2C?=\r\n =?UTF-8?Q?=22note=22=3A=22gr=C3=BC=C3=9Fe=22=7D?=\r\n' +
      'Subject: hi\r\n\r\nbody =?UTF-8?Q?x?= stays\r\n',
  );
  const prepared = prepareSubmittedMessage(raw, trace);
  assert.deepEqual(prepared.metadata, { customId: 'order-42', eventPayload: '{"order":42,"note":"grüße"}' });
  const text = prepared.content.toString('latin1');
  assert.doesNotMatch(text, /X-MJ-/i);
  assert.ok(text.endsWith('From: shop@example.test\r\nSubject: hi\r\n\r\nbody =?UTF-8?Q?x?= stays\r\n'), text);
  assert.ok(text.startsWith('Received: by mta.example.test (Lacre) with ESMTPSA id abc123;\r\n\tSat, 21 Nov 2026 10:00:00 +0000\r\n'), text);
});

test('without relay headers the metadata is empty, an empty header counts as absent, and bare LF becomes CRLF', () => {
  const prepared = prepareSubmittedMessage(Buffer.from('From: a@example.test\nX-MJ-CustomID:\n\nline\n'), trace);
  assert.deepEqual(prepared.metadata, {});
  assert.match(prepared.content.toString(), /\r\nFrom: a@example\.test\r\n\r\nline\r\n$/);
});

test('a relay header given twice or over the send API\'s length limit, or a header section that cannot be parsed, is refused', () => {
  assert.throws(
    () => prepareSubmittedMessage(Buffer.from('From: a@example.test\r\nX-MJ-CustomID: 1\r\nX-MJ-CustomID: 2\r\n\r\nx'), trace),
    (err: unknown) => err instanceof RelayHeaderError && /more than one X-MJ-CustomID/.test(err.message),
  );
  assert.throws(
    () => prepareSubmittedMessage(Buffer.from(`From: a@example.test\r\nX-MJ-CustomID: ${'x'.repeat(256)}\r\n\r\nx`), trace),
    (err: unknown) => err instanceof RelayHeaderError && /X-MJ-CustomID is longer than 255 characters/.test(err.message),
  );
  assert.doesNotThrow(() => prepareSubmittedMessage(Buffer.from(`From: a@example.test\r\nX-MJ-CustomID: ${'x'.repeat(255)}\r\n\r\nx`), trace));
  assert.throws(() => prepareSubmittedMessage(Buffer.from(' folded first\r\nFrom: a@example.test\r\n\r\nx'), trace), MessageFormatError);
});
