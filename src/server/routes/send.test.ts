// POST /v3.1/send: Mailjet request and response shapes field for field, every refusal in Mailjet's
// error vocabulary with nothing queued, batches message by message, Idempotency-Key replays, and
// the official node-mailjet client over HTTPS delivering through to a TLS sink with valid DKIM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { TestCA } from '../../../test/harness/ca.ts';
import { FakeDnsServer } from '../../../test/harness/dns-server.ts';
import { startDeliveryRig } from '../../../test/harness/delivery-rig.ts';
import { publishRecords } from '../../../test/harness/sender-domain.ts';
import { tempDir } from '../../../test/harness/temp-data.ts';
import { basicAuth, message, queuedCount, sendApiRig, type SendApiRig } from '../../../test/harness/send-api.ts';
import { Resolver } from '../../dns/resolver.ts';
import { nodeStyleResolver } from '../../dns/node-style.ts';
import emailAddresses from 'email-addresses';
import { fieldValue, fieldsNamed, parseMessage } from '../../compose/message-headers.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const FIXTURE = join(import.meta.dirname, '../../../test/fixtures/node-mailjet-client.ts');

let ca: TestCA;
let dns: FakeDnsServer;
let resolver: Resolver;

before(async () => {
  ca = await TestCA.create();
  dns = await FakeDnsServer.start();
  dns.add('rcpt.test', { type: 'MX', preference: 10, exchange: 'mx.rcpt.test' });
  dns.add('mx.rcpt.test', { type: 'A', address: '127.0.0.1' });
  // rcpt.test is DNSSEC-signed: REQUIRETLS needs an authenticated MX (RFC 8689 §4.2.1).
  dns.secure('rcpt.test');
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1, trustAd: true });
});
after(async () => {
  await dns.close();
});

async function post(r: SendApiRig, payload: unknown, options: { key?: { apiKey: string; secretKey: string } | null; headers?: Record<string, string>; raw?: boolean } = {}) {
  const key = options.key === undefined ? r.sender : options.key;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(key ? { authorization: basicAuth(key) } : {}), ...options.headers };
  const response = await r.app.inject({ method: 'POST', url: '/v3.1/send', headers, payload: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload) });
  return { status: response.statusCode, body: response.body, json: () => response.json(), headers: response.headers };
}

function withoutProxies(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !/^(https?|all)_proxy$/i.test(k)));
}

function assertMailjetError(error: Record<string, unknown>, code: string, status: number, related?: string) {
  assert.match(String(error.ErrorIdentifier), UUID);
  assert.equal(error.ErrorCode, code, JSON.stringify(error));
  assert.equal(error.StatusCode, status);
  assert.ok(typeof error.ErrorMessage === 'string' && error.ErrorMessage.length > 10, JSON.stringify(error));
  if (related !== undefined) assert.ok((error.ErrorRelatedTo as string[]).includes(related), `${related} in ${JSON.stringify(error.ErrorRelatedTo)}`);
}

