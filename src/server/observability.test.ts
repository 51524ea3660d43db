// Issue 13's metrics, health and key rotation, through a real `lacre serve` process: a message sent
// over HTTP and delivered over TLS moves the Prometheus counters; `/healthz` names a broken keyring
// and recovers; `lacre sealing rotate-key` beside the running server leaves it sending, reading
// and delivering, under the new key, with no restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCA } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startSmtpSink, type SmtpSink } from '../../test/harness/smtp-sink.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { startServeProcess, type ServeProcess } from '../../test/harness/serve-process.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { Resolver } from '../dns/resolver.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import { masterKeyPath } from '../sealing/keyring.ts';
import { runLacre } from '../../test/harness/lacre-cli.ts';

const HOSTNAME = 'mta.lacre.test';

let ca: TestCA;
let dns: FakeDnsServer;
let sink: SmtpSink;
let serve: ServeProcess | undefined;
let auth = '';
const dir = tempDir();
const dataDir = join(dir, 'data');

before(async () => {
  ca = await TestCA.create();
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.certPem);
  dns = await FakeDnsServer.start();
  sink = await startSmtpSink({ tls: 'starttls', cert: await ca.issue({ names: ['mx.rcpt.test'] }) });
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  const resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 });
  const data = await openTempData({ dataDir });
  try {
    const key = await new ApiKeys(data.store).create({ name: 'ops', scopes: ['send', 'read'], actor: 'cli:test' });
    auth = `Basic ${Buffer.from(`${key.apiKey}:${key.secretKey}`).toString('base64')}`;
    const domains = new SenderDomains({
      store: data.store,
      resolver,
      settings: { hostname: HOSTNAME, returnPathSubdomain: 'bounces', returnPathLocalPart: 'bounce', spfIp4: [], spfIp6: [], dmarcRua: 'mailto:d@{domain}', tlsRptRua: 'mailto:t@{domain}' },
      rotationGraceMs: 86_400_000,
    });
    publishRecords(dns, (await domains.add('shop.test', 'cli:test')).records);
    assert.equal((await domains.verify('shop.test', { actor: 'cli:test' })).domain.status, 'verified');
  } finally {
    await data.close();
  }
  serve = await startServeProcess({
    LACRE_DATA_DIR: dataDir,
    LACRE_HOSTNAME: HOSTNAME,
    LACRE_DNS_SERVERS: dns.address,
    LACRE_CA_FILE: caFile,
    LACRE_SMTP_PORT: String(sink.port),
    LACRE_TLS_POLICIES: 'rcpt.test=verify',
    LACRE_QUEUE_POLL_INTERVAL: '200ms',
  });
});

after(async () => {
  await serve?.stop().catch(() => serve?.kill());
  await sink?.close();
  await dns?.close();
});

async function send(to: string, customId: string): Promise<number> {
  const response = await fetch(`${serve!.url}/v3.1/send`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify({ Messages: [{ From: { Email: 'orders@shop.test' }, To: [{ Email: to }], Subject: 'Hello', TextPart: 'Hi.', CustomID: customId }] }),
  });
  await response.body?.cancel();
  return response.status;
}

/** The scrape as `name{labels}` → value, after checking every line is valid text format. */
async function scrape(): Promise<Map<string, number>> {
  const response = await fetch(`${serve!.url}/metrics`, { headers: { authorization: auth } });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const match = /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/i.exec(line);
    assert.ok(match, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    samples.set(match[1], Number(match[2]));
  }
  return samples;
}

const lacreCli = (args: string[]) => runLacre(args, { LACRE_DATA_DIR: dataDir }, { timeoutMs: 60_000 });

async function health(): Promise<{ status: number; body: { status: string; checks: Record<string, string> } }> {
  const response = await fetch(`${serve!.url}/healthz`);
  return { status: response.status, body: (await response.json()) as { status: string; checks: Record<string, string> } };
}

