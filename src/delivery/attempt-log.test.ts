// The per-attempt log line (queue/attempt-summary.ts, written by the runner), as an operator reads
// it: real runner, real delivery agent, real SMTP over verified TLS to a harness sink, and the
// logger's own JSON output read back from its file. Like Postfix's smtp(8) status= line it names
// the ids, relay, TLS, status, codes and delays — and never an address.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCA } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startSmtpSink, type SmtpSink } from '../../test/harness/smtp-sink.ts';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { createLogger } from '../log/logger.ts';
import { Resolver } from '../dns/resolver.ts';
import { QueueRunner } from '../queue/runner.ts';
import type { AttemptSummary } from '../queue/attempt-summary.ts';
import { SmtpDeliveryAgent } from './agent.ts';

let ca: TestCA;
let dns: FakeDnsServer;
let sink: SmtpSink;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  sink = await startSmtpSink({
    tls: 'starttls',
    cert: await ca.issue({ names: ['mx.log.test'] }),
    // One recipient taken, one refused for now: a `sent` and a `deferred` line from one transaction.
    replies: { rcpt: (address) => (address.startsWith('later@') ? { code: 451, text: '4.2.1 try later, later@log.test' } : undefined) },
  });
  dns.add('log.test', { type: 'MX', preference: 10, exchange: 'mx.log.test' });
  dns.add('mx.log.test', { type: 'A', address: '127.0.0.1' });
});
after(async () => {
  await sink?.close();
  await dns?.close();
});

test('each recipient attempt logs one line with ids, relay, TLS, status, codes and delays, and no address', async () => {
  const data = await openTempData({ schedule: { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 } });
  const file = join(tempDir(), 'log.json');
  const fd = openSync(file, 'w');
  const logger = createLogger({ level: 'info', destination: fd });
  const seen: AttemptSummary[] = [];
  const agent = new SmtpDeliveryAgent({
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }),
    routes: new Map(),
    smtpPort: sink.port,
    policies: new Map([['log.test', 'verify']]),
    defaultPolicy: 'may',
    ehloName: 'lacre.test',
    ca: [ca.certPem],
    timeouts: { connect: 2_000, greeting: 3_000, command: 3_000, dataInit: 3_000, dataBlock: 3_000, dataDone: 3_000 },
    destinationConcurrency: 2,
    maxMessagesPerConnection: 100,
    idleTimeoutMs: 2_000,
    logger: createLogger({ level: 'silent' }),
  });
  const runner = new QueueRunner({
    store: data.store.queue,
    agent,
    logger: logger.child({ component: 'queue' }),
    workerId: 'log-test',
    leaseMs: 10_000,
    pollIntervalMs: 50,
    concurrency: 2,
    schedule: data.queue.schedule,
    onAttempt: (s) => seen.push(s),
  });
  const { messageId } = await data.queue.enqueue({
    sender: 'app@sender.test',
    recipients: ['now@log.test', 'later@log.test'],
    content: Buffer.from('Subject: log line\r\n\r\nbody\r\n'),
    source: 'api',
  });
  runner.start();
  try {
    for (let i = 0; i < 500 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  } finally {
    await runner.stop(2_000);
    await agent.close();
  }
  logger.flush();
  closeSync(fd);
  const text = readFileSync(file, 'utf8');
  const lines = text.trim().split('\n').map((l) => JSON.parse(l));
  const attempts = lines.filter((l) => l.msg === 'attempt');
  assert.equal(attempts.length, 2, text);
  for (const leaked of ['now@log.test', 'later@log.test', 'app@sender.test', 'try later']) {
    assert.ok(!text.includes(leaked), `the log leaks ${leaked}: ${text}`);
  }
  const view = (await data.store.getMessage(messageId))!;
  const idOf = (local: string) => view.recipients.find((r) => r.address.startsWith(`${local}@`))!.id;
  const sent = attempts.find((l) => l.status === 'sent')!;
  const deferred = attempts.find((l) => l.status === 'deferred')!;
  assert.ok(sent && deferred, text);
  for (const line of [sent, deferred]) {
    assert.equal(line.level, 'info');
    assert.equal(line.messageId, messageId);
    assert.equal(line.domain, 'log.test');
    assert.equal(line.attempt, 1);
    assert.equal(line.relay, `mx.log.test[127.0.0.1]:${sink.port}`);
    assert.equal(line.relayHost, 'mx.log.test');
    assert.equal(line.relayAddress, '127.0.0.1');
    assert.equal(line.relayPort, sink.port);
    assert.match(line.tls.version, /^TLSv1\.[23]$/);
    assert.equal(typeof line.tls.cipher, 'string');
    assert.equal(line.tls.verified, true);
    assert.equal(line.tls.policy, 'verify');
    assert.equal(line.tls.source, 'static:verify');
    for (const k of ['queuedMs', 'attemptMs', 'totalMs']) assert.equal(typeof line.delays[k], 'number', k);
    assert.ok(line.delays.totalMs >= line.delays.attemptMs, JSON.stringify(line.delays));
    assert.equal(typeof line.delays.connectMs, 'number');
  }
  assert.equal(sent.recipientId, idOf('now'));
  assert.equal(sent.replyCode, 250);
  assert.equal(deferred.recipientId, idOf('later'));
  assert.equal(deferred.replyCode, 451);
  assert.equal(deferred.enhancedCode, '4.2.1');
  assert.equal(deferred.reasonClass, 'reply');
  // The same summaries reach the metrics hook.
  assert.deepEqual(seen.map((s) => s.status).sort(), ['deferred', 'sent']);
  await data.close();
});
