// The agent's side of the queue interface, over real SMTP and TLS to harness sinks: what happens
// when a transaction fails part way (the trouble table at work), the lease check before DATA,
// settle before pooling, sites and siteDown. The agent is called directly so every verdict can
// be read as returned.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startSmtpSink, type SmtpSink, type SmtpSinkOptions } from '../../test/harness/smtp-sink.ts';
import { createLogger } from '../log/logger.ts';
import { Resolver } from '../dns/resolver.ts';
import type { DeliveryBatch, RecipientVerdict } from '../queue/runner.ts';
import type { ClaimedRecipient } from '../store/records.ts';
import { SmtpDeliveryAgent } from './agent.ts';

let ca: TestCA;
let dns: FakeDnsServer;
let cert: IssuedCert;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  cert = await ca.issue({ names: ['mx.tx.test', 'mx1.shared.test', 'mx2.shared.test'] });
});
after(async () => {
  await dns.close();
});

function agentFor(options: { routes?: Record<string, number>; smtpPort?: number; destinationConcurrency?: number }): SmtpDeliveryAgent {
  return new SmtpDeliveryAgent({
    resolver: new Resolver({ servers: [dns.address], timeoutMs: 500, tries: 1 }),
    routes: new Map(Object.entries(options.routes ?? {}).map(([domain, port]) => [domain, { host: '127.0.0.1', port }])),
    smtpPort: options.smtpPort ?? 25,
    policies: new Map(),
    defaultPolicy: 'may',
    ehloName: 'lacre.test',
    ca: [ca.certPem],
    timeouts: { connect: 1_000, greeting: 2_000, command: 2_000, dataInit: 2_000, dataBlock: 2_000, dataDone: 2_000 },
    destinationConcurrency: options.destinationConcurrency ?? 5,
    maxMessagesPerConnection: 100,
    idleTimeoutMs: 5_000,
    logger: createLogger({ level: 'silent' }),
  });
}

let ids = 0;
function batchFor(domain: string, locals: string[], subject: string, leaseHeld: () => boolean = () => true): DeliveryBatch {
  const messageId = `m${++ids}`;
  const content = Buffer.from(`From: <app@sender.test>\r\nSubject: ${subject}\r\n\r\nhello\r\n`);
  const recipients: ClaimedRecipient[] = locals.map((local, i) => ({
    recipientId: `${messageId}-r${i}`,
    messageId,
    address: `${local}@${domain}`,
    domain,
    domainHash: domain,
    attemptId: `${messageId}-a${i}`,
    attemptNumber: 1,
    leaseExpiresAt: Date.now() + 60_000,
    sender: 'app@sender.test',
    requireTls: false,
    createdAt: Date.now(),
    expiresAt: Date.now() + 3_600_000,
  }));
  return { messageId, domain, sender: 'app@sender.test', requireTls: false, recipients, content: async () => content, leaseHeld };
}

const only = (verdicts: Map<string, RecipientVerdict>): RecipientVerdict => {
  assert.equal(verdicts.size, 1);
  return [...verdicts.values()][0];
};
const subjects = (sink: SmtpSink, subject: string) => sink.messages().filter((m) => m.data.toString().includes(`Subject: ${subject}\r\n`));
const signal = () => new AbortController().signal;

async function withSink(options: SmtpSinkOptions, body: (sink: SmtpSink) => Promise<void>): Promise<void> {
  const sink = await startSmtpSink(options);
  try {
    await body(sink);
  } finally {
    await sink.close();
  }
}

