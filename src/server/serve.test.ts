// lacre serve's wiring and teardown in this process: every part it starts registers an onClose
// hook as it is wired, and a start that fails takes down, in reverse, what it had wired.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tempDir } from '../../test/harness/temp-data.ts';
import { loadConfig } from '../config/load.ts';
import { createLogger } from '../log/logger.ts';
import { startServer } from './serve.ts';
import { buildHttpServer } from './http.ts';

async function listening(port = 0): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return server;
}
const portOf = (server: Server) => (server.address() as AddressInfo).port;
const close = (server: Server) => new Promise((resolve) => server.close(resolve));

test('a start that fails at the HTTP port tears down what it wired: submission port free, delivery and store closed', async () => {
  const taken = await listening();
  // A port free now, for submission to bind and give back.
  const probe = await listening();
  const submissionPort = portOf(probe);
  await close(probe);
  const dataDir = tempDir();
  const config = loadConfig({
    env: {
      LACRE_DATA_DIR: dataDir,
      LACRE_MASTER_KEY: randomBytes(32).toString('base64'),
      LACRE_HTTP_PORT: String(portOf(taken)),
      LACRE_SUBMISSION_PORT: String(submissionPort),
      LACRE_SUBMISSION_TLS_PORT: '0',
      LACRE_LOG_LEVEL: 'silent',
    },
  });
  try {
    await assert.rejects(startServer({ config, logger: createLogger({ level: 'silent' }) }), /EADDRINUSE/);
    // SQLite removes the write-ahead log when the last connection closes (both threads' stores).
    assert.ok(existsSync(join(dataDir, 'lacre.db')), 'the store was opened');
    assert.equal(existsSync(join(dataDir, 'lacre.db-wal')), false, 'every connection to the store is closed');
    await close(await listening(submissionPort));
  } finally {
    await close(taken);
  }
});

test('onClose hooks run in reverse order of wiring, and one that throws does not keep the later ones from running', async () => {
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true } });
  const ran: string[] = [];
  app.addHook('onClose', async () => void ran.push('store'));
  app.addHook('onClose', async () => {
    ran.push('delivery');
    throw new Error('delivery did not stop');
  });
  app.addHook('onClose', async () => void ran.push('submission'));
  await app.listen({ host: '127.0.0.1', port: 0 });
  await assert.rejects(app.close(), /delivery did not stop/);
  assert.deepEqual(ran, ['submission', 'delivery', 'store']);
  assert.equal(app.server.listening, false);
});
