// The delivery stage end to end on loopback: real queue and store, real DNS (the harness's fake
// authoritative server), real SMTP over real TLS to harness sinks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startSmtpSink } from '../../test/harness/smtp-sink.ts';
import { startDeliveryRig, type DeliveryRigOptions } from '../../test/harness/delivery-rig.ts';
import { waitFor } from '../../test/harness/wait.ts';
import { Resolver } from '../dns/resolver.ts';

let ca: TestCA;
let dns: FakeDnsServer;
const certs: Record<string, IssuedCert> = {};

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  for (const name of ['mx1.dest.test', 'mx2.dest.test', 'mx.reuse.test', 'mx.slow.test']) {
    certs[name] = await ca.issue({ names: [name] });
  }
});
after(async () => {
  await dns.close();
});

type RigOptions = Pick<DeliveryRigOptions, 'smtpPort' | 'routes' | 'policies' | 'destinationConcurrency' | 'concurrency'>;

const rig = (options: RigOptions) =>
  startDeliveryRig({
    ...options,
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }),
    ca: [ca.certPem],
    schedule: { minBackoffMs: 50, maxBackoffMs: 50, maxAgeMs: 3_600_000 },
    hostname: 'lacre.test',
    workerId: 'agent-test',
    destinationConcurrency: options.destinationConcurrency ?? 5,
    concurrency: options.concurrency ?? 10,
    agent: { maxMessagesPerConnection: 100, idleTimeoutMs: 2_000 },
  });

const message = (subject: string) => Buffer.from(`From: <app@sender.test>\r\nSubject: ${subject}\r\n\r\nhello\r\n`);

test('falls back to the next MX when the first refuses connections, and records the hop it used', async () => {
  const sink = await startSmtpSink({ tls: 'starttls', cert: certs['mx2.dest.test'], listen: { host: '127.0.0.3' } });
  dns.add('fallback.test', { type: 'MX', preference: 10, exchange: 'mx1.dest.test' }, { type: 'MX', preference: 20, exchange: 'mx2.dest.test' });
  dns.add('mx1.dest.test', { type: 'A', address: '127.0.0.2' }); // nothing listens there
  dns.add('mx2.dest.test', { type: 'A', address: '127.0.0.3' });
  const r = await rig({ smtpPort: sink.port, policies: { 'fallback.test': 'verify' } });
  try {
    const { messageId } = await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: ['a@fallback.test'], content: message('fallback'), source: 'api' });
    await waitFor(async () => (await r.data.store.countByState()).delivered === 1, { what: 'delivery', timeoutMs: 15_000 });
    const [recipient] = (await r.data.store.getMessage(messageId))!.recipients;
    const detail = recipient.attempts[0].detail as Record<string, any>;
    assert.equal(detail.mx, 'mx2.dest.test');
    assert.equal(detail.ip, '127.0.0.3');
    assert.deepEqual([detail.policy.level, detail.policy.source], ['verify', 'static:verify']);
    assert.match(detail.policy.why, /static policy \(fallback\.test\): verify/);
    assert.equal(detail.hopFailures[0].host, 'mx1.dest.test');
    assert.equal(detail.tls.verified, true);
    assert.match(detail.tls.protocol, /^TLSv1\.[23]$/);
    assert.equal(sink.messages().length, 1);
  } finally {
    await r.close();
    await sink.close();
  }
});

test('a null MX bounces at once with a DSN, without any connection', async () => {
  dns.add('nullmx.test', { type: 'MX', preference: 0, exchange: '' });
  const r = await rig({});
  try {
    const { messageId } = await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: ['a@nullmx.test'], content: message('null'), source: 'api' });
    await waitFor(async () => (await r.data.store.getMessage(messageId))!.recipients[0].state === 'bounced', { what: 'bounce', timeoutMs: 15_000 });
    const [recipient] = (await r.data.store.getMessage(messageId))!.recipients;
    assert.match(recipient.reason!, /null MX/);
    assert.equal(recipient.attempts.length, 1);
    await waitFor(async () => {
      const row = await r.data.store.engine.get<{ n: number }>('SELECT COUNT(*) AS n FROM messages');
      return Number(row!.n) === 2;
    }, { what: 'the DSN to be queued', timeoutMs: 15_000 });
  } finally {
    await r.close();
  }
});

