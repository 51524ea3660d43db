// Outbound SMTP session against the harness's sinks and attackers on loopback: the TLS level ×
// receiving-server matrix (what was delivered, how, and that enforced levels never leak MAIL FROM
// in plaintext), then transactions, extensions, timeouts and reuse.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import { TestCA, type CertKind, type IssuedCert } from '../../test/harness/ca.ts';
import { startSmtpSink, type SmtpSink, type SmtpSinkOptions } from '../../test/harness/smtp-sink.ts';
import { startStartTlsInjectionSink, startStripTlsProxy, type InjectionSink, type StripTlsProxy } from '../../test/harness/mitm-proxy.ts';
import { meetsTlsFloor, type TlsFailure, type TlsLevel } from '../tls-policy/levels.ts';
import { formatTlsa } from '../tls-policy/dane.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';
import {
  SmtpSessionError,
  dotStuff,
  openSession,
  openSessionWithPolicy,
  type SessionOptions,
  type SmtpSession,
  type Timeouts,
} from './smtp-session.ts';

const MX = 'mx.lacre.test';
const FAST: Timeouts = {
  connect: 2000,
  greeting: 2000,
  command: 2000,
  dataInit: 2000,
  dataBlock: 2000,
  dataDone: 2000,
  tlsHandshake: 2000,
  quit: 500,
};
const MESSAGE = Buffer.from(
  'From: sender@origin.test\r\nTo: rcpt@dest.test\r\nSubject: sealed\r\n\r\nHello.\r\n.a line that starts with a dot\r\n.\r\nbye\r\n',
);

let ca: TestCA;
const certs = new Map<string, IssuedCert>();
before(async () => {
  ca = await TestCA.create();
  for (const kind of ['valid', 'expired', 'not-yet-valid', 'self-signed', 'intermediate-chain'] as CertKind[]) {
    certs.set(kind, await ca.issue({ names: [MX], kind }));
  }
  certs.set('wrong-name', await ca.issue({ names: ['other.lacre.test'] }));
});

const cert = (kind: string) => certs.get(kind)!;

/** DANE-EE(3) SPKI(1) SHA-256(1): the record most DANE MX hosts publish. */
const ee311 = (c: IssuedCert): TlsaRecord => ({ usage: 3, selector: 1, matchingType: 1, data: Buffer.from(c.spkiSha256, 'hex') });

function options(port: number, level: TlsLevel, over: Partial<SessionOptions> = {}): SessionOptions {
  return { address: '127.0.0.1', port, mxHost: MX, level, ehloName: 'lacre.test', ca: [ca.certPem], timeouts: FAST, ...over };
}

async function withSink<T>(opts: SmtpSinkOptions, fn: (sink: SmtpSink) => Promise<T>): Promise<T> {
  const sink = await startSmtpSink(opts);
  try {
    return await fn(sink);
  } finally {
    await sink.close();
  }
}

