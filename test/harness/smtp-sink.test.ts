// Self-tests for the SMTP sinks: each behaviour is driven by nodemailer's SMTPConnection (the
// client Lacre wraps) or a raw socket, and checked both from the client's side and from the
// sink's record, so a sink that silently stopped misbehaving would fail here.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { referenceClient, connect, send, failure, type NodemailerError } from './reference-client.ts';
import type { SMTPConnectionOptions, SMTPEnvelope } from 'nodemailer/lib/smtp-connection';
import { TestCA } from './ca.ts';
import type { IssuedCert } from './ca.ts';
import { startSmtpSink } from './smtp-sink.ts';
import type { SmtpSink, SmtpSinkOptions } from './smtp-sink.ts';
import { ReplyReader, connectPlain } from './mitm-proxy.ts';

const MX = 'mx.example.test';
let ca: TestCA;
let good: IssuedCert;

before(async () => {
  ca = await TestCA.create();
  good = await ca.issue({ names: [MX] });
});

const client = (sink: SmtpSink, opts: SMTPConnectionOptions = {}): SMTPConnection =>
  referenceClient(sink, { ca: ca.certPem, servername: MX }, opts);

// Runs body against a fresh sink and always closes both ends.
async function withSink(options: SmtpSinkOptions, body: (sink: SmtpSink) => Promise<void>): Promise<void> {
  const sink = await startSmtpSink(options);
  try {
    await body(sink);
  } finally {
    await sink.close();
  }
}

async function deliver(sink: SmtpSink, opts: SMTPConnectionOptions, envelope: SMTPEnvelope, message: string) {
  const c = client(sink, opts);
  try {
    await connect(c);
    const info = await send(c, envelope, message);
    c.quit();
    return { info, c };
  } finally {
    c.close();
  }
}

// Plaintext EHLO as a raw client sees it.
async function rawEhlo(sink: SmtpSink): Promise<string[]> {
  const s = await connectPlain(sink.port);
  try {
    const r = new ReplyReader(s);
    assert.equal((await r.next()).code, 220);
    s.write('EHLO raw.lacre.test\r\n');
    return (await r.next()).lines.slice(1);
  } finally {
    s.destroy();
  }
}

const MESSAGE = 'From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n';

test('records envelope, parameters, message and the TLS version and cipher of a STARTTLS session', async () => {
  await withSink({ tls: 'starttls', cert: good, advertise: { size: 1_000_000, requireTls: true } }, async (sink) => {
    const { info } = await deliver(
      sink,
      { requireTLS: true },
      { from: 'a@sender.test', to: ['b@rcpt.test', 'c@rcpt.test'], size: MESSAGE.length, use8BitMime: true, requireTLSExtensionEnabled: true },
      MESSAGE,
    );
    assert.deepEqual(info.accepted, ['b@rcpt.test', 'c@rcpt.test']);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.data.toString(), MESSAGE, 'dot-unstuffed message, byte for byte');
    assert.equal(msg.tls, true);
    assert.equal(msg.tlsProtocol, 'TLSv1.3');
    assert.match(msg.tlsCipher ?? '', /^TLS_(AES|CHACHA20)/);
    assert.deepEqual(msg.mailFrom, { address: 'a@sender.test', params: { BODY: '8BITMIME', SIZE: String(MESSAGE.length), REQUIRETLS: true } });
    assert.deepEqual(msg.rcptTo.map((r) => r.address), ['b@rcpt.test', 'c@rcpt.test']);

    const s = await sink.waitFor(() => sink.sessions[0]?.closed && sink.sessions[0]);
    assert.equal(s.remoteAddress, '127.0.0.1');
    assert.equal(s.heloVerb, 'EHLO');
    assert.equal(s.heloName, 'client.lacre.test');
    assert.equal(s.servername, MX);
    assert.equal(s.implicitTls, false);
    assert.match(s.greeting ?? '', /^220 /);
    assert.deepEqual(
      s.commands.map((c) => [c.line.split(/[ :]/)[0], c.tls, c.replyCode]),
      [
        ['EHLO', false, 250],
        ['STARTTLS', false, 220],
        ['EHLO', true, 250],
        ['MAIL', true, 250],
        ['RCPT', true, 250],
        ['RCPT', true, 250],
        ['DATA', true, 354],
        ['QUIT', true, 221],
      ],
    );
    assert.equal(s.transactions.length, 1);
    assert.equal(s.transactions[0].dataEndReplyCode, 250);
  });
});

