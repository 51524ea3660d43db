// Tests for the DKIM signer and DKIM key helpers. Every signature is checked by two verifiers that
// share no code with the signer: mailauth (its key records fetched with Lacre's Resolver from the
// fake DNS server over loopback) and dkimpy (python3-dkim, records handed over directly).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, sign, verify } from 'node:crypto';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { dkimpyAvailable, verifyWithDkimpy } from '../../test/harness/dkimpy.ts';
import { DnsError, Resolver } from '../dns/resolver.ts';
import { dkimRecordValue, generateDkimKeyPair, parseDkimRecord } from '../domains/dkim-keys.ts';
import { DkimSignError, OVERSIGNED_HEADERS, SIGNED_HEADERS, dkimSign, type DkimSigningKey } from './dkim-signer.ts';

const DOMAIN = 'sender.test';
const ED = 'lacre-ed-2026a';
const RSA = 'lacre-rsa-2026a';
const SIGN_TIME = new Date('2026-03-01T12:00:00Z');

let dns: FakeDnsServer;
let resolver: Resolver;
let keys: DkimSigningKey[];
const records: Record<string, string> = {};

before(async () => {
  assert.ok(dkimpyAvailable(), '/usr/bin/python3 cannot import dkim and nacl: apt-get install python3-dkim python3-nacl');
  dns = await FakeDnsServer.start();
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 2000, tries: 1 });
  const ed = generateDkimKeyPair('ed25519');
  const rsa = generateDkimKeyPair('rsa');
  keys = [
    { domain: DOMAIN, selector: ED, algorithm: 'ed25519', privateKeyPem: ed.privateKeyPem },
    { domain: DOMAIN, selector: RSA, algorithm: 'rsa', privateKeyPem: rsa.privateKeyPem },
  ];
  records[`${ED}._domainkey.${DOMAIN}`] = dkimRecordValue('ed25519', ed.publicKey);
  records[`${RSA}._domainkey.${DOMAIN}`] = dkimRecordValue('rsa', rsa.publicKey);
  for (const [name, value] of Object.entries(records)) dns.add(name, { type: 'TXT', data: value });
});

after(async () => {
  await dns?.close();
});

