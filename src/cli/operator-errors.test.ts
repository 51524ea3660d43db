// What an operator sees when something is wrong, from real processes: one line on stderr naming
// the setting, path or command to fix, exit 2 for what is theirs to fix, no stack unless
// LACRE_DEBUG=1, and nothing created or changed on the way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { tempDir } from '../../test/harness/temp-data.ts';
import { ENV_SETTINGS } from '../config/load.ts';
import { runLacreSync } from '../../test/harness/lacre-cli.ts';

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
// Free ports for every listener, so a serve that does start never collides with another test.
const quiet = { LACRE_HTTP_PORT: '0', LACRE_SUBMISSION_PORT: '0', LACRE_SUBMISSION_TLS_PORT: '0', LACRE_HOSTNAME: 'mail.example.com' };

const lacre = (args: string[], env: Record<string, string>, cwd?: string) => runLacreSync(args, env, { cwd });

/** Exit 2, exactly one `lacre:` line matching, and no stack frame. */
function assertOneLine(result: ReturnType<typeof lacre>, pattern: RegExp, code = 2) {
  assert.equal(result.code, code, result.stderr);
  const lines = result.stderr.split('\n').filter((l) => l.startsWith('lacre: ') && !l.startsWith('lacre: warning: '));
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(result.stderr, /^ {4}at /m, 'no stack without LACRE_DEBUG');
}

function initialised(): string {
  const dataDir = tempDir();
  const created = lacre(['keys', 'create', '--name', 'ops', '--json'], { LACRE_DATA_DIR: dataDir });
  assert.equal(created.code, 0, created.stderr);
  return dataDir;
}

test('a port in use names the port and the setting that chose it', async () => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const port = (blocker.address() as { port: number }).port;
  try {
    const result = lacre(['serve'], { ...quiet, LACRE_DATA_DIR: tempDir(), LACRE_HTTP_PORT: String(port) });
    assertOneLine(result, new RegExp(`^lacre: cannot listen on 127\\.0\\.0\\.1:${port}: another process already uses it; stop that process or change LACRE_HTTP_PORT \\(http\\.port\\)$`));
  } finally {
    blocker.close();
  }
});

test('a master.key readable by others is refused with the chmod to run', () => {
  const dataDir = initialised();
  chmodSync(join(dataDir, 'master.key'), 0o644);
  assertOneLine(lacre(['queue', 'status'], { LACRE_DATA_DIR: dataDir }), /master\.key is readable by other users \(mode 644\); run: chmod 600 .*master\.key$/);
});

test('a wrong master key names the settings to fix and changes nothing', () => {
  const dataDir = initialised();
  const before = readFileSync(join(dataDir, 'master.key'), 'utf8');
  const result = lacre(['queue', 'status'], { LACRE_DATA_DIR: dataDir, LACRE_MASTER_KEY: randomBytes(32).toString('base64') });
  assertOneLine(result, /not in the keyring: this data dir .* was sealed with another master key; set LACRE_MASTER_KEY/);
  assert.equal(readFileSync(join(dataDir, 'master.key'), 'utf8'), before);
  assertOneLine(lacre(['queue', 'status'], { LACRE_DATA_DIR: dataDir, LACRE_MASTER_KEY: 'c2hvcnQ=' }), /^lacre: invalid configuration: LACRE_MASTER_KEY \(masterKey\) = \(secret, not shown\): expected 32 random bytes in base64/);
});

test('a data dir under /proc fails at once for serve and for a read', () => {
  assertOneLine(lacre(['serve'], { ...quiet, LACRE_DATA_DIR: '/proc/lacre-x' }), /^lacre: cannot create the data dir \/proc\/lacre-x .*set LACRE_DATA_DIR/);
  assertOneLine(lacre(['keys', 'list'], { LACRE_DATA_DIR: '/proc/lacre-x' }), /^lacre: no Lacre data dir at \/proc\/lacre-x; set LACRE_DATA_DIR/);
});

