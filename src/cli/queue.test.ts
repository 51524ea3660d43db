// `lacre queue retry|hold|release|delete|bounce ID` run as operators run it: a real CLI process
// beside a real `lacre serve` on the same data dir, mail delivered to loopback sinks. Held mail is
// not delivered when its destination would take it, and is once released; a bounce-now reaches
// the sender as a DSN; a delete leaves nothing; the server keeps serving and delivering throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startSmtpSink } from '../../test/harness/smtp-sink.ts';
import { startServeProcess, getStatus } from '../../test/harness/serve-process.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { runLacre } from '../../test/harness/lacre-cli.ts';


/** Runs the CLI without blocking this process: the sinks live here and must keep answering. */
const lacre = runLacre;

test('queue hold, release, bounce and delete from the CLI beside a running server', { timeout: 120_000 }, async () => {
  // The destination defers every recipient until `accepting`; the sender's own sink takes DSNs.
  let accepting = false;
  const dest = await startSmtpSink({ tls: 'none', replies: { rcpt: () => (accepting ? undefined : { code: 451, text: '4.3.0 not now' }) } });
  const senders = await startSmtpSink({ tls: 'none' });
  const dataDir = tempDir('lacre-queueops-');
  const env = {
    LACRE_DATA_DIR: dataDir,
    LACRE_ROUTES: `dest.test=127.0.0.1:${dest.port},sender.test=127.0.0.1:${senders.port}`,
    // One deferral means an hour's wait: only the operator's actions make anything due sooner.
    LACRE_QUEUE_MIN_BACKOFF: '1h',
    LACRE_QUEUE_POLL_INTERVAL: '100ms',
    LACRE_LOG_LEVEL: 'warn',
  };
  const data = await openTempData({ dataDir });
  const server = await startServeProcess(env);
  const stateOf = async (messageId: string) => (await data.store.getMessage(messageId))?.recipients.map((r) => r.state);
  const send = (to: string) =>
    data.queue.enqueue({ sender: 'app@sender.test', recipients: [to], content: Buffer.from(`Subject: ${to}\r\n\r\nbody\r\n`), source: 'api' });
  try {
    const held = await send('held@dest.test');
    const bounced = await send('bounced@dest.test');
    const deleted = await send('deleted@dest.test');
    for (const m of [held, bounced, deleted]) {
      await waitFor(async () => (await stateOf(m.messageId))?.[0] === 'deferred', { what: `${m.messageId} deferred`, timeoutMs: 20_000 });
    }

    // Hold by MessageUUID; then the destination would take it, and a retry is refused while held.
    const hold = await lacre(['queue', 'hold', held.recipients[0].id, '--json'], env);
    assert.equal(hold.code, 0, hold.stderr);
    assert.deepEqual(JSON.parse(hold.stdout).recipients.map((r: { result: string; held: boolean }) => [r.result, r.held]), [['done', true]]);
    accepting = true;
    const retry = await lacre(['queue', 'retry', held.messageId, '--json'], env);
    assert.equal(retry.code, 1, 'nothing was done');
    assert.match(JSON.parse(retry.stdout).recipients[0].reason, /^held: release it/);
    // Ten safety-net polls of the runner: a held recipient is never claimed.
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(dest.messages().length, 0, 'nothing delivered while held');
    const show = await lacre(['messages', 'show', held.messageId], env);
    assert.match(show.stdout, /held@dest\.test {2}deferred {2}held since /);

    const release = await lacre(['queue', 'release', held.messageId], env);
    assert.equal(release.code, 0, release.stderr);
    assert.match(release.stdout, /held@dest\.test {2}released, due now\n/);
    const [delivered] = await dest.waitForMessages(1, 15_000);
    assert.deepEqual(delivered.rcptTo.map((r) => r.address), ['held@dest.test']);
    await waitFor(async () => (await stateOf(held.messageId))?.[0] === 'delivered', { what: 'the released message delivered' });

    // Bounce by MessageID: the sender gets a DSN with the null sender, and a bounce event exists.
    const publicId = (await data.store.sendApi.publicIdsOf(bounced.messageId)).get(bounced.recipients[0].id);
    const bounce = await lacre(['queue', 'bounce', String(publicId), '--json'], env);
    assert.equal(bounce.code, 0, bounce.stderr);
    assert.equal(JSON.parse(bounce.stdout).recipients[0].state, 'bounced');
    const [dsn] = await senders.waitForMessages(1, 15_000);
    assert.deepEqual([dsn.mailFrom.address, dsn.rcptTo.map((r) => r.address)], ['', ['app@sender.test']]);
    assert.match(dsn.data.toString(), /Final-Recipient: rfc822; ?bounced@dest\.test/);
    assert.match(dsn.data.toString(), /Status: 5\.0\.0/);
    const events = await data.store.events.list({ limit: 100, apiKeyId: null });
    assert.ok(events.some((e) => e.type === 'bounce' && e.messageId === bounced.messageId), 'a bounce event');

    // Delete: gone, and no DSN.
    const del = await lacre(['queue', 'delete', deleted.messageId], env);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /the message is gone/);
    assert.equal(await data.store.getMessage(deleted.messageId), null);
    const gone = await lacre(['queue', 'retry', deleted.messageId], env);
    assert.deepEqual([gone.code, gone.stderr], [1, `lacre: no message with id ${deleted.messageId}; find it with lacre messages list\n`]);

    // Every action is audited and readable; the server still serves and delivers.
    const audit = await lacre(['audit', 'list', '--json'], env);
    assert.deepEqual(
      JSON.parse(audit.stdout).map((e: { action: string }) => e.action).filter((a: string) => a.startsWith('queue.')),
      ['queue.hold', 'queue.retry', 'queue.release', 'queue.bounce', 'queue.delete'],
    );
    assert.equal(await getStatus(`${server.url}/healthz`), 200);
    const after = await send('after@dest.test');
    await waitFor(async () => (await stateOf(after.messageId))?.[0] === 'delivered', { what: 'a later message delivered', timeoutMs: 15_000 });
    assert.equal(senders.messages().length, 1, 'one DSN: the delete sent none');
  } finally {
    await server.stop();
    await data.close();
    await dest.close();
    await senders.close();
  }
});
