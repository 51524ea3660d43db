// SMTP submission end to end on loopback: real sockets, real TLS with the test CA, real SQLite.
// Clients: nodemailer (the common Node client), a line-by-line dialogue for replies nodemailer
// hides, and swaks (an independent Perl/OpenSSL implementation). What is accepted goes on through
// compose, the queue, the delivery agent and a TLS sink, and its DKIM signatures are verified there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { closeSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type { SMTPTransportOptions } from 'nodemailer/lib/smtp-transport/index.js';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startDeliveryRig } from '../../test/harness/delivery-rig.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { publishRecords } from '../../test/harness/sender-domain.ts';
import { runSwaks } from '../../test/harness/swaks.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { Resolver } from '../dns/resolver.ts';
import { nodeStyleResolver } from '../dns/node-style.ts';
import { SenderDomains } from '../domains/sender-domains.ts';
import type { SenderSettings } from '../domains/dns-records.ts';
import { ApiKeys } from '../access/api-keys.ts';
import { Composer } from '../compose/outgoing.ts';
import { fieldValue, fieldsNamed, parseMessage } from '../compose/message-headers.ts';
import { startSubmission, type SubmissionListeners } from './smtp-submission.ts';

const HOST = 'submit.lacre.test';
const Y = new Date().getUTCFullYear();

let ca: TestCA;
let dns: FakeDnsServer;
let resolver: Resolver;
let listenerCert: IssuedCert;
let mxCert: IssuedCert;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  listenerCert = await ca.issue({ names: [HOST] });
  mxCert = await ca.issue({ names: ['mx.rcpt.test'] });
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 });
});
after(async () => {
  await dns.close();
});

const settings: SenderSettings = {
  hostname: 'mta.lacre.test',
  returnPathSubdomain: 'bounces',
  returnPathLocalPart: 'bounce',
  spfIp4: [],
  spfIp6: [],
  dmarcRua: 'mailto:dmarc@{domain}',
  tlsRptRua: 'mailto:tlsrpt@{domain}',
};

interface Rig {
  data: TempData;
  domains: SenderDomains;
  keys: ApiKeys;
  send: { user: string; pass: string; id: string };
  readOnly: { user: string; pass: string };
  submission: SubmissionListeners;
  queued: string[];
  logs: () => string;
  /** keepData: close the store but leave the data dir for a restart. */
  close(keepData?: boolean): Promise<void>;
}

/** A data dir with a DNS-verified sender domain `shop.test`, a registered but unverified `pending.test`, and keys. */
async function rig(options: { maxSize?: number; selfSigned?: boolean; dataDir?: string } = {}): Promise<Rig> {
  const data = await openTempData(options.dataDir ? { dataDir: options.dataDir } : {});
  const domains = new SenderDomains({ store: data.store, resolver, settings, rotationGraceMs: 86_400_000 });
  const composer = new Composer({ queue: data.queue, domains, tag: (id) => data.sealer.lookupHash('return-path', id) });
  const keys = new ApiKeys(data.store);
  if (!(await data.store.domains.get('shop.test'))) {
    const view = await domains.add('shop.test', 'cli:test');
    // Each rig has its own keys: the previous rig's records go first.
    for (const record of view.records) dns.remove(record.name);
    publishRecords(dns, view.records);
    const outcome = await domains.verify('shop.test', { actor: 'cli:test' });
    assert.equal(outcome.domain.status, 'verified', JSON.stringify(outcome.report?.records));
    await domains.add('pending.test', 'cli:test');
  }
  const sendKey = await keys.create({ name: 'shop app', scopes: ['send'], actor: 'cli:test' });
  const readKey = await keys.create({ name: 'dashboard', scopes: ['read', 'admin'], actor: 'cli:test' });
  let tlsCert: string | undefined;
  let tlsKey: string | undefined;
  if (!options.selfSigned) {
    tlsCert = join(data.dataDir, 'listener-chain.pem');
    tlsKey = join(data.dataDir, 'listener-key.pem');
    writeFileSync(tlsCert, listenerCert.chainPem);
    writeFileSync(tlsKey, listenerCert.keyPem, { mode: 0o600 });
  }
  const queued: string[] = [];
  const { logger, logs, close: closeLog } = capturingLogger(data.dataDir);
  const submission = await startSubmission({
    config: { host: '127.0.0.1', port: 0, tlsPort: 0, tlsCert, tlsKey, maxSize: options.maxSize ?? 1024 * 1024, hostname: HOST, dataDir: data.dataDir },
    keys,
    composer,
    domains,
    store: data.store,
    logger,
    onQueued: (id) => queued.push(id),
    closeGraceMs: 3_000,
  });
  return {
    data,
    domains,
    keys,
    send: { user: sendKey.apiKey, pass: sendKey.secretKey, id: sendKey.apiKey },
    readOnly: { user: readKey.apiKey, pass: readKey.secretKey },
    submission,
    queued,
    logs,
    async close(keepData = false) {
      await submission.close(1_000);
      closeLog();
      if (keepData) await data.store.close();
      else await data.close();
    },
  };
}

