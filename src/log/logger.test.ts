import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, readFileSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from './logger.ts';

test('redacts secrets, bodies and addresses that slip into log fields', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'lacre-log-')), 'log.json');
  const fd = openSync(file, 'w');
  const log = createLogger({ level: 'info', destination: fd });
  log.info(
    { secretKey: 's3cr3t-value', message: { to: 'alice@example.com', body: 'BODY-MARKER' }, password: 'hunter2', ok: 1 },
    'submitted',
  );
  log.flush();
  closeSync(fd);
  const line = readFileSync(file, 'utf8');
  const entry = JSON.parse(line);
  assert.equal(entry.ok, 1);
  assert.equal(entry.level, 'info');
  for (const leaked of ['s3cr3t-value', 'alice@example.com', 'BODY-MARKER', 'hunter2']) {
    assert.ok(!line.includes(leaked), `log line leaks ${leaked}: ${line}`);
  }
});
