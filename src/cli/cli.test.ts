// The CLI as operators run it: real processes, real data dirs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { LACRE_BIN, runLacreSync } from '../../test/harness/lacre-cli.ts';


const lacre = runLacreSync;

test('serve answers /healthz on its HTTP port and stops cleanly on SIGTERM', async () => {
  const dataDir = tempDir();
  const child = spawn(process.execPath, [LACRE_BIN, 'serve'], {
    // Every listener on a free port, so parallel tests never collide (submission defaults to 1587/1465).
    env: {
      ...process.env,
      LACRE_CONFIG: '',
      LACRE_DATA_DIR: dataDir,
      LACRE_HTTP_PORT: '0',
      LACRE_SUBMISSION_PORT: '0',
      LACRE_SUBMISSION_TLS_PORT: '0',
      LACRE_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  try {
    let url: string | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      url = /"http":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)?.[1];
      if (!url) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(url, `serve did not report its address: ${out}`);
    const response = await fetch(`${url}/healthz`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: 'ok', checks: { serving: 'ok', store: 'ok', keyring: 'ok', 'queue-worker': 'ok' } });
    assert.equal((await fetch(`${url}/livez`)).status, 200);
    assert.ok(readdirSync(dataDir).includes('master.key'));
    assert.ok(readdirSync(dataDir).includes('lacre.db'));
  } finally {
    child.kill('SIGTERM');
  }
  const [code] = await Promise.race([once(child, 'exit'), new Promise<never>((_, no) => setTimeout(() => no(new Error('no exit')), 10_000))]);
  assert.equal(code, 0);
  assert.match(out, /"msg":"stopped"/);
});

test('serve refuses to start on an invalid setting, naming it', () => {
  const result = lacre(['serve'], { LACRE_DATA_DIR: tempDir(), LACRE_QUEUE_CONCURRENCY: '0' });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /LACRE_QUEUE_CONCURRENCY \(queue\.concurrency\) = "0": .*>=1/);
});

test('messages show --json prints one JSON document with recipients and attempts', async () => {
  const data = await openTempData({ keep: true });
  const { messageId } = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['a@one.test'],
    content: Buffer.from('Subject: x\r\n\r\ny\r\n'),
    source: 'api',
  });
  await data.close();
  const result = lacre(['messages', 'show', messageId, '--json'], { LACRE_DATA_DIR: data.dataDir });
  assert.equal(result.code, 0, result.stderr);
  const view = JSON.parse(result.stdout);
  assert.equal(view.id, messageId);
  assert.equal(view.recipients[0].address, 'a@one.test');
  assert.equal(view.recipients[0].state, 'queued');
  const missing = lacre(['messages', 'show', 'nope', '--json'], { LACRE_DATA_DIR: data.dataDir });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no message with id nope/);
});

test('sealing rotate-key re-seals every value under a new key and drops the old key', async () => {
  const data = await openTempData({ keep: true });
  const { messageId } = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['a@one.test', 'b@one.test'],
    content: Buffer.from('Subject: rotate\r\n\r\nsecret body\r\n'),
    source: 'api',
  });
  const oldKey = data.sealer.currentKeyId;
  await data.close();
  const env = { LACRE_DATA_DIR: data.dataDir };
  const rotated = lacre(['sealing', 'rotate-key', '--json'], env);
  assert.equal(rotated.code, 0, rotated.stderr);
  const result = JSON.parse(rotated.stdout);
  assert.equal(result.previousKeyId, oldKey);
  assert.notEqual(result.currentKeyId, oldKey);
  assert.ok(result.resealed >= 6, `resealed ${result.resealed}`);
  assert.deepEqual(result.removedKeyIds, [oldKey]);
  const status = JSON.parse(lacre(['sealing', 'status', '--json'], env).stdout);
  assert.deepEqual(Object.keys(status.valuesByKey), [result.currentKeyId]);
  const view = JSON.parse(lacre(['messages', 'show', messageId, '--json'], env).stdout);
  assert.deepEqual(view.recipients.map((r: { address: string }) => r.address), ['a@one.test', 'b@one.test']);
  assert.deepEqual(readdirSync(join(data.dataDir, 'keys')), []);
});

test('every command answers --help', () => {
  for (const args of [[], ['serve'], ['messages', 'show'], ['queue', 'status'], ['sealing', 'rotate-key'], ['sealing', 'reseal'], ['sealing', 'status'], ['config', 'check']]) {
    const result = lacre([...args, '--help'], {});
    assert.equal(result.code, 0, `${args.join(' ')} --help: ${result.stderr}`);
    assert.match(result.stdout, /Usage: lacre/);
  }
});