test('node-mailjet over HTTPS sends through Lacre to the recipient over TLS, DKIM-signed, and reads the status back', async () => {
  const serverCert = await ca.issue({ names: ['127.0.0.1'] });
  const mxCert = await ca.issue({ names: ['mx.rcpt.test'] });
  // REQUIRETLS is offered after STARTTLS (RFC 8689 §4.1): RequireTLS messages need it.
  const r = await sendApiRig({
    resolver,
    https: { cert: serverCert.chainPem, key: serverCert.keyPem },
    verify: async (domains) => {
      const view = await domains.add('client.test', 'cli:test');
      publishRecords(dns, view.records);
      assert.equal((await domains.verify('client.test', { actor: 'cli:test' })).domain.status, 'verified');
    },
  });
  const d = await startDeliveryRig({
    resolver,
    ca: [ca.certPem],
    data: r.data,
    sink: { tls: 'starttls', cert: mxCert, advertise: { requireTls: true } },
    policies: { 'rcpt.test': 'verify' },
    workerId: 'send-api-test',
    pollIntervalMs: 20,
    start: false,
  });
  const sink = d.sink!;
  const caDir = tempDir();
  try {
    await r.app.listen({ host: '127.0.0.1', port: 0 });
    const port = (r.app.server.address() as { port: number }).port;
    const caFile = join(caDir, 'ca.pem');
    writeFileSync(caFile, ca.certPem);
    const request = {
      Messages: [
        {
          From: { Email: 'hello@client.test', Name: 'Client Co' },
          To: [{ Email: 'ada@rcpt.test', Name: 'Ada Lovelace' }],
          Bcc: [{ Email: 'audit@rcpt.test' }],
          Subject: 'Welcome, {{var:name}}',
          TextPart: 'Hello {{var:name}}, your code is {{var:code}}.',
          HTMLPart: '<p>Hello <b>{{var:name}}</b></p><img src="cid:logo">',
          TemplateLanguage: true,
          Variables: { name: 'Ada', code: 4711 },
          Attachments: [{ ContentType: 'text/plain', Filename: 'terms.txt', Base64Content: Buffer.from('The terms.\n').toString('base64') }],
          InlinedAttachments: [{ ContentType: 'image/png', Filename: 'logo.png', ContentID: 'logo', Base64Content: Buffer.from('\x89PNG fake').toString('base64') }],
          Headers: { 'X-Order': 'A-1' },
          CustomID: 'order-1',
          RequireTLS: true,
        },
      ],
    };
    const child = spawn(process.execPath, [FIXTURE, `127.0.0.1:${port}`, r.sender.apiKey, r.sender.secretKey], {
      // Loopback only: no proxy from the environment may carry the request elsewhere.
      env: { ...withoutProxies(process.env), NO_PROXY: '*', no_proxy: '*', NODE_EXTRA_CA_CERTS: caFile },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end(JSON.stringify(request));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill();
        reject(new Error(`node-mailjet client did not finish: ${stderr}`));
      }, 30_000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0, stderr);
    const out = JSON.parse(stdout);
    assert.equal(out.error, undefined, stdout);
    assert.equal(out.send.status, 200);
    const [result] = out.send.body.Messages;
    assert.equal(result.Status, 'success');
    assert.equal(result.CustomID, 'order-1');
    assert.deepEqual(Object.keys(result), ['Status', 'CustomID', 'To', 'Cc', 'Bcc']);
    const [to] = result.To;
    assert.deepEqual(Object.keys(to), ['Email', 'MessageUUID', 'MessageID', 'MessageHref']);
    assert.equal(to.Email, 'ada@rcpt.test');
    assert.match(to.MessageUUID, UUID);
    assert.ok(Number.isSafeInteger(to.MessageID) && to.MessageID > 0);
    assert.equal(to.MessageHref, `https://127.0.0.1:${port}/v3/REST/message/${to.MessageID}`);
    assert.equal(result.Bcc.length, 1);
    assert.notEqual(result.Bcc[0].MessageID, to.MessageID);
    // The client read both recipients' status back through /v3/REST/message/{id}.
    assert.equal(out.messages.length, 1);
    assert.equal(out.messages[0].body.Data[0].ID, to.MessageID);
    assert.equal(out.messages[0].body.Data[0].CustomID, 'order-1');
    assert.match(out.messages[0].body.Data[0].Status, /^(queued|sent)$/);

    d.runner.start();
    // One transaction carries both recipients (same destination domain).
    const delivered = await sink.waitForMessages(1, 15_000);
    assert.ok(delivered.every((d) => d.tls), 'it travelled over TLS');
    assert.deepEqual(delivered.flatMap((d) => d.rcptTo.map((p) => p.address)).sort(), ['ada@rcpt.test', 'audit@rcpt.test']);
    assert.ok(delivered[0].mailFrom.params.REQUIRETLS, 'MAIL FROM carried REQUIRETLS (RFC 8689)');
    const data = delivered[0].data;
    const verdict = await dkimVerify(data, { resolver: nodeStyleResolver(resolver) as never, strict: true });
    assert.deepEqual(
      verdict.results.map((v: { status: { result: string } }) => v.status.result),
      ['pass', 'pass'],
    );
    const headers = parseMessage(data).headers;
    assert.equal(fieldsNamed(headers, 'Bcc').length, 0, 'Bcc never travels');
    const text = data.toString('latin1');
    assert.match(text, /^Subject: Welcome, Ada$/m);
    assert.match(text, /Hello Ada, your code is 4711\./);
    assert.match(text, /^X-Order: A-1$/m);
    assert.match(text, /filename=terms\.txt/);
    assert.match(text, /^Content-Id: <logo>$/im);
    assert.match(text, new RegExp(`^Message-ID: <${(await r.data.store.sendApi.byRecipientId(to.MessageUUID))!.messageId}@client\\.test>$`, 'm'));
    // RequireTLS went through to the queue (RFC 8689).
    const ref = await r.data.store.sendApi.byRecipientId(to.MessageUUID);
    assert.equal((await r.data.store.getMessage(ref!.messageId))!.requireTls, true);
    assert.ok(r.nudges.count >= 1, 'the runner was nudged');
  } finally {
    await d.close();
    await r.close();
    rmSync(caDir, { recursive: true, force: true });
  }
});

