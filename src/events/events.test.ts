// Events end to end on loopback: a message is composed and queued with the intake's metadata,
// delivered (or deferred, bounced, refused) through a real SMTP session to a harness sink, the
// event is recorded with the verdict (or with a DSN that comes back later to the bounce
// receiver), and the webhook dispatcher POSTs it, signed, to a harness receiver over HTTPS pinned
// to the address Lacre's own resolver vetted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import type { SmtpSink, SmtpSinkOptions } from '../../test/harness/smtp-sink.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../../test/harness/webhook-receiver.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { startDeliveryRig } from '../../test/harness/delivery-rig.ts';
import { createLogger } from '../log/logger.ts';
import { Resolver } from '../dns/resolver.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import { Composer } from '../compose/outgoing.ts';
import { buildDsn } from '../compose/dsn.ts';
import { startBounceReceiver } from '../intake/bounce-receiver.ts';
import type { QueueRunner } from '../queue/runner.ts';
import { WebhookDispatcher, webhookRetry, type WebhookSchedule } from './dispatcher.ts';
import { Webhooks } from './webhooks.ts';
import { resolverLookup } from './url-guard.ts';
import { SIGNATURE_HEADER, verifyWebhookSignature } from './signature.ts';
import { waitFor } from '../../test/harness/wait.ts';

let ca: TestCA;
let dns: FakeDnsServer;
let resolver: Resolver;
let mxCert: IssuedCert;
let hookCert: IssuedCert;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  mxCert = await ca.issue({ names: ['mx.rcpt.test'] });
  hookCert = await ca.issue({ names: ['hooks.test'] });
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  dns.add('hooks.test', { type: 'A', address: '127.0.0.1' });
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 });
});
after(async () => {
  await dns.close();
});

const silent = createLogger({ level: 'silent' });
const FAST: WebhookSchedule = { minBackoffMs: 30, maxBackoffMs: 200, maxAgeMs: 3_600_000 };

interface Rig {
  data: TempData;
  key: { apiKey: string; secretKey: string };
  webhooks: Webhooks;
  composer: Composer;
  runner: QueueRunner;
  sink: SmtpSink;
  sinkPort: number;
  dispatcher(options?: { schedule?: WebhookSchedule; workerId?: string; timeoutMs?: number; batchSize?: number; leaseMs?: number }): WebhookDispatcher;
  stop(): Promise<void>;
}

async function rig(sinkOptions: Partial<SmtpSinkOptions> = {}, keep = false): Promise<Rig> {
  const data = await openTempData({ keep, schedule: { minBackoffMs: 50, maxBackoffMs: 50, maxAgeMs: 3_600_000 } });
  const keys = new ApiKeys(data.store);
  const key = await keys.create({ name: 'app', scopes: ['send', 'read'], actor: 'cli:test' });
  const domains = new SenderDomains({
    store: data.store,
    resolver,
    settings: { hostname: 'mta.lacre.test', returnPathSubdomain: 'bounces', returnPathLocalPart: 'bounce', spfIp4: [], spfIp6: [], dmarcRua: 'mailto:d@{domain}', tlsRptRua: 'mailto:t@{domain}' },
    rotationGraceMs: 86_400_000,
  });
  await domains.add('shop.test', 'cli:test');
  await domains.verify('shop.test', { actor: 'cli:test', force: true });
  const composer = new Composer({ queue: data.queue, domains, tag: (id) => data.sealer.lookupHash('return-path', id) });
  const delivery = await startDeliveryRig({
    resolver,
    ca: [ca.certPem],
    data,
    sink: { tls: 'starttls', cert: mxCert, ...sinkOptions } as SmtpSinkOptions,
    policies: { 'rcpt.test': 'verify' },
    workerId: 'events-test',
    agent: { idleTimeoutMs: 500 },
  });
  const { runner } = delivery;
  const sink = delivery.sink!;
  const lookup = resolverLookup(resolver);
  const dispatchers: WebhookDispatcher[] = [];
  return {
    data,
    key,
    webhooks: new Webhooks(data.store, { lookup }),
    composer,
    runner,
    sink,
    sinkPort: sink.port,
    dispatcher(options = {}) {
      const d = new WebhookDispatcher({
        store: data.store,
        logger: silent,
        workerId: options.workerId ?? 'dispatcher-test',
        lookup,
        ca: [ca.certPem],
        pollIntervalMs: 20,
        timeoutMs: options.timeoutMs ?? 2_000,
        batchSize: options.batchSize,
        leaseMs: options.leaseMs,
        schedule: options.schedule ?? FAST,
      });
      dispatchers.push(d);
      return d;
    },
    async stop() {
      for (const d of dispatchers) await d.stop(1_000);
      await delivery.close();
      await data.close();
    },
  };
}

