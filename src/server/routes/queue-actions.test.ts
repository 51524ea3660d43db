// POST /v1/messages/{id}/retry|hold|release|delete|bounce through a real `lacre serve`, mail
// delivered to loopback sinks: held mail is not delivered when its destination would take it, a
// release through the API wakes the server's runner at once (the safety-net poll is 30 s here),
// a bounce reaches the sender as a DSN, a delete leaves nothing; errors are Mailjet-shaped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startSmtpSink } from '../../../test/harness/smtp-sink.ts';
import { startServeProcess } from '../../../test/harness/serve-process.ts';
import { openTempData, tempDir } from '../../../test/harness/temp-data.ts';
import { waitFor } from '../../../test/harness/wait.ts';
import { ApiKeys, type CreatedApiKey } from '../../access/api-keys.ts';

test('queue actions over HTTP: hold, release (delivered at once), bounce with a DSN, delete; admin only', { timeout: 120_000 }, async () => {
  let accepting = false;
  const dest = await startSmtpSink({ tls: 'none', replies: { rcpt: () => (accepting ? undefined : { code: 451, text: '4.3.0 not now' }) } });
  const senders = await startSmtpSink({ tls: 'none' });
  const dataDir = tempDir('lacre-queue-api-');
  const data = await openTempData({ dataDir });
  const send = (to: string) =>
    data.queue.enqueue({ sender: 'app@sender.test', recipients: [to], content: Buffer.from(`Subject: ${to}\r\n\r\nbody\r\n`), source: 'api' });
  // Queued before the server starts, so its first claim finds them without the (slow) poll.
  const held = await send('held@dest.test');
  const bounced = await send('bounced@dest.test');
  const deleted = await send('deleted@dest.test');
  const keys = new ApiKeys(data.store);
  const admin = await keys.create({ name: 'ops', scopes: ['admin'], actor: 'cli:test' });
  const reader = await keys.create({ name: 'reader', scopes: ['read'], actor: 'cli:test' });
  const server = await startServeProcess({
    LACRE_DATA_DIR: dataDir,
    LACRE_ROUTES: `dest.test=127.0.0.1:${dest.port},sender.test=127.0.0.1:${senders.port}`,
    LACRE_QUEUE_MIN_BACKOFF: '1h',
    LACRE_QUEUE_POLL_INTERVAL: '30s',
    LACRE_LOG_LEVEL: 'warn',
  });
  const post = async (path: string, key: CreatedApiKey = admin) => {
    const res = await fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${key.apiKey}:${key.secretKey}`).toString('base64')}` },
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const stateOf = async (messageId: string) => (await data.store.getMessage(messageId))?.recipients[0]?.state;
  try {
    for (const m of [held, bounced, deleted]) {
      await waitFor(async () => (await stateOf(m.messageId)) === 'deferred', { what: `${m.messageId} deferred`, timeoutMs: 20_000 });
    }

    const forbidden = await post(`/v1/messages/${held.messageId}/hold`, reader);
    assert.equal(forbidden.status, 403);
    assert.match(forbidden.body.ErrorMessage, /lacks the "admin" scope/);
    const unknown = await post('/v1/messages/999999999/retry');
    assert.deepEqual([unknown.status, unknown.body.StatusCode, unknown.body.ErrorMessage], [404, 404, 'no message with id 999999999; find it with GET /v1/messages']);

    const hold = await post(`/v1/messages/${held.recipients[0].id}/hold`);
    assert.equal(hold.status, 200, JSON.stringify(hold.body));
    assert.deepEqual([hold.body.Count, hold.body.Total], [1, 1]);
    assert.deepEqual(
      (({ Action, MessageUUID, MessageGroupID, Email, Result, State, Held }) => ({ Action, MessageUUID, MessageGroupID, Email, Result, State, Held }))(hold.body.Data[0]),
      { Action: 'hold', MessageUUID: held.recipients[0].id, MessageGroupID: held.messageId, Email: 'held@dest.test', Result: 'done', State: 'deferred', Held: true },
    );
    assert.equal(typeof hold.body.Data[0].MessageID, 'number');
    accepting = true;
    const retry = await post(`/v1/messages/${held.messageId}/retry`);
    assert.deepEqual([retry.status, retry.body.StatusCode], [409, 409]);
    assert.match(retry.body.ErrorMessage, /^nothing to retry in message .*: held: release it instead/);
    // Make the destination's other mail due: a held one is still not claimed with it.
    await post(`/v1/messages/${deleted.messageId}/hold`);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(dest.messages().length, 0, 'nothing delivered while held');

    const released = Date.now();
    const release = await post(`/v1/messages/${held.messageId}/release`);
    assert.equal(release.status, 200, JSON.stringify(release.body));
    assert.deepEqual([release.body.Data[0].Result, release.body.Data[0].Held], ['done', false]);
    const [delivered] = await dest.waitForMessages(1, 15_000);
    assert.deepEqual(delivered.rcptTo.map((r) => r.address), ['held@dest.test']);
    assert.ok(Date.now() - released < 15_000, 'delivered on the nudge, not on the 30 s poll');

    const bounce = await post(`/v1/messages/${bounced.messageId}/bounce`);
    assert.equal(bounce.status, 200, JSON.stringify(bounce.body));
    assert.equal(bounce.body.Data[0].State, 'bounced');
    const [dsn] = await senders.waitForMessages(1, 15_000);
    assert.deepEqual([dsn.mailFrom.address, dsn.rcptTo.map((r) => r.address)], ['', ['app@sender.test']]);
    assert.match(dsn.data.toString(), /Status: 5\.0\.0/);
    const events = await data.store.events.list({ limit: 100, apiKeyId: null });
    assert.ok(events.some((e) => e.type === 'bounce' && e.messageId === bounced.messageId));
    assert.equal((await post(`/v1/messages/${bounced.messageId}/bounce`)).body.ErrorMessage.includes('already bounced'), true);

    const del = await post(`/v1/messages/${deleted.messageId}/delete`);
    assert.equal(del.status, 200, JSON.stringify(del.body));
    assert.deepEqual([del.body.Data[0].State, del.body.Data[0].MessageRemoved], [null, true]);
    const gone = await fetch(`${server.url}/v1/messages/${deleted.messageId}`, {
      headers: { authorization: `Basic ${Buffer.from(`${reader.apiKey}:${reader.secretKey}`).toString('base64')}` },
    });
    assert.equal(gone.status, 404);

    const audit = await data.store.audit.list({ since: 0 });
    const queueEntries = audit.filter((e) => e.action.startsWith('queue.'));
    assert.ok(queueEntries.length >= 7);
    assert.ok(queueEntries.every((e) => e.actor === `key:${admin.apiKey}`), 'the API key is the actor');
  } finally {
    await server.stop();
    await data.close();
    await dest.close();
    await senders.close();
  }
});
