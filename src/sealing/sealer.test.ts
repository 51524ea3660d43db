import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadKeyring, rotateMasterKeyFile, removeRetiredKeyFiles } from './keyring.ts';
import { Sealer, SealError } from './sealer.ts';

const tempDir = () => mkdtempSync(join(tmpdir(), 'lacre-seal-'));

test('generates data/master.key with mode 0600 on first start and reuses it', () => {
  const dir = tempDir();
  const first = loadKeyring({ dataDir: dir });
  assert.equal(statSync(join(dir, 'master.key')).mode & 0o777, 0o600);
  assert.equal(loadKeyring({ dataDir: dir }).current.idHex, first.current.idHex);
});

test('refuses a master key file that other users can read', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'master.key'), randomBytes(32).toString('base64'), { mode: 0o644 });
  assert.throws(() => loadKeyring({ dataDir: dir }), /readable by other users/);
});

test('sealed values open only in their own context and reveal nothing of the plaintext', () => {
  const sealer = new Sealer(loadKeyring({ dataDir: tempDir() }));
  const sealed = sealer.seal('alice@example.com', 'recipients.address');
  assert.ok(!sealed.includes(Buffer.from('alice')));
  assert.equal(sealer.openString(sealed, 'recipients.address'), 'alice@example.com');
  assert.throws(() => sealer.open(sealed, 'messages.sender'), SealError);
  const tampered = Buffer.from(sealed);
  tampered[tampered.length - 20] ^= 1;
  assert.throws(() => sealer.open(tampered, 'recipients.address'), /failed authentication/);
  assert.notDeepEqual(sealer.seal('x', 'c'), sealer.seal('x', 'c'), 'fresh IV every time');
});

test('a key from the environment is used instead of a file', () => {
  const dir = tempDir();
  const key = randomBytes(32).toString('base64');
  const keyring = loadKeyring({ dataDir: dir, masterKey: key });
  assert.equal(keyring.source, 'env');
  assert.throws(() => statSync(join(dir, 'master.key')));
  assert.throws(() => rotateMasterKeyFile(keyring, dir), /LACRE_MASTER_KEY/);
});

test('after rotation old values still open, re-seal moves them to the new key', () => {
  const dir = tempDir();
  const before = new Sealer(loadKeyring({ dataDir: dir }));
  const sealed = before.seal('body marker', 'message_contents.content');
  const oldId = before.currentKeyId;
  const after = new Sealer(rotateMasterKeyFile(loadKeyring({ dataDir: dir }), dir));
  assert.notEqual(after.currentKeyId, oldId);
  assert.equal(after.openString(sealed, 'message_contents.content'), 'body marker');
  const resealed = after.reseal(sealed, 'message_contents.content');
  assert.ok(resealed);
  assert.equal(Sealer.keyIdOf(resealed), after.currentKeyId);
  assert.equal(after.reseal(resealed, 'message_contents.content'), null);
  assert.deepEqual(removeRetiredKeyFiles(dir, new Set()), [oldId]);
  assert.throws(() => new Sealer(loadKeyring({ dataDir: dir })).open(sealed, 'message_contents.content'), /not in the keyring/);
  assert.ok(!readFileSync(join(dir, 'master.key'), 'utf8').includes(oldId));
});

test('lookup hashes are keyed and case-insensitive for addresses', () => {
  const keyring = loadKeyring({ dataDir: tempDir() });
  const a = new Sealer(keyring);
  a.setLookupKey(randomBytes(32));
  const b = new Sealer(keyring);
  b.setLookupKey(randomBytes(32));
  assert.equal(a.addressHash('Bob@Example.com'), a.addressHash('bob@example.com'));
  assert.notEqual(a.addressHash('bob@example.com'), b.addressHash('bob@example.com'));
  assert.equal(a.logTag('bob@example.com').length, 12);
});