const message = (subject: string) => Buffer.from(`From: Shop <orders@shop.test>\r\nTo: a@rcpt.test\r\nSubject: ${subject}\r\n\r\nHello.\r\n`);

test('a delivered message yields a `sent` event with its TLS details, POSTed signed over HTTPS to the pinned, vetted address', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver({ cert: hookCert });
  try {
    const hook = await r.webhooks.add({ apiKey: r.key.apiKey, url: `https://hooks.test:${receiver.port}/lacre?token=t1`, events: 'sent,bounce', actor: 'cli:test' });
    assert.match(hook.secret, /^whsec_/);
    r.dispatcher().start();
    const accepted = await r.composer.submit({
      content: message('order 1'),
      envelopeSender: null,
      recipients: ['a@rcpt.test'],
      source: 'api',
      metadata: { apiKeyId: r.key.apiKey, customId: 'order-1', eventPayload: '{"cart":42}' },
    });
    await receiver.waitFor(() => receiver.events().length === 1, 15_000, 'the sent event');
    const [request] = receiver.requests();
    assert.equal(request.method, 'POST');
    assert.equal(request.path, '/lacre?token=t1');
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers['x-lacre-webhook-id'], hook.id);
    // SNI and the certificate check used the URL's name although the connection went to the vetted IP.
    assert.equal(request.servername, 'hooks.test');
    assert.equal(request.headers.host, `hooks.test:${receiver.port}`);
    const check = verifyWebhookSignature(hook.secret, request.headers[SIGNATURE_HEADER.toLowerCase()], request.raw);
    assert.equal(check.valid, true, JSON.stringify(check));

    const [event] = receiver.events() as Array<Record<string, any>>;
    assert.equal(event.event, 'sent');
    assert.equal(event.email, 'a@rcpt.test');
    assert.equal(event.Message_GUID, accepted.recipients[0].id);
    assert.equal(event.message_uuid, accepted.messageId);
    const ref = await r.data.store.sendApi.byRecipientId(accepted.recipients[0].id);
    assert.equal(typeof event.MessageID, 'number');
    assert.equal(event.MessageID, ref?.publicId);
    assert.equal(event.CustomID, 'order-1');
    assert.equal(event.Payload, '{"cart":42}');
    assert.equal(typeof event.time, 'number');
    assert.ok(Math.abs(event.time - Date.now() / 1000) < 60);
    assert.match(event.smtp_reply, /^250 /);
    assert.equal(event.mx, 'mx.rcpt.test');
    assert.equal(event.tls.encrypted, true);
    assert.match(event.tls.version, /^TLSv1\.[23]$/);
    assert.equal(typeof event.tls.cipher, 'string');
    assert.equal(event.tls.verified, true);
    assert.equal(event.tls.policy, 'verify');
    assert.equal(event.tls.policy_source, 'static:verify');
    assert.match(event.event_id, /^[0-9a-f-]{36}$/);

    // The receiver answered before the dispatcher recorded it.
    await waitFor(async () => (await r.data.store.webhooks.deliveries(hook.id))[0]?.state === 'delivered', { what: 'the delivery to be recorded', timeoutMs: 15_000 });
    const [row] = await r.data.store.webhooks.deliveries(hook.id);
    assert.equal(row.attempts, 1);
    assert.equal(row.lastStatus, 200);
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('a 451 then a 550 to RCPT yields `deferred` then `bounce` (hard, suppressed), with Mailjet error fields', async () => {
  let rcpts = 0;
  const r = await rig({
    replies: {
      rcpt: () => (++rcpts === 1 ? { code: 451, text: '4.3.0 try again later' } : { code: 550, text: '5.1.1 no such user here' }),
    },
  });
  const receiver = await startWebhookReceiver();
  try {
    await r.webhooks.add({ apiKey: r.key.apiKey, url: `${receiver.url}/events`, events: ['deferred', 'bounce'], actor: 'cli:test' });
    r.dispatcher().start();
    const accepted = await r.data.queue.enqueue({
      sender: 'orders@shop.test',
      recipients: ['gone@rcpt.test'],
      content: message('order 2'),
      source: 'api',
      metadata: { apiKeyId: r.key.apiKey, customId: 'order-2' },
    });
    await receiver.waitFor(() => receiver.events().length === 2, 15_000, 'deferred and bounce events');
    const [deferred, bounce] = receiver.events() as Array<Record<string, any>>;
    assert.equal(deferred.event, 'deferred');
    assert.equal(deferred.Message_GUID, accepted.recipients[0].id);
    assert.equal(deferred.smtp_reply, '451 4.3.0 try again later');
    assert.equal(deferred.error_related_to, 'system');
    assert.equal(deferred.error, 'system issue');
    assert.match(deferred.comment, /^mx\.rcpt\.test: 451 try again later/);
    assert.equal(typeof deferred.next_attempt, 'number');
    assert.equal(deferred.attempt, 1);
    assert.equal(bounce.event, 'bounce');
    assert.equal(bounce.hard_bounce, true);
    assert.equal(bounce.blocked, true);
    assert.equal(bounce.error_related_to, 'recipient');
    assert.equal(bounce.error, 'user unknown');
    assert.equal(bounce.CustomID, 'order-2');
    assert.equal(bounce.attempt, 2);
    assert.equal(bounce.tls.encrypted, true);
    // Each POST was signed; both events are on record in order with the verdicts.
    const events = await r.data.store.events.forMessage(accepted.messageId);
    assert.deepEqual(events.map((e) => e.type), ['deferred', 'bounce']);
    assert.ok(events[0].id < events[1].id);
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('a suppressed recipient is refused at intake with a `blocked` event committed with the message', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver();
  try {
    await r.webhooks.add({ apiKey: r.key.apiKey, url: receiver.url, events: 'blocked', actor: 'cli:test' });
    await r.data.store.addSuppression({ address: 'bounced@rcpt.test', reason: '550 5.1.1 user unknown', messageId: null, at: Date.now() });
    r.dispatcher().start();
    const accepted = await r.data.queue.enqueue({
      sender: 'orders@shop.test',
      recipients: ['ok@rcpt.test', 'Bounced@rcpt.test'],
      content: message('order 3'),
      source: 'api',
      metadata: { apiKeyId: r.key.apiKey, eventPayload: '{"order":3}' },
    });
    assert.deepEqual(accepted.refused.map((x) => x.address), ['Bounced@rcpt.test']);
    await receiver.waitFor(() => receiver.events().length === 1, 15_000, 'the blocked event');
    const [blocked] = receiver.events() as Array<Record<string, any>>;
    assert.equal(blocked.event, 'blocked');
    assert.equal(blocked.email, 'Bounced@rcpt.test');
    assert.equal(blocked.error_related_to, 'recipient');
    assert.equal(blocked.error, 'preblocked');
    assert.match(blocked.comment, /suppressed since .* after a hard bounce/);
    assert.equal(blocked.Payload, '{"order":3}');
    assert.equal(blocked.message_uuid, accepted.messageId);
    assert.ok(blocked.Message_GUID);
    // The accepted recipient is delivered; its `sent` event is recorded though this webhook did not ask for it.
    await waitFor(async () => (await r.data.store.events.forMessage(accepted.messageId)).some((e) => e.type === 'sent'), { what: 'the sent event', timeoutMs: 15_000 });
    const types = (await r.data.store.events.forMessage(accepted.messageId)).map((e) => e.type);
    assert.deepEqual(types, ['blocked', 'sent']);
    assert.equal(receiver.events().length, 1);
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('a DSN that comes back after delivery turns the recipient bounced and yields a signed `bounce` webhook (hard, suppressed)', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver({ cert: hookCert });
  const bounces = await startBounceReceiver({
    host: '127.0.0.1',
    port: 0,
    hostname: 'mta.lacre.test',
    store: r.data.store,
    localPart: 'bounce',
    tag: (id) => r.data.sealer.lookupHash('return-path', id),
    logger: silent,
  });
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: bounces.port, secure: false, ignoreTLS: true });
  try {
    const hook = await r.webhooks.add({ apiKey: r.key.apiKey, url: `https://hooks.test:${receiver.port}/lacre`, events: 'sent,bounce', actor: 'cli:test' });
    r.dispatcher().start();
    const accepted = await r.composer.submit({
      content: message('order 9'),
      envelopeSender: null,
      recipients: ['a@rcpt.test'],
      source: 'api',
      metadata: { apiKeyId: r.key.apiKey, customId: 'order-9', eventPayload: '{"cart":9}' },
    });
    await receiver.waitFor(() => receiver.events().length === 1, 15_000, 'the sent event');
    const [delivered] = r.sink.messages();
    const returnPath = delivered.mailFrom.address;
    assert.match(returnPath, /@bounces\.shop\.test$/);
    // The recipient's server took the message, then found the mailbox gone: an RFC 3464 DSN to the return path.
    const dsn = buildDsn({
      reportingMta: 'mx.rcpt.test',
      queueId: '4dZ1',
      arrivalDate: new Date(),
      originalSender: returnPath,
      recipients: [{ address: 'a@rcpt.test', action: 'failed', status: '5.1.1', remoteMta: 'mx.rcpt.test', diagnostic: '550 5.1.1 mailbox gone', lastAttemptAt: new Date() }],
      originalContent: delivered.data,
    });
    await transport.sendMail({ envelope: { from: '', to: [returnPath] }, raw: dsn });

    await receiver.waitFor(() => receiver.events().length === 2, 15_000, 'the bounce event');
    const request = receiver.requests().find((q) => (JSON.parse(q.raw.toString()) as Array<{ event: string }>).some((e) => e.event === 'bounce'))!;
    assert.equal(verifyWebhookSignature(hook.secret, request.headers[SIGNATURE_HEADER.toLowerCase()], request.raw).valid, true);
    const [sent, bounce] = receiver.events() as Array<Record<string, any>>;
    assert.equal(sent.event, 'sent');
    assert.equal(bounce.event, 'bounce');
    assert.equal(bounce.email, 'a@rcpt.test');
    assert.equal(bounce.Message_GUID, accepted.recipients[0].id);
    assert.equal(bounce.message_uuid, accepted.messageId);
    assert.equal(bounce.MessageID, sent.MessageID);
    assert.equal(bounce.CustomID, 'order-9');
    assert.equal(bounce.Payload, '{"cart":9}');
    assert.equal(bounce.hard_bounce, true);
    assert.equal(bounce.blocked, true);
    assert.equal(bounce.error_related_to, 'recipient');
    assert.equal(bounce.error, 'user unknown');
    assert.equal(bounce.smtp_reply, '550 5.1.1 mailbox gone');
    assert.match(bounce.comment, /^bounced after delivery: 5\.1\.1 /);
    assert.notEqual(bounce.event_id, sent.event_id);

    const view = await r.data.store.getMessage(accepted.messageId);
    assert.equal(view!.recipients[0].state, 'bounced');
    assert.equal((await r.data.store.findSuppressed(['a@rcpt.test'])).size, 1);
    assert.deepEqual((await r.data.store.events.forMessage(accepted.messageId)).map((e) => e.type), ['sent', 'bounce']);
    // The same DSN again changes nothing: the recipient is no longer delivered.
    await transport.sendMail({ envelope: { from: '', to: [returnPath] }, raw: dsn });
    assert.equal((await r.data.store.events.forMessage(accepted.messageId)).length, 2);
  } finally {
    transport.close();
    await bounces.close();
    await r.stop();
    await receiver.close();
  }
});

test('a receiver failing three times gets the batch on the fourth try, and the outbox survives a dispatcher restart', async () => {
  const first = await rig({}, true);
  const dataDir = first.data.dataDir;
  const receiver = await startWebhookReceiver({ failFirst: 3 });
  let second: TempData | undefined;
  try {
    const hook = await first.webhooks.add({ apiKey: first.key.apiKey, url: `${receiver.url}/h`, events: 'sent', actor: 'cli:test' });
    await first.composer.submit({
      content: message('retry'),
      envelopeSender: null,
      recipients: ['a@rcpt.test', 'b@rcpt.test'],
      source: 'api',
      metadata: { apiKeyId: first.key.apiKey },
    });
    await waitFor(async () => (await first.data.store.webhooks.deliveries(hook.id)).length === 2, { what: 'both sent events', timeoutMs: 15_000 });
    // Slow backoff first, so the dispatcher is stopped with the batch still pending after a failure.
    const slow = first.dispatcher({ schedule: { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 } });
    slow.start();
    await receiver.waitFor(() => receiver.requests().length === 1, 15_000, 'the first failed POST');
    await waitFor(async () => (await first.data.store.webhooks.deliveries(hook.id)).every((d) => d.attempts === 1), { what: 'the failure to be recorded', timeoutMs: 15_000 });
    await slow.stop(1_000);
    const rows = await first.data.store.webhooks.deliveries(hook.id);
    assert.deepEqual(rows.map((d) => [d.state, d.lastStatus]), [['pending', 500], ['pending', 500]]);
    await first.stop();

    // A new process: the same data dir, a fresh store and dispatcher. Make the rows due now.
    second = await openTempData({ dataDir });
    await second.store.engine.run('UPDATE webhook_deliveries SET next_attempt_at = 0');
    const dispatcher = new WebhookDispatcher({
      store: second.store,
      logger: silent,
      workerId: 'after-restart',
      lookup: resolverLookup(resolver),
      pollIntervalMs: 20,
      schedule: FAST,
    });
    dispatcher.start();
    try {
      await receiver.waitFor(() => receiver.requests().some((q) => q.status === 200), 15_000, 'a successful POST');
      assert.deepEqual(receiver.requests().map((q) => q.status), [500, 500, 500, 200]);
      // The receiver has answered; the dispatcher records that a moment later.
      await waitFor(async () => (await second!.store.webhooks.deliveries(hook.id)).every((d) => d.state === 'delivered'), { what: 'the delivery to be recorded', timeoutMs: 15_000 });
      const secretRow = await second.store.webhooks.claimDue({ owner: 'x', now: Date.now(), leaseMs: 1, maxBatches: 1, batchSize: 1 });
      assert.deepEqual(secretRow, []); // nothing left to send
      const final = await second.store.webhooks.deliveries(hook.id);
      assert.deepEqual(final.map((d) => [d.state, d.attempts, d.lastStatus]), [['delivered', 4, 200], ['delivered', 4, 200]]);
      // Every try carried the same two events in one batch, each freshly signed.
      for (const q of receiver.requests()) {
        const events = JSON.parse(q.raw.toString()) as Array<{ event_id: string; email: string }>;
        assert.deepEqual(events.map((e) => e.email).sort(), ['a@rcpt.test', 'b@rcpt.test']);
        assert.equal(verifyWebhookSignature(hook.secret, q.headers['x-lacre-signature'], q.raw).valid, true);
      }
    } finally {
      await dispatcher.stop(1_000);
    }
  } finally {
    await second?.close();
    rmSync(dataDir, { recursive: true, force: true });
    await receiver.close();
  }
});

test('410 Gone disables the webhook and gives up its pending rows; a receiver failing past the maximum age is given up', async () => {
  const r = await rig();
  const gone = await startWebhookReceiver({ failFirst: 100, failStatus: 410 });
  const broken = await startWebhookReceiver({ failFirst: 1_000, failStatus: 503 });
  try {
    const goneHook = await r.webhooks.add({ apiKey: r.key.apiKey, url: gone.url, events: 'sent', actor: 'cli:test' });
    const brokenHook = await r.webhooks.add({ apiKey: r.key.apiKey, url: broken.url, events: 'sent', actor: 'cli:test' });
    r.dispatcher({ schedule: { minBackoffMs: 20, maxBackoffMs: 50, maxAgeMs: 400 } }).start();
    await r.data.queue.enqueue({ sender: 'orders@shop.test', recipients: ['a@rcpt.test'], content: message('gone'), source: 'api', metadata: { apiKeyId: r.key.apiKey } });
    // The audit line is written just after the disable commits: wait for both, not the first.
    const disableAudits = async () => (await r.data.store.audit.list({ subject: goneHook.id })).filter((e) => e.action === 'webhook.disable');
    await waitFor(async () => (await r.data.store.webhooks.get(goneHook.id))!.disabledAt !== null && (await disableAudits()).length > 0, {
      what: 'the webhook to be disabled and audited',
      timeoutMs: 15_000,
    });
    const disabled = (await r.data.store.webhooks.get(goneHook.id))!;
    assert.match(disabled.disabledReason!, /410 Gone/);
    assert.deepEqual((await r.data.store.webhooks.deliveries(goneHook.id)).map((d) => [d.state, d.lastStatus]), [['failed', 410]]);
    assert.equal(gone.requests().length, 1);
    const [audit] = await disableAudits();
    assert.equal(audit.actor, 'system');

    await waitFor(async () =>
      (await r.data.store.webhooks.deliveries(brokenHook.id)).every((d) => d.state === 'failed'), { what: 'the broken receiver to be given up on' });
    const [given] = await r.data.store.webhooks.deliveries(brokenHook.id);
    assert.equal(given.lastStatus, 503);
    assert.ok(given.attempts >= 2, `attempts ${given.attempts}`);
    assert.match(given.lastError!, /503/);

    // New events reach no disabled webhook.
    await r.data.queue.enqueue({ sender: 'orders@shop.test', recipients: ['b@rcpt.test'], content: message('gone 2'), source: 'api', metadata: { apiKeyId: r.key.apiKey } });
    await waitFor(async () => (await r.data.store.countByState()).delivered === 2, { what: 'the second delivery', timeoutMs: 15_000 });
    assert.equal((await r.data.store.webhooks.deliveries(goneHook.id)).length, 1);
  } finally {
    await r.stop();
    await gone.close();
    await broken.close();
  }
});

test('a host that resolved to loopback at registration and to a private address at delivery is refused then (DNS rebinding)', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver({ cert: hookCert });
  dns.add('rebind.hooks.test', { type: 'A', address: '127.0.0.1' });
  try {
    const hook = await r.webhooks.add({ apiKey: r.key.apiKey, url: `https://rebind.hooks.test:${receiver.port}/`, events: 'sent', actor: 'cli:test' });
    dns.remove('rebind.hooks.test');
    dns.add('rebind.hooks.test', { type: 'A', address: '10.0.0.7' });
    r.dispatcher({ schedule: { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 } }).start();
    await r.data.queue.enqueue({ sender: 'orders@shop.test', recipients: ['a@rcpt.test'], content: message('rebind'), source: 'api', metadata: { apiKeyId: r.key.apiKey } });
    await waitFor(async () => (await r.data.store.webhooks.deliveries(hook.id)).some((d) => d.attempts === 1), { what: 'the refused attempt', timeoutMs: 15_000 });
    const [row] = await r.data.store.webhooks.deliveries(hook.id);
    assert.equal(row.state, 'pending');
    assert.equal(row.lastStatus, null);
    assert.match(row.lastError!, /rebind\.hooks\.test resolves to 10\.0\.0\.7, a private address/);
    assert.equal(receiver.requests().length, 0);
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('registration refuses unknown event types, unknown keys and unsafe URLs, naming what is wrong', async () => {
  const r = await rig();
  try {
    const cases: Array<[Parameters<Webhooks['add']>[0], RegExp]> = [
      [{ apiKey: r.key.apiKey, url: 'https://hooks.test/', events: 'sent,opened', actor: 't' }, /unknown event type "opened": expected one of sent, deferred, bounce, blocked, unsub/],
      [{ apiKey: r.key.apiKey, url: 'https://hooks.test/', events: '', actor: 't' }, /no event types given/],
      [{ apiKey: 'f'.repeat(32), url: 'https://hooks.test/', events: 'sent', actor: 't' }, /no API key f{32}/],
      [{ apiKey: r.key.apiKey, url: 'https://10.0.0.1/', events: 'sent', actor: 't' }, /webhook URL refused: 10\.0\.0\.1, a private address/],
      [{ apiKey: r.key.apiKey, url: 'http://hooks.example/', events: 'sent', actor: 't' }, /webhook URL refused/],
    ];
    for (const [input, pattern] of cases) await assert.rejects(r.webhooks.add(input), pattern, pattern.source);
    assert.deepEqual(await r.webhooks.list(r.key.apiKey), []);
  } finally {
    await r.stop();
  }
});

test('two dispatchers on one store deliver every event exactly once; a receiver that hangs is timed out and retried', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver();
  try {
    const hook = await r.webhooks.add({ apiKey: r.key.apiKey, url: receiver.url, events: 'sent', actor: 'cli:test' });
    receiver.hangNext(1);
    r.dispatcher({ workerId: 'node-1', batchSize: 2, timeoutMs: 300 }).start();
    r.dispatcher({ workerId: 'node-2', batchSize: 2, timeoutMs: 300 }).start();
    const recipients = Array.from({ length: 8 }, (_, i) => `r${i}@rcpt.test`);
    for (const address of recipients) {
      await r.data.queue.enqueue({ sender: 'orders@shop.test', recipients: [address], content: message(address), source: 'api', metadata: { apiKeyId: r.key.apiKey } });
    }
    await waitFor(async () => {
      const rows = await r.data.store.webhooks.deliveries(hook.id);
      return rows.length === 8 && rows.every((d) => d.state === 'delivered');
    }, { what: 'every delivery recorded', timeoutMs: 15_000 });
    const ids = receiver.events().map((e) => e.event_id as string);
    assert.equal(ids.length, 8, `events received: ${ids.length}`);
    assert.equal(new Set(ids).size, 8);
    assert.deepEqual(receiver.events().map((e) => e.email).sort(), [...recipients].sort());
    assert.ok(receiver.requests().every((q) => JSON.parse(q.raw.toString()).length <= 2));
    // The hung request was given up after the timeout and its events sent again.
    const retried = (await r.data.store.webhooks.deliveries(hook.id)).filter((d) => d.attempts > 1);
    assert.ok(retried.length >= 1);
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('a webhook batch whose POST outlasts the lease keeps its lease: no second dispatcher sends it', async () => {
  const r = await rig();
  const receiver = await startWebhookReceiver();
  try {
    const hook = await r.webhooks.add({ apiKey: r.key.apiKey, url: receiver.url, events: 'sent', actor: 'cli:test' });
    // The receiver holds the POST for three leases, until the sender's timeout gives up on it;
    // without renewal the other dispatcher would find the lease run out and send the batch again.
    const leaseMs = 750;
    receiver.hangNext(1);
    const slow = { minBackoffMs: 60_000, maxBackoffMs: 60_000, maxAgeMs: 3_600_000 };
    r.dispatcher({ workerId: 'node-1', leaseMs, timeoutMs: 3 * leaseMs, schedule: slow }).start();
    r.dispatcher({ workerId: 'node-2', leaseMs, timeoutMs: 3 * leaseMs, schedule: slow }).start();
    await r.data.queue.enqueue({ sender: 'orders@shop.test', recipients: ['a@rcpt.test'], content: message('slow'), source: 'api', metadata: { apiKeyId: r.key.apiKey } });
    await receiver.waitFor(() => receiver.requests().length === 1, 15_000, 'the POST');
    await waitFor(async () => (await r.data.store.webhooks.deliveries(hook.id))[0]?.attempts === 1, { what: 'the timed-out attempt to be recorded', timeoutMs: 15_000 });
    const [row] = await r.data.store.webhooks.deliveries(hook.id);
    assert.equal(row.state, 'pending');
    assert.match(row.lastError!, /no complete answer within 2250 ms/);
    await new Promise((resolve) => setTimeout(resolve, 2 * leaseMs));
    assert.equal(receiver.requests().length, 1, 'the batch was sent once');
  } finally {
    await r.stop();
    await receiver.close();
  }
});

test('retry delays double from the minimum up to the maximum, and the last try lands on the maximum age', () => {
  const s: WebhookSchedule = { minBackoffMs: 1_000, maxBackoffMs: 8_000, maxAgeMs: 20_000 };
  assert.deepEqual(webhookRetry(1, 0, 0, s), { state: 'pending', nextAttemptAt: 1_000 });
  assert.deepEqual(webhookRetry(2, 0, 1_000, s), { state: 'pending', nextAttemptAt: 3_000 });
  assert.deepEqual(webhookRetry(5, 0, 10_000, s), { state: 'pending', nextAttemptAt: 18_000 });
  assert.deepEqual(webhookRetry(6, 0, 18_000, s), { state: 'pending', nextAttemptAt: 20_000 });
  assert.deepEqual(webhookRetry(7, 0, 20_000, s), { state: 'failed', nextAttemptAt: 20_000 });
});