async function withSession<T>(o: SessionOptions, fn: (s: SmtpSession) => Promise<T>): Promise<T> {
  const s = await openSession(o);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

const mailCommands = (sink: SmtpSink) => sink.sessions.flatMap((s) => s.commands).filter((c) => /^MAIL FROM/i.test(c.line));

// ---------------------------------------------------------------------------------------------
// The matrix: every level against every way a receiving server (or an attacker) can behave.

/** What a destination looks like on the wire, and what it saw Lacre do. */
interface Destination {
  port: number;
  /** Lacre sent MAIL FROM where it could be read in plaintext. */
  plaintextMailFrom(): boolean;
  /** Lacre sent MAIL FROM at all (over TLS or not). */
  anyMailFrom(): boolean;
  /** The message arrived, and how. */
  received(): { tls: boolean; protocol?: string; data: Buffer } | undefined;
  settle(): Promise<void>;
  close(): Promise<void>;
  /** The certificate the server presents, when it has one: what level `dane` publishes TLSA for. */
  certKind?: string;
  extra?: (facts: SmtpSession['facts'], session: SmtpSession) => void;
}

function sinkDestination(sink: SmtpSink): Destination {
  return {
    port: sink.port,
    plaintextMailFrom: () => mailCommands(sink).some((c) => !c.tls),
    anyMailFrom: () => mailCommands(sink).length > 0,
    received: () => {
      const m = sink.messages()[0];
      return m && { tls: m.tls, protocol: m.tlsProtocol, data: m.data };
    },
    // A sink silenced mid-handshake stops reading, so it never sees the client hang up.
    settle: () => sink.waitFor(() => sink.sessions.every((s) => s.closed || s.silenced), 3000, 'sessions closed').then(() => {}),
    close: () => sink.close(),
  };
}

function proxyDestination(sink: SmtpSink, proxy: StripTlsProxy): Destination {
  const inner = sinkDestination(sink);
  return {
    ...inner,
    port: proxy.port,
    plaintextMailFrom: () => proxy.sessions.some((s) => s.plaintextMailFrom) || inner.plaintextMailFrom(),
    anyMailFrom: () => proxy.sessions.some((s) => s.plaintextMailFrom) || inner.anyMailFrom(),
    settle: () => proxy.waitFor(() => proxy.sessions.every((s) => s.closed), 3000, 'proxy sessions closed').then(() => {}),
    close: async () => {
      await proxy.close();
      await sink.close();
    },
  };
}

function injectionDestination(sink: InjectionSink): Destination {
  return {
    port: sink.port,
    plaintextMailFrom: () => sink.sessions.some((s) => s.commandsBeforeTls.some((c) => /^MAIL/i.test(c)) || /MAIL/i.test(s.plaintextAfterStartTls)),
    anyMailFrom: () => sink.sessions.some((s) => [...s.commandsBeforeTls, ...s.commandsAfterTls].some((c) => /^MAIL/i.test(c))),
    received: () => {
      const s = sink.sessions.find((x) => x.messages.length > 0);
      if (s) return { tls: s.tls, protocol: s.tlsProtocol, data: s.messages[0] };
      return undefined;
    },
    settle: () => sink.waitFor(() => sink.sessions.every((s) => s.closed), 3000, 'sessions closed').then(() => {}),
    close: () => sink.close(),
    extra: (facts, session) => {
      if (!facts.tls) return;
      // The forged "250 AUTH PLAIN" that trailed the 220 was dropped, not read as the EHLO reply.
      assert.ok((facts.discardedAfterStartTls ?? 0) > 0, 'injected bytes recorded as discarded');
      assert.equal(session.extensions.keywords.has('AUTH'), false, 'injected AUTH must not become an extension');
      assert.equal(session.extensions.pipelining, true, 'the real post-TLS EHLO was read');
      const s = sink.sessions[0];
      assert.equal(s.plaintextAfterStartTls, '', 'nothing sent in plaintext after STARTTLS');
      assert.match(s.commandsAfterTls[0], /^EHLO /, 'EHLO repeated inside TLS (RFC 3207 §4.2)');
    },
  };
}

type Behaviour = () => Promise<Destination>;

const starttlsSink = (certKind: string, more: Partial<SmtpSinkOptions> = {}): Behaviour => async () => ({
  ...sinkDestination(await startSmtpSink({ tls: 'starttls', cert: cert(certKind), ...more } as SmtpSinkOptions)),
  certKind,
});

const behaviours = {
  'STARTTLS, valid certificate': starttlsSink('valid'),
  'no STARTTLS': async () => sinkDestination(await startSmtpSink({ tls: 'none' })),
  'STARTTLS, expired certificate': starttlsSink('expired'),
  'STARTTLS, not-yet-valid certificate': starttlsSink('not-yet-valid'),
  'STARTTLS, certificate for another name': starttlsSink('wrong-name'),
  'STARTTLS, self-signed certificate': starttlsSink('self-signed'),
  'STARTTLS, chain through an intermediate': starttlsSink('intermediate-chain'),
  'STARTTLS, TLS 1.2 at most': starttlsSink('valid', { tlsOptions: { maxVersion: 'TLSv1.2' } }),
  'STARTTLS, TLS 1.0/1.1 only': starttlsSink('valid', { legacyTlsOnly: true }),
  'STARTTLS answered 454': starttlsSink('valid', { replies: { starttls: { code: 454, text: '4.7.0 TLS not available' } } }),
  'STARTTLS accepted, handshake never answered': starttlsSink('valid', { silentAt: 'tls-handshake' }),
  'STARTTLS stripped by a MITM': async () => {
    const sink = await startSmtpSink({ tls: 'starttls', cert: cert('valid') });
    return proxyDestination(sink, await startStripTlsProxy({ target: { host: sink.host, port: sink.port } }));
  },
  'STARTTLS garbled to XXXXXXXA by a MITM': async () => {
    const sink = await startSmtpSink({ tls: 'starttls', cert: cert('valid') });
    return proxyDestination(sink, await startStripTlsProxy({ target: { host: sink.host, port: sink.port }, rewrite: 'garble' }));
  },
  'plaintext injected after the 220 to STARTTLS': async () => injectionDestination(await startStartTlsInjectionSink({ cert: cert('valid') })),
} satisfies Record<string, Behaviour>;

type Outcome =
  /** Delivered over TLS ≥ 1.2; `verified` or the verification failure recorded for the certificate. */
  | { tls: 'verified' | TlsFailure }
  /** Delivered in plaintext: by policy (`none`, reason null) or as a recorded `may` downgrade. */
  | { plaintext: TlsFailure | null }
  /** Refused before MAIL FROM, with the named failure. */
  | { refused: TlsFailure };

const tls = (v: 'verified' | TlsFailure): Outcome => ({ tls: v });
const plain = (reason: TlsFailure | null = null): Outcome => ({ plaintext: reason });
const refused = (failure: TlsFailure): Outcome => ({ refused: failure });

// prettier-ignore
// Level `dane` is given a DANE-EE 3 1 1 record of the certificate the destination presents: the
// record alone authenticates (RFC 7672 §3.1.1), so it delivers wherever TLS ≥ 1.2 comes up, whatever
// the WebPKI says (still recorded), and refuses wherever it does not. Mismatches are tested below.
const MATRIX: [keyof typeof behaviours, Record<TlsLevel, Outcome>][] = [
  //                                                   none      may                                      encrypt                                  verify                                      dane
  ['STARTTLS, valid certificate',                  { none: plain(), may: tls('verified'),                    encrypt: tls('verified'),                    verify: tls('verified'),                    dane: tls('verified') }],
  ['no STARTTLS',                                  { none: plain(), may: plain('starttls-not-supported'),    encrypt: refused('starttls-not-supported'),  verify: refused('starttls-not-supported'),  dane: refused('starttls-not-supported') }],
  ['STARTTLS, expired certificate',                { none: plain(), may: tls('certificate-expired'),         encrypt: tls('certificate-expired'),         verify: refused('certificate-expired'),         dane: tls('certificate-expired') }],
  ['STARTTLS, not-yet-valid certificate',          { none: plain(), may: tls('certificate-not-yet-valid'),   encrypt: tls('certificate-not-yet-valid'),   verify: refused('certificate-not-yet-valid'),   dane: tls('certificate-not-yet-valid') }],
  ['STARTTLS, certificate for another name',       { none: plain(), may: tls('certificate-host-mismatch'),   encrypt: tls('certificate-host-mismatch'),   verify: refused('certificate-host-mismatch'),   dane: tls('certificate-host-mismatch') }],
  ['STARTTLS, self-signed certificate',            { none: plain(), may: tls('certificate-not-trusted'),     encrypt: tls('certificate-not-trusted'),     verify: refused('certificate-not-trusted'),     dane: tls('certificate-not-trusted') }],
  ['STARTTLS, chain through an intermediate',      { none: plain(), may: tls('verified'),                    encrypt: tls('verified'),                    verify: tls('verified'),                    dane: tls('verified') }],
  ['STARTTLS, TLS 1.2 at most',                    { none: plain(), may: tls('verified'),                    encrypt: tls('verified'),                    verify: tls('verified'),                    dane: tls('verified') }],
  ['STARTTLS, TLS 1.0/1.1 only',                   { none: plain(), may: plain('tls-version'),               encrypt: refused('tls-version'),             verify: refused('tls-version'),             dane: refused('tls-version') }],
  ['STARTTLS answered 454',                        { none: plain(), may: plain('starttls-refused'),          encrypt: refused('starttls-refused'),        verify: refused('starttls-refused'),        dane: refused('starttls-refused') }],
  ['STARTTLS accepted, handshake never answered',  { none: plain(), may: plain('tls-handshake-failed'),      encrypt: refused('tls-handshake-failed'),    verify: refused('tls-handshake-failed'),    dane: refused('tls-handshake-failed') }],
  ['STARTTLS stripped by a MITM',                  { none: plain(), may: plain('starttls-not-supported'),    encrypt: refused('starttls-not-supported'),  verify: refused('starttls-not-supported'),  dane: refused('starttls-not-supported') }],
  ['STARTTLS garbled to XXXXXXXA by a MITM',       { none: plain(), may: plain('starttls-not-supported'),    encrypt: refused('starttls-not-supported'),  verify: refused('starttls-not-supported'),  dane: refused('starttls-not-supported') }],
  ['plaintext injected after the 220 to STARTTLS', { none: plain(), may: tls('verified'),                    encrypt: tls('verified'),                    verify: tls('verified'),                    dane: tls('verified') }],
];

const LEVELS: TlsLevel[] = ['none', 'may', 'encrypt', 'verify', 'dane'];

function explain(o: Outcome): string {
  if ('tls' in o) return o.tls === 'verified' ? 'delivered over TLS, certificate verified' : `delivered over TLS, ${o.tls} recorded`;
  if ('plaintext' in o) return o.plaintext ? `delivered in plaintext, downgrade "${o.plaintext}" recorded` : 'delivered in plaintext by policy';
  return `refused with "${o.refused}", no MAIL FROM sent`;
}

test('the matrix never lets encrypt, verify or dane deliver in plaintext, and only `may` records downgrades', () => {
  for (const [, row] of MATRIX) {
    for (const level of ['encrypt', 'verify', 'dane'] as const) assert.ok(!('plaintext' in row[level]));
    assert.deepEqual(row.none, plain());
  }
});

describe('TLS level × receiving server', () => {
  for (const [behaviour, row] of MATRIX) {
    for (const level of LEVELS) {
      const expected = row[level];
      test(`${level} × ${behaviour}: ${explain(expected)}`, async () => {
        const dest = await behaviours[behaviour]();
        try {
          // A short handshake timeout keeps the "never answered" row quick.
          // Sinks without a certKind serve the 'valid' certificate (or none at all).
          const dane = level === 'dane' ? { tlsa: [ee311(cert(dest.certKind ?? 'valid'))], names: [MX] } : undefined;
          const o = options(dest.port, level, { timeouts: { ...FAST, tlsHandshake: 400 }, dane });
          if ('refused' in expected) {
            const err = await openSessionWithPolicy(o).then(
              async (s) => {
                // Reaching here is already wrong; prove the session would not carry mail either.
                await s.close();
                return undefined;
              },
              (e: unknown) => e,
            );
            assert.ok(err instanceof SmtpSessionError, `expected a refusal, got ${String(err)}`);
            assert.equal(err.failure, expected.refused, err.message);
            assert.equal(err.kind, 'tls-policy');
            assert.equal(err.temporary, true);
            assert.ok(err.stage === 'starttls' || err.stage === 'tls', err.stage);
            assert.equal(err.facts?.downgrade, undefined);
            await dest.settle();
            assert.equal(dest.plaintextMailFrom(), false, 'no MAIL FROM in plaintext');
            assert.equal(dest.anyMailFrom(), false, 'no MAIL FROM at all');
            return;
          }

          const session = await openSessionWithPolicy(o);
          let facts;
          try {
            const result = await session.send({ from: 'sender@origin.test', to: ['rcpt@dest.test'] }, MESSAGE);
            assert.equal(result.recipients.get('rcpt@dest.test')?.accepted, true);
            assert.equal(result.data?.code, 250);
            facts = session.facts;
            dest.extra?.(facts, session);
          } finally {
            await session.close();
          }
          await dest.settle();
          const got = dest.received();
          assert.ok(got, 'the destination received the message');
          assert.deepEqual(got.data, MESSAGE, 'bytes arrive exactly as given');
          assert.equal(facts.level, level);
          assert.equal(facts.remoteAddress, '127.0.0.1');
          assert.equal(facts.remotePort, dest.port);

          if ('tls' in expected) {
            assert.equal(got.tls, true, 'received over TLS');
            assert.equal(facts.tls, true);
            assert.ok(meetsTlsFloor(facts.protocol), `protocol ${facts.protocol}`);
            assert.ok(meetsTlsFloor(got.protocol), `sink saw ${got.protocol}`);
            assert.ok(facts.cipher);
            assert.equal(facts.starttlsOffered, true);
            assert.match(facts.certificate?.fingerprintSha256 ?? '', /^[0-9a-f]{64}$/);
            assert.ok(facts.certificate?.notBefore && facts.certificate.notAfter);
            assert.ok((facts.timings.tlsHandshakeMs ?? -1) >= 0);
            assert.equal(dest.plaintextMailFrom(), false);
            if (expected.tls === 'verified') {
              assert.equal(facts.verified, true);
              assert.equal(facts.chainVerified, true);
              assert.equal(facts.hostnameMatches, true);
              assert.equal(facts.verificationFailure, undefined);
            } else {
              assert.equal(facts.verified, false);
              assert.equal(facts.verificationFailure, expected.tls);
              assert.ok(facts.verificationError);
            }
            assert.equal(facts.downgrade, undefined);
            if (level === 'dane') {
              assert.equal(facts.dane?.matched, true, facts.dane?.detail);
              assert.equal(facts.dane?.usage, 3);
              assert.equal(facts.dane?.record, formatTlsa(ee311(cert(dest.certKind ?? 'valid'))));
            } else {
              assert.equal(facts.dane, undefined, 'DANE facts only under level dane');
            }
          } else {
            assert.equal(got.tls, false);
            assert.equal(facts.tls, false);
            assert.equal(facts.protocol, undefined);
            if (expected.plaintext === null) {
              assert.equal(level, 'none');
              assert.equal(facts.downgrade, undefined);
            } else {
              assert.equal(level, 'may');
              assert.equal(facts.downgrade?.reason, expected.plaintext);
              assert.ok(facts.downgrade?.detail);
              // A failed handshake spoils the connection: the plaintext copy went on a second one.
              const retried = expected.plaintext === 'tls-version' || expected.plaintext === 'tls-handshake-failed';
              assert.equal(facts.downgrade?.retried, retried);
            }
          }
        } finally {
          await dest.close();
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Level dane (RFC 7672 §3): the TLSA records authenticate the peer, the WebPKI plays no part.

const intermediateDer = (c: IssuedCert) => new X509Certificate(c.chainPem.slice(c.certPem.length)).raw;
/** DANE-TA(2) Cert(0) SHA-256(1) of a CA certificate. */
const ta201 = (der: Buffer): TlsaRecord => ({ usage: 2, selector: 0, matchingType: 1, data: createHash('sha256').update(der).digest() });

async function refusedBeforeMail(sink: SmtpSink, o: SessionOptions): Promise<SmtpSessionError> {
  const err = await openSession(o).then(
    async (s) => {
      await s.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof SmtpSessionError, `expected a refusal, got ${String(err)}`);
  await sink.waitFor(() => sink.sessions.every((x) => x.closed), 3000, 'sessions closed');
  assert.equal(mailCommands(sink).length, 0, 'no MAIL FROM was sent');
  return err;
}

test('dane: a TLSA record the certificate does not match defers after the handshake; only QUIT follows, inside TLS', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid') }, async (sink) => {
    // The WebPKI would accept this server; a record for another key still refuses it.
    const err = await refusedBeforeMail(sink, options(sink.port, 'dane', { dane: { tlsa: [ee311(cert('wrong-name'))], names: [MX] } }));
    assert.equal(err.kind, 'tls-policy');
    assert.equal(err.stage, 'tls');
    assert.equal(err.failure, 'validation-failure');
    assert.equal(err.temporary, true);
    assert.equal(err.facts?.verified, true, 'the WebPKI verdict is recorded, and overruled');
    assert.equal(err.facts?.dane?.matched, false);
    assert.equal(err.facts?.dane?.failure, 'validation-failure');
    assert.match(err.facts?.dane?.detail ?? '', /no DANE-EE\(3\) record/);
    const after = sink.sessions[0].commands.map((c) => `${c.line.split(' ')[0]}:${c.tls}`);
    assert.deepEqual(after, ['EHLO:false', 'STARTTLS:false', 'QUIT:true']);
  });
});

test('dane: an expired certificate, checked against names it lacks, still delivers with a matching 3 1 1 record (names and dates ignored)', async () => {
  await withSink({ tls: 'starttls', cert: cert('expired') }, async (sink) => {
    await withSession(options(sink.port, 'dane', { dane: { tlsa: [ee311(cert('expired'))], names: ['not-this.lacre.test'] } }), async (s) => {
      assert.deepEqual(s.facts.dane, {
        matched: true,
        record: formatTlsa(ee311(cert('expired'))),
        usage: 3,
        detail: s.facts.dane?.detail,
      });
      assert.equal(s.facts.verified, false);
      assert.equal(s.facts.verificationFailure, 'certificate-expired');
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE)).data?.code, 250);
    });
    const [m] = await sink.waitForMessages(1);
    assert.equal(m.tls, true);
    assert.ok(mailCommands(sink).every((c) => c.tls));
  });
});

test('dane: DANE-TA on the intermediate delivers when the leaf names the MX host, and defers as host-mismatch when not', async () => {
  const c = cert('intermediate-chain');
  const tlsa = [ta201(intermediateDer(c))];
  await withSink({ tls: 'starttls', cert: c }, async (sink) => {
    await withSession(options(sink.port, 'dane', { dane: { tlsa, names: ['mx-alias.lacre.test', MX] } }), async (s) => {
      assert.equal(s.facts.dane?.matched, true, s.facts.dane?.detail);
      assert.equal(s.facts.dane?.usage, 2);
      assert.equal(s.facts.dane?.record, formatTlsa(tlsa[0]));
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE)).data?.code, 250);
    });
    assert.equal(mailCommands(sink).length, 1);
  });
  await withSink({ tls: 'starttls', cert: c }, async (sink) => {
    const err = await refusedBeforeMail(sink, options(sink.port, 'dane', { dane: { tlsa, names: ['elsewhere.lacre.test'] } }));
    assert.equal(err.failure, 'certificate-host-mismatch');
    assert.equal(err.facts?.dane?.failure, 'certificate-host-mismatch');
  });
});