test('a reused connection dropped after the final dot: the receiver gets the message once and the verdict says the outcome is unknown', async () => {
  await withSink({ tls: 'starttls', cert, dropAfterDot: 2 }, async (sink) => {
    const agent = agentFor({ routes: { 'dot.test': sink.port } });
    try {
      assert.equal(only(await agent.deliver(batchFor('dot.test', ['a'], 'first'), signal())).kind, 'delivered');
      assert.equal(agent.pool.idleCount, 1, 'the first connection was pooled');

      const v = only(await agent.deliver(batchFor('dot.test', ['a'], 'second'), signal()));
      assert.equal(v.kind, 'unknown');
      assert.equal(v.reason, '127.0.0.1[127.0.0.1]: connection lost after the final dot; the message may have been delivered (RFC 1047)');
      const detail = v.detail as Record<string, any>;
      assert.deepEqual([detail.unknownOutcome, detail.stage, detail.reused, detail.tls.tls], [true, 'dot', true, true]);

      await new Promise((r) => setTimeout(r, 100));
      const got = subjects(sink, 'second');
      assert.equal(got.length, 1, 'the receiver got the second message exactly once');
      assert.equal(got[0].dropped, true);
      assert.equal(sink.sessions.length, 1, 'no second connection carried it');
      assert.equal(sink.sessions[0].tls, true);
    } finally {
      await agent.close();
    }
  });
});

test('a pooled connection the server closed while idle is retried on a fresh connection without counting', async () => {
  await withSink({ tls: 'starttls', cert, dropAtMail: 2 }, async (sink) => {
    const agent = agentFor({ routes: { 'idle.test': sink.port } });
    try {
      assert.equal(only(await agent.deliver(batchFor('idle.test', ['a'], 'first'), signal())).kind, 'delivered');
      const v = only(await agent.deliver(batchFor('idle.test', ['a'], 'second'), signal()));
      assert.equal(v.kind, 'delivered', v.reason ?? '');
      const detail = v.detail as Record<string, any>;
      assert.equal(detail.reused, false, 'delivered on the fresh connection');
      assert.deepEqual(detail.hopFailures, [], 'the dead pooled connection is not a failure of the attempt');
      assert.equal(sink.sessions[0].dropped, 'mail');
      assert.equal(sink.sessions.length, 2);
      assert.equal(subjects(sink, 'second').length, 1);
      assert.equal(subjects(sink, 'second')[0].sessionId, sink.sessions[1].id);
    } finally {
      await agent.close();
    }
  });
});

test('lease lost before DATA: no DATA is sent, the transaction is RSET and the connection pooled', async () => {
  await withSink({ tls: 'starttls', cert }, async (sink) => {
    const agent = agentFor({ routes: { 'lease.test': sink.port } });
    try {
      const verdicts = await agent.deliver(batchFor('lease.test', ['a', 'b'], 'fenced', () => false), signal());
      assert.equal(verdicts.size, 2);
      for (const v of verdicts.values()) {
        assert.deepEqual([v.kind, v.reason, (v.detail as any).leaseLost], ['transient', 'lease lost before DATA; another worker owns these recipients', true]);
      }
      const verbs = sink.sessions[0].commands.map((c) => c.line.split(/[ :]/)[0].toUpperCase());
      assert.ok(verbs.includes('MAIL') && verbs.filter((v) => v === 'RCPT').length === 2, verbs.join(' '));
      assert.ok(!verbs.includes('DATA'), `no DATA: ${verbs.join(' ')}`);
      assert.equal(verbs.at(-1), 'RSET');
      assert.equal(sink.messages().length, 0);
      assert.equal(agent.pool.idleCount, 1);
    } finally {
      await agent.close();
    }
  });
});

test('settle runs before the session is RSET and pooled, and deliver returns the settled verdicts', async () => {
  await withSink({ tls: 'starttls', cert }, async (sink) => {
    const agent = agentFor({ routes: { 'settle.test': sink.port } });
    try {
      let settled: Map<string, RecipientVerdict> | undefined;
      let settledAt = 0;
      const returned = await agent.deliver(batchFor('settle.test', ['a'], 'settle'), signal(), async (verdicts) => {
        assert.equal(agent.pool.idleCount, 0, 'not pooled while settling');
        await new Promise((r) => setTimeout(r, 200));
        settled = verdicts;
        settledAt = Date.now();
      });
      assert.equal(returned, settled);
      assert.equal(only(returned).kind, 'delivered');
      const rset = sink.sessions[0].commands.find((c) => c.line.toUpperCase() === 'RSET');
      assert.ok(rset, 'the session was RSET for the pool');
      assert.ok(rset.at >= settledAt, `RSET arrived ${settledAt - rset.at} ms before settle resolved`);
      assert.equal(agent.pool.idleCount, 1);
    } finally {
      await agent.close();
    }
  });
});