/** Lacre's own logger (with its redaction), writing synchronously to a file the test reads back. */
function capturingLogger(dir: string): { logger: Logger; logs: () => string; close: () => void } {
  const path = join(dir, 'test-log.jsonl');
  const fd = openSync(path, 'w');
  return { logger: createLogger({ level: 'debug', destination: fd }), logs: () => readFileSync(path, 'utf8'), close: () => closeSync(fd) };
}

function clientTls(): tls.ConnectionOptions {
  return { ca: [ca.certPem], servername: HOST, minVersion: 'TLSv1.2' };
}
function transport(r: Rig, mode: 'starttls' | 'implicit', auth: { user: string; pass: string } | null = r.send, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port: mode === 'implicit' ? r.submission.ports.implicit : r.submission.ports.starttls,
    secure: mode === 'implicit',
    requireTLS: mode === 'starttls',
    name: 'client.shop.test',
    ...(auth ? { auth } : {}),
    tls: clientTls(),
    connectionTimeout: 5_000,
    greetingTimeout: 5_000,
    socketTimeout: 10_000,
    ...extra,
  } as SMTPTransportOptions);
}

async function messageCount(r: Rig): Promise<number> {
  return Object.values(await r.data.store.countByState()).reduce((a, b) => a + b, 0);
}

// ---------------------------------------------------------------------------------------------
// A line-by-line SMTP dialogue, for the replies a library client hides or never provokes.

interface Reply {
  code: number;
  lines: string[];
  /** The last line without its code, e.g. "5.7.11 Encryption required…". */
  text: string;
}

class Dialogue {
  #socket: net.Socket | tls.TLSSocket;
  #buffer = '';
  #wake: (() => void) | null = null;
  #closed = false;

  private constructor(socket: net.Socket | tls.TLSSocket) {
    this.#socket = socket;
    this.#listen();
  }