test('records SMTPUTF8 on MAIL FROM when the client uses an internationalised address', async () => {
  await withSink({ tls: 'starttls', cert: good }, async (sink) => {
    await deliver(sink, { requireTLS: true }, { from: 'jörg@sender.test', to: ['zoë@rcpt.test'] }, MESSAGE);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.mailFrom.address, 'jörg@sender.test');
    assert.equal(msg.mailFrom.params.SMTPUTF8, true);
    assert.equal(msg.rcptTo[0].address, 'zoë@rcpt.test');
  });
});

test('presents the certificate it is given, so expired, wrong-name, not-yet-valid and self-signed ones fail verification', async () => {
  const cases: Array<[string, IssuedCert, string]> = [
    ['expired', await ca.issue({ names: [MX], kind: 'expired' }), 'CERT_HAS_EXPIRED'],
    ['not yet valid', await ca.issue({ names: [MX], kind: 'not-yet-valid' }), 'CERT_NOT_YET_VALID'],
    ['wrong name', await ca.issue({ names: ['other.example.test'] }), 'ERR_TLS_CERT_ALTNAME_INVALID'],
    ['self-signed', await ca.issue({ names: [MX], kind: 'self-signed' }), 'DEPTH_ZERO_SELF_SIGNED_CERT'],
  ];
  for (const [label, cert, code] of cases) {
    await withSink({ tls: 'starttls', cert }, async (sink) => {
      const c = client(sink, { requireTLS: true });
      const err = await failure(connect(c));
      c.close();
      assert.equal(err.code, 'ESOCKET', label);
      assert.equal(err.originalCode, code, label);
      assert.equal(sink.messages().length, 0);
      // The client gave up during the handshake: the sink never saw a post-TLS command.
      await sink.waitFor(() => sink.sessions[0]?.closed, 2000, `${label} session closed`);
      assert.deepEqual(sink.sessions[0].commands.map((cmd) => cmd.tls), [false, false]);
    });
  }
});

test('sends the intermediate along with the leaf, so a chain certificate verifies against the root', async () => {
  const chain = await ca.issue({ names: [MX], kind: 'intermediate-chain', keyType: 'rsa' });
  await withSink({ tls: 'starttls', cert: chain }, async (sink) => {
    const c = client(sink, { requireTLS: true });
    try {
      await connect(c);
      const peer = (c._socket as tls.TLSSocket).getPeerCertificate(true);
      assert.equal(peer.fingerprint256.replace(/:/g, '').toLowerCase(), chain.fingerprintSha256);
      assert.equal(peer.issuerCertificate.subject.CN, 'Lacre Test Intermediate CA');
    } finally {
      c.close();
    }
  });
});

test('a sink without TLS neither advertises nor accepts STARTTLS, so a requireTLS client fails with ETLS', async () => {
  await withSink({ tls: 'none' }, async (sink) => {
    assert.ok(!(await rawEhlo(sink)).includes('STARTTLS'));
    const c = client(sink, { requireTLS: true });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETLS');
    assert.equal(err.responseCode, 500, 'the command itself is refused, not merely hidden');
    // An opportunistic client delivers in plaintext, and the record says so.
    await deliver(sink, {}, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.tls, false);
    assert.equal(msg.tlsProtocol, undefined);
  });
});

test('speaks TLS from the first byte in implicit mode', async () => {
  await withSink({ tls: 'implicit', cert: good }, async (sink) => {
    await deliver(sink, { secure: true }, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.tls, true);
    assert.equal(msg.tlsProtocol, 'TLSv1.3');
    const s = sink.sessions[0];
    assert.equal(s.implicitTls, true);
    assert.ok(s.commands.every((c) => c.tls));
    assert.ok(!s.commands.some((c) => c.line === 'STARTTLS'));
    // A plaintext client gets no SMTP greeting from it.
    const plain = client(sink, { greetingTimeout: 500 });
    const err = await failure(connect(plain));
    plain.close();
    assert.equal(err.code, 'ETIMEDOUT');
    assert.equal(err.timeoutType, 'GREETING_TIMEOUT');
  });
});

