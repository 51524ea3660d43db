// The one trust store: the operator's CA file read as PEMs, one cached context per set of extra
// roots, and the TLS 1.2 floor in the context itself (what every caller passes to tls.connect).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCA } from '../../test/harness/ca.ts';
import { MtaStsHttpsServer } from '../../test/harness/https-server.ts';
import { MIN_TLS_VERSION, readCaFile, trustedContext } from './trust.ts';

let ca: TestCA;
let other: TestCA;
let dir: string;

before(async () => {
  [ca, other] = await Promise.all([TestCA.create(), TestCA.create()]);
  dir = await mkdtemp(join(tmpdir(), 'lacre-trust-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Handshake with `context` to a server on loopback; resolves with the protocol or rejects with the error. */
function handshake(port: number, servername: string, context: tls.SecureContext, extra: tls.ConnectionOptions = {}): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, secureContext: context, ...extra }, () => {
      const protocol = socket.getProtocol();
      socket.end();
      resolve(protocol);
    });
    socket.setTimeout(5000, () => socket.destroy(new Error('handshake timed out')));
    socket.on('error', reject);
  });
}

test('the CA file gives its PEM certificates and nothing else; a file without one is refused', async () => {
  const bundle = join(dir, 'bundle.pem');
  await writeFile(bundle, `# operator's roots\n${ca.certPem}\nsome comment\n${other.certPem}`);
  const pems = readCaFile(bundle);
  assert.equal(pems.length, 2);
  for (const pem of pems) assert.match(pem, /^-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\n$/);
  const empty = join(dir, 'empty.pem');
  await writeFile(empty, 'not a certificate\n');
  assert.throws(() => readCaFile(empty), /no PEM certificate in it/);
  assert.throws(() => readCaFile(join(dir, 'missing.pem')), /ENOENT/);
});

test('one context per set of extra roots: the same roots give the same context', () => {
  const a = trustedContext([ca.certPem]);
  assert.equal(trustedContext([ca.certPem]), a);
  assert.notEqual(trustedContext([other.certPem]), a);
  assert.equal(trustedContext(), trustedContext([]));
});

test('the extra roots are trusted beside the default ones, and only when given', async () => {
  const server = await MtaStsHttpsServer.start({ ca });
  try {
    await server.setHost('mta-sts.example.test', { body: 'x' });
    assert.match((await handshake(server.port, 'mta-sts.example.test', trustedContext([ca.certPem]))) ?? '', /^TLSv1\.[23]$/);
    // The test CA is in no default store.
    await assert.rejects(handshake(server.port, 'mta-sts.example.test', trustedContext()), (err: NodeJS.ErrnoException) => {
      assert.match(String(err.code), /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
      return true;
    });
  } finally {
    await server.close();
  }
});

test(`the floor (${MIN_TLS_VERSION}) is in the context: a TLS 1.1 host is refused even when the caller asks for less`, async () => {
  const server = await MtaStsHttpsServer.start({ ca, legacyTls: true });
  try {
    await server.setHost('mta-sts.legacy.test', { body: 'x' });
    // The host does speak TLS 1.1, to a client built to accept it.
    const legacy = tls.createSecureContext({ ca: ca.certPem, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
    assert.equal(await handshake(server.port, 'mta-sts.legacy.test', legacy), 'TLSv1.1');
    // A secureContext given to tls.connect wins over minVersion and ciphers beside it.
    await assert.rejects(
      handshake(server.port, 'mta-sts.legacy.test', trustedContext([ca.certPem]), { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }),
      /protocol|version/i,
    );
  } finally {
    await server.close();
  }
});