test('every kind of bad input gets a Mailjet-shaped error naming what is wrong, and nothing is queued', async () => {
  const r = await sendApiRig();
  try {
    const big = Buffer.alloc(15 * 1024 * 1024 + 1, 1).toString('base64');
    // [what, payload, HTTP status, ErrorCode, ErrorRelatedTo entry, global error?]
    const cases: Array<[string, unknown, number, string, string | undefined, boolean]> = [
      ['malformed JSON', '{"Messages": [', 400, 'mj-0002', undefined, true],
      ['empty body', '', 400, 'mj-0002', undefined, true],
      ['a JSON array', [], 400, 'mj-0004', undefined, true],
      ['no Messages', {}, 400, 'mj-0003', 'Messages', true],
      ['empty Messages', { Messages: [] }, 400, 'mj-0007', 'Messages', true],
      ['51 messages', { Messages: Array.from({ length: 51 }, () => message()) }, 400, 'mj-0008', 'Messages', true],
      ['unknown root property', { Messages: [message()], Sandbox: true }, 400, 'mj-0004', 'Sandbox', true],
      ['SandboxMode of the wrong type', { Messages: [message()], SandboxMode: 'yes' }, 400, 'mj-0004', 'SandboxMode', true],
      ['To in Globals', { Globals: { To: [{ Email: 'a@rcpt.test' }] }, Messages: [message()] }, 400, 'mj-0004', 'Globals.To', true],
      ['a message that is not an object', { Messages: ['hello'] }, 400, 'mj-0004', 'Messages', false],
      ['missing From', { Messages: [message({ From: undefined })] }, 400, 'mj-0003', 'From', false],
      ['null From', { Messages: [message({ From: null })] }, 400, 'mj-0003', 'From', false],
      ['To of the wrong type', { Messages: [message({ To: 'ada@rcpt.test' })] }, 400, 'mj-0004', 'To', false],
      ['empty To', { Messages: [message({ To: [] })] }, 400, 'mj-0007', 'To', false],
      ['invalid address', { Messages: [message({ To: [{ Email: 'not-an-address' }] })] }, 400, 'mj-0013', 'To[0].Email', false],
      ['address without a dot in its domain', { Messages: [message({ Cc: [{ Email: 'root@localhost' }] })] }, 400, 'mj-0013', 'Cc[0].Email', false],
      ['non-ASCII address', { Messages: [message({ To: [{ Email: 'jürgen@rcpt.test' }] })] }, 400, 'mj-0013', 'To[0].Email', false],
      ['line break in an address', { Messages: [message({ To: [{ Email: 'a@rcpt.test\r\nRCPT TO:<b@evil.test>' }] })] }, 400, 'mj-0013', 'To[0].Email', false],
      ['empty address', { Messages: [message({ To: [{ Email: '' }] })] }, 400, 'mj-0012', 'To[0].Email', false],
      ['line break in a display name', { Messages: [message({ To: [{ Email: 'a@rcpt.test', Name: 'Ada\r\nBcc: x@evil.test' }] })] }, 400, 'mj-0005', 'To[0].Name', false],
      ['line break in a header value', { Messages: [message({ Headers: { 'X-Tag': 'a\r\nBcc: x@evil.test' } })] }, 400, 'mj-0005', 'Headers["X-Tag"]', false],
      ['line break in a header name', { Messages: [message({ Headers: { 'X-Tag\r\nBcc': 'x@evil.test' } })] }, 400, 'mj-0005', 'Headers["X-Tag\\r\\nBcc"]', false],
      ['a forbidden header', { Messages: [message({ Headers: { 'DKIM-Signature': 'v=1' } })] }, 400, 'send-0011', 'Headers["DKIM-Signature"]', false],
      ['Bcc as a header', { Messages: [message({ Headers: { bcc: 'x@evil.test' } })] }, 400, 'send-0011', 'Headers["bcc"]', false],
      ['line break in the Subject', { Messages: [message({ Subject: 'Hi\r\nBcc: x@evil.test' })] }, 400, 'mj-0005', 'Subject', false],
      ['no content', { Messages: [message({ TextPart: undefined })] }, 400, 'send-0003', 'TextPart', false],
      ['a TemplateID', { Messages: [message({ TemplateID: 12 })] }, 400, 'send-0010', 'TemplateID', false],
      ['51 recipients', { Messages: [message({ Cc: Array.from({ length: 50 }, (_, i) => ({ Email: `c${i}@rcpt.test` })) })] }, 400, 'send-0015', 'Cc', false],
      ['an unknown message property', { Messages: [message({ HtmlBody: '<p>x</p>' })] }, 400, 'mj-0004', 'HtmlBody', false],
      ['TextPart of the wrong type', { Messages: [message({ TextPart: 42 })] }, 400, 'mj-0004', 'TextPart', false],
      ['invalid base64', { Messages: [message({ Attachments: [{ ContentType: 'text/plain', Filename: 'a.txt', Base64Content: 'not base64!' }] })] }, 400, 'mj-0004', 'Attachments[0].Base64Content', false],
      ['a header in ContentType', { Messages: [message({ Attachments: [{ ContentType: 'text/plain\r\nX-Evil: 1', Filename: 'a.txt', Base64Content: 'YQ==' }] })] }, 400, 'mj-0005', 'Attachments[0].ContentType', false],
      ['attachments over 15 MB decoded', { Messages: [message({ Attachments: [{ ContentType: 'application/octet-stream', Filename: 'big.bin', Base64Content: big }] })] }, 400, 'mj-0011', 'Attachments', false],
      ['open tracking', { Messages: [message({ TrackOpens: 'enabled' })] }, 400, 'mj-0005', 'TrackOpens', false],
      ['a variable with no value', { Messages: [message({ TemplateLanguage: true, TextPart: 'Hi {{var:name}}' })] }, 400, 'mj-0003', 'Variables.name', false],
      ['template statements', { Messages: [message({ TemplateLanguage: true, TextPart: '{% if var:x %}x{% endif %}' })] }, 400, 'mj-0005', 'TextPart', false],
      ['TemplateErrorDeliver without TemplateLanguage', { Messages: [message({ TemplateErrorDeliver: true })] }, 400, 'send-0016', 'TemplateLanguage', false],
      ['an unverified sender', { Messages: [message({ From: { Email: 'ceo@bank.test' } })] }, 403, 'send-0008', 'From', false],
      ['an unverified Sender', { Messages: [message({ Sender: { Email: 'ceo@bank.test' } })] }, 403, 'send-0007', 'Sender', false],
    ];
    for (const [what, payload, status, code, related, global] of cases) {
      const response = await post(r, payload);
      assert.equal(response.status, status, `${what}: ${response.body}`);
      const body = response.json();
      if (global) assertMailjetError(body, code, status, related);
      else {
        assert.equal(body.Messages.length, 1, what);
        assert.equal(body.Messages[0].Status, 'error', what);
        assertMailjetError(body.Messages[0].Errors.find((e: { ErrorCode: string }) => e.ErrorCode === code) ?? body.Messages[0].Errors[0], code, status, related);
      }
      assert.equal(await queuedCount(r.data), 0, `${what}: nothing is queued`);
    }

    const plain = await r.app.inject({ method: 'POST', url: '/v3.1/send', headers: { authorization: basicAuth(r.sender), 'content-type': 'text/plain' }, payload: 'hello' });
    assert.equal(plain.statusCode, 415);
    assertMailjetError(plain.json(), 'mj-0002', 415);

    const huge = Buffer.alloc(25 * 1024 * 1024, 0x20);
    const tooLarge = await post(r, huge);
    assert.equal(tooLarge.status, 413);
    assertMailjetError(tooLarge.json(), 'mj-0011', 413);

    const noAuth = await post(r, { Messages: [message()] }, { key: null });
    assert.equal(noAuth.status, 401);
    assert.equal(noAuth.headers['www-authenticate'], 'Basic realm="lacre"');
    assert.equal((await post(r, { Messages: [message()] }, { key: r.reader })).status, 403, 'a read-only key cannot send');
    assert.equal((await post(r, { Messages: [message()] }, { key: r.admin })).status, 403, 'admin does not imply send');
    const longKey = await post(r, { Messages: [message()] }, { headers: { 'idempotency-key': 'k'.repeat(256) } });
    assert.equal(longKey.status, 400);
    assert.match(longKey.json().ErrorMessage, /Idempotency-Key/);

    assert.equal(await queuedCount(r.data), 0);
    assert.equal(r.nudges.count, 0);
  } finally {
    await r.close();
  }
});

