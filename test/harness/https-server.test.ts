// Self-tests for the MTA-STS HTTPS server: a real Node HTTPS client trusting only the test CA must
// see each host's scripted response and certificate, routed by SNI and Host on one port.
import { test, before, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as https from 'node:https';
import { X509Certificate } from 'node:crypto';
import * as net from 'node:net';
import { once } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import type { SecureVersion, TLSSocket } from 'node:tls';
import { TestCA } from './ca.ts';
import { waitFor } from './wait.ts';
import { MTA_STS_PATH, MtaStsHttpsServer, formatMtaStsPolicy } from './https-server.ts';

interface FetchResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  protocol: string | null;
  peerFingerprint: string;
}

interface FetchOptions {
  path?: string;
  servername?: string;
  method?: string;
  timeoutMs?: number;
  minVersion?: SecureVersion;
  maxVersion?: SecureVersion;
  ciphers?: string;
}

let ca: TestCA;
let server: MtaStsHttpsServer;

before(async () => {
  ca = await TestCA.create();
});
beforeEach(async () => {
  server = await MtaStsHttpsServer.start({ ca });
});
afterEach(async () => {
  await server.close();
});

// Fetches like the service will: dial the loopback address, send SNI and Host for `host`, trust
// only the test CA. Rejects with the error's code.
function fetchPolicy(host: string, opts: FetchOptions = {}): Promise<FetchResult> {
  return new Promise<FetchResult>((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port: server.port,
      path: opts.path ?? MTA_STS_PATH,
      method: opts.method ?? 'GET',
      servername: opts.servername ?? host,
      headers: { host },
      ca: ca.certPem,
      agent: false,
      minVersion: opts.minVersion,
      maxVersion: opts.maxVersion,
      ciphers: opts.ciphers,
      timeout: opts.timeoutMs ?? 3000,
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('client timeout'), { code: 'TEST_TIMEOUT' })));
    req.on('error', reject);
    req.on('response', (res) => {
      const socket = res.socket as TLSSocket;
      const protocol = socket.getProtocol();
      const peerFingerprint = socket.getPeerCertificate().fingerprint256;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          protocol,
          peerFingerprint,
        }),
      );
    });
    req.end();
  });
}

async function rejectsWithCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code);
    return true;
  });
}

const POLICY = formatMtaStsPolicy({ mode: 'enforce', mx: ['mx1.example.test', '*.example.test'], maxAge: 86400 });

test('serves the scripted policy as text/plain to a client trusting the test CA', async () => {
  await server.setPolicy('example.test', { body: POLICY });
  const res = await fetchPolicy('mta-sts.example.test');
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'text/plain');
  assert.equal(res.body, POLICY);
  assert.equal(
    res.body,
    'version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.example.test\r\nmax_age: 86400\r\n',
  );
});

test('listens on an ephemeral loopback port by default', () => {
  assert.equal(server.host, '127.0.0.1');
  assert.ok(server.port > 0);
});

test('serves a different policy and certificate per host on the same port', async () => {
  const a = await server.setPolicy('a.test', { body: 'policy a' });
  const b = await server.setPolicy('b.test', { body: 'policy b' });
  const resA = await fetchPolicy('mta-sts.a.test');
  const resB = await fetchPolicy('mta-sts.b.test');
  assert.equal(resA.body, 'policy a');
  assert.equal(resB.body, 'policy b');
  assert.equal(resA.peerFingerprint, new X509Certificate(a.certPem).fingerprint256);
  assert.equal(resB.peerFingerprint, new X509Certificate(b.certPem).fingerprint256);
});

test('returns the scripted status and content type', async () => {
  await server.setPolicy('example.test', { body: 'oops', status: 500, contentType: 'text/html; charset=utf-8' });
  const res = await fetchPolicy('mta-sts.example.test');
  assert.equal(res.status, 500);
  assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(res.body, 'oops');
});

test('answers 404 for a scripted host without a body, and for other paths', async () => {
  await server.setPolicy('empty.test', {});
  assert.equal((await fetchPolicy('mta-sts.empty.test')).status, 404);
  await server.setPolicy('example.test', { body: POLICY });
  assert.equal((await fetchPolicy('mta-sts.example.test', { path: '/other.txt' })).status, 404);
});

test('redirects when scripted to', async () => {
  await server.setPolicy('example.test', { redirect: 'https://elsewhere.test/policy.txt' });
  const res = await fetchPolicy('mta-sts.example.test');
  assert.equal(res.status, 301);
  assert.equal(res.headers.location, 'https://elsewhere.test/policy.txt');
  await server.setPolicy('example.test', { redirect: '/moved', status: 302 });
  assert.equal((await fetchPolicy('mta-sts.example.test')).status, 302);
});

test('delays the response by the scripted time', async () => {
  await server.setPolicy('slow.test', { body: POLICY, delayMs: 300 });
  const started = Date.now();
  const res = await fetchPolicy('mta-sts.slow.test');
  assert.ok(Date.now() - started >= 280, `answered after ${Date.now() - started} ms`);
  assert.equal(res.body, POLICY);
});

test('a delay longer than the client timeout makes the client give up', async () => {
  await server.setPolicy('slow.test', { body: POLICY, delayMs: 5000 });
  await rejectsWithCode(fetchPolicy('mta-sts.slow.test', { timeoutMs: 200 }), 'TEST_TIMEOUT');
});