test('dane: SNI carries the TLSA base domain when one is given, the MX host otherwise (RFC 7672 §8.1)', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid') }, async (sink) => {
    const tlsa = [ee311(cert('valid'))];
    await withSession(options(sink.port, 'dane', { dane: { tlsa, names: [MX], sni: 'smtp.hoster.test.' } }), async () => {});
    await withSession(options(sink.port, 'dane', { dane: { tlsa, names: [MX] } }), async () => {});
    assert.deepEqual(sink.sessions.map((x) => x.servername), ['smtp.hoster.test', MX]);
  });
});

test('dane: a session without usable records, or records on another level, is a programming error and never connects', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid') }, async (sink) => {
    const pkixOnly: TlsaRecord = { ...ee311(cert('valid')), usage: 1 };
    for (const o of [
      options(sink.port, 'dane'),
      options(sink.port, 'dane', { dane: { tlsa: [], names: [MX] } }),
      options(sink.port, 'dane', { dane: { tlsa: [pkixOnly], names: [MX] } }),
      options(sink.port, 'verify', { dane: { tlsa: [ee311(cert('valid'))], names: [MX] } }),
    ]) {
      const err = await openSession(o).catch((e: unknown) => e);
      assert.ok(err instanceof Error && !(err instanceof SmtpSessionError), String(err));
      assert.match(err.message, /options\.dane|usable TLSA/);
    }
    assert.equal(sink.sessions.length, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Transactions

test('one transaction, mixed per-recipient replies (250/450/550) with enhanced codes; DATA goes to the accepted one', async () => {
  await withSink(
    {
      tls: 'starttls',
      cert: cert('valid'),
      advertise: { enhancedStatusCodes: true },
      replies: {
        rcpt: (address) =>
          address.startsWith('busy')
            ? { code: 450, text: '4.2.1 Mailbox busy, try later' }
            : address.startsWith('gone')
              ? { code: 550, text: '5.1.1 No such user' }
              : undefined,
      },
    },
    async (sink) => {
      await withSession(options(sink.port, 'verify'), async (s) => {
        assert.equal(s.extensions.pipelining, true);
        assert.equal(s.extensions.enhancedStatusCodes, true);
        const result = await s.send({ from: 'sender@origin.test', to: ['ok@dest.test', 'busy@dest.test', 'gone@dest.test'] }, MESSAGE);
        assert.deepEqual([...result.recipients.keys()], ['ok@dest.test', 'busy@dest.test', 'gone@dest.test']);
        const ok = result.recipients.get('ok@dest.test')!;
        assert.equal(ok.accepted, true);
        assert.equal(ok.code, 250);
        assert.equal(ok.enhanced, '2.1.5');
        assert.deepEqual(result.recipients.get('busy@dest.test'), { code: 450, enhanced: '4.2.1', text: 'Mailbox busy, try later', accepted: false });
        assert.deepEqual(result.recipients.get('gone@dest.test'), { code: 550, enhanced: '5.1.1', text: 'No such user', accepted: false });
        assert.equal(result.data?.code, 250);
        assert.equal(s.messagesSent, 1);
        // Pipelined: MAIL and the three RCPTs share one timing origin, DATA came after.
        const verbs = s.facts.timings.commands.map((c) => c.command);
        assert.deepEqual(verbs.slice(-6), ['MAIL', 'RCPT', 'RCPT', 'RCPT', 'DATA', 'DATA-END']);
      });
      const [m] = await sink.waitForMessages(1);
      assert.deepEqual(m.rcptTo.map((r) => r.address), ['ok@dest.test']);
    },
  );
});

test('without PIPELINING the same results come one command at a time', async () => {
  await withSink(
    {
      tls: 'none',
      advertise: { pipelining: false },
      replies: { rcpt: (address) => (address.startsWith('gone') ? { code: 550, text: '5.1.1 No such user' } : undefined) },
    },
    async (sink) => {
      await withSession(options(sink.port, 'none'), async (s) => {
        assert.equal(s.extensions.pipelining, false);
        const result = await s.send({ from: 'sender@origin.test', to: ['ok@dest.test', 'gone@dest.test'] }, MESSAGE);
        assert.equal(result.recipients.get('ok@dest.test')?.accepted, true);
        assert.equal(result.recipients.get('gone@dest.test')?.code, 550);
        assert.equal(result.data?.code, 250);
      });
    },
  );
});

test('no DATA when every recipient is refused; the transaction is reset and the session carries the next message', async () => {
  let refuse = true;
  await withSink(
    { tls: 'none', replies: { rcpt: () => (refuse ? { code: 550, text: '5.1.1 No such user' } : undefined) } },
    async (sink) => {
      await withSession(options(sink.port, 'none'), async (s) => {
        const first = await s.send({ from: 'sender@origin.test', to: ['a@dest.test', 'b@dest.test'] }, MESSAGE);
        assert.equal(first.data, undefined);
        assert.equal([...first.recipients.values()].filter((r) => r.accepted).length, 0);
        assert.equal(s.usable, true);
        refuse = false;
        const second = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE);
        assert.equal(second.data?.code, 250);
      });
      const lines = sink.sessions[0].commands.map((c) => c.line.split(/[ :]/)[0].toUpperCase());
      assert.deepEqual(lines.slice(0, 6), ['EHLO', 'MAIL', 'RCPT', 'RCPT', 'RSET', 'MAIL']);
      assert.equal(lines.filter((l) => l === 'DATA').length, 1);
    },
  );
});

test('a refused DATA is the transaction\'s answer, and the session is reset for reuse', async () => {
  let refuse = true;
  await withSink({ tls: 'none', replies: { data: () => (refuse ? { code: 554, text: '5.7.1 Not today' } : undefined) } }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      const r = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE);
      assert.equal(r.recipients.get('a@dest.test')?.accepted, true);
      assert.deepEqual(r.data, { code: 554, enhanced: '5.7.1', text: 'Not today' });
      assert.equal(s.messagesSent, 0);
      refuse = false;
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE)).data?.code, 250);
      assert.equal(s.messagesSent, 1);
    });
  });
});

