// The listeners' certificate: the operator's files, checked at start-up with errors that name the
// setting; otherwise a self-signed certificate made once and kept, replaced only when it no longer fits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCA } from '../../test/harness/ca.ts';
import { tempDir } from '../../test/harness/temp-data.ts';
import { ConfigError } from '../config/load.ts';
import { loadListenerCertificate } from './listener-cert.ts';

test('a self-signed EC certificate for the host name is generated once into the data dir, key 0600, and reused', async () => {
  const dataDir = tempDir();
  try {
    const first = await loadListenerCertificate({ dataDir, hostname: 'mta.example.test' });
    assert.equal(first.source, 'generated');
    assert.equal(first.certPath, join(dataDir, 'tls', 'submission-cert.pem'));
    assert.equal(statSync(first.keyPath).mode & 0o777, 0o600);
    assert.equal(statSync(join(dataDir, 'tls')).mode & 0o777, 0o700);
    const cert = new X509Certificate(readFileSync(first.certPath));
    assert.equal(cert.checkHost('mta.example.test'), 'mta.example.test');
    assert.equal(cert.publicKey.asymmetricKeyType, 'ec');
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cert.verify(cert.publicKey), 'self-signed');
    assert.equal(first.fingerprintSha256, cert.fingerprint256);
    assert.ok(new Date(cert.validTo).getTime() > Date.now() + 365 * 86_400_000);

    const again = await loadListenerCertificate({ dataDir, hostname: 'mta.example.test' });
    assert.equal(again.source, 'reused');
    assert.equal(again.fingerprintSha256, first.fingerprintSha256);
    assert.equal(again.key, first.key);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('the kept certificate is replaced when the host name changes or it is about to expire, and a readable key is refused', async () => {
  const dataDir = tempDir();
  try {
    const first = await loadListenerCertificate({ dataDir, hostname: 'old.example.test' });
    const renamed = await loadListenerCertificate({ dataDir, hostname: 'new.example.test' });
    assert.equal(renamed.source, 'generated');
    assert.match(renamed.replaced ?? '', /not for the host name new\.example\.test/);
    assert.notEqual(renamed.fingerprintSha256, first.fingerprintSha256);

    // Four years and eleven months on, inside the renewal window.
    const later = await loadListenerCertificate({ dataDir, hostname: 'new.example.test', now: () => Date.now() + 1_810 * 86_400_000 });
    assert.equal(later.source, 'generated');
    assert.match(later.replaced ?? '', /expires/);

    chmodSync(later.keyPath, 0o644);
    await assert.rejects(
      loadListenerCertificate({ dataDir, hostname: 'new.example.test' }),
      (err: unknown) => err instanceof ConfigError && /readable by other users .*chmod 600/.test(err.message),
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("the operator's certificate is used as given; a missing file, a non-PEM file or a key of another certificate is a ConfigError naming the setting", async () => {
  const dir = tempDir();
  try {
    const ca = await TestCA.create();
    const issued = await ca.issue({ names: ['smtp.example.test'], kind: 'intermediate-chain' });
    const other = await ca.issue({ names: ['smtp.example.test'] });
    const certFile = join(dir, 'chain.pem');
    const keyFile = join(dir, 'key.pem');
    const otherKey = join(dir, 'other-key.pem');
    const notPem = join(dir, 'not.pem');
    writeFileSync(certFile, issued.chainPem);
    writeFileSync(keyFile, issued.keyPem);
    writeFileSync(otherKey, other.keyPem);
    writeFileSync(notPem, 'hello');

    const loaded = await loadListenerCertificate({ dataDir: dir, hostname: 'ignored.test', certFile, keyFile });
    assert.equal(loaded.source, 'configured');
    assert.equal(loaded.cert, issued.chainPem, 'the whole chain is presented');
    assert.equal(loaded.fingerprintSha256.replace(/:/g, '').toLowerCase(), issued.fingerprintSha256);

    const cases: Array<[Partial<{ certFile: string; keyFile: string }>, RegExp]> = [
      [{ certFile: join(dir, 'missing.pem'), keyFile }, /^LACRE_SUBMISSION_TLS_CERT = ".*missing\.pem": ENOENT/],
      [{ certFile: notPem, keyFile }, /^LACRE_SUBMISSION_TLS_CERT = .*no PEM certificate/],
      [{ certFile, keyFile: notPem }, /^LACRE_SUBMISSION_TLS_KEY = .*no PEM private key/],
      [{ certFile, keyFile: otherKey }, /^LACRE_SUBMISSION_TLS_KEY = .* is not the private key of the certificate/],
      [{ certFile }, /go together/],
    ];
    for (const [files, pattern] of cases) {
      await assert.rejects(
        loadListenerCertificate({ dataDir: dir, hostname: 'ignored.test', ...files }),
        (err: unknown) => err instanceof ConfigError && pattern.test(err.message),
        pattern.source,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