test('records a failed implicit-TLS handshake as a listener error, and on the session for STARTTLS', async () => {
  // No common protocol version fails inside the handshake on the sink's side, deterministically.
  // (A client rejecting the certificate does not: Node verifies after the handshake completes,
  // so the sink may well record a TLS session that the client then dropped.)
  const tls12 = { tlsOptions: { maxVersion: 'TLSv1.2' as const } };
  await withSink({ tls: 'implicit', cert: good, ...tls12 }, async (sink) => {
    const c = client(sink, { secure: true, tls: { minVersion: 'TLSv1.3' } });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.originalCode, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
    await sink.waitFor(() => sink.errors.length > 0, 2000, 'handshake error');
    assert.equal(sink.errors.length, 1);
    assert.equal((sink.errors[0] as NodemailerError).code, 'ERR_SSL_UNSUPPORTED_PROTOCOL');
  });
  await withSink({ tls: 'starttls', cert: good, ...tls12 }, async (sink) => {
    const c = client(sink, { requireTLS: true, tls: { minVersion: 'TLSv1.3' } });
    await failure(connect(c));
    c.close();
    const s = await sink.waitFor(() => sink.sessions[0]?.errors.length > 0 && sink.sessions[0], 2000, 'session error');
    assert.match(s.errors[0], /unsupported protocol/);
    assert.equal(s.tls, false);
  });
});