test('a MAIL FROM refusal rejects the whole transaction with the reply', async () => {
  await withSink({ tls: 'none', replies: { mail: { code: 451, text: '4.7.1 Greylisted' } } }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      const err = await s.send({ from: 'sender@origin.test', to: ['a@dest.test', 'b@dest.test'] }, MESSAGE).catch((e) => e);
      assert.ok(err instanceof SmtpSessionError);
      assert.equal(err.stage, 'mail');
      assert.equal(err.kind, 'reply');
      assert.equal(err.temporary, true);
      assert.deepEqual(err.reply, { code: 451, enhanced: '4.7.1', text: 'Greylisted' });
      assert.equal(s.usable, true, 'pipelined RCPT replies were drained, the session stays in step');
    });
  });
});

test('SIZE: a message larger than the announced limit is refused locally, as a permanent failure, before MAIL FROM', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid'), advertise: { size: 1000 } }, async (sink) => {
    await withSession(options(sink.port, 'verify'), async (s) => {
      assert.equal(s.extensions.size, 1000);
      const big = Buffer.from(`Subject: big\r\n\r\n${'x'.repeat(76)}\r\n`.repeat(40));
      const err = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, big).catch((e) => e);
      assert.ok(err instanceof SmtpSessionError);
      assert.equal(err.kind, 'size-exceeded');
      assert.equal(err.stage, 'message');
      assert.equal(err.temporary, false);
      assert.deepEqual(err.reply && { ...err.reply, text: '' }, { code: 552, enhanced: '5.3.4', text: '', local: true });
      assert.equal(mailCommands(sink).length, 0, 'nothing of the envelope was sent');
      // The session is untouched: a small message goes through, declaring its size.
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE)).data?.code, 250);
    });
    assert.equal(mailCommands(sink)[0].line, `MAIL FROM:<sender@origin.test> SIZE=${MESSAGE.length}`);
  });
});