  static async open(port: number, implicitTls = false): Promise<Dialogue> {
    const socket = implicitTls ? tls.connect({ host: '127.0.0.1', port, ...clientTls() }) : net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once(implicitTls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const d = new Dialogue(socket);
    const greeting = await d.reply();
    assert.equal(greeting.code, 220, greeting.lines.join('\n'));
    return d;
  }

  #listen(): void {
    this.#socket.on('data', (chunk: Buffer) => {
      this.#buffer += chunk.toString('latin1');
      this.#wake?.();
    });
    this.#socket.on('close', () => {
      this.#closed = true;
      this.#wake?.();
    });
    this.#socket.on('error', () => {});
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The next complete reply (the line whose code is followed by a space ends it). */
  async reply(timeoutMs = 5_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1_000; i++) {
      const lines = this.#buffer.split('\r\n');
      const end = lines.findIndex((l) => /^\d{3} /.test(l) || /^\d{3}$/.test(l));
      if (end >= 0 && end < lines.length - 1) {
        const taken = lines.slice(0, end + 1);
        this.#buffer = lines.slice(end + 1).join('\r\n');
        const last = taken[taken.length - 1];
        return { code: Number(last.slice(0, 3)), lines: taken, text: last.slice(4) };
      }
      if (this.#closed) throw new Error(`connection closed; unparsed: ${JSON.stringify(this.#buffer)}`);
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          this.#wake = null;
          resolve();
        };
      });
    }
    throw new Error(`no complete reply within ${timeoutMs} ms; got ${JSON.stringify(this.#buffer)}`);
  }

  write(text: string): void {
    this.#socket.write(text);
  }

  async command(line: string): Promise<Reply> {
    this.#socket.write(`${line}\r\n`);
    return this.reply();
  }

  async starttls(): Promise<void> {
    const ready = await this.command('STARTTLS');
    assert.equal(ready.code, 220, ready.lines.join('\n'));
    const plain = this.#socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tls.connect({ socket: plain as net.Socket, ...clientTls() });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.#socket = secure;
    this.#listen();
  }

  async auth(user: string, pass: string): Promise<Reply> {
    return this.command(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`);
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** A dialogue that is through STARTTLS, EHLO and (given credentials) AUTH. */
async function ready(r: Rig, auth: { user: string; pass: string } | null = r.send): Promise<Dialogue> {
  const d = await Dialogue.open(r.submission.ports.starttls);
  assert.equal((await d.command('EHLO client.shop.test')).code, 250);
  await d.starttls();
  assert.equal((await d.command('EHLO client.shop.test')).code, 250);
  if (auth) {
    const reply = await d.auth(auth.user, auth.pass);
    assert.equal(reply.code, 235, reply.lines.join('\n'));
  }
  return d;
}

const message = (headers: string, body = 'Hello from the shop.\r\n') => `${headers.trim().replace(/\n/g, '\r\n')}\r\n\r\n${body}`;

// ---------------------------------------------------------------------------------------------

test('a message sent with STARTTLS and AUTH PLAIN reaches the recipient over TLS, DKIM-signed, without the relay headers', async () => {
  const r = await rig();
  const d = await startDeliveryRig({ resolver, ca: [ca.certPem], data: r.data, sink: { tls: 'starttls', cert: mxCert }, policies: { 'rcpt.test': 'verify' }, workerId: 'submission-test' });
  const sink = d.sink!;
  try {
    const info = await transport(r, 'starttls').sendMail({
      envelope: { from: 'orders@shop.test', to: ['someone@rcpt.test'] },
      from: 'Shop <orders@shop.test>',
      to: 'someone@rcpt.test',
      subject: 'Your order',
      text: 'Thank you for your order.\n',
      headers: { 'X-MJ-CustomID': 'order-1234', 'X-MJ-EventPayload': '{"order":1234}' },
    });
    const messageId = /^250 2\.0\.0 Ok: queued as ([0-9a-f-]{36})$/.exec(info.response)?.[1];
    assert.ok(messageId, info.response);
    assert.deepEqual(r.queued, [messageId]);

    const stored = (await r.data.store.getMessage(messageId))!;
    assert.equal(stored.source, 'smtp');
    assert.equal(stored.requireTls, false);
    assert.deepEqual(
      { apiKeyId: stored.metadata.apiKeyId, customId: stored.metadata.customId, eventPayload: stored.metadata.eventPayload },
      { apiKeyId: r.send.id, customId: 'order-1234', eventPayload: '{"order":1234}' },
    );

    const [delivered] = await sink.waitForMessages(1, 10_000);
    assert.equal(delivered.tls, true);
    assert.match(delivered.mailFrom.address, /^bounce\+.*@bounces\.shop\.test$/);
    const headers = parseMessage(delivered.data).headers;
    assert.deepEqual(fieldsNamed(headers, 'X-MJ-CustomID'), []);
    assert.deepEqual(fieldsNamed(headers, 'X-MJ-EventPayload'), []);
    const received = fieldsNamed(headers, 'Received').map(fieldValue);
    assert.ok(received.some((v) => v.startsWith(`by ${HOST} (Lacre) with ESMTPSA id `)), received.join('\n'));
    assert.ok(!received.some((v) => v.includes('127.0.0.1')), 'no client address in the trace field');
    const result = await dkimVerify(delivered.data, { resolver: nodeStyleResolver(resolver) as never, strict: true });
    const verdicts = Object.fromEntries(result.results.map((x: { selector?: string; status: { result: string } }) => [x.selector, x.status.result]));
    assert.deepEqual(verdicts, { [`lacre-ed-${Y}a`]: 'pass', [`lacre-rsa-${Y}a`]: 'pass' });

    // The log says what happened with ids and counts, never the addresses.
    const acceptedLine = r.logs().split('\n').find((l) => l.includes('"msg":"submission accepted"'));
    assert.ok(acceptedLine, r.logs());
    assert.deepEqual(
      (({ messageId: m, apiKey, recipientCount }) => ({ m, apiKey, recipientCount }))(JSON.parse(acceptedLine)),
      { m: messageId, apiKey: r.send.id, recipientCount: 1 },
    );
    assert.doesNotMatch(r.logs(), /someone@rcpt\.test|orders@shop\.test/);
    assert.doesNotMatch(r.logs(), new RegExp(r.send.pass));
  } finally {
    await d.close();
    await r.close();
  }
});

test('implicit TLS with AUTH LOGIN is accepted and queued with the key that sent it', async () => {
  const r = await rig();
  try {
    const info = await transport(r, 'implicit', r.send, { authMethod: 'LOGIN' }).sendMail({
      from: 'news@shop.test',
      to: ['a@rcpt.test', 'b@rcpt.test'],
      subject: 'Over implicit TLS',
      text: 'Grüße — eight bits.\n',
    });
    const messageId = /queued as ([0-9a-f-]{36})/.exec(info.response)?.[1];
    assert.ok(messageId, info.response);
    assert.deepEqual(info.accepted, ['a@rcpt.test', 'b@rcpt.test']);
    const stored = (await r.data.store.getMessage(messageId))!;
    assert.equal(stored.metadata.apiKeyId, r.send.id);
    assert.deepEqual(stored.recipients.map((x) => x.address).sort(), ['a@rcpt.test', 'b@rcpt.test']);
  } finally {
    await r.close();
  }
});

test('before TLS the EHLO reply offers STARTTLS but no AUTH; AUTH gets 538 5.7.11 and MAIL 530 5.7.0; after STARTTLS every extension is offered', async () => {
  const r = await rig({ maxSize: 5 * 1024 * 1024 });
  const d = await Dialogue.open(r.submission.ports.starttls);
  try {
    const plain = await d.command('EHLO client.shop.test');
    assert.equal(plain.code, 250);
    const plainKeywords = plain.lines.slice(1).map((l) => l.slice(4));
    assert.ok(plainKeywords.includes('STARTTLS'), plain.lines.join('\n'));
    assert.ok(!plainKeywords.some((k) => k.startsWith('AUTH')), plain.lines.join('\n'));
    assert.ok(!plainKeywords.includes('REQUIRETLS'), 'REQUIRETLS only over TLS (RFC 8689 §4.1)');

    const auth = await d.auth(r.send.user, r.send.pass);
    assert.equal(auth.code, 538, auth.lines.join('\n'));
    assert.match(auth.text, /^5\.7\.11 /);
    const mail = await d.command('MAIL FROM:<orders@shop.test>');
    assert.equal(mail.code, 530, mail.lines.join('\n'));
    assert.match(mail.text, /^5\.7\.0 /);

    await d.starttls();
    const secure = await d.command('EHLO client.shop.test');
    const keywords = secure.lines.slice(1).map((l) => l.slice(4));
    for (const expected of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'AUTH PLAIN LOGIN', 'REQUIRETLS', `SIZE ${5 * 1024 * 1024}`]) {
      assert.ok(keywords.includes(expected), `${expected} in:\n${secure.lines.join('\n')}`);
    }
    assert.ok(!keywords.includes('STARTTLS'));
    assert.equal(await messageCount(r), 0);
  } finally {
    d.close();
    await r.close();
  }
});

test('over TLS but without AUTH, MAIL is refused with 530 5.7.0 and nothing is relayed', async () => {
  const r = await rig();
  const d = await ready(r, null);
  try {
    const mail = await d.command('MAIL FROM:<orders@shop.test>');
    assert.equal(mail.code, 530);
    assert.match(mail.text, /^5\.7\.0 Authentication required/);
    const rcpt = await d.command('RCPT TO:<a@rcpt.test>');
    assert.ok(rcpt.code >= 500, rcpt.lines.join('\n'));
    assert.equal(await messageCount(r), 0);
  } finally {
    d.close();
    await r.close();
  }
});

test('a wrong secret and a key without the send scope are refused with 535 5.7.8; the latter names the scope', async () => {
  const r = await rig();
  try {
    const d = await ready(r, null);
    const wrong = await d.auth(r.send.user, 'f'.repeat(32));
    assert.equal(wrong.code, 535);
    assert.match(wrong.text, /^5\.7\.8 Authentication credentials invalid$/);
    const scope = await d.auth(r.readOnly.user, r.readOnly.pass);
    assert.equal(scope.code, 535);
    assert.match(scope.text, /^5\.7\.8 .*lacks the "send" scope/);
    d.close();

    // The same through nodemailer: its error carries the server's reply.
    await assert.rejects(
      transport(r, 'starttls', r.readOnly).sendMail({ from: 'orders@shop.test', to: 'a@rcpt.test', text: 'x' }),
      (err: Error & { responseCode?: number; response?: string }) => err.responseCode === 535 && /send" scope/.test(err.response ?? ''),
    );
    assert.equal(await messageCount(r), 0);
  } finally {
    await r.close();
  }
});

test('a key disabled while its session is open cannot start another transaction (550 5.7.1)', async () => {
  const r = await rig();
  const d = await ready(r);
  try {
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RSET')).code, 250);
    await r.keys.disable(r.send.user, 'cli:test');
    const mail = await d.command('MAIL FROM:<orders@shop.test>');
    assert.equal(mail.code, 550, mail.lines.join('\n'));
    assert.match(mail.text, /^5\.7\.1 this API key was disabled/);
    assert.equal(await messageCount(r), 0);
  } finally {
    d.close();
    await r.close();
  }
});

test('an unverified or unregistered envelope sender is refused at MAIL FROM with 550 5.7.1', async () => {
  const r = await rig();
  const d = await ready(r);
  try {
    const pending = await d.command('MAIL FROM:<orders@pending.test>');
    assert.equal(pending.code, 550);
    assert.match(pending.text, /^5\.7\.1 envelope sender: sender domain pending\.test is registered but not verified/);
    const unknown = await d.command('MAIL FROM:<ceo@bank.test>');
    assert.equal(unknown.code, 550);
    assert.match(unknown.text, /^5\.7\.1 envelope sender: sender domain bank\.test is not registered/);
    // A subdomain of a verified domain is fine (DMARC relaxed alignment), and so is the null sender.
    assert.equal((await d.command('MAIL FROM:<news@mail.shop.test>')).code, 250);
    assert.equal((await d.command('RSET')).code, 250);
    assert.equal((await d.command('MAIL FROM:<>')).code, 250);
  } finally {
    d.close();
    await r.close();
  }
});

test('a spoofed From is refused at the end of DATA with 550 5.7.1 and nothing is queued', async () => {
  const r = await rig();
  const d = await ready(r);
  try {
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message('From: Your Bank <security@bank.test>\nTo: a@rcpt.test\nSubject: Verify your account')}.\r\n`);
    const end = await d.reply();
    assert.equal(end.code, 550, end.lines.join('\n'));
    assert.match(end.text, /^5\.7\.1 From: sender domain bank\.test is not registered/);

    // The session goes on: a malformed message is refused as such (5.6.0).
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message('To: a@rcpt.test\nSubject: no author')}.\r\n`);
    const malformed = await d.reply();
    assert.equal(malformed.code, 550);
    assert.match(malformed.text, /^5\.6\.0 the message has no From header/);
    assert.equal(await messageCount(r), 0);
    assert.deepEqual(r.queued, []);
  } finally {
    d.close();
    await r.close();
  }
});

test('a message over the size limit is refused with 552 5.3.4, declared at MAIL FROM or found at the end of DATA', async () => {
  const r = await rig({ maxSize: 4096 });
  const d = await ready(r);
  try {
    const declared = await d.command('MAIL FROM:<orders@shop.test> SIZE=100000');
    assert.equal(declared.code, 552);
    assert.match(declared.text, /^5\.3\.4 /);

    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message('From: orders@shop.test\nTo: a@rcpt.test\nSubject: big', `${'x'.repeat(76)}\r\n`.repeat(100))}.\r\n`);
    const end = await d.reply();
    assert.equal(end.code, 552, end.lines.join('\n'));
    assert.match(end.text, /^5\.3\.4 /);
    assert.equal(await messageCount(r), 0);

    // Just under the limit still goes through.
    const info = await transport(r, 'starttls').sendMail({ from: 'orders@shop.test', to: 'a@rcpt.test', subject: 'small', text: 'x'.repeat(1000) });
    assert.match(info.response, /^250 2\.0\.0 /);
  } finally {
    d.close();
    await r.close();
  }
});

