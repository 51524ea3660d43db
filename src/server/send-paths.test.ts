// Issue 5's "done when", through a real `lacre serve` process configured only by LACRE_* variables:
// one message sent with Mailjet's official client over HTTPS and one with swaks over SMTP
// submission (STARTTLS + AUTH) both reach the recipient's MX over verified TLS, DKIM-signed, and
// their `sent` events reach a webhook receiver with valid signatures.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { TestCA } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startSmtpSink, type SmtpSink } from '../../test/harness/smtp-sink.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { startServeProcess, type ServeProcess } from '../../test/harness/serve-process.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../../test/harness/webhook-receiver.ts';
import { runSwaks } from '../../test/harness/swaks.ts';
import { Resolver } from '../dns/resolver.ts';
import { nodeStyleResolver } from '../dns/node-style.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import { verifyWebhookSignature } from '../events/signature.ts';

const FIXTURE = join(import.meta.dirname, '../../test/fixtures/node-mailjet-client.ts');
const HOSTNAME = 'mta.lacre.test';

let ca: TestCA;
let dns: FakeDnsServer;
let sink: SmtpSink;
let receiver: WebhookReceiver;
let serve: ServeProcess | undefined;
const dir = tempDir();
const caFile = join(dir, 'ca.pem');

before(async () => {
  ca = await TestCA.create();
  writeFileSync(caFile, ca.certPem);
  dns = await FakeDnsServer.start();
  sink = await startSmtpSink({ tls: 'starttls', cert: await ca.issue({ names: ['mx.rcpt.test'] }) });
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  receiver = await startWebhookReceiver();
});
after(async () => {
  await serve?.stop().catch(() => serve?.kill());
  await receiver?.close();
  await sink?.close();
  await dns?.close();
});

/** A JSON request to Lacre's HTTPS API, trusting the test CA. */
function api(url: string, method: string, auth: string, body?: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = httpsRequest(
      url,
      {
        method,
        ca: ca.certPem,
        timeout: 10_000,
        headers: { authorization: auth, ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

function runNodeMailjet(host: string, key: { apiKey: string; secretKey: string }, request: unknown): Promise<any> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: caFile, NO_PROXY: '*', no_proxy: '*' };
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'ALL_PROXY', 'all_proxy']) delete env[name];
    const child = spawn(process.execPath, [FIXTURE, host, key.apiKey, key.secretKey], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`node-mailjet client exited ${code}: ${stderr}`));
      else resolve(JSON.parse(stdout));
    });
    child.stdin.end(JSON.stringify(request));
  });
}