test('a batch with one bad message queues the others, in order, and answers 400 listing each outcome', async () => {
  const r = await sendApiRig();
  try {
    const response = await post(r, {
      Messages: [message({ CustomID: 'one' }), message({ TextPart: undefined, CustomID: 'two' }), message({ To: [{ Email: 'b@rcpt.test' }, { Email: 'c@rcpt.test' }], CustomID: 'three' })],
    });
    assert.equal(response.status, 400);
    const [one, two, three] = response.json().Messages;
    assert.equal(one.Status, 'success');
    assert.equal(one.CustomID, 'one');
    assert.deepEqual(two, { Errors: [two.Errors[0]], Status: 'error' });
    assertMailjetError(two.Errors[0], 'send-0003', 400, 'HTMLPart');
    assert.equal(three.Status, 'success');
    assert.deepEqual(three.To.map((t: { Email: string }) => t.Email), ['b@rcpt.test', 'c@rcpt.test']);
    const ids = [one.To[0].MessageID, ...three.To.map((t: { MessageID: number }) => t.MessageID)];
    assert.equal(new Set(ids).size, 3, 'one MessageID per recipient');
    assert.equal(await queuedCount(r.data), 3);
    assert.equal(r.nudges.count, 1);

    const ok = await post(r, { Messages: [message()] });
    assert.equal(ok.status, 200);
    assert.equal(ok.json().Messages[0].Status, 'success');
  } finally {
    await r.close();
  }
});

