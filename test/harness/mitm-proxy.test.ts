// Self-tests for the loopback attackers: the stripping proxy must really hide and block STARTTLS
// (and show when a client fell back to plaintext), the injecting server must really put forged
// plaintext behind its 220, and the injection probe must tell a server that executes pipelined
// plaintext inside TLS from one that discards it.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { format } from 'node:util';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { referenceClient, connect, send, failure } from './reference-client.ts';
import type { SMTPConnectionOptions, SMTPEnvelope } from 'nodemailer/lib/smtp-connection';
import { TestCA } from './ca.ts';
import type { IssuedCert } from './ca.ts';
import { startSmtpSink } from './smtp-sink.ts';
import type { SmtpSink } from './smtp-sink.ts';
import {
  DEFAULT_INJECTION,
  DEFAULT_STARTTLS_REFUSAL,
  ReplyReader,
  connectPlain,
  probeStartTlsInjection,
  startStartTlsInjectionSink,
  startStripTlsProxy,
  startTlsClient,
} from './mitm-proxy.ts';
import type { StripTlsProxy, StripTlsProxyOptions } from './mitm-proxy.ts';

const MX = 'mx.example.test';
let ca: TestCA;
let good: IssuedCert;

before(async () => {
  ca = await TestCA.create();
  good = await ca.issue({ names: [MX] });
});

const client = (port: number, opts: SMTPConnectionOptions = {}): SMTPConnection =>
  referenceClient({ port }, { ca: ca.certPem, servername: MX }, opts);

async function deliver(port: number, opts: SMTPConnectionOptions, message: string) {
  const c = client(port, opts);
  try {
    await connect(c);
    const info = await send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, message);
    c.quit();
    return info;
  } finally {
    c.close();
  }
}

// A STARTTLS sink behind a proxy; both always closed.
async function behindProxy(opts: Omit<StripTlsProxyOptions, 'target'>, body: (sink: SmtpSink, proxy: StripTlsProxy) => Promise<void>) {
  const sink = await startSmtpSink({ tls: 'starttls', cert: good });
  const proxy = await startStripTlsProxy({ target: { host: sink.host, port: sink.port }, ...opts });
  try {
    await body(sink, proxy);
  } finally {
    await proxy.close();
    await sink.close();
  }
}

const MESSAGE = 'Subject: hi\r\n\r\nSTARTTLS\r\n.a dot\r\n';

async function ehloThrough(port: number): Promise<{ lines: string[]; raw: string; close(): void }> {
  const s = await connectPlain(port);
  const reader = new ReplyReader(s);
  assert.equal((await reader.next()).code, 220);
  s.write('EHLO raw.lacre.test\r\n');
  const r = await reader.next();
  return { lines: r.lines, raw: r.raw, close: () => s.destroy() };
}

test('the stripping proxy removes STARTTLS from the EHLO reply and keeps the multiline reply well formed', async () => {
  await behindProxy({}, async (sink, proxy) => {
    const direct = await ehloThrough(sink.port);
    direct.close();
    assert.equal(direct.lines.at(-1), 'STARTTLS', 'the sink lists STARTTLS last, so the separator must be rewritten');
    const { raw, close } = await ehloThrough(proxy.port);
    close();
    assert.equal(raw, direct.raw.replace('250-SMTPUTF8\r\n250 STARTTLS\r\n', '250 SMTPUTF8\r\n'));
    assert.equal(proxy.sessions[0].strippedStartTls, true);
  });
  await behindProxy({ rewrite: 'garble' }, async (_sink, proxy) => {
    const { lines, close } = await ehloThrough(proxy.port);
    close();
    assert.equal(lines.at(-1), 'XXXXXXXA');
  });
});

test('through the stripping proxy a requireTLS client fails with ETLS and never sends MAIL FROM', async () => {
  await behindProxy({}, async (sink, proxy) => {
    const c = client(proxy.port, { requireTLS: true });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETLS');
    assert.equal(err.response, DEFAULT_STARTTLS_REFUSAL);
    const p = await proxy.waitFor(() => proxy.sessions[0]?.closed && proxy.sessions[0]);
    assert.equal(p.startTlsAttempted, true, 'nodemailer sends STARTTLS even when it is not advertised');
    assert.equal(p.plaintextMailFrom, false);
    assert.ok(!sink.sessions[0].commands.some((cmd) => cmd.line === 'STARTTLS'), 'the refusal came from the proxy');
  });
});

