// The pinned-address HTTPS client against a real TLS server on loopback (test/harness/https-server.ts,
// certificates from the test CA): it connects to the address it is given while SNI, the Host header
// and the certificate check use the host name; it refuses TLS 1.1, a wrong name and an untrusted
// root; it enforces the body limit and the deadline; it never follows a redirect.
import { test, before, beforeEach, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA } from '../../test/harness/ca.ts';
import { MTA_STS_PATH, MtaStsHttpsServer } from '../../test/harness/https-server.ts';
import { ResponseTooLargeError, pinnedRequest, type PinnedRequestOptions } from './https-client.ts';

let ca: TestCA;
let server: MtaStsHttpsServer;

// One server for the file; each test scripts its hosts afresh.
before(async () => {
  ca = await TestCA.create();
  server = await MtaStsHttpsServer.start({ ca });
});
beforeEach(() => server.reset());
after(() => server.close());

const HOST = 'mta-sts.example.test';

function get(host: string, options: Partial<PinnedRequestOptions> = {}, port = server.port) {
  return pinnedRequest(
    // The name resolves nowhere: only the pinned address can be reached.
    { host, address: '127.0.0.1', port },
    { method: 'GET', path: MTA_STS_PATH, ca: [ca.certPem], timeoutMs: 5000, maxBodyBytes: 64 * 1024, ...options },
  );
}

function hasCode(code: string) {
  return (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code);
    return true;
  };
}

test('connects to the pinned address and checks the certificate for the host name, sent as SNI and Host', async () => {
  await server.setHost(HOST, { body: 'version: STSv1\r\n' });
  const response = await get(HOST);
  assert.equal(response.status, 200);
  assert.equal(response.body.toString(), 'version: STSv1\r\n');
  assert.deepEqual(
    server.requests.map(({ host, servername, method }) => ({ host, servername, method })),
    [{ host: HOST, servername: HOST, method: 'GET' }],
  );
});

test('a certificate for another name is refused, and so is one from an untrusted root', async () => {
  await server.setHost(HOST, { body: 'x', certNames: ['www.example.test'] });
  await assert.rejects(get(HOST), hasCode('ERR_TLS_CERT_ALTNAME_INVALID'));
  await server.setHost('mta-sts.other.test', { body: 'x' });
  await assert.rejects(get('mta-sts.other.test', { ca: [] }), (err: NodeJS.ErrnoException) => {
    assert.match(String(err.code), /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
    return true;
  });
  assert.equal(server.requests.length, 0);
});

test('a host that speaks only TLS 1.1 is refused', async () => {
  const legacy = await MtaStsHttpsServer.start({ ca, legacyTls: true });
  try {
    await legacy.setHost(HOST, { body: 'x' });
    await assert.rejects(get(HOST, {}, legacy.port), /protocol|version/i);
    assert.equal(legacy.requests.length, 0);
  } finally {
    await legacy.close();
  }
});

test('a body over the limit fails the request; one at the limit is taken', async () => {
  await server.setHost(HOST, { body: 'a'.repeat(1000) });
  assert.equal((await get(HOST, { maxBodyBytes: 1000 })).body.length, 1000);
  await assert.rejects(get(HOST, { maxBodyBytes: 999 }), (err: Error) => err instanceof ResponseTooLargeError && err.limit === 999);
  // A dropped body is bounded too.
  await assert.rejects(get(HOST, { maxBodyBytes: 999, discardBody: true }), ResponseTooLargeError);
  const dropped = await get(HOST, { discardBody: true });
  assert.equal(dropped.status, 200);
  assert.equal(dropped.body.length, 0);
});

test('no complete answer within the deadline fails the request', async () => {
  await server.setHost(HOST, { body: 'late', delayMs: 3000 });
  const started = Date.now();
  await assert.rejects(get(HOST, { timeoutMs: 200 }), /no complete answer within 200 ms/);
  assert.ok(Date.now() - started < 2500);
});

test('a redirect is returned, never followed', async () => {
  await server.setHost(HOST, { redirect: `https://${HOST}/elsewhere` });
  const response = await get(HOST);
  assert.equal(response.status, 301);
  assert.equal(response.headers.location, `https://${HOST}/elsewhere`);
  assert.equal(server.requests.length, 1);
});

test('checkHead sees status and headers first, and what it throws fails the request', async () => {
  await server.setHost(HOST, { body: 'x', contentType: 'text/html' });
  const refused = new Error('not text/plain');
  await assert.rejects(
    get(HOST, {
      checkHead: ({ status, headers }) => {
        assert.equal(status, 200);
        if (headers['content-type'] !== 'text/plain') throw refused;
      },
    }),
    (err) => err === refused,
  );
});

test('a POST carries its body with its length; an abort signal stops the request', async () => {
  await server.setHost(HOST, { body: 'x' });
  // The harness answers only GETs of the policy path, so a POST reaches it and is told 404.
  const response = await pinnedRequest(
    { host: HOST, address: '127.0.0.1', port: server.port },
    { method: 'POST', path: '/report', body: Buffer.from('{"a":1}'), headers: { 'content-type': 'application/json' }, ca: [ca.certPem], timeoutMs: 5000, maxBodyBytes: 1024, discardBody: true },
  );
  assert.equal(response.status, 404);
  assert.deepEqual(server.requests.map((r) => [r.method, r.path]), [['POST', '/report']]);
  await server.setHost(HOST, { body: 'late', delayMs: 3000 });
  const controller = new AbortController();
  const pending = get(HOST, { signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, /abort/i);
});

test('the target must be an address: a name is never looked up', async () => {
  await assert.rejects(
    pinnedRequest({ host: HOST, address: HOST, port: server.port }, { method: 'GET', path: '/', timeoutMs: 1000, maxBodyBytes: 10 }),
    /is not an IP address/,
  );
});