test('Globals apply to every message: scalars overridden, objects merged, arrays appended; names match in any case', async () => {
  const r = await sendApiRig();
  try {
    const response = await post(r, {
      globals: { from: { email: 'news@shop.test', name: 'News' }, Subject: 'Default subject', Headers: { 'X-A': 'global', 'X-B': 'global' }, Cc: [{ Email: 'cc1@rcpt.test' }] },
      MESSAGES: [
        { To: [{ Email: 'a@rcpt.test' }], textpart: 'first', Headers: { 'X-B': 'mine' }, Cc: [{ Email: 'cc2@rcpt.test' }] },
        { To: [{ Email: 'b@rcpt.test' }], TextPart: 'second', Subject: 'Own subject' },
      ],
    });
    assert.equal(response.status, 200, response.body);
    const [first, second] = response.json().Messages;
    assert.deepEqual(first.Cc.map((c: { Email: string }) => c.Email), ['cc1@rcpt.test', 'cc2@rcpt.test']);
    const content = async (recipientId: string) => {
      const ref = await r.data.store.sendApi.byRecipientId(recipientId);
      return (await r.data.store.messageContent(ref!.messageId))!.toString('latin1');
    };
    const a = await content(first.To[0].MessageUUID);
    assert.match(a, /^From: News <news@shop\.test>$/m);
    assert.match(a, /^Subject: Default subject$/m);
    assert.match(a, /^X-A: global$/m);
    assert.match(a, /^X-B: mine$/m);
    assert.match(a, /^Cc: cc1@rcpt\.test, cc2@rcpt\.test$/m);
    const b = await content(second.To[0].MessageUUID);
    assert.match(b, /^Subject: Own subject$/m);
    assert.match(b, /^Cc: cc1@rcpt\.test$/m);
  } finally {
    await r.close();
  }
});

test('Variables fill {{var:name}} and {{var:name:"default"}} when TemplateLanguage is true, and are left alone otherwise', async () => {
  const r = await sendApiRig();
  try {
    const response = await post(r, {
      Messages: [
        message({
          TemplateLanguage: true,
          Variables: { name: 'Ada', count: 3, vip: true },
          Subject: 'Hello {{var:name}}',
          TextPart: 'You have {{ var:count }} {{var:thing:"items"}} waiting, {{var:name}}. VIP: {{var:vip}}. {{var:empty:""}}End.',
          HTMLPart: '<p>Dear {{var:name}}</p>',
        }),
        message({ Variables: { name: 'Ada' }, Subject: 'Literal {{var:name}}', TextPart: 'Kept as {{var:name}}.' }),
      ],
    });
    assert.equal(response.status, 200, response.body);
    const [filled, literal] = response.json().Messages;
    const content = async (recipientId: string) => {
      const ref = await r.data.store.sendApi.byRecipientId(recipientId);
      return (await r.data.store.messageContent(ref!.messageId))!.toString('latin1');
    };
    const a = await content(filled.To[0].MessageUUID);
    assert.match(a, /^Subject: Hello Ada$/m);
    assert.match(a, /You have 3 items waiting, Ada\. VIP: true\. End\./);
    assert.match(a, /<p>Dear Ada<\/p>/);
    const b = await content(literal.To[0].MessageUUID);
    assert.match(b, /^Subject: Literal \{\{var:name\}\}$/m);
    assert.match(b, /Kept as \{\{var:name\}\}\./);
  } finally {
    await r.close();
  }
});