test('one session carries several messages over one TLS handshake, with RSET between and QUIT at the end', async () => {
  await withSink({ tls: 'starttls', cert: cert('intermediate-chain') }, async (sink) => {
    const s = await openSession(options(sink.port, 'verify'));
    for (let i = 0; i < 3; i++) {
      const r = await s.send({ from: 'sender@origin.test', to: [`r${i}@dest.test`] }, MESSAGE);
      assert.equal(r.data?.code, 250);
      await s.reset();
    }
    assert.equal(s.messagesSent, 3);
    assert.equal(s.usable, true);
    await s.close();
    assert.equal(s.usable, false);
    await s.close(); // idempotent
    const msgs = await sink.waitForMessages(3);
    assert.equal(sink.sessions.length, 1);
    assert.ok(msgs.every((m) => m.tls && m.sessionId === sink.sessions[0].id));
    const verbs = sink.sessions[0].transcript.filter((l) => l.from === 'client').map((l) => l.line.split(/[ :]/)[0].toUpperCase());
    assert.equal(verbs.filter((v) => v === 'STARTTLS').length, 1);
    assert.equal(verbs.filter((v) => v === 'RSET').length, 3);
    assert.equal(verbs.at(-1), 'QUIT');
    await assert.rejects(s.send({ from: 'a@b.test', to: ['c@d.test'] }, MESSAGE), SmtpSessionError);
  });
});