test('a message the store cannot take is answered 451 4.3.0, so the client keeps it and tries again', async () => {
  const r = await rig();
  const d = await ready(r);
  try {
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    // The database goes away between the envelope and the end of the message.
    await r.data.store.close();
    d.write(`${message('From: orders@shop.test\nTo: a@rcpt.test\nSubject: unlucky')}.\r\n`);
    const end = await d.reply();
    assert.equal(end.code, 451, end.lines.join('\n'));
    assert.match(end.text, /^4\.3\.0 the message was not queued/);
    assert.deepEqual(r.queued, []);
    assert.match(r.logs(), /"msg":"submission could not be queued"/);
  } finally {
    d.close();
    await r.close();
  }
});

test('REQUIRETLS in MAIL FROM is accepted over TLS and stored with the message', async () => {
  const r = await rig();
  try {
    const client = transport(r, 'starttls');
    const strict = await client.sendMail({ from: 'orders@shop.test', to: 'a@rcpt.test', subject: 'strict', text: 'x', requireTLSExtensionEnabled: true });
    const plain = await client.sendMail({ from: 'orders@shop.test', to: 'a@rcpt.test', subject: 'plain', text: 'x' });
    const id = (info: { response: string }) => /queued as ([0-9a-f-]{36})/.exec(info.response)![1];
    assert.equal((await r.data.store.getMessage(id(strict)))!.requireTls, true);
    assert.equal((await r.data.store.getMessage(id(plain)))!.requireTls, false);
    const row = await r.data.store.engine.get<{ require_tls: number }>('SELECT require_tls FROM messages WHERE id = ?', [id(strict)]);
    assert.equal(row?.require_tls, 1);

    // On the wire: the parameter and its 250.
    const d = await ready(r);
    const mail = await d.command('MAIL FROM:<orders@shop.test> REQUIRETLS');
    assert.equal(mail.code, 250, mail.lines.join('\n'));
    d.close();
  } finally {
    await r.close();
  }
});