test('a settle that fails destroys the session instead of pooling it, and deliver rejects with its error', async () => {
  await withSink({ tls: 'starttls', cert }, async (sink) => {
    const agent = agentFor({ routes: { 'unsettled.test': sink.port } });
    try {
      await assert.rejects(
        agent.deliver(batchFor('unsettled.test', ['a'], 'unsettled'), signal(), async () => {
          throw new Error('commit failed');
        }),
        /commit failed/,
      );
      assert.equal(agent.pool.idleCount, 0);
      await sink.waitFor(() => sink.sessions[0].closed, 2_000, 'the connection to close');
      assert.ok(!sink.sessions[0].commands.some((c) => c.line.toUpperCase() === 'RSET'), 'never RSET for reuse');
    } finally {
      await agent.close();
    }
  });
});

test('siteOf returns the MX set after a delivery; two domains with the same MX hosts share a site and a limiter slot', async () => {
  await withSink({ tls: 'starttls', cert, delayMs: { dataEnd: 300 } }, async (sink) => {
    for (const domain of ['one.site.test', 'two.site.test']) {
      dns.add(domain, { type: 'MX', preference: 10, exchange: 'mx1.shared.test' }, { type: 'MX', preference: 20, exchange: 'mx2.shared.test' });
    }
    dns.add('mx1.shared.test', { type: 'A', address: '127.0.0.1' });
    dns.add('mx2.shared.test', { type: 'A', address: '127.0.0.1' });
    const agent = agentFor({ smtpPort: sink.port, destinationConcurrency: 1 });
    try {
      assert.equal(agent.siteOf('one.site.test'), undefined);
      const [a, b] = await Promise.all([
        agent.deliver(batchFor('one.site.test', ['a'], 'one'), signal()),
        agent.deliver(batchFor('two.site.test', ['b'], 'two'), signal()),
      ]);
      assert.deepEqual([only(a).kind, only(b).kind], ['delivered', 'delivered']);
      assert.equal(agent.siteOf('one.site.test'), 'mx1.shared.test,mx2.shared.test');
      assert.equal(agent.siteOf('TWO.site.test'), 'mx1.shared.test,mx2.shared.test');
      assert.equal((only(a).detail as any).site, 'mx1.shared.test,mx2.shared.test');
      // With one slot per site the second waited and took the first one's pooled connection.
      assert.equal(sink.sessions.length, 1, `${sink.sessions.length} connections`);
    } finally {
      await agent.close();
    }
  });
});

test('siteDown is set when every address refuses connections, and not set for a 5xx to RCPT', async () => {
  await withSink({ tls: 'starttls', cert, replies: { rcpt: { code: 550, text: '5.1.1 no such user' } } }, async (sink) => {
    // Nothing listens on these loopback addresses, only on 127.0.0.1.
    dns.add('down.test', { type: 'MX', preference: 10, exchange: 'mx1.down.test' }, { type: 'MX', preference: 20, exchange: 'mx2.down.test' });
    dns.add('mx1.down.test', { type: 'A', address: '127.0.0.2' }, { type: 'A', address: '127.0.0.3' });
    dns.add('mx2.down.test', { type: 'A', address: '127.0.0.4' });
    const agent = agentFor({ smtpPort: sink.port, routes: { 'refuses.test': sink.port } });
    try {
      const down = only(await agent.deliver(batchFor('down.test', ['a'], 'down'), signal()));
      assert.equal(down.kind, 'transient');
      assert.equal(down.siteDown, true);
      assert.equal((down.detail as any).hopFailures.length, 3, 'every address was tried');

      const refused = only(await agent.deliver(batchFor('refuses.test', ['gone'], 'refused'), signal()));
      assert.deepEqual([refused.kind, refused.replyCode, refused.siteDown], ['permanent', 550, undefined]);
      assert.equal((refused.detail as any).site, `route:127.0.0.1:${sink.port}`);
    } finally {
      await agent.close();
    }
  });
});