// ---------------------------------------------------------------------------------------------
// Timeouts (RFC 5321 §4.5.3.2): every stage has its own, and each is a transient failure.

const TIMEOUT_CASES: { stage: 'greeting' | 'rcpt' | 'data' | 'dot'; silentAt: 'greeting' | 'rcpt' | 'data' | 'dataEnd'; timeouts: Partial<Timeouts> }[] = [
  { stage: 'greeting', silentAt: 'greeting', timeouts: { greeting: 300 } },
  { stage: 'rcpt', silentAt: 'rcpt', timeouts: { command: 300 } },
  { stage: 'data', silentAt: 'data', timeouts: { dataInit: 300 } },
  { stage: 'dot', silentAt: 'dataEnd', timeouts: { dataDone: 300 } },
];

for (const c of TIMEOUT_CASES) {
  test(`a sink silent at ${c.silentAt} is a transient ${c.stage}-stage timeout, within the configured time`, async () => {
    await withSink({ tls: 'none', silentAt: c.silentAt, advertise: { pipelining: false } }, async (sink) => {
      const started = Date.now();
      const err = await (async () => {
        const s = await openSession(options(sink.port, 'none', { timeouts: { ...FAST, ...c.timeouts } }));
        try {
          await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE);
        } finally {
          assert.equal(s.usable, false);
          await s.close();
        }
      })().catch((e) => e);
      assert.ok(err instanceof SmtpSessionError, String(err));
      assert.equal(err.kind, 'timeout');
      assert.equal(err.stage, c.stage);
      assert.equal(err.temporary, true);
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
      await sink.waitFor(() => sink.sessions.every((s) => s.closed), 2000, 'closed');
    });
  });
}

test('the connect timeout bounds a destination that never accepts', async () => {
  // 192.0.2.0/24 (TEST-NET-1) is not routed; a refused connect also counts, it only must not hang.
  const started = Date.now();
  const err = await openSession(options(25, 'may', { address: '192.0.2.1', timeouts: { ...FAST, connect: 300 } })).catch((e) => e);
  assert.ok(err instanceof SmtpSessionError);
  assert.equal(err.stage, 'connect');
  assert.equal(err.temporary, true);
  assert.ok(Date.now() - started < 1500);
});

// ---------------------------------------------------------------------------------------------
// Greeting and EHLO

test('EHLO answered 5xx falls back to HELO (no extensions, so no STARTTLS: encrypt refuses)', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid'), replies: { ehlo: { code: 502, text: '5.5.1 EHLO not implemented' } } }, async (sink) => {
    await withSession(options(sink.port, 'may'), async (s) => {
      assert.equal(s.facts.heloFallback, true);
      assert.equal(s.facts.helo, 'sink.lacre.test', 'the HELO reply names the server too');
      assert.equal(s.facts.starttlsOffered, false);
      assert.equal(s.facts.downgrade?.reason, 'starttls-not-supported');
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE)).data?.code, 250);
    });
    assert.equal(sink.sessions[0].heloVerb, 'HELO');
    const err = await openSession(options(sink.port, 'encrypt')).catch((e) => e);
    assert.equal(err.failure, 'starttls-not-supported');
    assert.equal(mailCommands(sink).filter((c) => !c.tls).length, 1, 'only the `may` session sent MAIL in plaintext');
  });
});

test('EHLO answered 4xx is a temporary refusal, without trying HELO', async () => {
  await withSink({ tls: 'none', replies: { ehlo: { code: 450, text: '4.3.2 Try later' } } }, async (sink) => {
    const err = await openSession(options(sink.port, 'none')).catch((e) => e);
    assert.ok(err instanceof SmtpSessionError);
    assert.equal(err.stage, 'ehlo');
    assert.equal(err.temporary, true);
    assert.equal(err.reply?.code, 450);
    await sink.waitFor(() => sink.sessions[0]?.closed, 2000, 'closed');
    assert.equal(sink.sessions[0].heloVerb, 'EHLO');
  });
});