// Whether this OpenSSL can do TLS 1.0/1.1 at all, with both ends at security level 0.
async function legacyTlsWorks(cert: IssuedCert): Promise<boolean> {
  const server = tls.createServer({ key: cert.keyPem, cert: cert.chainPem, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    return await new Promise<boolean>((resolve) => {
      const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  } finally {
    server.close();
  }
}

test('a legacy sink offers only TLS 1.0/1.1: a TLS 1.2+ client is refused with a protocol-version alert, a permissive one connects', async (t) => {
  if (!(await legacyTlsWorks(good))) {
    t.skip('this OpenSSL cannot negotiate TLS 1.0/1.1 even at security level 0');
    return;
  }
  await withSink({ tls: 'starttls', cert: good, legacyTlsOnly: true }, async (sink) => {
    const modern = client(sink, { requireTLS: true, tls: { minVersion: 'TLSv1.2' } });
    const err = await failure(connect(modern));
    modern.close();
    assert.equal(err.code, 'ESOCKET');
    assert.match(String(err.originalCode), /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL/);

    await deliver(
      sink,
      { requireTLS: true, tls: { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' } },
      { from: 'a@sender.test', to: ['b@rcpt.test'] },
      MESSAGE,
    );
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.tlsProtocol, 'TLSv1.1');
  });
});

test('refuses at the greeting with the chosen code and closes the connection', async () => {
  for (const code of [421, 554]) {
    await withSink({ tls: 'none', replies: { greeting: { code, text: `${code === 421 ? '4.3.2' : '5.7.1'} go away` } } }, async (sink) => {
      const c = client(sink);
      const err = await failure(connect(c));
      c.close();
      assert.equal(err.responseCode, code);
      assert.match(err.response ?? '', new RegExp(`^${code} \\d\\.\\d\\.\\d go away`));
      await sink.waitFor(() => sink.sessions[0]?.closed, 2000, 'session closed');
      assert.equal(sink.sessions[0].greeting, `${code} ${code === 421 ? '4.3.2' : '5.7.1'} go away`);
      assert.equal(sink.sessions[0].commands.length, 0);
    });
  }
});

test('answers EHLO with the chosen refusal, and the client falling back to HELO is recorded', async () => {
  await withSink({ tls: 'none', replies: { ehlo: { code: 502, text: '5.5.1 EHLO not implemented' } } }, async (sink) => {
    await deliver(sink, {}, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
    await sink.waitForMessages(1);
    const s = sink.sessions[0];
    assert.deepEqual(s.commands.slice(0, 2).map((c) => [c.line, c.replyCode]), [
      ['EHLO client.lacre.test', 502],
      ['HELO client.lacre.test', 250],
    ]);
    assert.equal(s.heloVerb, 'HELO');
  });
});

test('a success reply override keeps the command working and replaces only its text, e.g. a custom EHLO list', async () => {
  const ehlo = { code: 250, text: [MX, 'SIZE 1000', '8BITMIME'] };
  await withSink({ tls: 'none', replies: { ehlo } }, async (sink) => {
    assert.deepEqual(await rawEhlo(sink), ['SIZE 1000', '8BITMIME']);
    // PIPELINING is gone from the list, so the client talks one command at a time, and SIZE is honoured.
    const { info } = await deliver(sink, {}, { from: 'a@sender.test', to: ['b@rcpt.test'], size: 500 }, MESSAGE);
    assert.deepEqual(info.ehlo, ['SIZE 1000', '8BITMIME']);
    const [msg] = await sink.waitForMessages(1);
    assert.equal(msg.mailFrom.params.SIZE, '500');
  });
});

test('mixes per-recipient replies in one transaction and delivers only to accepted recipients', async () => {
  const rcpt = (address: string) =>
    address.startsWith('temp')
      ? { code: 450, text: '4.2.1 Mailbox busy' }
      : address.startsWith('gone')
        ? { code: 550, text: '5.1.1 No such user' }
        : { code: 250, text: '2.1.5 Recipient ok' };
  await withSink({ tls: 'starttls', cert: good, replies: { rcpt } }, async (sink) => {
    const c = client(sink, { requireTLS: true });
    try {
      await connect(c);
      const info = await send(c, { from: 'a@sender.test', to: ['ok@rcpt.test', 'temp@rcpt.test', 'gone@rcpt.test'] }, MESSAGE);
      assert.deepEqual(info.accepted, ['ok@rcpt.test']);
      assert.deepEqual(info.rejected, ['temp@rcpt.test', 'gone@rcpt.test']);
      assert.deepEqual(
        info.rejectedErrors?.map((e) => (e as NodemailerError).response),
        ['450 4.2.1 Mailbox busy', '550 5.1.1 No such user'],
      );
    } finally {
      c.close();
    }
    const [msg] = await sink.waitForMessages(1);
    assert.deepEqual(msg.rcptTo.map((r) => r.address), ['ok@rcpt.test']);
    const tx = sink.sessions[0].transactions[0];
    assert.deepEqual(tx.rcptTo.map((r) => [r.address, r.replyCode]), [
      ['ok@rcpt.test', 250],
      ['temp@rcpt.test', 450],
      ['gone@rcpt.test', 550],
    ]);
  });
});

test('replies to MAIL, DATA and the end of data with exactly the chosen code and enhanced status code', async () => {
  const stages: Array<[SmtpSinkOptions['replies'], string, string]> = [
    [{ mail: { code: 451, text: '4.7.1 Greylisted, try later' } }, 'MAIL FROM', '451 4.7.1 Greylisted, try later'],
    [{ data: { code: 554, text: '5.7.1 No data for you' } }, 'DATA', '554 5.7.1 No data for you'],
    [{ dataEnd: { code: 552, text: '5.3.4 Message too big' } }, 'DATA', '552 5.3.4 Message too big'],
  ];
  for (const [replies, command, response] of stages) {
    await withSink({ tls: 'none', replies }, async (sink) => {
      const c = client(sink);
      try {
        await connect(c);
        const err = await failure(send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE));
        assert.equal(err.response, response);
        assert.equal(err.command, command);
      } finally {
        c.close();
      }
      assert.equal(sink.messages().length, 0, 'a refused message is not delivered');
    });
  }
});

test('reply functions are consulted per use, so a first attempt can be deferred and the retry accepted', async () => {
  const seen = new Set<string>();
  const dataEnd = (_tx: unknown, session: { id: string }) => {
    seen.add(session.id);
    return seen.size === 1 ? { code: 451, text: '4.3.0 Try again later' } : undefined;
  };
  await withSink({ tls: 'none', replies: { dataEnd } }, async (sink) => {
    const first = client(sink);
    await connect(first);
    const err = await failure(send(first, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE));
    first.close();
    assert.equal(err.response, '451 4.3.0 Try again later');
    await deliver(sink, {}, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
    assert.equal((await sink.waitForMessages(1)).length, 1);
    assert.equal(sink.sessions[0].transactions[0].dataEndReplyCode, 451);
    assert.equal(sink.sessions[1].transactions[0].dataEndReplyCode, 250);
  });
});

test('advertises SIZE, 8BITMIME, SMTPUTF8 and PIPELINING as configured, and REQUIRETLS only inside TLS', async () => {
  await withSink({ tls: 'starttls', cert: good }, async (sink) => {
    assert.deepEqual(await rawEhlo(sink), ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'STARTTLS']);
    const { info } = await deliver(sink, { requireTLS: true }, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
    assert.ok(!info.ehlo?.includes('REQUIRETLS'), 'REQUIRETLS is opt-in');
  });
  await withSink(
    { tls: 'starttls', cert: good, advertise: { size: 2048, eightBitMime: false, smtpUtf8: false, pipelining: false, requireTls: true } },
    async (sink) => {
      assert.deepEqual(await rawEhlo(sink), ['STARTTLS', 'SIZE 2048'], 'REQUIRETLS never before TLS');
      const { info } = await deliver(sink, { requireTLS: true }, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
      assert.deepEqual(info.ehlo, ['REQUIRETLS', 'SIZE 2048']);
      // The advertised limit is enforced on what actually arrives (nodemailer itself already
      // refuses a declared size over the limit, with EMESSAGE, before sending anything).
      const c = client(sink, { requireTLS: true });
      try {
        await connect(c);
        const declared = await failure(send(c, { from: 'a@sender.test', to: ['b@rcpt.test'], size: 4096 }, MESSAGE));
        assert.equal(declared.code, 'EMESSAGE');
        const err = await failure(send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE + 'x'.repeat(4096) + '\r\n'));
        assert.equal(err.responseCode, 552);
      } finally {
        c.close();
      }
      assert.equal(sink.messages().length, 1);
    },
  );
});

test('puts enhanced status codes in its own replies only when it advertises ENHANCEDSTATUSCODES', async () => {
  for (const enhancedStatusCodes of [false, true]) {
    await withSink({ tls: 'none', advertise: { enhancedStatusCodes } }, async (sink) => {
      const { info } = await deliver(sink, {}, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
      assert.equal(info.ehlo?.includes('ENHANCEDSTATUSCODES'), enhancedStatusCodes);
      assert.equal(info.response, enhancedStatusCodes ? '250 2.6.0 OK: message queued' : '250 OK: message queued');
    });
  }
});

test('waits the configured delay before replying, globally or per stage', async () => {
  await withSink({ tls: 'none', delayMs: 150 }, async (sink) => {
    const c = client(sink);
    try {
      const t0 = Date.now();
      await connect(c); // greeting + EHLO
      assert.ok(Date.now() - t0 >= 300, `greeting and EHLO took ${Date.now() - t0} ms`);
    } finally {
      c.close();
    }
  });
  await withSink({ tls: 'none', delayMs: { dataEnd: 800 } }, async (sink) => {
    const c = client(sink);
    try {
      const t0 = Date.now();
      await connect(c);
      assert.ok(Date.now() - t0 < 700, 'other stages are not delayed');
      const t1 = Date.now();
      await send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE);
      assert.ok(Date.now() - t1 >= 800, `end of data took ${Date.now() - t1} ms`);
    } finally {
      c.close();
    }
  });
});

test('goes silent at the chosen stage and stays silent until the client gives up', async () => {
  await withSink({ tls: 'none', silentAt: 'greeting' }, async (sink) => {
    const c = client(sink, { greetingTimeout: 300 });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT');
    assert.equal(err.timeoutType, 'GREETING_TIMEOUT');
    assert.equal(sink.sessions[0].greeting, undefined);
    assert.equal(sink.sessions[0].silenced, 'greeting');
  });

  await withSink({ tls: 'none', silentAt: 'rcpt', advertise: { pipelining: false } }, async (sink) => {
    const c = client(sink, { socketTimeout: 400 });
    await connect(c);
    const err = await failure(send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT');
    const cmds = sink.sessions[0].commands;
    assert.equal(cmds.at(-1)?.line, 'RCPT TO:<b@rcpt.test>');
    assert.equal(cmds.at(-1)?.replyCode, undefined);
  });

  await withSink({ tls: 'none', silentAt: 'dataEnd' }, async (sink) => {
    const c = client(sink, { socketTimeout: 400 });
    await connect(c);
    const err = await failure(send(c, { from: 'a@sender.test', to: ['b@rcpt.test'] }, MESSAGE));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT');
    const tx = sink.sessions[0].transactions[0];
    assert.equal(tx.data?.toString(), MESSAGE, 'the message arrived in full');
    assert.equal(tx.dataEndReplyCode, undefined);
    assert.equal(sink.messages().length, 0, 'and was never acknowledged');
  });
});

test('can accept STARTTLS and then never progress the handshake, for STARTTLS and implicit TLS alike', async () => {
  await withSink({ tls: 'starttls', cert: good, silentAt: 'tls-handshake' }, async (sink) => {
    const c = client(sink, { requireTLS: true, greetingTimeout: 400 });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT');
    assert.equal(err.timeoutType, 'UPGRADE_TIMEOUT');
    assert.equal(sink.sessions[0].silenced, 'tls-handshake');
    assert.equal(sink.sessions[0].tls, false);
    const { at, ...last } = sink.sessions[0].commands.at(-1)!;
    assert.equal(typeof at, 'number');
    assert.deepEqual(last, { line: 'STARTTLS', tls: false, replyCode: 220, reply: ['Ready to start TLS'] });
  });
  await withSink({ tls: 'implicit', cert: good, silentAt: 'tls-handshake' }, async (sink) => {
    const c = client(sink, { secure: true, connectionTimeout: 400 });
    const err = await failure(connect(c));
    c.close();
    assert.equal(err.code, 'ETIMEDOUT');
    assert.equal(err.timeoutType, 'CONNECT_TIMEOUT', 'for implicit TLS the handshake is part of connecting');
    assert.equal(sink.sessions.length, 1);
    assert.equal(sink.errors.length, 0, 'no handshake was even attempted by the sink');
  });
});

test('counts open connections exactly: up when one is accepted, down when it closes, and keeps the peak', async () => {
  await withSink({ tls: 'none' }, async (sink) => {
    const sockets = [await connectPlain(sink.port), await connectPlain(sink.port), await connectPlain(sink.port)];
    await sink.waitForSessions(3);
    assert.deepEqual([sink.openSessions, sink.peakOpenSessions], [3, 3]);
    const first = sockets.shift()!;
    first.destroy();
    await sink.waitFor(() => sink.sessions.filter((s) => s.closed).length === 1, 5000, 'one session closed');
    assert.deepEqual([sink.openSessions, sink.peakOpenSessions], [2, 3]);
    sockets.push(await connectPlain(sink.port));
    await sink.waitForSessions(4);
    assert.deepEqual([sink.openSessions, sink.peakOpenSessions], [3, 3], 'a new connection after a close does not raise the peak');
    for (const s of sockets) s.destroy();
    await sink.waitFor(() => sink.sessions.every((s) => s.closed), 5000, 'every session closed');
    assert.deepEqual([sink.openSessions, sink.peakOpenSessions], [0, 3]);
  });
});

test('close() tears down connections a silent sink is still holding', { timeout: 5000 }, async () => {
  const sink = await startSmtpSink({ tls: 'none', silentAt: 'greeting' });
  const s = await connectPlain(sink.port);
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  await sink.waitForSessions(1);
  // The client never hangs up: both resolving within the test's 5 s means close cut the connection.
  await sink.close();
  await closed;
});

test('two sinks stand for two MX hosts on one port at different loopback addresses', async () => {
  const first = await startSmtpSink({ tls: 'none', listen: { host: '127.0.0.2' }, hostname: 'mx1.test' });
  const second = await startSmtpSink({ tls: 'none', listen: { host: '127.0.0.3', port: first.port }, hostname: 'mx2.test' });
  try {
    assert.equal(second.port, first.port);
    for (const [sink, name] of [[first, 'mx1.test'], [second, 'mx2.test']] as const) {
      const socket = await connectPlain(sink.port, sink.host);
      const reader = new ReplyReader(socket);
      const greeting = await reader.next();
      assert.match(greeting.lines[0], new RegExp(name));
      socket.destroy();
    }
    await assert.rejects(startSmtpSink({ tls: 'none', listen: { host: '0.0.0.0' } }), /loopback only/);
  } finally {
    await first.close();
    await second.close();
  }
});

// A raw client running one transaction on an open connection; resolves with the reply to the
// final dot, or null when the connection ended without one.
async function rawTransaction(s: import('node:net').Socket, r: ReplyReader, to: string, body: string): Promise<number | null> {
  s.write(`MAIL FROM:<a@sender.test>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
  for (const want of [250, 250, 354]) assert.equal((await r.next()).code, want);
  s.write(`${body}.\r\n`);
  return r.next(2_000).then(
    (reply) => reply.code,
    (err: Error) => {
      assert.match(err.message, /connection closed/);
      return null;
    },
  );
}

async function rawSession(sink: SmtpSink): Promise<{ s: import('node:net').Socket; r: ReplyReader }> {
  const s = await connectPlain(sink.port);
  const r = new ReplyReader(s);
  assert.equal((await r.next()).code, 220);
  s.write('EHLO raw.lacre.test\r\n');
  assert.equal((await r.next()).code, 250);
  return { s, r };
}

test('dropAfterDot closes the connection after the final dot of every later message without replying, and still records the message', async () => {
  await withSink({ tls: 'none', dropAfterDot: 'after-first' }, async (sink) => {
    const first = await rawSession(sink);
    try {
      assert.equal(await rawTransaction(first.s, first.r, 'b@rcpt.test', 'Subject: one\r\n\r\nx\r\n'), 250);
      assert.equal(await rawTransaction(first.s, first.r, 'b@rcpt.test', 'Subject: two\r\n\r\nx\r\n'), null, 'no reply to the second dot');
    } finally {
      first.s.destroy();
    }
    // A new connection counts from one again.
    const second = await rawSession(sink);
    try {
      assert.equal(await rawTransaction(second.s, second.r, 'b@rcpt.test', 'Subject: three\r\n\r\nx\r\n'), 250);
    } finally {
      second.s.destroy();
    }
    const got = sink.messages();
    assert.deepEqual(got.map((m) => [/Subject: (\w+)/.exec(m.data.toString())?.[1], m.dropped ?? false]), [['one', false], ['two', true], ['three', false]]);
    assert.equal(sink.sessions[0].dropped, 'dataEnd');
    assert.equal(sink.sessions[0].transactions[1].dataEndReplyCode, undefined);
    assert.equal(sink.sessions[1].dropped, undefined);
  });
});

test('dropAtMail closes the connection on the chosen MAIL FROM without replying, as an idle server that went away', async () => {
  await withSink({ tls: 'none', dropAtMail: 2 }, async (sink) => {
    const { s, r } = await rawSession(sink);
    try {
      assert.equal(await rawTransaction(s, r, 'b@rcpt.test', 'Subject: one\r\n\r\nx\r\n'), 250);
      s.write('MAIL FROM:<a@sender.test>\r\n');
      await assert.rejects(r.next(2_000), /connection closed/);
    } finally {
      s.destroy();
    }
    assert.equal(sink.sessions[0].dropped, 'mail');
    assert.equal(sink.sessions[0].commands.at(-1)?.line, 'MAIL FROM:<a@sender.test>');
    assert.equal(sink.sessions[0].commands.at(-1)?.replyCode, undefined);
    assert.ok(sink.sessions[0].commands.every((c) => c.at > 0 && c.at <= Date.now()), 'arrival times recorded');
    assert.equal(sink.messages().length, 1);
  });
});
