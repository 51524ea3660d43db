import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, ConfigError } from './load.ts';

test('defaults follow the operator contract', () => {
  const config = loadConfig({ env: {} });
  assert.equal(config.dataDir, './data');
  assert.equal(config.http.host, '127.0.0.1');
  assert.equal(config.http.port, 8080);
  assert.equal(config.queue.minBackoff, 300_000);
  assert.equal(config.queue.maxAge, 5 * 86_400_000);
});

test('env vars override the config file, which overrides defaults', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-config-'));
  const file = join(dir, 'lacre.json');
  writeFileSync(file, JSON.stringify({ http: { port: 9000, host: '127.0.0.2' }, queue: { maxAge: '2d' } }));
  const config = loadConfig({ env: { LACRE_CONFIG: file, LACRE_HTTP_PORT: '9100' } });
  assert.equal(config.http.port, 9100);
  assert.equal(config.http.host, '127.0.0.2');
  assert.equal(config.queue.maxAge, 2 * 86_400_000);
});

test('an invalid env value names the variable, the value and what is allowed', () => {
  assert.throws(
    () => loadConfig({ env: { LACRE_HTTP_PORT: 'eighty' } }),
    (err: Error) =>
      err instanceof ConfigError && /LACRE_HTTP_PORT \(http\.port\) = "eighty"/.test(err.message) && /number/i.test(err.message),
  );
  assert.throws(
    () => loadConfig({ env: { LACRE_LOG_LEVEL: 'loud' } }),
    (err: Error) => /LACRE_LOG_LEVEL \(log\.level\) = "loud": .*info/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ env: { LACRE_QUEUE_MAX_AGE: 'forever' } }),
    (err: Error) => /LACRE_QUEUE_MAX_AGE \(queue\.maxAge\) = "forever": .*duration/.test(err.message),
  );
});

test('an invalid file value names the file and the setting; unknown settings are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-config-'));
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ http: { port: 70000 }, colour: 'blue' }));
  assert.throws(
    () => loadConfig({ env: {}, file }),
    (err: Error) => err.message.includes(`http.port in ${file}`) && /70000/.test(err.message) && /colour/.test(err.message),
  );
});

test('a malformed master key is refused without echoing it', () => {
  assert.throws(
    () => loadConfig({ env: { LACRE_MASTER_KEY: 'c2hvcnQ=' } }),
    (err: Error) => /LACRE_MASTER_KEY/.test(err.message) && !err.message.includes('c2hvcnQ=') && /32/.test(err.message),
  );
});

test('a config file that is not JSON is named in the error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-config-'));
  const file = join(dir, 'broken.json');
  writeFileSync(file, '{ http: ');
  assert.throws(() => loadConfig({ env: {}, file }), (err: Error) => err.message.includes(file) && /JSON/.test(err.message));
});