test('through the stripping proxy an opportunistic client delivers in plaintext and the proxy records its MAIL FROM', async () => {
  for (const opts of [{}, { ignoreTLS: true }, { opportunisticTLS: true }] as SMTPConnectionOptions[]) {
    await behindProxy({}, async (sink, proxy) => {
      await deliver(proxy.port, opts, MESSAGE);
      const [msg] = await sink.waitForMessages(1);
      assert.equal(msg.tls, false);
      assert.equal(msg.data.toString(), MESSAGE, 'a body line reading STARTTLS is content, not a command');
      const p = proxy.sessions[0];
      assert.equal(p.plaintextMailFrom, true);
      assert.equal(p.plaintextRcptTo, true);
      assert.equal(p.plaintextData, true);
      assert.equal(p.startTlsAttempted, false);
      assert.ok(p.clientCommands.includes('MAIL FROM:<a@sender.test>'));
      assert.ok(!p.clientCommands.includes('STARTTLS'));
    });
  }
});

test('the stripping proxy answers a STARTTLS itself with 454, or swallows it, and never forwards it', async () => {
  await behindProxy({}, async (sink, proxy) => {
    const s = await connectPlain(proxy.port);
    try {
      const r = new ReplyReader(s);
      await r.next();
      s.write('EHLO raw.lacre.test\r\nSTARTTLS\r\n');
      await r.next();
      assert.equal((await r.next()).raw, DEFAULT_STARTTLS_REFUSAL + '\r\n');
    } finally {
      s.destroy();
    }
    await sink.waitFor(() => sink.sessions[0]?.closed, 2000, 'sink session closed');
    assert.deepEqual(sink.sessions[0].commands.map((c) => c.line), ['EHLO raw.lacre.test']);
  });
  await behindProxy({ onStartTls: 'ignore' }, async (sink, proxy) => {
    // Only socketTimeout bounds the wait for a reply to STARTTLS; greetingTimeout does not.
    const c = client(proxy.port, { requireTLS: true, socketTimeout: 400 });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT', 'the client waited for a STARTTLS reply that never came');
    assert.equal((err as { timeoutType?: string }).timeoutType, 'SOCKET_TIMEOUT');
    assert.equal(proxy.sessions[0].startTlsAttempted, true);
    assert.ok(!sink.sessions[0].commands.some((cmd) => cmd.line === 'STARTTLS'));
  });
});

test('in relay mode the proxy only strips the advertisement, and a client that insists gets TLS end to end', async () => {
  await behindProxy({ onStartTls: 'relay' }, async (sink, proxy) => {
    await deliver(proxy.port, { requireTLS: true }, MESSAGE);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.tls, true);
    assert.equal(msg.data.toString(), MESSAGE);
    const p = proxy.sessions[0];
    assert.equal(p.strippedStartTls, true);
    assert.equal(p.relayedTls, true);
    assert.equal(p.plaintextMailFrom, false, 'the envelope went inside TLS');
  });
});

test('the injecting server appends forged plaintext replies to its 220 before any TLS', async () => {
  const sink = await startStartTlsInjectionSink({ cert: good });
  const s = await connectPlain(sink.port);
  try {
    const r = new ReplyReader(s);
    await r.next();
    s.write('EHLO raw.lacre.test\r\n');
    assert.ok((await r.next()).lines.includes('STARTTLS'));
    s.write('STARTTLS\r\n');
    const ready = await r.next();
    assert.equal(ready.code, 220);
    // What a plain socket reads right after asking for STARTTLS: the 220, then the forgery.
    const after = ready.raw + (await r.collect(100)).map((x) => x.raw).join('') + r.stop();
    assert.equal(after, '220 2.0.0 Ready to start TLS\r\n' + DEFAULT_INJECTION);
    assert.equal(sink.sessions[0].injected, DEFAULT_INJECTION);
  } finally {
    s.destroy();
    await sink.close();
  }
});