function errorWithCode(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

// mailauth wants dns.promises.resolve's contract: TXT as an array of records, each an array of
// character-strings, and a missing key reported as an error with code ENOTFOUND (no such name) or
// ENODATA (no TXT there). Any other error becomes a temperror.
async function mailauthResolver(name: string, rrtype: string): Promise<string[][]> {
  if (rrtype !== 'TXT') throw errorWithCode(`unexpected ${rrtype} lookup for ${name}`, 'ENOTIMP');
  let txt: string[];
  try {
    txt = (await resolver.txt(name)).records;
  } catch (err) {
    if (err instanceof DnsError && err.code === 'NXDOMAIN') throw errorWithCode(`${name} does not exist`, 'ENOTFOUND');
    throw err;
  }
  if (txt.length === 0) throw errorWithCode(`no TXT record at ${name}`, 'ENODATA');
  return txt.map((record) => [record]);
}

interface Verdicts {
  mailauth: Record<string, string>;
  dkimpy: Record<string, boolean>;
}

/** Each verifier's verdict per selector: mailauth's result (strict mode) and dkimpy's yes/no. */
async function verdicts(message: Buffer): Promise<Verdicts> {
  const [checked, py] = await Promise.all([
    dkimVerify(message, { resolver: mailauthResolver, strict: true }),
    verifyWithDkimpy(message, records),
  ]);
  const out: Verdicts = { mailauth: {}, dkimpy: {} };
  for (const r of checked.results) out.mailauth[r.selector ?? '?'] = r.status.result;
  for (const r of py) out.dkimpy[r.selector] = r.ok;
  return out;
}

const ALL_PASS: Verdicts = { mailauth: { [ED]: 'pass', [RSA]: 'pass' }, dkimpy: { [ED]: true, [RSA]: true } };
const ALL_FAIL: Verdicts = { mailauth: { [ED]: 'fail', [RSA]: 'fail' }, dkimpy: { [ED]: false, [RSA]: false } };

function message(headers: string[], body: string): Buffer {
  return Buffer.from(headers.join('\r\n') + '\r\n\r\n' + body);
}

const HEADERS = [
  'From: App <app@sender.test>',
  'To: Someone <someone@rcpt.test>',
  'Reply-To: <support@sender.test>',
  'Subject: Invoice 42',
  'Date: Sun, 01 Mar 2026 12:00:00 +0000',
  'Message-ID: <m1@sender.test>',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Transfer-Encoding: 7bit',
  'List-Unsubscribe: <https://sender.test/u/1>, <mailto:u@sender.test>',
  'List-Unsubscribe-Post: List-Unsubscribe=One-Click',
];
const BODY = 'Hello,\r\n\r\nyour invoice is attached.\r\n';
const MESSAGE = message(HEADERS, BODY);

function signed(msg: Buffer = MESSAGE): Promise<Buffer> {
  return dkimSign(msg, keys, { signTime: SIGN_TIME });
}

/** The DKIM-Signature fields prepended by dkimSign (the bytes before the original message). */
function signatureFields(out: Buffer, original: Buffer): string[] {
  assert.ok(out.subarray(out.length - original.length).equals(original), 'the original message follows unchanged');
  const text = out.subarray(0, out.length - original.length).toString('latin1');
  assert.ok(text.endsWith('\r\n'));
  return text.slice(0, -2).split(/\r\n(?=[^ \t])/);
}

function tags(field: string): Map<string, string> {
  const value = field.slice(field.indexOf(':') + 1).replace(/\r\n[ \t]/g, ' ');
  return new Map(value.split(';').filter((t) => t.trim() !== '').map((t) => {
    const eq = t.indexOf('=');
    return [t.slice(0, eq).trim(), t.slice(eq + 1).replace(/\s+/g, '')];
  }));
}

/** Replaces the first occurrence of `from` in the message (bytes before and after kept). */
function edit(msg: Buffer, from: string, to: string): Buffer {
  const text = msg.toString('latin1');
  const at = text.indexOf(from);
  assert.ok(at >= 0, `"${from}" is in the message`);
  return Buffer.from(text.slice(0, at) + to + text.slice(at + from.length), 'latin1');
}

test('Ed25519 and RSA signatures made together both verify with mailauth and dkimpy', async () => {
  dns.clearQueries();
  const out = await signed();
  const fields = signatureFields(out, MESSAGE);
  assert.equal(fields.length, 2);
  assert.deepEqual(fields.map((f) => tags(f).get('a')), ['ed25519-sha256', 'rsa-sha256']);
  for (const field of fields) {
    const t = tags(field);
    assert.equal(t.get('v'), '1');
    assert.equal(t.get('c'), 'relaxed/relaxed');
    assert.equal(t.get('d'), DOMAIN);
    assert.equal(t.has('l'), false, 'no body length limit');
  }
  assert.deepEqual(await verdicts(out), ALL_PASS);
  // mailauth's keys really came over loopback DNS.
  const asked = dns.queries.filter((q) => q.type === 'TXT').map((q) => q.name.toLowerCase()).sort();
  assert.deepEqual(asked, Object.keys(records).sort());
});

test('h= lists each signed field once per instance, plus once more for over-signed fields', async () => {
  const extra = message(['Received: from a by b', ...HEADERS, 'References: <a@x> <b@x>', 'References: <c@x>', 'X-Mailer: test'], BODY);
  const h = tags(signatureFields(await dkimSign(extra, keys, { signTime: SIGN_TIME }), extra)[0]).get('h')!.split(':');
  const count = (name: string) => h.filter((n) => n === name).length;
  for (const name of ['from', 'to', 'reply-to', 'subject', 'date', 'message-id', 'mime-version', 'content-type']) {
    assert.equal(count(name), 2, `${name}: one instance, over-signed`);
  }
  assert.equal(count('cc'), 1, 'an absent over-signed field is listed once, so none can be added');
  assert.equal(count('list-unsubscribe'), 1, 'List-* signed but not over-signed');
  assert.equal(count('list-unsubscribe-post'), 1);
  assert.equal(count('references'), 2, 'both instances');
  assert.equal(count('sender'), 0, 'absent and not over-signed');
  assert.equal(count('received'), 0);
  assert.equal(count('x-mailer'), 0);
  assert.ok(OVERSIGNED_HEADERS.every((n) => SIGNED_HEADERS.includes(n)));
  assert.ok(!OVERSIGNED_HEADERS.some((n) => n.startsWith('list-')));
});

test('a changed body byte breaks both signatures in both verifiers', async () => {
  const out = edit(await signed(), 'invoice is', 'invoice iz');
  assert.deepEqual(await verdicts(out), ALL_FAIL);
});

test('a changed Subject breaks both signatures in both verifiers', async () => {
  const out = edit(await signed(), 'Subject: Invoice 42', 'Subject: Invoice 43');
  assert.deepEqual(await verdicts(out), ALL_FAIL);
});

test('a second From prepended after signing breaks both signatures (From is over-signed)', async () => {
  const out = await signed();
  const spoofed = Buffer.concat([Buffer.from('From: Bank <security@bank.test>\r\n'), out]);
  assert.deepEqual(await verdicts(spoofed), ALL_FAIL);
  // Control: a field that is not over-signed can be added, as a mailing list adds Sender and List-*.
  const listed = Buffer.concat([Buffer.from('Sender: list-bounces@list.test\r\nList-Id: <l.list.test>\r\nReceived: from x by y\r\n'), out]);
  assert.deepEqual(await verdicts(listed), ALL_PASS);
});

test('relaxed canonicalization survives re-folding, whitespace changes and field-name case', async () => {
  // Signed with untidy whitespace, so the signer's own canonicalization is what is tested.
  const untidy = message(
    [...HEADERS.filter((h) => !h.startsWith('Subject:')), 'Subject:  Invoice \t 42 '],
    'Hello,  \t\r\n\r\nyour  invoice\tis attached. \r\n\r\n\r\n',
  );
  let out = await signed(untidy);
  assert.deepEqual(await verdicts(out), ALL_PASS);
  out = edit(out, 'Subject:  Invoice \t 42 ', 'SUBJECT:Invoice\r\n \t 42');
  out = edit(out, 'To: Someone <someone@rcpt.test>', 'To:    Someone\t<someone@rcpt.test>');
  out = edit(out, 'Hello,  \t\r\n', 'Hello,\r\n');
  out = edit(out, 'your  invoice\tis attached. \r\n\r\n\r\n', 'your invoice is attached.\r\n');
  assert.deepEqual(await verdicts(out), ALL_PASS);
  // Whitespace inside a word is content, not formatting.
  assert.deepEqual(await verdicts(edit(await signed(), 'Invoice 42', 'Invo ice 42')), ALL_FAIL);
});

test('repeated fields are hashed bottom-up: they verify, and swapping them breaks the signatures', async () => {
  const msg = message([...HEADERS, 'Cc: <first@rcpt.test>', 'Cc: <second@rcpt.test>'], BODY);
  const out = await signed(msg);
  assert.deepEqual(await verdicts(out), ALL_PASS);
  const swapped = edit(edit(out, 'Cc: <first@', 'Cc: <SWAP@'), 'Cc: <second@', 'Cc: <first@');
  assert.deepEqual(await verdicts(edit(swapped, 'Cc: <SWAP@', 'Cc: <second@')), ALL_FAIL);
});

test('8-bit UTF-8 headers and body sign and verify', async () => {
  const msg = message(
    [
      'From: =?utf-8?q?Zo=C3=AB?= <zoe@sender.test>',
      'To: Zoë Ünal <zoë@rcpt.test>',
      // Ends in a UTF-8 no-break space (C2 A0): its A0 byte is not whitespace to DKIM.
      'Subject: Grüße – 10 € für dich\u00a0',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
    ],
    'Ça va ? ✓ 日本語\u00a0\r\n',
  );
  assert.deepEqual(await verdicts(await signed(msg)), ALL_PASS);
});

test('an empty body and a body without a final CRLF sign and verify', async () => {
  const empty = message(HEADERS, '');
  const emptyOut = await signed(empty);
  assert.deepEqual(await verdicts(emptyOut), ALL_PASS);
  // RFC 6376 §3.4.4: an empty body hashes as the empty string.
  const emptyHash = createHash('sha256').digest('base64');
  assert.equal(tags(signatureFields(emptyOut, empty)[0]).get('bh'), emptyHash);

  const unterminated = message(HEADERS, 'no newline at the end');
  const out = await signed(unterminated);
  assert.deepEqual(await verdicts(out), ALL_PASS);
  // relaxed adds the missing CRLF, so the terminated body has the same body hash.
  const terminated = message(HEADERS, 'no newline at the end\r\n');
  const bh = async (m: Buffer) => tags(signatureFields(await signed(m), m)[0]).get('bh');
  assert.equal(await bh(unterminated), await bh(terminated));
  assert.notEqual(await bh(unterminated), emptyHash);
});

test('bad input is rejected with a DkimSignError naming the problem', async () => {
  const cases: Array<[Buffer, RegExp]> = [
    [Buffer.from('From: a@sender.test\nSubject: x\r\n\r\nbody\r\n'), /bare LF/],
    [Buffer.from('From: a@sender.test\r\nSubject: x\r\n\r\nbody\rmore\r\n'), /bare CR/],
    [Buffer.from('From: a@sender.test\r\nSubject: x\r\n'), /no empty line separates/],
    [message(['To: b@rcpt.test', 'Subject: x'], 'body\r\n'), /no From header/],
    [message(['From: a@sender.test', 'from: c@sender.test'], 'body\r\n'), /2 From header fields/],
    [message(['From: a@sender.test', 'not a header line'], 'body\r\n'), /no colon/],
  ];
  for (const [input, problem] of cases) {
    await assert.rejects(dkimSign(input, keys), (err: unknown) => err instanceof DkimSignError && problem.test(err.message), String(problem));
  }
  const wrongKey: DkimSigningKey = { ...keys[0], algorithm: 'rsa' };
  await assert.rejects(dkimSign(MESSAGE, [wrongKey]), (err: unknown) => err instanceof DkimSignError && /is ed25519, not rsa/.test(err.message));
  await assert.rejects(dkimSign(MESSAGE, []), DkimSignError);
  await assert.rejects(dkimSign(MESSAGE, [{ ...keys[0], domain: 'bad;domain' }]), DkimSignError);
});

test('signing is deterministic for the same signTime and folds at 78 columns', async () => {
  const a = await signed();
  const b = await signed();
  assert.ok(a.equals(b), 'byte-identical for Ed25519 and RSA');
  const later = await dkimSign(MESSAGE, keys, { signTime: new Date(SIGN_TIME.getTime() + 1000) });
  assert.ok(!a.equals(later));
  const fields = signatureFields(a, MESSAGE);
  for (const field of fields) {
    assert.equal(tags(field).get('t'), String(SIGN_TIME.getTime() / 1000));
    const lines = field.split('\r\n');
    assert.ok(lines.length > 1, 'folded');
    assert.ok(lines[0].startsWith('DKIM-Signature: v=1;'));
    for (const line of lines) assert.ok(line.length <= 78, `line too long (${line.length}): ${line}`);
    for (const line of lines.slice(1)) assert.ok(line.startsWith('\t'), 'continuations start with a tab');
    for (const line of lines) assert.ok(!/[ \t]$/.test(line), 'no trailing whitespace');
  }
});

test('generated keys: RSA is 2048 bits with an SPKI p=, Ed25519 p= is the raw 32-byte key', () => {
  const rsa = generateDkimKeyPair('rsa');
  const rsaPublic = createPublicKey({ key: Buffer.from(rsa.publicKey, 'base64'), format: 'der', type: 'spki' });
  assert.equal(rsaPublic.asymmetricKeyDetails?.modulusLength, 2048);
  assert.match(rsa.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);

  const ed = generateDkimKeyPair('ed25519');
  const raw = Buffer.from(ed.publicKey, 'base64');
  assert.equal(raw.length, 32);
  assert.match(ed.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  // The raw key is the private key's public half: wrap it in an SPKI and check a signature.
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]);
  const edPublic = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const data = Buffer.from('check');
  assert.ok(verify(null, data, edPublic, sign(null, data, ed.privateKeyPem)));
});