test('a suppressed recipient is refused at RCPT with 550 5.1.1 and the message goes to the others', async () => {
  const r = await rig();
  try {
    await r.data.store.addSuppression({ address: 'gone@rcpt.test', reason: '550 5.1.1 no such user', messageId: null, at: Date.now() });
    const d = await ready(r);
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    const refused = await d.command('RCPT TO:<gone@rcpt.test>');
    assert.equal(refused.code, 550);
    assert.match(refused.text, /^5\.1\.1 recipient suppressed since .* after a hard bounce: 550 5\.1\.1 no such user/);
    const bad = await d.command('RCPT TO:<not an address>');
    assert.ok(bad.code >= 500, bad.lines.join('\n'));
    d.close();

    const info = await transport(r, 'starttls').sendMail({ from: 'orders@shop.test', to: ['gone@rcpt.test', 'here@rcpt.test'], subject: 's', text: 'x' });
    assert.deepEqual(info.accepted, ['here@rcpt.test']);
    assert.deepEqual(info.rejected, ['gone@rcpt.test']);
    const id = /queued as ([0-9a-f-]{36})/.exec(info.response)![1];
    assert.deepEqual((await r.data.store.getMessage(id))!.recipients.map((x) => x.address), ['here@rcpt.test']);
  } finally {
    await r.close();
  }
});

