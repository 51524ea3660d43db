// The README's "Try it on one machine", step by step as a new user runs it: `lacre sink`, a key, a
// sender domain marked verified without DNS, `lacre serve` with a route to the sink, one send. The
// message must reach the sink over TLS. DNS goes to the harness's empty fake server so that nothing
// leaves the machine; the README's reserved .test names need no answers from it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { tempDir } from '../../test/harness/temp-data.ts';
import { startServeProcess, type ServeProcess } from '../../test/harness/serve-process.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { LACRE_BIN, runLacreSync } from '../../test/harness/lacre-cli.ts';
import type { SunkMessage } from './smtp-sink.ts';

const dir = tempDir();
const env = { ...process.env, LACRE_CONFIG: '', LACRE_DATA_DIR: join(dir, 'data') };
let sink: ChildProcess | undefined;
let serve: ServeProcess | undefined;
let dns: FakeDnsServer | undefined;

after(async () => {
  await serve?.stop().catch(() => serve?.kill());
  sink?.kill('SIGTERM');
  await dns?.close();
});

const lacre = (args: string[]) => runLacreSync(args, { LACRE_DATA_DIR: env.LACRE_DATA_DIR }, { timeoutMs: 60_000 });

test('try it on one machine: sink, key, forced domain, serve with a route, one send, delivered over TLS', async () => {
  dns = await FakeDnsServer.start();
  const log = join(dir, 'sink.jsonl');
  sink = spawn(process.execPath, [LACRE_BIN, 'sink', '--port', '0', '--json-log', log], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let sinkOut = '';
  sink.stdout!.on('data', (c) => (sinkOut += c));
  const listening = await waitFor(() => (sinkOut.includes('\n') ? (JSON.parse(sinkOut.split('\n')[0]) as { port: number; certificateSha256: string }) : null), {
    what: 'lacre sink to report its port',
    timeoutMs: 20_000,
  });
  assert.match(listening.certificateSha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  const created = lacre(['keys', 'create', '--name', 'trial', '--scopes', 'send,read', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const key = JSON.parse(created.stdout) as { apiKey: string; secretKey: string };
  assert.equal(lacre(['domains', 'add', 'example.test']).code, 0);
  const forced = lacre(['domains', 'verify', 'example.test', '--force']);
  assert.equal(forced.code, 0, forced.stderr);

  serve = await startServeProcess({
    LACRE_DATA_DIR: env.LACRE_DATA_DIR,
    LACRE_HOSTNAME: 'mta.example.test',
    LACRE_ROUTES: `rcpt.test=127.0.0.1:${listening.port}`,
    LACRE_DNS_SERVERS: dns.address,
  });
  const response = await fetch(`${serve.url}/v3.1/send`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${key.apiKey}:${key.secretKey}`).toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ Messages: [{ From: { Email: 'hello@example.test' }, To: [{ Email: 'ada@rcpt.test' }], Subject: 'First', TextPart: 'Sealed.' }] }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const sunk = await waitFor(
    () => {
      try {
        const lines = readFileSync(log, 'utf8').trim().split('\n');
        return lines[0] ? (JSON.parse(lines[0]) as SunkMessage) : null;
      } catch {
        return null;
      }
    },
    { what: 'the message in the sink', timeoutMs: 30_000 },
  );
  assert.deepEqual(sunk.rcptTo, ['ada@rcpt.test']);
  assert.equal(sunk.subject, 'First');
  assert.match(sunk.tls?.version ?? 'none', /^TLSv1\.[23]$/);
  // The sink's own stdout carries the same line.
  await waitFor(() => sinkOut.split('\n').length > 2 || null, { what: 'the message line on stdout', timeoutMs: 5_000 });
  assert.equal((JSON.parse(sinkOut.split('\n')[1]) as SunkMessage).n, 1);
  sink.kill('SIGTERM');
  const [code] = await once(sink, 'exit');
  assert.equal(code, 0);
  sink = undefined;
});

test('lacre sink refuses a port in use with one line naming --port', async () => {
  const blocker = spawn(process.execPath, [LACRE_BIN, 'sink', '--port', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    blocker.stdout!.on('data', (c) => (out += c));
    const { port } = await waitFor(() => (out.includes('\n') ? (JSON.parse(out.split('\n')[0]) as { port: number }) : null), { what: 'the first sink', timeoutMs: 20_000 });
    const second = lacre(['sink', '--port', String(port)]);
    assert.equal(second.code, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`127\\.0\\.0\\.1:${port} is already in use; pick another with --port`));
    assert.doesNotMatch(second.stderr, /^\s+at /m);
  } finally {
    blocker.kill('SIGTERM');
  }
});