test('SERVFAIL on the MX lookup defers; NXDOMAIN bounces', async () => {
  dns.fail('servfail.test', 'SERVFAIL');
  dns.fail('nxdomain.test', 'NXDOMAIN');
  const r = await rig({});
  try {
    const a = await r.data.queue.enqueue({ sender: null, recipients: ['a@servfail.test'], content: message('sf'), source: 'api' });
    const b = await r.data.queue.enqueue({ sender: null, recipients: ['b@nxdomain.test'], content: message('nx'), source: 'api' });
    await waitFor(async () => {
      const sf = (await r.data.store.getMessage(a.messageId))!.recipients[0];
      const nx = (await r.data.store.getMessage(b.messageId))!.recipients[0];
      return sf.attempts.length >= 1 && sf.attempts[0].outcome !== null && nx.state === 'bounced';
    }, { what: 'verdicts', timeoutMs: 15_000 });
    assert.equal((await r.data.store.getMessage(a.messageId))!.recipients[0].attempts[0].outcome, 'deferred');
    assert.equal((await r.data.store.getMessage(b.messageId))!.recipients[0].state, 'bounced');
  } finally {
    await r.close();
  }
});

test('a 4xx is retried and then delivered; a 5xx on RCPT bounces that recipient with a DSN and suppresses it', async () => {
  let calls = 0;
  const sink = await startSmtpSink({
    tls: 'starttls',
    cert: certs['mx1.dest.test'],
    replies: {
      rcpt: (address) => {
        if (address.startsWith('later@')) return ++calls === 1 ? { code: 451, text: '4.3.0 try again later' } : undefined;
        if (address.startsWith('gone@')) return { code: 550, text: '5.1.1 no such user' };
        return undefined;
      },
    },
  });
  const r = await rig({ routes: { 'mixed.test': `127.0.0.1:${sink.port}` } });
  try {
    const { messageId } = await r.data.queue.enqueue({
      sender: 'app@sender.test',
      recipients: ['ok@mixed.test', 'later@mixed.test', 'gone@mixed.test'],
      content: message('mixed'),
      source: 'api',
    });
    await waitFor(async () => {
      const states = (await r.data.store.getMessage(messageId))!.recipients.map((x) => x.state);
      return states.join() === 'delivered,delivered,bounced';
    }, { what: 'all settled', timeoutMs: 15_000 });
    const view = (await r.data.store.getMessage(messageId))!;
    const byAddress = Object.fromEntries(view.recipients.map((x) => [x.address, x]));
    assert.deepEqual(byAddress['later@mixed.test'].attempts.map((a) => a.outcome), ['deferred', 'delivered']);
    assert.equal(byAddress['gone@mixed.test'].attempts[0].enhancedCode, '5.1.1');
    assert.equal(sink.messages().length, 2);
    const refused = await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: ['gone@mixed.test', 'ok@mixed.test'], content: message('again'), source: 'api' });
    assert.equal(refused.refused.length, 1);
  } finally {
    await r.close();
    await sink.close();
  }
});