test('a delivered message moves the intake, delivery and queue metrics; /metrics needs a read key', async () => {
  assert.equal((await fetch(`${serve!.url}/metrics`)).status, 401);
  const wrong = await fetch(`${serve!.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from('nobody:wrong').toString('base64')}` } });
  assert.equal(wrong.status, 401);
  assert.equal(await send('ada@rcpt.test', 'm-1'), 200);
  await sink.waitForMessages(1, 20_000);
  const samples = await waitFor(
    async () => {
      const s = await scrape();
      return [...s.keys()].some((k) => k.startsWith('lacre_delivery_attempts_total{result="sent"')) ? s : null;
    },
    { what: 'the sent attempt in the delivery metrics', timeoutMs: 15_000 },
  );
  assert.equal(samples.get('lacre_intake_messages_total{listener="http",result="accepted"}'), 1);
  assert.equal(samples.get('lacre_intake_messages_total{listener="smtp",result="accepted"}'), 0);
  assert.ok((samples.get('lacre_auth_failures_total{listener="http"}') ?? 0) >= 2, 'both refused scrapes counted');
  const sent = [...samples].find(([k]) => k.startsWith('lacre_delivery_attempts_total{result="sent"'));
  assert.match(sent![0], /tls_version="tlsv1\.[23]"/);
  assert.match(sent![0], /policy_source="static:verify"/);
  assert.equal(sent![1], 1);
  assert.equal(samples.get('lacre_delivery_attempt_duration_seconds_count{result="sent"}'), 1);
  assert.equal(samples.get('lacre_queue_recipients{state="delivered"}'), 1);
  assert.equal(samples.get('lacre_queue_recipients{state="queued"}'), 0);
  assert.equal(samples.get('lacre_queue_oldest_age_seconds'), 0);
  assert.ok((samples.get('lacre_connections_total{listener="http"}') ?? 0) >= 1);
  // No address, message id or domain ever becomes a label.
  for (const key of samples.keys()) assert.doesNotMatch(key, /rcpt\.test|shop\.test|@/);
});

test('/healthz fails naming the keyring when master.key turns world-readable, and recovers once fixed; /livez stays 200', async () => {
  assert.deepEqual((await health()).body, { status: 'ok', checks: { serving: 'ok', store: 'ok', keyring: 'ok', 'queue-worker': 'ok' } });
  const path = masterKeyPath(dataDir);
  chmodSync(path, 0o644);
  try {
    const broken = await health();
    assert.equal(broken.status, 503);
    assert.equal(broken.body.status, 'unavailable');
    assert.match(broken.body.checks.keyring, /readable by other users.*chmod 600/);
    assert.equal(broken.body.checks.store, 'ok');
    assert.equal((await fetch(`${serve!.url}/livez`)).status, 200);
  } finally {
    chmodSync(path, 0o600);
  }
  assert.equal((await health()).status, 200);
});

test('sealing rotate-key beside the running server: it keeps sending, reading and delivering, under the new key', async () => {
  const before = JSON.parse((await lacreCli(['sealing', 'status', '--json'])).stdout) as { currentKeyId: string };
  const rotated = await lacreCli(['sealing', 'rotate-key', '--json']);
  assert.equal(rotated.code, 0, rotated.stderr);
  const result = JSON.parse(rotated.stdout) as { previousKeyId: string; currentKeyId: string; removedKeyIds: string[] };
  assert.equal(result.previousKeyId, before.currentKeyId);
  assert.notEqual(result.currentKeyId, before.currentKeyId);
  assert.deepEqual(result.removedKeyIds, [before.currentKeyId]);

  // Values re-sealed under a key the server had not read yet open at once.
  const events = await fetch(`${serve!.url}/v1/events`, { headers: { authorization: auth } });
  assert.equal(events.status, 200, await events.clone().text());
  assert.equal(await send('bob@rcpt.test', 'm-2'), 200);
  const delivered = await sink.waitForMessages(2, 20_000);
  assert.deepEqual(delivered.map((m) => m.rcptTo[0].address).sort(), ['ada@rcpt.test', 'bob@rcpt.test']);
  assert.equal((await health()).status, 200);
  await waitFor(async () => (await scrape()).get(`lacre_queue_recipients{state="delivered"}`) === 2 || null, {
    what: 'both recipients delivered',
    timeoutMs: 15_000,
  });
  // Everything the server wrote since is sealed under the new key: nothing needs the removed one.
  const after = JSON.parse((await lacreCli(['sealing', 'status', '--json'])).stdout) as { currentKeyId: string; valuesByKey: Record<string, number> };
  assert.equal(after.currentKeyId, result.currentKeyId);
  assert.deepEqual(Object.keys(after.valuesByKey), [result.currentKeyId]);
});

test('TLS sessions are counted by default: after serve stops, tlsrpt show reports the deliveries to rcpt.test', async () => {
  assert.equal(await serve!.stop(), 0);
  serve = undefined;
  const today = new Date().toISOString().slice(0, 10);
  const shown = await lacreCli(['tlsrpt', 'show', '--domain', 'rcpt.test', '--date', today, '--json']);
  assert.equal(shown.code, 0, shown.stderr);
  const report = JSON.parse(shown.stdout) as { policies: Array<{ summary: Record<string, number> }> };
  const successes = report.policies.reduce((n, p) => n + p.summary['total-successful-session-count'], 0);
  assert.ok(successes >= 1, shown.stdout);
});