test('attachments and inline attachments arrive in the MIME structure; Bcc recipients are queued but never written in', async () => {
  const r = await sendApiRig();
  try {
    const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
    const response = await post(r, {
      Messages: [
        message({
          Bcc: [{ Email: 'hidden@rcpt.test' }],
          HTMLPart: '<p>Logo: <img src="cid:logo1"> and <img src="cid:badge.png"></p>',
          Attachments: [{ ContentType: 'text/csv; charset=utf-8', Filename: 'report.csv', Base64Content: Buffer.from('a,b\n1,2\n').toString('base64') }],
          InlinedAttachments: [
            { ContentType: 'image/png', Filename: 'logo.png', ContentID: 'logo1', Base64Content: png.toString('base64') },
            { ContentType: 'image/png', Filename: 'badge.png', Base64Content: png.toString('base64') },
          ],
        }),
      ],
    });
    assert.equal(response.status, 200, response.body);
    const [result] = response.json().Messages;
    assert.equal(result.Bcc[0].Email, 'hidden@rcpt.test');
    const ref = await r.data.store.sendApi.byRecipientId(result.To[0].MessageUUID);
    const view = await r.data.store.getMessage(ref!.messageId);
    assert.deepEqual(view!.recipients.map((x) => x.address), ['ada@rcpt.test', 'hidden@rcpt.test']);
    const content = (await r.data.store.messageContent(ref!.messageId))!;
    const text = content.toString('latin1');
    assert.equal(fieldsNamed(parseMessage(content).headers, 'Bcc').length, 0);
    assert.doesNotMatch(text, /hidden@rcpt\.test/);
    assert.match(text, /^Content-Type: multipart\/mixed;/m);
    assert.match(text, /^Content-Type: multipart\/related;/m);
    assert.match(text, /^Content-Type: text\/csv; charset=utf-8; name=report\.csv$/m);
    assert.match(text, /^Content-Disposition: attachment; filename=report\.csv$/m);
    assert.ok(text.includes(Buffer.from('a,b\n1,2\n').toString('base64')));
    assert.match(text, /^Content-Id: <logo1>$/im);
    assert.match(text, /^Content-Id: <badge\.png>$/im, 'the Filename is the ContentID when none is given');
    assert.match(text, /^Content-Disposition: inline; filename=logo\.png$/m);
    assert.ok(text.includes(png.toString('base64')));
    assert.match(text, /^MIME-Version: 1\.0$/m);
  } finally {
    await r.close();
  }
});

test('RequireTLS is stored with the message; without it the message may travel as the TLS policy allows', async () => {
  const r = await sendApiRig();
  try {
    const response = await post(r, { Globals: { RequireTLS: true }, Messages: [message(), message({ RequireTLS: false })] });
    assert.equal(response.status, 200, response.body);
    const flags = [];
    for (const result of response.json().Messages) {
      const ref = await r.data.store.sendApi.byRecipientId(result.To[0].MessageUUID);
      const view = await r.data.store.getMessage(ref!.messageId);
      flags.push(view!.requireTls);
      assert.equal(view!.metadata.apiKeyId, r.sender.apiKey);
      assert.equal(view!.source, 'api');
    }
    assert.deepEqual(flags, [true, false]);
  } finally {
    await r.close();
  }
});

test('SandboxMode validates and composes every message but queues nothing', async () => {
  const r = await sendApiRig();
  try {
    const response = await post(r, { SandboxMode: true, Messages: [message({ CustomID: 'dry' }), message({ From: { Email: 'x@bank.test' } })] });
    assert.equal(response.status, 400);
    const [ok, refused] = response.json().Messages;
    assert.deepEqual(ok, {
      Status: 'success',
      CustomID: 'dry',
      To: [{ Email: 'ada@rcpt.test', MessageUUID: '', MessageID: 0, MessageHref: ok.To[0].MessageHref }],
      Cc: [],
      Bcc: [],
    });
    assert.match(ok.To[0].MessageHref, /\/v3\/REST\/message\/0$/);
    assertMailjetError(refused.Errors[0], 'send-0008', 403, 'From');
    assert.equal(await queuedCount(r.data), 0);
    assert.equal(r.nudges.count, 0);
  } finally {
    await r.close();
  }
});