test('reuses one connection and one TLS handshake for many messages to the same destination', async () => {
  const sink = await startSmtpSink({ tls: 'starttls', cert: certs['mx.reuse.test'] });
  dns.add('reuse.test', { type: 'MX', preference: 10, exchange: 'mx.reuse.test' });
  dns.add('mx.reuse.test', { type: 'A', address: '127.0.0.1' });
  const r = await rig({ smtpPort: sink.port, policies: { 'reuse.test': 'encrypt' }, destinationConcurrency: 1, concurrency: 1 });
  try {
    for (let i = 0; i < 10; i++) {
      await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: [`r${i}@reuse.test`], content: message(`reuse ${i}`), source: 'api' });
    }
    await sink.waitForMessages(10, 15_000);
    assert.equal(sink.sessions.length, 1, 'one connection');
    assert.equal(sink.sessions[0].tls, true);
    assert.equal(sink.sessions[0].commands.filter((c) => c.line.toUpperCase() === 'STARTTLS').length, 1, 'one TLS handshake');
    assert.ok(sink.sessions[0].commands.some((c) => c.line.toUpperCase() === 'RSET'));
  } finally {
    await r.close();
    await sink.close();
  }
});

test('never opens more connections to one destination than its concurrency limit', async () => {
  const sink = await startSmtpSink({ tls: 'starttls', cert: certs['mx.slow.test'], delayMs: { dataEnd: 150 } });
  const r = await rig({ routes: { 'slow.test': `127.0.0.1:${sink.port}` }, destinationConcurrency: 2, concurrency: 10 });
  try {
    for (let i = 0; i < 8; i++) {
      await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: [`r${i}@slow.test`], content: message(`slow ${i}`), source: 'api' });
    }
    await sink.waitForMessages(8, 20_000);
    assert.ok(sink.peakOpenSessions <= 2, `peak ${sink.peakOpenSessions} concurrent connections`);
    assert.ok(sink.sessions.length <= 2, `${sink.sessions.length} connections in all`);
  } finally {
    await r.close();
    await sink.close();
  }
});

test('a slow destination cannot starve the others of delivery slots', async () => {
  const slow = await startSmtpSink({ tls: 'starttls', cert: certs['mx.slow.test'], delayMs: { dataEnd: 400 } });
  const fast = await startSmtpSink({ tls: 'starttls', cert: certs['mx.reuse.test'] });
  const r = await rig({
    routes: { 'slow.test': `127.0.0.1:${slow.port}`, 'fast.test': `127.0.0.1:${fast.port}` },
    destinationConcurrency: 2,
    concurrency: 4,
  });
  try {
    for (let i = 0; i < 12; i++) {
      await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: [`r${i}@slow.test`], content: message(`slow ${i}`), source: 'api' });
    }
    await slow.waitForSessions(1, 5_000);
    await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: ['first@fast.test'], content: message('fast'), source: 'api' });
    await fast.waitForMessages(1, 5_000);
    assert.ok(slow.messages().length < 8, `the fast destination waited for ${slow.messages().length} slow deliveries`);
  } finally {
    await r.close();
    await slow.close();
    await fast.close();
  }
});

test('under encrypt, a destination without STARTTLS is deferred with the named reason and sees no MAIL FROM', async () => {
  const sink = await startSmtpSink({ tls: 'none' });
  const r = await rig({ routes: { 'plain.test': `127.0.0.1:${sink.port}` }, policies: { 'plain.test': 'encrypt' } });
  try {
    const { messageId } = await r.data.queue.enqueue({ sender: 'app@sender.test', recipients: ['a@plain.test'], content: message('plain'), source: 'api' });
    await waitFor(async () => (await r.data.store.getMessage(messageId))!.recipients[0].state === 'deferred', { what: 'deferral', timeoutMs: 15_000 });
    const [recipient] = (await r.data.store.getMessage(messageId))!.recipients;
    assert.match(recipient.reason!, /starttls-not-supported/);
    const policy = (recipient.attempts[0].detail as any).policy;
    assert.deepEqual([policy.level, policy.source], ['encrypt', 'static:encrypt']);
    assert.ok(sink.sessions.length >= 1);
    assert.ok(sink.sessions.every((s) => !s.commands.some((c) => /^MAIL/i.test(c.line))), 'no MAIL FROM in plaintext');
  } finally {
    await r.close();
    await sink.close();
  }
});
