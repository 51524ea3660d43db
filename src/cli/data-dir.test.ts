// Which commands may create the data dir, and the errors when it cannot be used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prepareDataDir } from './data-dir.ts';
import { tempDir } from '../../test/harness/temp-data.ts';

test('create makes every missing level with mode 0700 and says it did', () => {
  const dir = join(tempDir(), 'a', 'b', 'data');
  assert.equal(prepareDataDir(dir, 'create'), 'created');
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.equal(prepareDataDir(dir, 'create'), 'existing');
});

test('existing refuses a directory without a database and creates nothing', () => {
  const dir = join(tempDir(), 'data');
  assert.throws(() => prepareDataDir(dir, 'existing'), /^CliError: no Lacre data dir at .*\/data; set LACRE_DATA_DIR/);
  assert.equal(existsSync(dir), false);
  const empty = tempDir();
  assert.throws(() => prepareDataDir(empty, 'existing'), /no Lacre data dir/);
  writeFileSync(join(empty, 'lacre.db'), '');
  assert.equal(prepareDataDir(empty, 'existing'), 'existing');
});

test('a file in the path is named, not looped on', () => {
  const file = join(tempDir(), 'plain');
  writeFileSync(file, 'x');
  assert.throws(() => prepareDataDir(join(file, 'data'), 'create'), /plain is a file, not a directory; set LACRE_DATA_DIR/);
});

test('a pseudo file system refuses at once instead of hanging', () => {
  assert.throws(() => prepareDataDir('/proc/lacre-no-such/data', 'create'), /cannot create the data dir \/proc\/lacre-no-such\/data .*LACRE_DATA_DIR/);
});
