// The error table row by row: each failure an operator meets becomes one line naming what to do,
// with exit 2 when it is theirs to fix and 1 when the command failed at run time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { explainError, debugWanted, CliError } from './errors.ts';
import { ConfigError } from '../config/load.ts';
import { KeyringError } from '../sealing/keyring.ts';
import { SealError } from '../sealing/sealer.ts';

const sys = (code: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(`${code} happened`), { code, ...extra });
const ctx = { dataDir: '/srv/lacre', ports: [{ port: 8080, setting: 'LACRE_HTTP_PORT (http.port)' }] };

const rows: Array<[string, unknown, RegExp, 1 | 2]> = [
  ['a configuration error keeps its message', new ConfigError('invalid configuration: X = "y": bad'), /^invalid configuration: X = "y": bad$/, 2],
  ['a usage error keeps its message', new CliError('no message with id 7'), /^no message with id 7$/, 2],
  ['a key file error keeps its message', new KeyringError('/d/master.key is readable by other users (mode 644); run: chmod 600 /d/master.key'), /chmod 600/, 2],
  ['a missing key names the settings', new SealError('sealed value for settings needs key abcd, which is not in the keyring'), /\/srv\/lacre.*LACRE_MASTER_KEY.*LACRE_RETIRED_MASTER_KEYS/, 2],
  ['a failed authentication is a runtime failure', new SealError('sealed value for x failed authentication'), /restore both from the same backup/, 1],
  ['a port in use names the setting that chose it', sys('EADDRINUSE', { syscall: 'listen', address: '127.0.0.1', port: 8080 }), /^cannot listen on 127\.0\.0\.1:8080: another process already uses it; stop that process or change LACRE_HTTP_PORT \(http\.port\)$/, 2],
  ['an IPv6 address is bracketed', sys('EADDRINUSE', { syscall: 'listen', address: '::1', port: 25 }), /\[::1\]:25.*LACRE_HTTP_PORT, LACRE_SUBMISSION_PORT/, 2],
  ['a privileged port says why', sys('EACCES', { syscall: 'listen', address: '0.0.0.0', port: 80 }), /ports below 1024 need root or CAP_NET_BIND_SERVICE/, 2],
  ['an address not on this machine', sys('EADDRNOTAVAIL', { syscall: 'listen', address: '10.9.9.9', port: 80 }), /no such address on this machine; change LACRE_HTTP_HOST/, 2],
  ['a path without permission', sys('EACCES', { syscall: 'open', path: '/srv/lacre/lacre.db' }), /^cannot open \/srv\/lacre\/lacre\.db: permission denied; .*LACRE_DATA_DIR/, 2],
  ['a file where a directory should be', sys('ENOTDIR', { syscall: 'mkdir', path: '/etc/passwd/x' }), /^\/etc\/passwd\/x: a part of this path is a file.*LACRE_DATA_DIR/, 2],
  ['a read-only file system', sys('EROFS', { syscall: 'open', path: '/ro/lacre.db' }), /read-only file system; set LACRE_DATA_DIR/, 2],
  ['a missing file', sys('ENOENT', { syscall: 'open', path: '/nope.pem' }), /^\/nope\.pem does not exist/, 2],
  ['a full disk is a runtime failure', sys('ENOSPC', { syscall: 'write', path: '/srv/lacre/lacre.db-wal' }), /no space left.*nothing accepted was lost/, 1],
  ['a database locked too long', sys('ERR_LACRE_DATABASE_LOCKED'), /ERR_LACRE_DATABASE_LOCKED happened/, 1],
  ['a file that is not a database', Object.assign(new Error('file is not a database'), { code: 'ERR_SQLITE_ERROR', errcode: 26, errstr: 'file is not a database' }), /^\/srv\/lacre\/lacre\.db is damaged or not a Lacre database/, 1],
  ['anything else says how to see more', new TypeError('x is not a function'), /^x is not a function \(run again with LACRE_DEBUG=1 for the details\)$/, 1],
  ['a thrown string', 'boom', /^boom /, 1],
];

for (const [name, err, line, exitCode] of rows) {
  test(`error table: ${name}`, () => {
    const explained = explainError(err, ctx);
    assert.match(explained.line, line);
    assert.equal(explained.exitCode, exitCode);
    assert.ok(!explained.line.includes('\n'), 'one line');
  });
}

test('a message of several lines is joined into one', () => {
  assert.equal(explainError(new ConfigError('invalid configuration:\n  A: x\n  B: y')).line, 'invalid configuration:; A: x; B: y');
});

test('LACRE_DEBUG turns on stacks for 1, true, yes and on in any case, and nothing else', () => {
  for (const v of ['1', 'true', 'TRUE', 'yes', 'On']) assert.equal(debugWanted({ LACRE_DEBUG: v }), true, v);
  for (const v of [undefined, '', '0', 'false', 'no', 'maybe']) assert.equal(debugWanted({ LACRE_DEBUG: v }), false, String(v));
});
