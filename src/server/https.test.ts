// The HTTP API's transport rules: HTTPS with TLS 1.2 or later when given a certificate, and no
// plain HTTP off loopback (API keys travel in every request).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { get } from 'node:https';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCA } from '../../test/harness/ca.ts';
import { tempDir } from '../../test/harness/temp-data.ts';
import { ConfigError, loadConfig } from '../config/load.ts';
import { createLogger } from '../log/logger.ts';
import { buildHttpServer, checkHttpBind, isLoopbackHost } from './http.ts';
import { loadHttpTls } from './https.ts';

test('plain HTTP may listen on loopback only; anywhere else start-up is refused naming the TLS settings', () => {
  for (const host of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost']) {
    assert.equal(isLoopbackHost(host), true, host);
    assert.doesNotThrow(() => checkHttpBind(host, false), host);
  }
  for (const host of ['0.0.0.0', '::', '192.0.2.10', '2001:db8::1', '::ffff:192.0.2.1', 'mail.example.com', '128.0.0.1']) {
    assert.equal(isLoopbackHost(host), false, host);
    assert.throws(
      () => checkHttpBind(host, false),
      (err: unknown) => err instanceof ConfigError && /LACRE_HTTP_TLS_CERT/.test(err.message) && /LACRE_HTTP_TLS_KEY/.test(err.message) && err.message.includes(JSON.stringify(host)),
      host,
    );
    assert.doesNotThrow(() => checkHttpBind(host, true), `${host} with TLS`);
  }
});

test('the TLS settings go together, load only a matching certificate and key, and name the file that is wrong', async () => {
  const ca = await TestCA.create();
  const one = await ca.issue({ names: ['api.lacre.test'] });
  const two = await ca.issue({ names: ['other.lacre.test'] });
  const dir = tempDir();
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const cert = file('cert.pem', one.chainPem);
  const key = file('key.pem', one.keyPem);
  const otherKey = file('other-key.pem', two.keyPem);

  assert.throws(() => loadConfig({ env: { LACRE_HTTP_TLS_CERT: cert } }), /LACRE_HTTP_TLS_CERT, LACRE_HTTP_TLS_KEY/);
  const config = loadConfig({ env: { LACRE_HTTP_TLS_CERT: cert, LACRE_HTTP_TLS_KEY: key, LACRE_HTTP_HOST: '0.0.0.0' } });
  const loaded = loadHttpTls(config.http);
  assert.ok(loaded && String(loaded.cert).includes('BEGIN CERTIFICATE'));

  assert.throws(() => loadHttpTls({ ...config.http, tlsKey: otherKey }), (err: unknown) => err instanceof ConfigError && /do not make a usable pair/.test(err.message));
  assert.throws(() => loadHttpTls({ ...config.http, tlsKey: join(dir, 'missing.pem') }), (err: unknown) => err instanceof ConfigError && /LACRE_HTTP_TLS_KEY/.test(err.message));
  assert.throws(() => loadHttpTls({ ...config.http, tlsCert: key }), (err: unknown) => err instanceof ConfigError && /LACRE_HTTP_TLS_CERT.*holds no PEM certificate/.test(err.message));
  assert.throws(() => loadHttpTls({ host: '0.0.0.0', port: 8080 }), ConfigError, 'plain HTTP off loopback');
  assert.equal(loadHttpTls({ host: '127.0.0.1', port: 8080 }), undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('the HTTPS listener speaks TLS 1.2 and 1.3 and refuses older versions', async () => {
  const ca = await TestCA.create();
  const cert = await ca.issue({ names: ['127.0.0.1'] });
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, https: { cert: cert.chainPem, key: cert.keyPem } });
  try {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    const handshake = (options: { minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3' }) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, ca: [ca.certPem], servername: undefined, ...options, ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
          const protocol = socket.getProtocol() ?? '';
          socket.end();
          resolve(protocol);
        });
        socket.on('error', reject);
        socket.setTimeout(5_000, () => socket.destroy(new Error('timeout')));
      });
    assert.equal(await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), 'TLSv1.2');
    assert.equal(await handshake({ minVersion: 'TLSv1.3' }), 'TLSv1.3');
    await assert.rejects(handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }));
    const health = await new Promise<number>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/healthz', ca: [ca.certPem] }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    assert.equal(health, 200);
  } finally {
    await app.close();
  }
});