test('a 554 greeting is a permanent refusal; a 421 greeting a temporary one', async () => {
  for (const [code, temporary] of [[554, false], [421, true]] as const) {
    await withSink({ tls: 'none', replies: { greeting: { code, text: 'no service' } } }, async (sink) => {
      const err = await openSession(options(sink.port, 'may')).catch((e) => e);
      assert.ok(err instanceof SmtpSessionError);
      assert.equal(err.stage, 'greeting');
      assert.equal(err.temporary, temporary);
      assert.equal(err.reply?.code, code);
    });
  }
});

test('the EHLO after STARTTLS replaces what was learned before TLS', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid'), advertise: { requireTls: true, size: 5_000_000 } }, async (sink) => {
    await withSession(options(sink.port, 'verify'), async (s) => {
      // REQUIRETLS is offered only inside TLS (RFC 8689 §4): seeing it proves the second EHLO was read.
      assert.equal(s.extensions.requireTls, true);
      assert.equal(s.extensions.starttls, false);
      assert.equal(s.facts.starttlsOffered, true);
    });
    const verbs = sink.sessions[0].commands.map((c) => `${c.line.split(' ')[0]}:${c.tls}`);
    assert.deepEqual(verbs.slice(0, 3), ['EHLO:false', 'STARTTLS:false', 'EHLO:true']);
    assert.equal(sink.sessions[0].servername, MX, 'SNI carries the MX host name');
  });
});

test('the server\'s EHLO name is recorded for TLS reports, also on a session refused after the handshake', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid'), hostname: 'mx7.receiver.test' }, async (sink) => {
    await withSession(options(sink.port, 'verify'), async (s) => assert.equal(s.facts.helo, 'mx7.receiver.test'));
    const err = await openSession(options(sink.port, 'dane', { dane: { tlsa: [ee311(cert('wrong-name'))], names: [MX] } })).catch((e) => e);
    assert.equal(err.failure, 'validation-failure');
    assert.equal(err.facts?.helo, 'mx7.receiver.test');
  });
});

test('the certificate is recorded as presented: names, issuer, fingerprints and validity; a root dot on the MX name is ignored', async () => {
  const c = cert('intermediate-chain');
  await withSink({ tls: 'starttls', cert: c }, async (sink) => {
    await withSession(options(sink.port, 'verify', { mxHost: `${MX}.` }), async (s) => {
      const f = s.facts;
      assert.equal(f.mxHost, MX);
      assert.equal(f.verified, true);
      assert.deepEqual(f.certificate, {
        subjectCN: MX,
        subjectAltNames: [MX],
        issuer: 'CN=Lacre Test Intermediate CA',
        fingerprintSha256: c.fingerprintSha256,
        spkiSha256: c.spkiSha256,
        notBefore: c.notBefore.toISOString(),
        notAfter: c.notAfter.toISOString(),
      });
      assert.equal(f.protocol, 'TLSv1.3', 'TLS 1.3 preferred when both ends have it');
      assert.ok(f.timings.connectMs !== undefined && f.timings.connectMs >= 0);
      assert.deepEqual(f.timings.commands.map((t) => t.command), ['greeting', 'EHLO', 'STARTTLS', 'EHLO']);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Extensions that shape the envelope

test('SMTPUTF8 absent: a non-ASCII recipient fails permanently on its own, the others are delivered', async () => {
  await withSink({ tls: 'none', advertise: { smtpUtf8: false } }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      const r = await s.send({ from: 'sender@origin.test', to: ['ok@dest.test', 'josé@dest.test'] }, MESSAGE);
      assert.equal(r.recipients.get('ok@dest.test')?.accepted, true);
      assert.deepEqual(r.recipients.get('josé@dest.test'), {
        code: 553,
        enhanced: '5.6.7',
        text: r.recipients.get('josé@dest.test')!.text,
        accepted: false,
        local: true,
      });
      assert.equal(r.data?.code, 250);
      const err = await s.send({ from: 'josé@origin.test', to: ['ok@dest.test'] }, MESSAGE).catch((e) => e);
      assert.equal(err.kind, 'smtputf8-unavailable');
      assert.equal(err.temporary, false);
    });
    assert.ok(sink.sessions[0].commands.every((c) => !c.line.includes('josé')), 'the address never reached the wire');
  });
});

test('SMTPUTF8 offered: an internationalised envelope goes with the SMTPUTF8 parameter', async () => {
  await withSink({ tls: 'none' }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      const r = await s.send({ from: 'sender@origin.test', to: ['josé@dest.test'] }, MESSAGE);
      assert.equal(r.data?.code, 250);
    });
    const [m] = await sink.waitForMessages(1);
    assert.equal(m.mailFrom.params.SMTPUTF8, true);
    assert.equal(m.rcptTo[0].address, 'josé@dest.test');
  });
});

test('REQUIRETLS: sent as a MAIL FROM parameter when offered; when not offered, nothing is sent', async () => {
  await withSink({ tls: 'starttls', cert: cert('valid'), advertise: { requireTls: true } }, async (sink) => {
    await withSession(options(sink.port, 'verify'), async (s) => {
      assert.equal((await s.send({ from: 'sender@origin.test', to: ['a@dest.test'], requireTls: true }, MESSAGE)).data?.code, 250);
    });
    const [m] = await sink.waitForMessages(1);
    assert.equal(m.mailFrom.params.REQUIRETLS, true);
    assert.equal(m.tls, true);
  });
  await withSink({ tls: 'starttls', cert: cert('valid') }, async (sink) => {
    await withSession(options(sink.port, 'encrypt'), async (s) => {
      const err = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'], requireTls: true }, MESSAGE).catch((e) => e);
      assert.ok(err instanceof SmtpSessionError);
      assert.equal(err.kind, 'requiretls-unavailable');
      assert.equal(err.temporary, false);
      assert.equal(err.reply?.enhanced, '5.7.30');
    });
    assert.equal(mailCommands(sink).length, 0);
  });
  await withSink({ tls: 'none' }, async (sink) => {
    await withSession(options(sink.port, 'may'), async (s) => {
      const err = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'], requireTls: true }, MESSAGE).catch((e) => e);
      assert.equal(err.kind, 'requiretls-unavailable');
    });
    assert.equal(mailCommands(sink).length, 0, 'REQUIRETLS never travels in plaintext');
  });
});