test('closes promptly while a delayed response is pending', { timeout: 5000 }, async () => {
  await server.setPolicy('slow.test', { body: POLICY, delayMs: 10_000 });
  const pending = fetchPolicy('mta-sts.slow.test', { timeoutMs: 5000 }).catch((err: NodeJS.ErrnoException) => err);
  await waitFor(() => server.requests.length === 1, { what: 'the request to reach the server', timeoutMs: 2_000 });
  // The response is due in 10 s: close returning within the test's 5 s means it did not wait for it.
  await server.close();
  const outcome = await pending;
  assert.ok(outcome instanceof Error);
  server = await MtaStsHttpsServer.start({ ca }); // afterEach closes it
});

test('presents an expired certificate for one host while another stays valid', async () => {
  await server.setPolicy('expired.test', { body: POLICY, cert: 'expired' });
  await server.setPolicy('fine.test', { body: POLICY });
  await rejectsWithCode(fetchPolicy('mta-sts.expired.test'), 'CERT_HAS_EXPIRED');
  assert.equal((await fetchPolicy('mta-sts.fine.test')).status, 200);
});

test('presents a wrong-name certificate when scripted with other names', async () => {
  await server.setPolicy('example.test', { body: POLICY, certNames: ['www.example.test'] });
  await rejectsWithCode(fetchPolicy('mta-sts.example.test'), 'ERR_TLS_CERT_ALTNAME_INVALID');
});

test('presents a self-signed or not-yet-valid certificate when scripted', async () => {
  await server.setPolicy('self.test', { body: POLICY, cert: 'self-signed' });
  await rejectsWithCode(fetchPolicy('mta-sts.self.test'), 'DEPTH_ZERO_SELF_SIGNED_CERT');
  await server.setPolicy('future.test', { body: POLICY, cert: 'not-yet-valid' });
  await rejectsWithCode(fetchPolicy('mta-sts.future.test'), 'CERT_NOT_YET_VALID');
});

test('serves a certificate behind an intermediate with its chain', async () => {
  await server.setPolicy('chain.test', { body: POLICY, cert: 'intermediate-chain' });
  assert.equal((await fetchPolicy('mta-sts.chain.test')).status, 200);
});

test('changing the certificate kind of a host takes effect on the next connection', async () => {
  await server.setPolicy('example.test', { body: POLICY });
  assert.equal((await fetchPolicy('mta-sts.example.test')).status, 200);
  await server.setPolicy('example.test', { body: POLICY, cert: 'expired' });
  await rejectsWithCode(fetchPolicy('mta-sts.example.test'), 'CERT_HAS_EXPIRED');
});

test('presents a certificate for another name to an unscripted SNI name', async () => {
  await rejectsWithCode(fetchPolicy('mta-sts.unknown.test'), 'ERR_TLS_CERT_ALTNAME_INVALID');
});

test('refuses TLS below 1.2 and negotiates 1.2 when that is the client maximum', async () => {
  await server.setPolicy('example.test', { body: POLICY });
  assert.equal((await fetchPolicy('mta-sts.example.test', { maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2');
  // SECLEVEL=0 lets this client offer TLS 1.1 at all, so the protocol_version alert comes from the
  // server (its minVersion, and OpenSSL's default security level behind it).
  // (https.request reports it as EPROTO with OpenSSL's text.)
  await assert.rejects(
    fetchPolicy('mta-sts.example.test', { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    /alert protocol version/,
  );
  assert.equal(server.requests.length, 1);
});

test('logs each request with Host, SNI, method, path and status', async () => {
  await server.setPolicy('example.test', { body: POLICY });
  await fetchPolicy('MTA-STS.example.test:443', { servername: 'MTA-STS.Example.test' });
  await fetchPolicy('mta-sts.example.test', { path: '/nope', method: 'HEAD' });
  assert.deepEqual(
    server.requests.map(({ host, servername, method, path, status }) => ({ host, servername, method, path, status })),
    [
      {
        host: 'mta-sts.example.test',
        servername: 'MTA-STS.Example.test',
        method: 'GET',
        path: MTA_STS_PATH,
        status: 200,
      },
      { host: 'mta-sts.example.test', servername: 'mta-sts.example.test', method: 'HEAD', path: '/nope', status: 404 },
    ],
  );
});

test('reset forgets hosts and the request log', async () => {
  await server.setPolicy('example.test', { body: POLICY });
  await fetchPolicy('mta-sts.example.test');
  server.reset();
  assert.equal(server.requests.length, 0);
  assert.equal(server.certificate('mta-sts.example.test'), undefined);
  await rejectsWithCode(fetchPolicy('mta-sts.example.test'), 'ERR_TLS_CERT_ALTNAME_INVALID');
});

test('closes promptly with a client stalled before the TLS handshake', { timeout: 5000 }, async () => {
  const accepted = server.nextConnection();
  const socket = net.connect(server.port, '127.0.0.1');
  socket.on('error', () => {});
  const cut = once(socket, 'close');
  await accepted;
  // The client never sends a ClientHello: close returning within the test's 5 s means it did not
  // wait for the client, and the client sees its connection cut.
  await server.close();
  await cut;
  server = await MtaStsHttpsServer.start({ ca }); // afterEach closes it
});