test('a data dir inside a file is named', () => {
  const file = join(tempDir(), 'file');
  writeFileSync(file, 'x');
  assertOneLine(lacre(['serve'], { ...quiet, LACRE_DATA_DIR: join(file, 'data') }), /file is a file, not a directory; set LACRE_DATA_DIR/);
});

test('read-only commands run from the wrong directory refuse and create nothing', () => {
  const cwd = tempDir();
  for (const args of [['queue', 'status'], ['messages', 'show', '1'], ['keys', 'list'], ['domains', 'list'], ['sealing', 'status'], ['webhooks', 'list'], ['policy', 'list']]) {
    assertOneLine(lacre(args, { LACRE_DATA_DIR: '' }, cwd), /^lacre: no Lacre data dir at .*\/data; set LACRE_DATA_DIR/);
  }
  assert.deepEqual(readdirSync(cwd), []);
});

test('a command that writes says when it had to create a new data dir', () => {
  const dataDir = join(tempDir(), 'fresh');
  const result = lacre(['keys', 'create', '--name', 'x', '--json'], { LACRE_DATA_DIR: dataDir });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /created a new data dir at .*fresh \(set LACRE_DATA_DIR to use an existing one\)/);
  assert.ok(existsSync(join(dataDir, 'lacre.db')));
});

test('a bad boolean names the setting and what it accepts; TRUE is accepted', () => {
  assertOneLine(lacre(['config', 'check'], { LACRE_DNSSEC_TRUST_AD: 'maybe' }), /^lacre: invalid configuration: LACRE_DNSSEC_TRUST_AD \(dns\.trustAd\) = "maybe": expected true or false/);
  const ok = lacre(['config', 'check', '--json'], { LACRE_DNSSEC_TRUST_AD: 'TRUE' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).settings['dns.trustAd'], true);
});

test('config check prints every setting and runs the checks serve runs', () => {
  const ok = lacre(['config', 'check'], {});
  assert.equal(ok.code, 0, ok.stderr);
  for (const { env } of ENV_SETTINGS) assert.match(ok.stdout, new RegExp(`^${env} `, 'm'), env);
  const missingCa = { LACRE_CA_FILE: join(tempDir(), 'none.pem') };
  assertOneLine(lacre(['config', 'check'], missingCa), /^lacre: LACRE_CA_FILE \(tls\.caFile\) = ".*none\.pem": no such file$/);
  assertOneLine(lacre(['serve'], { ...quiet, ...missingCa, LACRE_DATA_DIR: tempDir() }), /LACRE_CA_FILE \(tls\.caFile\)/);
  const dir = tempDir();
  const pair = { LACRE_SUBMISSION_TLS_CERT: join(dir, 'c.pem'), LACRE_SUBMISSION_TLS_KEY: join(dir, 'k.pem') };
  assertOneLine(lacre(['config', 'check'], pair), /^lacre: LACRE_SUBMISSION_TLS_CERT = ".*c\.pem": ENOENT/);
});

test('domains add warns when the host name is not a FQDN, keeping --json one document', () => {
  const result = lacre(['domains', 'add', 'sender.example', '--json'], { LACRE_DATA_DIR: tempDir(), LACRE_HOSTNAME: 'vm' });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /^lacre: warning: LACRE_HOSTNAME \(hostname\) = "vm" is not a fully qualified domain name/m);
  assert.equal(JSON.parse(result.stdout).domain, 'sender.example');
});

test('usage errors exit 2, --version prints the version, LACRE_DEBUG=1 adds the stack', () => {
  const unknown = lacre(['queue', 'status', '--bogus'], {});
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--bogus'/);
  const v = lacre(['--version'], {});
  assert.equal(v.code, 0);
  assert.equal(v.stdout.trim(), version);
  const debug = lacre(['keys', 'list'], { LACRE_DATA_DIR: '/proc/lacre-x', LACRE_DEBUG: '1' });
  assert.equal(debug.code, 2);
  assert.match(debug.stderr, /^ {4}at /m);
});