test('parseDkimRecord reads back dkimRecordValue and tolerates whitespace and tag order', () => {
  const { publicKey } = generateDkimKeyPair('ed25519');
  assert.equal(dkimRecordValue('ed25519', publicKey), `v=DKIM1; k=ed25519; p=${publicKey}`);
  assert.deepEqual(parseDkimRecord(dkimRecordValue('ed25519', publicKey)), { version: 'DKIM1', keyType: 'ed25519', publicKey });
  assert.deepEqual(parseDkimRecord(dkimRecordValue('rsa', 'QUJD')), { version: 'DKIM1', keyType: 'rsa', publicKey: 'QUJD' });
  const spaced = `  p = ${publicKey.slice(0, 10)} ${publicKey.slice(10, 20)}\t${publicKey.slice(20)} ;k=ed25519 ;  v = DKIM1 ; `;
  assert.deepEqual(parseDkimRecord(spaced), { version: 'DKIM1', keyType: 'ed25519', publicKey });
  assert.deepEqual(parseDkimRecord('p=QUJD'), { keyType: 'rsa', publicKey: 'QUJD' }, 'k defaults to rsa, v is optional');
  assert.deepEqual(parseDkimRecord('v=DKIM1; p='), { version: 'DKIM1', keyType: 'rsa', publicKey: '' }, 'a revoked key');
  assert.equal(parseDkimRecord('v=spf1 -all'), null);
  assert.equal(parseDkimRecord('v=DKIM1; k=rsa'), null, 'no p=');
  assert.equal(parseDkimRecord('v=DKIM1; p=QUJD; p=QUJE'), null, 'a repeated tag');
  assert.equal(parseDkimRecord('v=DKIM1; p=QU*D'), null, 'p= is not base64');
  assert.equal(parseDkimRecord('v=DKIM1;; p=QUJD'), null, 'an empty tag');
});
