// `lacre keys …` as operators run it: real processes, a real data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { runLacreSync } from '../../test/harness/lacre-cli.ts';


const lacre = (args: string[], env: Record<string, string>) => runLacreSync(args, { USER: 'tester', SUDO_USER: '', ...env });

test('keys create --json prints exactly one JSON document with a 32-hex API key and secret key that authenticate', async () => {
  const dataDir = tempDir();
  const env = { LACRE_DATA_DIR: dataDir };
  const result = lacre(['keys', 'create', '--name', 'billing app', '--scopes', 'send,read', '--json'], env);
  assert.equal(result.code, 0, result.stderr);
  const created = JSON.parse(result.stdout);
  assert.match(created.apiKey, /^[0-9a-f]{32}$/);
  assert.match(created.secretKey, /^[0-9a-f]{32}$/);
  assert.equal(created.name, 'billing app');
  assert.deepEqual(created.scopes, ['send', 'read']);
  const data = await openTempData({ dataDir });
  try {
    const keys = new ApiKeys(data.store);
    assert.deepEqual(await keys.authenticate(created.apiKey, created.secretKey), { id: created.apiKey, name: 'billing app', scopes: ['send', 'read'] });
    const [entry] = await data.store.audit.list({ subject: created.apiKey });
    assert.equal(entry.actor, 'cli:tester');
    assert.equal(entry.action, 'key.create');
  } finally {
    await data.close();
  }
});

test('keys create defaults to the send scope and, in text, says the secret will not be shown again', () => {
  const result = lacre(['keys', 'create', '--name', 'app'], { LACRE_DATA_DIR: tempDir() });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /with scopes send\n/);
  assert.match(result.stdout, /secret key: [0-9a-f]{32}\n/);
  assert.match(result.stdout, /will not be shown again/);
});

test('keys list never shows secrets; disable, enable and delete change what it lists', () => {
  const env = { LACRE_DATA_DIR: tempDir() };
  const created = JSON.parse(lacre(['keys', 'create', '--name', 'app', '--scopes', 'admin', '--json'], env).stdout);
  const listed = lacre(['keys', 'list', '--json'], env);
  assert.equal(listed.code, 0, listed.stderr);
  assert.ok(!listed.stdout.includes(created.secretKey));
  assert.ok(!listed.stdout.includes('scrypt'));
  const [key] = JSON.parse(listed.stdout);
  assert.deepEqual(Object.keys(key).sort(), ['apiKey', 'createdAt', 'disabledAt', 'lastUsedAt', 'name', 'scopes']);
  assert.equal(key.apiKey, created.apiKey);
  assert.equal(key.disabledAt, null);

  const disabled = lacre(['keys', 'disable', created.apiKey, '--json'], env);
  assert.equal(disabled.code, 0, disabled.stderr);
  assert.ok(JSON.parse(disabled.stdout).disabledAt);
  assert.ok(JSON.parse(lacre(['keys', 'list', '--json'], env).stdout)[0].disabledAt);
  assert.match(lacre(['keys', 'list'], env).stdout, new RegExp(`${created.apiKey}  "app"  admin  disabled `));

  const enabled = lacre(['keys', 'enable', created.apiKey, '--json'], env);
  assert.equal(enabled.code, 0, enabled.stderr);
  assert.equal(JSON.parse(enabled.stdout).disabledAt, null);

  const deleted = lacre(['keys', 'delete', created.apiKey, '--json'], env);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.deepEqual(JSON.parse(deleted.stdout), { apiKey: created.apiKey, deleted: true });
  assert.deepEqual(JSON.parse(lacre(['keys', 'list', '--json'], env).stdout), []);
  assert.match(lacre(['keys', 'list'], env).stdout, /no API keys/);
});

test('an unknown key or scope exits 2 with a clear message', () => {
  const env = { LACRE_DATA_DIR: tempDir() };
  // A data dir that holds a database, so the unknown key is what gets reported.
  const other = lacre(['keys', 'create', '--name', 'other', '--json'], env);
  assert.equal(other.code, 0, other.stderr);
  const otherKey = JSON.parse(other.stdout).apiKey;
  for (const verb of ['disable', 'enable', 'delete']) {
    const result = lacre(['keys', verb, 'deadbeef', '--json'], env);
    assert.equal(result.code, 2, `${verb}: ${result.stderr}`);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /^lacre: no API key deadbeef\n$/);
  }
  const scope = lacre(['keys', 'create', '--name', 'x', '--scopes', 'send,root', '--json'], env);
  assert.equal(scope.code, 2);
  assert.match(scope.stderr, /unknown scope "root": expected one of send, read, admin/);
  const name = lacre(['keys', 'create', '--name', ' ', '--json'], env);
  assert.equal(name.code, 2);
  assert.match(name.stderr, /a key needs a name/);
  assert.deepEqual(JSON.parse(lacre(['keys', 'list', '--json'], env).stdout).map((k: { apiKey: string }) => k.apiKey), [otherKey]);
});

test('every keys command answers --help', () => {
  for (const args of [['keys'], ['keys', 'create'], ['keys', 'list'], ['keys', 'disable'], ['keys', 'enable'], ['keys', 'delete']]) {
    const result = lacre([...args, '--help'], {});
    assert.equal(result.code, 0, `${args.join(' ')} --help: ${result.stderr}`);
    assert.match(result.stdout, /Usage: lacre keys/);
  }
});
