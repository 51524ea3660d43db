// Self-tests for the test CA: each certificate kind must make a real Node TLS client succeed or
// fail with the error code the service will see in production.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { TestCA } from './ca.ts';
import type { IssuedCert } from './ca.ts';

interface HandshakeResult {
  ok: boolean;
  code?: string;
}

// Starts a one-shot TLS server presenting `cert`, dials it with the CA root as the only trust
// anchor, and reports whether the client accepted the handshake.
async function handshake(
  ca: TestCA,
  cert: IssuedCert,
  opts: { servername?: string; host?: string; useChain?: boolean } = {},
): Promise<HandshakeResult> {
  const server = tls.createServer({
    key: cert.keyPem,
    cert: opts.useChain === false ? cert.certPem : cert.chainPem,
  });
  // Server-side errors (client aborting on a bad cert) are expected and not interesting here.
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<HandshakeResult>((resolve) => {
      const socket = tls.connect({
        host: opts.host ?? '127.0.0.1',
        port,
        ca: ca.certPem,
        servername: opts.servername,
      });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ ok: false, code: 'TEST_TIMEOUT' });
      }, 5000);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.end();
        resolve({ ok: true });
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        resolve({ ok: false, code: err.code });
      });
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

let ca: TestCA;
before(async () => {
  ca = await TestCA.create();
});

test('a valid leaf is accepted by a client trusting only the root', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'] });
  assert.deepEqual(await handshake(ca, cert, { servername: 'mx.example.test' }), { ok: true });
});

test('an RSA leaf is accepted when asked for', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], keyType: 'rsa' });
  assert.equal(new X509Certificate(cert.certPem).publicKey.asymmetricKeyType, 'rsa');
  assert.equal(createPrivateKey(cert.keyPem).asymmetricKeyDetails?.modulusLength, 2048);
  assert.deepEqual(await handshake(ca, cert, { servername: 'mx.example.test' }), { ok: true });
});

test('leaves are EC P-256 by default', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'] });
  const key = createPrivateKey(cert.keyPem);
  assert.equal(key.asymmetricKeyType, 'ec');
  assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
});

test('an IP address name becomes an IP SAN that matches when dialling the address', async () => {
  const cert = await ca.issue({ names: ['127.0.0.1'] });
  assert.match(new X509Certificate(cert.certPem).subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  assert.deepEqual(await handshake(ca, cert, { host: '127.0.0.1' }), { ok: true });
});

test('a leaf behind an intermediate is accepted when the chain is served', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], kind: 'intermediate-chain' });
  assert.equal((cert.chainPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2);
  assert.deepEqual(await handshake(ca, cert, { servername: 'mx.example.test' }), { ok: true });
});

test('a leaf behind an intermediate is rejected when only the leaf is served', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], kind: 'intermediate-chain' });
  const result = await handshake(ca, cert, { servername: 'mx.example.test', useChain: false });
  assert.deepEqual(result, { ok: false, code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
});

test('an expired leaf fails with CERT_HAS_EXPIRED', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], kind: 'expired' });
  assert.ok(cert.notAfter.getTime() < Date.now());
  const result = await handshake(ca, cert, { servername: 'mx.example.test' });
  assert.deepEqual(result, { ok: false, code: 'CERT_HAS_EXPIRED' });
});

test('a not-yet-valid leaf fails with CERT_NOT_YET_VALID', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], kind: 'not-yet-valid' });
  assert.ok(cert.notBefore.getTime() > Date.now());
  const result = await handshake(ca, cert, { servername: 'mx.example.test' });
  assert.deepEqual(result, { ok: false, code: 'CERT_NOT_YET_VALID' });
});

test('a self-signed leaf fails with DEPTH_ZERO_SELF_SIGNED_CERT', async () => {
  const cert = await ca.issue({ names: ['mx.example.test'], kind: 'self-signed' });
  const x = new X509Certificate(cert.certPem);
  assert.equal(x.issuer, x.subject);
  const result = await handshake(ca, cert, { servername: 'mx.example.test' });
  assert.deepEqual(result, { ok: false, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
});

test('a leaf for another name fails with ERR_TLS_CERT_ALTNAME_INVALID', async () => {
  const cert = await ca.issue({ names: ['other.example.test'] });
  const result = await handshake(ca, cert, { servername: 'mx.example.test' });
  assert.deepEqual(result, { ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});

test('a leaf from a different CA is not trusted', async () => {
  const other = await TestCA.create({ commonName: 'Other Root' });
  const cert = await other.issue({ names: ['mx.example.test'] });
  const result = await handshake(ca, cert, { servername: 'mx.example.test' });
  assert.equal(result.ok, false);
  assert.equal(result.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
});

test('fingerprint and SPKI digest match what Node computes from the certificate', async () => {
  const cert = await ca.issue({ names: ['mx.example.test', 'mx2.example.test'] });
  const x = new X509Certificate(cert.certPem);
  assert.equal(cert.fingerprintSha256, x.fingerprint256.replace(/:/g, '').toLowerCase());
  assert.match(cert.fingerprintSha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(cert.certDer, x.raw);
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  assert.equal(cert.spkiSha256, createHash('sha256').update(spki).digest('hex'));
  assert.equal(x.subject, 'CN=mx.example.test');
  assert.equal(x.subjectAltName, 'DNS:mx.example.test, DNS:mx2.example.test');
  assert.equal(x.ca, false);
  assert.deepEqual(x.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.equal(x.validFrom, new X509Certificate(cert.certPem).validFrom);
  assert.equal(cert.notAfter.getTime(), new Date(x.validTo).getTime());
});

test('the root is a CA certificate and writeCaFile writes it out', async () => {
  const root = new X509Certificate(ca.certPem);
  assert.equal(root.ca, true);
  assert.equal(root.issuer, root.subject);
  const dir = await mkdtemp(join(tmpdir(), 'lacre-ca-'));
  try {
    const path = await ca.writeCaFile(dir);
    assert.equal(await readFile(path, 'utf8'), ca.certPem);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