test('a suppressed recipient fails its message with the reason, and the message is not queued for anyone', async () => {
  const r = await sendApiRig();
  try {
    await r.data.store.addSuppression({ address: 'gone@rcpt.test', reason: '550 5.1.1 no such user', messageId: null, at: Date.now() });
    const response = await post(r, { Messages: [message({ Cc: [{ Email: 'gone@rcpt.test' }] })] });
    assert.equal(response.status, 400);
    const error = response.json().Messages[0].Errors[0];
    assertMailjetError(error, 'lacre-0001', 400, 'Cc[0].Email');
    assert.match(error.ErrorMessage, /5\.1\.1 no such user/);
    assert.equal(await queuedCount(r.data), 0);
  } finally {
    await r.close();
  }
});

test('a retried request with the same Idempotency-Key gets the first answer byte for byte and sends nothing new', async () => {
  const r = await sendApiRig();
  try {
    const body = JSON.stringify({ Messages: [message({ CustomID: 'once' })] });
    const headers = { 'idempotency-key': 'order-42-confirmation' };
    const first = await post(r, body, { headers });
    assert.equal(first.status, 200);
    const again = await post(r, body, { headers });
    assert.equal(again.status, 200);
    assert.equal(again.body, first.body, 'the same bytes');
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(await queuedCount(r.data), 1);
    assert.equal(r.nudges.count, 1);

    // A failed request is replayed as it was, too.
    const bad = JSON.stringify({ Messages: [message({ TextPart: undefined })] });
    const badFirst = await post(r, bad, { headers: { 'idempotency-key': 'bad-one' } });
    const badAgain = await post(r, bad, { headers: { 'idempotency-key': 'bad-one' } });
    assert.equal(badFirst.status, 400);
    assert.equal(badAgain.status, 400);
    assert.equal(badAgain.body, badFirst.body);

    const different = await post(r, JSON.stringify({ Messages: [message({ CustomID: 'other' })] }), { headers });
    assert.equal(different.status, 422);
    assert.match(different.json().ErrorMessage, /different request/);

    // Keys belong to the API key that used them.
    const otherKey = await post(r, body, { headers, key: r.otherSender });
    assert.equal(otherKey.status, 200);
    assert.notEqual(otherKey.body, first.body);
    assert.equal(await queuedCount(r.data), 2);

    // Concurrent duplicates: exactly one runs; the others wait their turn or are told it is running.
    const concurrent = await Promise.all(Array.from({ length: 5 }, () => post(r, JSON.stringify({ Messages: [message({ CustomID: 'race' })] }), { headers: { 'idempotency-key': 'race' } })));
    const statuses = concurrent.map((c) => c.status).sort();
    assert.ok(statuses.every((s) => s === 200 || s === 409), statuses.join());
    const bodies = new Set(concurrent.filter((c) => c.status === 200).map((c) => c.body));
    assert.equal(bodies.size, 1, 'every 200 is the same answer');
    assert.equal(await queuedCount(r.data), 3, 'the racing requests queued one message');

    // After 24 hours the key is forgotten and a request with it runs again.
    r.clock.now += 24 * 60 * 60 * 1000 + 1;
    const later = await post(r, body, { headers });
    assert.equal(later.status, 200);
    assert.notEqual(later.body, first.body);
    assert.equal(await queuedCount(r.data), 4);
  } finally {
    await r.close();
  }
});

test('GET /openapi.json describes the API without credentials, with the request schema that validates /v3.1/send', async () => {
  const r = await sendApiRig();
  try {
    const response = await r.app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(response.statusCode, 200);
    assert.match(String(response.headers['content-type']), /^application\/json/);
    const doc = JSON.parse(response.body);
    assert.equal(doc.openapi, '3.1.0');
    const operation = doc.paths['/v3.1/send'].post;
    assert.deepEqual(operation.requestBody.content['application/json'].schema, { $ref: '#/components/schemas/SendRequest' });
    const request = doc.components.schemas.SendRequest;
    assert.equal(request.properties.Messages.maxItems, 50);
    assert.deepEqual(request.properties.Messages.items, { $ref: '#/components/schemas/Message' });
    const messageSchema = doc.components.schemas.Message;
    assert.deepEqual(messageSchema.required.sort(), ['From', 'To']);
    assert.equal(messageSchema.additionalProperties, false);
    for (const property of ['From', 'To', 'Cc', 'Bcc', 'Subject', 'TextPart', 'HTMLPart', 'Attachments', 'InlinedAttachments', 'Headers', 'Variables', 'CustomID', 'EventPayload', 'RequireTLS']) {
      assert.ok(property in messageSchema.properties, property);
    }
    assert.deepEqual(messageSchema.properties.To.items, { $ref: '#/components/schemas/EmailAddress' });
    assert.equal(doc.components.schemas.EmailAddress.$schema, undefined);
    assert.ok(doc.paths['/v3/REST/message/{MessageID}'].get);
    assert.ok(doc.paths['/v1/messages/{id}'].get);
    assert.deepEqual(doc.components.securitySchemes.basic, { type: 'http', scheme: 'basic' });
  } finally {
    await r.close();
  }
});