test('a node-mailjet message and a swaks message both arrive over TLS, DKIM-signed, and their signed events reach the webhook', async () => {
  const dataDir = join(dir, 'data');
  const resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 });

  // The operator's setup, done before start-up through the same services the CLI uses.
  const data = await openTempData({ dataDir });
  let key;
  try {
    key = await new ApiKeys(data.store).create({ name: 'shop', scopes: ['send', 'read'], actor: 'cli:test' });
    const domains = new SenderDomains({
      store: data.store,
      resolver,
      settings: { hostname: HOSTNAME, returnPathSubdomain: 'bounces', returnPathLocalPart: 'bounce', spfIp4: [], spfIp6: [], dmarcRua: 'mailto:d@{domain}', tlsRptRua: 'mailto:t@{domain}' },
      rotationGraceMs: 86_400_000,
    });
    const view = await domains.add('shop.test', 'cli:test');
    publishRecords(dns, view.records);
    assert.equal((await domains.verify('shop.test', { actor: 'cli:test' })).domain.status, 'verified');
  } finally {
    await data.close();
  }

  const httpCert = await ca.issue({ names: ['127.0.0.1'] });
  const submissionCert = await ca.issue({ names: [HOSTNAME] });
  const pem = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  serve = await startServeProcess(
    {
      LACRE_DATA_DIR: dataDir,
      LACRE_HOSTNAME: HOSTNAME,
      LACRE_DNS_SERVERS: dns.address,
      LACRE_CA_FILE: caFile,
      LACRE_SMTP_PORT: String(sink.port),
      LACRE_TLS_POLICIES: 'rcpt.test=verify',
      LACRE_HTTP_TLS_CERT: pem('http-cert.pem', httpCert.chainPem),
      LACRE_HTTP_TLS_KEY: pem('http-key.pem', httpCert.keyPem),
      LACRE_SUBMISSION_TLS_CERT: pem('sub-cert.pem', submissionCert.chainPem),
      LACRE_SUBMISSION_TLS_KEY: pem('sub-key.pem', submissionCert.keyPem),
      LACRE_WEBHOOKS_POLL_INTERVAL: '100ms',
      LACRE_QUEUE_POLL_INTERVAL: '100ms',
    },
    30_000,
    { ca: ca.certPem },
  );
  const auth = `Basic ${Buffer.from(`${key.apiKey}:${key.secretKey}`).toString('base64')}`;
  const hook = await api(`${serve.url}/v1/webhooks`, 'POST', auth, { url: `${receiver.url}/lacre-events`, events: ['sent', 'bounce'] });
  assert.equal(hook.status, 201, JSON.stringify(hook.json));
  const secret: string = hook.json.secret;

  const viaApi = await runNodeMailjet(serve.url.replace('https://', ''), key, {
    Messages: [{ From: { Email: 'orders@shop.test', Name: 'Shop' }, To: [{ Email: 'ada@rcpt.test' }], Subject: 'Via node-mailjet', TextPart: 'Sent with the Mailjet client.', CustomID: 'api-1' }],
  });
  assert.equal(viaApi.send.status, 200, JSON.stringify(viaApi));
  assert.equal(viaApi.send.body.Messages[0].Status, 'success');

  const ports = serve.submission();
  assert.ok(ports, 'the submission listener reported its ports');
  const viaSmtp = await runSwaks({
    server: '127.0.0.1',
    port: ports.starttls,
    tls: 'starttls',
    caFile,
    sni: HOSTNAME,
    auth: { user: key.apiKey, password: key.secretKey },
    from: 'orders@shop.test',
    to: 'bob@rcpt.test',
    headers: ['From: Shop <orders@shop.test>', 'Subject: Via swaks', 'X-MJ-CustomID: smtp-1'],
    body: 'Sent with swaks.',
  });
  assert.equal(viaSmtp.code, 0, viaSmtp.transcript);

  const delivered = await sink.waitForMessages(2, 20_000);
  const verify = nodeStyleResolver(resolver);
  for (const message of delivered) {
    assert.equal(message.tls, true);
    assert.match(message.mailFrom.address, /^bounce\+[0-9a-f]{32}\.[0-9a-f]{12}@bounces\.shop\.test$/);
    const result = await dkimVerify(message.data, { resolver: verify as never, strict: true });
    assert.deepEqual(result.results.map((r: { status: { result: string } }) => r.status.result), ['pass', 'pass']);
    assert.equal(message.data.includes('X-MJ-CustomID'), false);
  }
  assert.deepEqual(delivered.map((m) => m.rcptTo[0].address).sort(), ['ada@rcpt.test', 'bob@rcpt.test']);

  await receiver.waitFor(() => receiver.events().filter((e) => e.event === 'sent').length >= 2, 20_000, 'two sent events');
  const events = receiver.events().filter((e) => e.event === 'sent');
  assert.deepEqual(events.map((e) => e.CustomID).sort(), ['api-1', 'smtp-1']);
  for (const e of events) assert.equal((e.tls as { verified: boolean }).verified, true);
  for (const req of receiver.requests().filter((r) => r.status === 200)) {
    const verdict = verifyWebhookSignature(secret, String(req.headers['x-lacre-signature']), req.raw);
    assert.equal(verdict.valid, true, JSON.stringify(verdict));
    assert.equal(verifyWebhookSignature('whsec_wrong', String(req.headers['x-lacre-signature']), req.raw).valid, false);
  }
  assert.equal(await serve.stop(), 0);
  serve = undefined;
});