test('8-bit content goes with BODY=8BITMIME, byte for byte; dot-stuffing is undone by the server', async () => {
  const msg = Buffer.concat([
    Buffer.from('Subject: caf\xc3\xa9\r\n\r\n..two dots\r\n.\r\n', 'latin1'),
    Buffer.from([0xe2, 0x82, 0xac, 0x0d, 0x0a]),
    Buffer.from('.'),
  ]);
  await withSink({ tls: 'none' }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      assert.equal((await s.send({ from: '', to: ['a@dest.test'] }, msg)).data?.code, 250);
    });
    const [m] = await sink.waitForMessages(1);
    assert.equal(m.mailFrom.address, '', 'null reverse path');
    assert.equal(m.mailFrom.params.BODY, '8BITMIME');
    // A message without a final CRLF gets one, so the last line is not lost in the terminator.
    assert.deepEqual(m.data, Buffer.concat([msg, Buffer.from('\r\n')]));
  });
});

test('bare LF or CR in the message, or CR/LF in an address, is refused locally (no SMTP smuggling)', async () => {
  await withSink({ tls: 'none' }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      for (const bad of ['Subject: x\n\nbody\r\n', 'Subject: x\r\n\r\nbody\r\n.\n\r\n', 'Subject: x\r\n\r\nbo\rdy\r\n']) {
        const err = await s.send({ from: 'a@b.test', to: ['c@d.test'] }, Buffer.from(bad)).catch((e) => e);
        assert.equal(err.kind, 'message-format', JSON.stringify(bad));
        assert.equal(err.temporary, false);
      }
      const r = await s.send({ from: 'a@b.test', to: ['c@d.test>\r\nRCPT TO:<evil@x.test', 'ok@d.test'] }, MESSAGE);
      assert.equal(r.recipients.get('c@d.test>\r\nRCPT TO:<evil@x.test')?.local, true);
      assert.equal(r.recipients.get('ok@d.test')?.accepted, true);
    });
    assert.ok(sink.sessions[0].commands.every((c) => !c.line.includes('evil')));
  });
});

test('a session refuses a second operation while one is running', async () => {
  await withSink({ tls: 'none', delayMs: { mail: 200 } }, async (sink) => {
    await withSession(options(sink.port, 'none'), async (s) => {
      const first = s.send({ from: 'a@b.test', to: ['c@d.test'] }, MESSAGE);
      await assert.rejects(s.send({ from: 'a@b.test', to: ['c@d.test'] }, MESSAGE), /one operation at a time/);
      assert.equal((await first).data?.code, 250);
    });
  });
});

test('an abort signal ends the opening session at once', async () => {
  await withSink({ tls: 'none', silentAt: 'greeting' }, async (sink) => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    const err = await openSession(options(sink.port, 'may', { signal: controller.signal })).catch((e) => e);
    assert.equal(err.kind, 'aborted');
    assert.ok(Date.now() - started < 1000);
  });
});

test('dotStuff doubles leading dots and terminates the data', () => {
  const j = (m: string) => Buffer.concat(dotStuff(Buffer.from(m))).toString();
  assert.equal(j('.a\r\n'), '..a\r\n.\r\n');
  assert.equal(j('a\r\n.\r\n..b\r\n'), 'a\r\n..\r\n...b\r\n.\r\n');
  assert.equal(j('a\r\nb'), 'a\r\nb\r\n.\r\n');
  assert.equal(j(''), '.\r\n');
  assert.equal(j('a.b\r\n'), 'a.b\r\n.\r\n');
});

after(() => {
  certs.clear();
});

// ---------------------------------------------------------------------------------------------
// The final dot (RFC 1047) and the hook before DATA

test('a connection lost after the final dot fails at stage dot, not data, with MAIL accepted and the RCPT results attached', async () => {
  await withSink({ tls: 'none', dropAfterDot: 1, replies: { rcpt: (a) => (a.startsWith('gone@') ? { code: 550, text: '5.1.1 no such user' } : undefined) } }, async (sink) => {
    const s = await openSession(options(sink.port, 'none'));
    try {
      const err = await s.send({ from: 'sender@origin.test', to: ['a@dest.test', 'gone@dest.test'] }, MESSAGE).catch((e) => e);
      assert.ok(err instanceof SmtpSessionError, String(err));
      assert.deepEqual([err.stage, err.kind, err.mailAccepted], ['dot', 'connection', true]);
      assert.deepEqual([...err.recipients!].map(([a, r]) => [a, r.accepted]), [['a@dest.test', true], ['gone@dest.test', false]]);
      assert.equal(sink.messages().length, 1, 'the receiver has the message');
    } finally {
      await s.close();
    }
  });
});

test('beforeData returning false withholds DATA, RSETs the transaction and leaves the session usable', async () => {
  await withSink({ tls: 'none' }, async (sink) => {
    const s = await openSession(options(sink.port, 'none'));
    try {
      let asked = 0;
      const result = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE, { beforeData: () => (asked++, false) });
      assert.deepEqual([asked, result.dataWithheld, result.data, result.recipients.get('a@dest.test')?.accepted], [1, true, undefined, true]);
      assert.equal(s.usable, true);
      const verbs = sink.sessions[0].commands.map((c) => c.line.split(/[ :]/)[0].toUpperCase());
      assert.deepEqual(verbs.slice(-3), ['MAIL', 'RCPT', 'RSET']);
      const again = await s.send({ from: 'sender@origin.test', to: ['a@dest.test'] }, MESSAGE, { beforeData: () => true });
      assert.equal(again.data?.code, 250);
      assert.equal(sink.messages().length, 1);
    } finally {
      await s.close();
    }
  });
});