test('over a socket: display names that carry addresses still compose to one verified mailbox; NUL, other addresses and over-long lines are refused', async () => {
  const r = await sendApiRig();
  await r.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = r.app.server.address() as import('node:net').AddressInfo;
  const send = async (m: Record<string, unknown>) => {
    const response = await fetch(`http://127.0.0.1:${port}/v3.1/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: basicAuth(r.sender) },
      body: JSON.stringify({ Messages: [message(m)] }),
    });
    return { status: response.status, body: (await response.json()) as { Messages: Array<{ Status: string; Errors?: Array<Record<string, unknown>>; To: Array<{ MessageUUID: string }> }> } };
  };
  try {
    // The composed From is parsed strictly too (compose is shared with SMTP): the names are quoted,
    // so the only mailbox is the verified one, as every reader sees it.
    for (const Name of ['<ceo@bank.test>', 'orders@shop.test ceo@bank.test', 'x <ceo@bank.test>, y']) {
      const sent = await send({ From: { Email: 'orders@shop.test', Name } });
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
      const ref = await r.data.store.sendApi.byRecipientId(sent.body.Messages[0].To[0].MessageUUID);
      const from = fieldValue(fieldsNamed(parseMessage((await r.data.store.messageContent(ref!.messageId))!).headers, 'From')[0]);
      const list = emailAddresses.parseAddressList({ input: from, startAt: 'mailbox-list', rfc6532: true });
      assert.deepEqual(list?.map((m) => (m.type === 'mailbox' ? m.address : m.name)), ['orders@shop.test'], from);
    }
    // The MIME builder folds a long value with no space in it onto a line of its own after the
    // name: 997 characters make a line of 998 octets, which passes.
    const edge = await send({ Headers: { 'X-Tag': 'h'.repeat(997) } });
    assert.equal(edge.status, 200, JSON.stringify(edge.body));
    const queued = await queuedCount(r.data);
    const cases: Array<[string, Record<string, unknown>, number, string, string]> = [
      ['two addresses in Email', { From: { Email: 'orders@shop.test ceo@bank.test' } }, 400, 'mj-0013', 'From.Email'],
      ['an address of another domain', { From: { Email: 'ceo@bank.test', Name: 'orders@shop.test' } }, 403, 'send-0008', 'From'],
      ['NUL in TextPart', { TextPart: 'before\0after' }, 400, 'mj-0005', 'TextPart'],
      ['NUL in HTMLPart', { HTMLPart: '<p>\0</p>' }, 400, 'mj-0005', 'HTMLPart'],
      ['NUL from a variable', { TemplateLanguage: true, TextPart: 'Hi {{var:name}}', Variables: { name: 'a\0b' } }, 400, 'mj-0005', 'TextPart'],
      ['NUL in a header value', { Headers: { 'X-Tag': 'a\0b' } }, 400, 'mj-0005', 'Headers["X-Tag"]'],
      // Within the value limit (998), but the folded line is 999 octets once encoded: compose finds
      // it in the built bytes (RFC 5322 §2.1.1).
      ['a header line over 998 octets after encoding', { Headers: { 'X-Tag': 'h'.repeat(998) } }, 400, 'mj-0005', ''],
    ];
    for (const [what, m, status, code, related] of cases) {
      const response = await send(m);
      assert.equal(response.status, status, `${what}: ${JSON.stringify(response.body)}`);
      const [error] = response.body.Messages[0].Errors!;
      assertMailjetError(error, code, status, related === '' ? undefined : related);
    }
    assert.equal(await queuedCount(r.data), queued, 'nothing refused was queued');
  } finally {
    await r.close();
  }
});
