// Things that run together keep working together: a CLI command that holds the database's write
// lock (a long migration, a reseal) must not freeze a running server. While another process holds
// the lock, `lacre serve` keeps answering /healthz, and its deliveries resume once the lock is gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestCA } from '../../test/harness/ca.ts';
import { startSmtpSink } from '../../test/harness/smtp-sink.ts';
import { getStatus, startServeProcess } from '../../test/harness/serve-process.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';

const holder = fileURLToPath(new URL('../../test/fixtures/hold-write-lock.ts', import.meta.url));
const COUNT = 60;
const HOLD_MS = 4_000;

test('a CLI holding the write lock does not stall /healthz, and delivery resumes after it', async () => {
  const ca = await TestCA.create();
  // Each message takes a while at the sink, so the server is writing verdicts when the lock is taken.
  const sink = await startSmtpSink({ tls: 'starttls', cert: await ca.issue({ names: ['127.0.0.1'] }), delayMs: { dataEnd: 30 } });
  const dataDir = tempDir('lacre-lock-');
  const data = await openTempData({ dataDir });
  for (let i = 0; i < COUNT; i++) {
    await data.queue.enqueue({
      sender: 'app@sender.test',
      recipients: [`r${i}@lock.test`],
      content: Buffer.from(`Subject: lock ${i}\r\n\r\nbody\r\n`),
      source: 'api',
    });
  }
  await data.close();
  const server = await startServeProcess({
    LACRE_DATA_DIR: dataDir,
    LACRE_ROUTES: `lock.test=127.0.0.1:${sink.port}`,
    LACRE_TLS_POLICIES: 'lock.test=encrypt',
    LACRE_CA_FILE: await ca.writeCaFile(dataDir),
    LACRE_LOG_LEVEL: 'warn',
  });
  const child = spawn(process.execPath, [holder, join(dataDir, 'lacre.db'), String(HOLD_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  try {
    await sink.waitFor(() => sink.messages().length >= 1, 20_000, 'the first delivery');
    // Take the lock while deliveries are under way.
    const deadline = Date.now() + 10_000;
    while (!out.includes('HOLDING') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(out.includes('HOLDING'), 'the lock holder started');
    const heldAt = Date.now();
    const slowest: number[] = [];
    for (let i = 0; i < 40 && Date.now() - heldAt < HOLD_MS - 500 && !out.includes('RELEASED'); i++) {
      const started = Date.now();
      assert.equal(await getStatus(`${server.url}/healthz`), 200);
      slowest.push(Date.now() - started);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(Math.max(...slowest) < 1_000, `/healthz took up to ${Math.max(...slowest)} ms while another process held the lock`);
    assert.ok(slowest.length >= 5, `/healthz answered only ${slowest.length} times in ${HOLD_MS} ms while the lock was held`);
    await sink.waitFor(() => new Set(sink.messages().map((m) => m.data.toString('latin1').match(/Subject: lock (\d+)/)?.[1])).size === COUNT, 30_000, 'every delivery after the lock');
  } finally {
    child.kill('SIGKILL');
    assert.equal(await server.stop(), 0);
    await sink.close();
  }
});