test('close lets a message being received finish, turns idle clients away with 421 and refuses new connections', async () => {
  const r = await rig();
  const idle = await ready(r);
  const busy = await ready(r);
  try {
    assert.equal((await busy.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await busy.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await busy.command('DATA')).code, 354);
    busy.write('From: orders@shop.test\r\nTo: a@rcpt.test\r\nSubject: in flight\r\n\r\nfirst half\r\n');

    const closing = r.submission.close(5_000);
    const turnedAway = await idle.reply();
    assert.equal(turnedAway.code, 421);
    assert.match(turnedAway.text, /^4\.3\.2 /);
    await assert.rejects(Dialogue.open(r.submission.ports.starttls), /ECONNREFUSED/);

    busy.write('second half\r\n.\r\n');
    const done = await busy.reply();
    assert.equal(done.code, 250, done.lines.join('\n'));
    const after = await busy.reply();
    assert.equal(after.code, 421);
    await closing;
    assert.equal(await messageCount(r), 1);
    const id = /queued as ([0-9a-f-]{36})/.exec(done.text)![1];
    assert.match((await r.data.store.messageContent(id))!.toString(), /first half\r\nsecond half/);
  } finally {
    idle.close();
    busy.close();
    await r.close();
  }
});

test('without configured files a self-signed certificate is generated once, presented on both ports, and logged by fingerprint', async () => {
  const first = await rig({ selfSigned: true });
  const dataDir = first.data.dataDir;
  let fingerprint: string;
  try {
    fingerprint = first.submission.fingerprint;
    assert.match(fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.equal(first.submission.certificate.source, 'generated');
    assert.equal(first.submission.certificate.certPath, join(dataDir, 'tls', 'submission-cert.pem'));
    assert.equal(statSync(join(dataDir, 'tls', 'submission-key.pem')).mode & 0o777, 0o600);
    assert.match(first.logs(), new RegExp(`"sha256":"${fingerprint}"`));
    for (const port of [first.submission.ports.implicit]) {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: HOST });
      await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
      assert.equal(socket.getPeerCertificate().fingerprint256, fingerprint);
      assert.ok(['TLSv1.2', 'TLSv1.3'].includes(socket.getProtocol() ?? ''));
      socket.destroy();
    }
    // A client pinning the fingerprint (nodemailer, STARTTLS) can send.
    const info = await nodemailer
      .createTransport({
        host: '127.0.0.1',
        port: first.submission.ports.starttls,
        requireTLS: true,
        auth: first.send,
        tls: {
          rejectUnauthorized: false,
          checkServerIdentity: (_host: string, cert: { fingerprint256: string }) =>
            cert.fingerprint256 === fingerprint ? undefined : new Error('fingerprint mismatch'),
        },
      } as SMTPTransportOptions)
      .sendMail({ from: 'orders@shop.test', to: 'a@rcpt.test', subject: 'pinned', text: 'x' });
    assert.match(info.response, /^250 /);
  } finally {
    await first.close(true);
  }
  // Restart on the same data dir: the same certificate.
  const second = await rig({ selfSigned: true, dataDir });
  try {
    assert.equal(second.submission.fingerprint, fingerprint);
    assert.equal(second.submission.certificate.source, 'reused');
  } finally {
    await second.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// swaks: an independent client.

test('swaks: STARTTLS with AUTH PLAIN, verifying the certificate against the test CA, is accepted and queued', async () => {
  const r = await rig();
  try {
    const caFile = await ca.writeCaFile(r.data.dataDir);
    const result = await runSwaks({
      server: '127.0.0.1',
      port: r.submission.ports.starttls,
      tls: 'starttls',
      caFile,
      sni: HOST,
      auth: { user: r.send.user, password: r.send.pass, type: 'PLAIN' },
      from: 'orders@shop.test',
      to: 'a@rcpt.test',
      headers: ['From: orders@shop.test', 'Subject: swaks over STARTTLS', 'X-MJ-CustomID: swaks-1'],
      body: 'Sent by swaks.',
    });
    assert.equal(result.code, 0, result.transcript);
    assert.ok(result.serverLines.some((l) => /^235 2\.7\.0 /.test(l)), result.transcript);
    const queued = result.serverLines.find((l) => /^250 2\.0\.0 Ok: queued as /.test(l));
    assert.ok(queued, result.transcript);
    assert.doesNotMatch(result.transcript, new RegExp(r.send.pass));
    const id = /queued as ([0-9a-f-]{36})/.exec(queued)![1];
    const stored = (await r.data.store.getMessage(id))!;
    assert.equal(stored.metadata.customId, 'swaks-1');
    assert.doesNotMatch((await r.data.store.messageContent(id))!.toString(), /X-MJ-CustomID/i);
  } finally {
    await r.close();
  }
});

test('swaks: implicit TLS (--tls-on-connect) with AUTH LOGIN is accepted and queued', async () => {
  const r = await rig();
  try {
    const result = await runSwaks({
      server: '127.0.0.1',
      port: r.submission.ports.implicit,
      tls: 'implicit',
      caFile: await ca.writeCaFile(r.data.dataDir),
      sni: HOST,
      auth: { user: r.send.user, password: r.send.pass, type: 'LOGIN' },
      from: 'orders@shop.test',
      to: 'a@rcpt.test',
      headers: ['From: orders@shop.test', 'Subject: swaks over implicit TLS'],
    });
    assert.equal(result.code, 0, result.transcript);
    assert.ok(result.serverLines.some((l) => /^250 2\.0\.0 Ok: queued as /.test(l)), result.transcript);
    assert.equal(await messageCount(r), 1);
  } finally {
    await r.close();
  }
});

test('swaks: without TLS no AUTH is offered, so swaks never sends the secret, and nothing is queued', async () => {
  const r = await rig();
  try {
    const result = await runSwaks({
      server: '127.0.0.1',
      port: r.submission.ports.starttls,
      tls: 'none',
      auth: { user: r.send.user, password: r.send.pass, type: 'PLAIN' },
      from: 'orders@shop.test',
      to: 'a@rcpt.test',
    });
    // 28: error in the AUTH transaction (the server offered no AUTH).
    assert.equal(result.code, 28, result.transcript);
    assert.ok(!/^\s*-> AUTH/m.test(result.transcript), result.transcript);
    assert.ok(result.serverLines.some((l) => l === '250-STARTTLS' || l === '250 STARTTLS'), result.transcript);
    // And a client that tries anyway (swaks forced into it by --auth without EHLO AUTH is not
    // possible) is covered by the 538 5.7.11 dialogue test above.
    assert.equal(await messageCount(r), 0);
  } finally {
    await r.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Hardening: what a submitter writes must mean one thing to every reader.

test('a From or Sender that is not an RFC 5322 mailbox list is refused with 550 5.7.1; each mailbox of a valid list is checked', async () => {
  const r = await rig();
  const d = await ready(r);
  const submit = async (headers: string) => {
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message(`${headers}\nTo: a@rcpt.test\nSubject: hi`)}.\r\n`);
    return d.reply();
  };
  try {
    // A lenient parser reads the second address as a display name; others see two mailboxes.
    for (const from of ['From: <orders@shop.test> <ceo@bank.test>', 'From: orders@shop.test ceo@bank.test', 'From: ceo@bank.test <orders@shop.test>', 'From: Group: orders@shop.test;']) {
      const reply = await submit(from);
      assert.equal(reply.code, 550, `${from}: ${reply.lines.join('\n')}`);
      assert.match(reply.text, /^5\.7\.1 From: the From header cannot be checked: it is not an RFC 5322 mailbox list/, from);
    }
    const badSender = await submit('From: orders@shop.test\nSender: <orders@shop.test> <ceo@bank.test>');
    assert.equal(badSender.code, 550);
    assert.match(badSender.text, /^5\.7\.1 Sender: the Sender header cannot be checked/);
    // A valid list: every mailbox must be under a verified domain, not only the first.
    const second = await submit('From: orders@shop.test, "Bank" <ceo@bank.test>\nSender: orders@shop.test');
    assert.equal(second.code, 550);
    assert.match(second.text, /^5\.7\.1 From: sender domain bank\.test is not registered/);
    assert.equal(await messageCount(r), 0);
    // Two mailboxes of the verified domain, with a Sender, and display names with specials quoted, are fine.
    const ok = await submit('From: "Orders, Shop" <orders@shop.test>, sales@shop.test (Sales)\nSender: orders@shop.test');
    assert.equal(ok.code, 250, ok.lines.join('\n'));
    assert.equal(await messageCount(r), 1);
  } finally {
    d.close();
    await r.close();
  }
});

test('a NUL octet or a line over 998 octets is refused at the end of DATA with 550 5.6.0; 998 octets pass', async () => {
  const r = await rig();
  const d = await ready(r);
  const submit = async (body: string) => {
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message('From: orders@shop.test\nTo: a@rcpt.test\nSubject: lines', body)}.\r\n`);
    return d.reply();
  };
  try {
    const nul = await submit('before\0after\r\n');
    assert.equal(nul.code, 550, nul.lines.join('\n'));
    assert.match(nul.text, /^5\.6\.0 the message contains a NUL octet/);
    const long = await submit(`short\r\n${'x'.repeat(5_000)}\r\n`);
    assert.equal(long.code, 550, long.lines.join('\n'));
    assert.match(long.text, /^5\.6\.0 line 2 of the body is 5000 octets long; RFC 5322 section 2\.1\.1 allows at most 998$/);
    const normal = await submit('a line\r\n');
    assert.equal(normal.code, 250, 'a normal message between refusals is accepted');
    assert.equal((await d.command('MAIL FROM:<orders@shop.test>')).code, 250);
    assert.equal((await d.command('RCPT TO:<a@rcpt.test>')).code, 250);
    assert.equal((await d.command('DATA')).code, 354);
    d.write(`${message(`From: orders@shop.test\nTo: a@rcpt.test\nX-Long: ${'h'.repeat(1_000)}`)}.\r\n`);
    const header = await d.reply();
    assert.equal(header.code, 550);
    assert.match(header.text, /^5\.6\.0 a line of the "X-Long" header field is 1008 octets long/);
    assert.equal(await messageCount(r), 1);
    const edge = await submit(`${'x'.repeat(998)}\r\n`);
    assert.equal(edge.code, 250, edge.lines.join('\n'));
    assert.equal(await messageCount(r), 2);
  } finally {
    d.close();
    await r.close();
  }
});
