// `lacre serve` is SIGKILLed with deliveries in flight and started again: every accepted
// recipient reaches exactly one final state, and the sink sees at most the in-flight ones twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA } from '../../test/harness/ca.ts';
import { startSmtpSink } from '../../test/harness/smtp-sink.ts';
import { startServeProcess } from '../../test/harness/serve-process.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';

const COUNT = 40;
const CONCURRENCY = 4;

test('after a SIGKILL with deliveries in flight, a restarted server finishes every recipient exactly once', async () => {
  const ca = await TestCA.create();
  const sink = await startSmtpSink({ tls: 'starttls', cert: await ca.issue({ names: ['127.0.0.1'] }), delayMs: { dataEnd: 100 } });
  const dataDir = tempDir('lacre-crash-');
  const env = {
    LACRE_DATA_DIR: dataDir,
    LACRE_ROUTES: `crash.test=127.0.0.1:${sink.port}`,
    LACRE_TLS_POLICIES: 'crash.test=encrypt',
    LACRE_CA_FILE: await ca.writeCaFile(dataDir),
    LACRE_QUEUE_LEASE: '2s',
    LACRE_QUEUE_POLL_INTERVAL: '50ms',
    LACRE_QUEUE_CONCURRENCY: String(CONCURRENCY),
    LACRE_DELIVERY_DESTINATION_CONCURRENCY: String(CONCURRENCY),
    LACRE_LOG_LEVEL: 'warn',
  };
  const data = await openTempData({ dataDir });
  try {
    for (let i = 0; i < COUNT; i++) {
      await data.queue.enqueue({
        sender: 'app@sender.test',
        recipients: [`r${i}@crash.test`],
        content: Buffer.from(`Subject: crash ${i}\r\nX-Crash-Id: ${i}\r\n\r\nbody\r\n`),
        source: 'api',
      });
    }
    const first = await startServeProcess(env);
    try {
      await sink.waitFor(() => sink.messages().length >= 8, 20_000, 'the first deliveries');
    } finally {
      await first.kill();
    }
    const deliveredBeforeCrash = sink.messages().length;
    assert.ok(deliveredBeforeCrash < COUNT, 'the crash came with work left');

    const second = await startServeProcess(env);
    try {
      const deadline = Date.now() + 30_000;
      for (let i = 0; i < 3_000; i++) {
        const counts = await data.store.countByState();
        if (counts.delivered === COUNT) break;
        assert.ok(Date.now() < deadline, `not all delivered in time: ${JSON.stringify(counts)}\n${second.output()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      assert.equal(await second.stop(), 0);
    }

    const counts = await data.store.countByState();
    assert.deepEqual(counts, { queued: 0, deferred: 0, delivered: COUNT, bounced: 0, expired: 0, failed: 0 });
    const finals = await data.store.engine.all<{ recipient_id: string; n: number }>(
      `SELECT recipient_id, COUNT(*) AS n FROM attempts WHERE outcome = 'delivered' GROUP BY recipient_id`,
    );
    assert.equal(finals.length, COUNT);
    assert.ok(finals.every((f) => Number(f.n) === 1), 'each recipient finalised once');
    const seen = new Map<string, number>();
    for (const m of sink.messages()) {
      const id = /X-Crash-Id: (\d+)/.exec(m.data.toString())![1];
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    assert.equal(seen.size, COUNT, 'every message reached the sink');
    const twice = [...seen.values()].filter((n) => n > 1).length;
    assert.ok(twice <= CONCURRENCY, `${twice} messages delivered twice; at most the ${CONCURRENCY} in flight may be`);
    assert.ok([...seen.values()].every((n) => n <= 2));
  } finally {
    await data.close();
    await sink.close();
  }
});