test('nodemailer discards the injected replies and delivers over TLS to the injecting server', async () => {
  const sink = await startStartTlsInjectionSink({ cert: good });
  const warnings: string[] = [];
  const logger = {
    level: () => {},
    trace: () => {},
    debug: () => {},
    info: () => {},
    warn: (_entry: unknown, ...args: unknown[]) => void warnings.push(format(...args)),
    error: () => {},
    fatal: () => {},
  };
  try {
    await deliver(sink.port, { requireTLS: true, logger }, MESSAGE);
    const rec = await sink.waitFor(() => sink.sessions[0]?.closed && sink.sessions[0]);
    assert.deepEqual(rec.commandsBeforeTls, ['EHLO client.lacre.test', 'STARTTLS']);
    assert.deepEqual(rec.commandsAfterTls, ['EHLO client.lacre.test', 'MAIL FROM:<a@sender.test>', 'RCPT TO:<b@rcpt.test>', 'DATA', 'QUIT']);
    assert.equal(rec.tlsProtocol, 'TLSv1.3');
    assert.equal(rec.messages[0].toString(), MESSAGE);
    // (nodemailer counts the buffered text without line ends, so not the exact byte count.)
    assert.ok(
      warnings.some((w) => /^Discarded [1-9]\d* bytes received in plaintext after the STARTTLS response$/.test(w)),
      `nodemailer saw and dropped the forgery: ${JSON.stringify(warnings)}`,
    );
  } finally {
    await sink.close();
  }
});

test('the injection probe finds that smtp-server does not execute a command pipelined behind STARTTLS', async () => {
  const sink = await startSmtpSink({ tls: 'starttls', cert: good });
  try {
    const result = await probeStartTlsInjection({ port: sink.port, injected: 'RSET' });
    assert.equal(result.startTlsReply.code, 220);
    assert.equal(result.tls, true);
    assert.equal(result.plaintextAfterStartTlsReply, '');
    assert.deepEqual(result.unpromptedRepliesAfterTls, []);
    assert.equal(result.repliesToEhloAfterTls.length, 1);
    assert.equal(result.repliesToEhloAfterTls[0].code, 250);
    assert.equal(result.injectedCommandExecuted, false);
    const s = await sink.waitFor(() => sink.sessions[0]?.closed && sink.sessions[0]);
    assert.ok(!s.commands.some((c) => c.line === 'RSET'), 'the RSET was dropped unparsed');
  } finally {
    await sink.close();
  }
});

test('the injection probe catches a server that executes plaintext pipelined behind STARTTLS inside TLS', async () => {
  const sink = await startStartTlsInjectionSink({ cert: good, inject: '', executePlaintextAfterStartTls: true });
  try {
    const result = await probeStartTlsInjection({ port: sink.port, injected: 'RSET' });
    assert.equal(result.tls, true);
    assert.equal(result.injectedCommandExecuted, true);
    assert.deepEqual(result.unpromptedRepliesAfterTls.map((r) => r.raw), ['250 2.0.0 Reset\r\n']);
    assert.equal(sink.sessions[0].plaintextAfterStartTls, 'RSET\r\n');
    assert.deepEqual(sink.sessions[0].commandsAfterTls.slice(0, 2), ['RSET', 'EHLO probe.lacre.test']);
  } finally {
    await sink.close();
  }
});

test('startTlsClient and ReplyReader hand over cleanly from plaintext to TLS', async () => {
  const sink = await startSmtpSink({ tls: 'starttls', cert: good });
  const s = await connectPlain(sink.port);
  try {
    const r = new ReplyReader(s);
    await r.next();
    s.write('EHLO raw.lacre.test\r\nSTARTTLS\r\n');
    await r.next();
    assert.equal((await r.next()).code, 220);
    assert.equal(r.stop(), '');
    const t = await startTlsClient(s, { ca: ca.certPem, servername: MX, rejectUnauthorized: true });
    const tr = new ReplyReader(t);
    t.write('EHLO raw.lacre.test\r\n');
    assert.equal((await tr.next()).code, 250);
    t.destroy();
  } finally {
    s.destroy();
    await sink.close();
  }
});
