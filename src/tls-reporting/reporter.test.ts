import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import libmime from 'libmime';
import { TestCA, type CertKind } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { Resolver } from '../dns/resolver.ts';
import { TlsRptTable } from '../store/tlsrpt-table.ts';
import type { ReportPolicy } from '../tls-policy/evidence.ts';
import { TlsReportCollector } from './collector.ts';
import { nextRunAt, spreadOffsetMs, SPREAD_MINUTES, TlsReporter, type ReportMessage, type TlsReporterOptions } from './reporter.ts';
import { rfc8460Validator } from './rfc8460-schema.ts';
import { waitFor } from '../../test/harness/wait.ts';

const DOMAIN = 'rcpt-probe.test';
const DAY = '2026-04-01';
const AT = Date.UTC(2026, 3, 1, 12, 0, 0);
const NOW = Date.UTC(2026, 3, 2, 3, 0, 0);
const STS: ReportPolicy = { type: 'sts', strings: ['version: STSv1', 'mode: enforce', `mx: mx1.${DOMAIN}`, 'max_age: 86400'], mxHosts: [`mx1.${DOMAIN}`] };
const RUA_HOST = 'rua.receiver.test';

let ca: TestCA | undefined;
async function testCa(): Promise<TestCA> {
  ca ??= await TestCA.create();
  return ca;
}

interface Received {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  servername: string | false | null | undefined;
}

/** A loopback HTTPS rua receiver with a test-CA certificate; answers as scripted per path. */
async function startReceiver(options: { kind?: CertKind } = {}) {
  const cert = await (await testCa()).issue({ names: [RUA_HOST], kind: options.kind });
  const requests: Received[] = [];
  let answer: (path: string) => { status: number; headers?: Record<string, string> } = () => ({ status: 200 });
  const server = https.createServer({ key: cert.keyPem, cert: cert.chainPem, minVersion: 'TLSv1.2' }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
        servername: (req.socket as import('node:tls').TLSSocket).servername,
      });
      const a = answer(req.url ?? '');
      res.writeHead(a.status, a.headers);
      res.end('thanks');
    });
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (path: string) => `https://${RUA_HOST}:${port}${path}`,
    requests,
    answer: (fn: typeof answer) => (answer = fn),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Env {
  data: TempData;
  table: TlsRptTable;
  dns: FakeDnsServer;
  submitted: ReportMessage[];
  logs: Array<{ level: string; obj: object; msg?: string }>;
  reporter: (over?: Partial<TlsReporterOptions>) => TlsReporter;
  seed: (domain?: string, at?: number) => Promise<void>;
  close: () => Promise<void>;
}

async function setup(): Promise<Env> {
  const data = await openTempData();
  const table = new TlsRptTable(data.store.engine, data.sealer);
  const dns = await FakeDnsServer.start();
  const resolver = new Resolver({ servers: [dns.address], timeoutMs: 1000, tries: 1 });
  const submitted: ReportMessage[] = [];
  const logs: Env['logs'] = [];
  const log = (level: string) => (obj: object, msg?: string) => logs.push({ level, obj, msg });
  const root = await testCa();
  return {
    data,
    table,
    dns,
    submitted,
    logs,
    reporter: (over = {}) =>
      new TlsReporter({
        table,
        resolver,
        submit: async (m) => {
          submitted.push(m);
        },
        organizationName: 'Lacre at mta.lacre.test',
        submitter: 'mta.lacre.test',
        contact: 'mailto:tlsrpt@lacre.test',
        from: 'tlsrpt@lacre.test',
        ca: [root.certPem],
        // The SSRF guard is the caller's (events/url-guard in production); here every rua host is the loopback receiver.
        vetHttps: async (url) => ({ host: url.hostname, addresses: ['127.0.0.1'] }),
        httpsTimeoutMs: 5000,
        clock: () => NOW,
        logger: { info: log('info'), warn: log('warn'), debug: log('debug') },
        ...over,
      }),
    seed: async (domain = DOMAIN, at = AT) => {
      const collector = new TlsReportCollector({ table, flushIntervalMs: 0 });
      for (let i = 0; i < 4; i++) collector.record({ domain, policy: STS, success: true, at });
      collector.record({ domain, policy: STS, success: false, failure: 'certificate-expired', detail: 'CERT_HAS_EXPIRED', mxHost: `mx1.${domain}`, receivingIp: '192.0.2.25', at });
      await collector.close();
    },
    close: async () => {
      await dns.close();
      await data.close();
    },
  };
}

/** A small MIME reader for the test (libmime for header fields): top headers and first-level parts. */
function parseMime(raw: Buffer) {
  const text = raw.toString('latin1');
  const split = (s: string) => {
    const i = s.indexOf('\r\n\r\n');
    return { headers: libmime.decodeHeaders(s.slice(0, i)), body: s.slice(i + 4) };
  };
  const top = split(text);
  const type = libmime.parseHeaderValue(top.headers['content-type'][0]);
  const boundary = type.params.boundary;
  const parts = top.body
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((p) => split(p.replace(/^\r\n/, '')));
  return { headers: top.headers, type, parts };
}

test('a mailto rua gets a multipart/report; report-type=tlsrpt mail with the gzipped report (RFC 8460 §5.3)', async () => {
  const env = await setup();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls%2Breports@rcpt-probe.test' });
    const [outcome] = await env.reporter().runDay(DAY);
    assert.equal(outcome.state, 'sent');
    assert.equal(env.submitted.length, 1);
    const [message] = env.submitted;
    assert.equal(message.envelopeSender, 'tlsrpt@lacre.test');
    assert.deepEqual(message.recipients, ['tls+reports@rcpt-probe.test']);

    const mime = parseMime(message.content);
    const reportId = outcome.state === 'sent' ? outcome.reportId : '';
    assert.match(reportId, /^[0-9a-f]{32}$/);
    assert.equal(mime.type.value, 'multipart/report');
    assert.equal(mime.type.params['report-type'], 'tlsrpt');
    assert.equal(mime.headers.from[0], 'tlsrpt@lacre.test');
    assert.equal(mime.headers.to[0], 'tls+reports@rcpt-probe.test');
    assert.equal(mime.headers.subject[0], `Report Domain: ${DOMAIN} Submitter: mta.lacre.test Report-ID: <${reportId}>`);
    assert.equal(mime.headers['tls-report-domain'][0], DOMAIN);
    assert.equal(mime.headers['tls-report-submitter'][0], 'mta.lacre.test');
    assert.match(message.content.toString('latin1'), /^TLS-Report-Domain: /m, 'the RFC spelling of the field name');
    assert.equal(mime.parts.length, 2);
    assert.match(mime.parts[0].headers['content-type'][0], /^text\/plain/);

    const attachment = mime.parts[1];
    assert.equal(libmime.parseHeaderValue(attachment.headers['content-type'][0]).value, 'application/tlsrpt+gzip');
    const disposition = libmime.parseHeaderValue(attachment.headers['content-disposition'][0]);
    assert.equal(disposition.value, 'attachment');
    const begin = Date.UTC(2026, 3, 1) / 1000;
    assert.equal(disposition.params.filename, `mta.lacre.test!${DOMAIN}!${begin}!${begin + 86399}!${reportId}.json.gz`);
    assert.equal(attachment.headers['content-transfer-encoding'][0].toLowerCase(), 'base64');
    const report = JSON.parse(gunzipSync(Buffer.from(attachment.body, 'base64')).toString('utf8'));
    const validate = rfc8460Validator();
    assert.ok(validate(report), JSON.stringify(validate.errors));
    assert.equal(report['report-id'], reportId);
    assert.equal(report.policies[0].policy['policy-domain'], DOMAIN);
    assert.deepEqual(report.policies[0].summary, { 'total-successful-session-count': 4, 'total-failure-session-count': 1 });

    const row = await env.table.report(DAY, env.table.domainHash(DOMAIN));
    assert.equal(row!.state, 'sent');
    assert.deepEqual(row!.detail!.delivered, ['mailto:tls+reports@rcpt-probe.test']);
    // Logs name the domain by a keyed tag only.
    assert.ok(!JSON.stringify(env.logs).includes(DOMAIN), JSON.stringify(env.logs));
  } finally {
    await env.close();
  }
});

test('an https rua gets the gzipped report POSTed as application/tlsrpt+gzip over verified TLS', async () => {
  const env = await setup();
  const receiver = await startReceiver();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: `v=TLSRPTv1; rua=${receiver.url('/tlsrpt?k=1')}` });
    const [outcome] = await env.reporter().runDay(DAY);
    assert.equal(outcome.state, 'sent', JSON.stringify(outcome));
    assert.equal(receiver.requests.length, 1);
    const [request] = receiver.requests;
    assert.equal(request.method, 'POST');
    assert.equal(request.url, '/tlsrpt?k=1');
    assert.equal(request.headers['content-type'], 'application/tlsrpt+gzip');
    assert.equal(request.servername, RUA_HOST, 'SNI names the rua host');
    assert.equal(request.headers.host, `${RUA_HOST}:${receiver.port}`);
    const report = JSON.parse(gunzipSync(request.body).toString('utf8'));
    assert.ok(rfc8460Validator()(report));
    assert.equal(env.submitted.length, 0);
  } finally {
    await receiver.close();
    await env.close();
  }
});

test('a 500 or a redirect is a failed delivery, retried on the next run without repeating what arrived', async () => {
  const env = await setup();
  const receiver = await startReceiver();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, {
      type: 'TXT',
      data: `v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test,${receiver.url('/broken')},${receiver.url('/moved')}`,
    });
    receiver.answer((path) =>
      path === '/broken' ? { status: 500 } : path === '/moved' ? { status: 302, headers: { location: receiver.url('/elsewhere') } } : { status: 200 },
    );
    const reporter = env.reporter();
    const [first] = await reporter.runDay(DAY);
    assert.equal(first.state, 'failed');
    assert.deepEqual(
      first.state === 'failed' && first.errors.map((e) => [e.uri, e.error]),
      [
        [receiver.url('/broken'), 'the receiver answered 500'],
        [receiver.url('/moved'), 'the receiver answered 302 (redirects are not followed)'],
      ],
    );
    assert.deepEqual(receiver.requests.map((r) => r.url), ['/broken', '/moved'], 'the redirect is not followed');
    assert.equal(env.submitted.length, 1);
    const row = await env.table.report(DAY, env.table.domainHash(DOMAIN));
    assert.deepEqual([row!.state, row!.attempts], ['failed', 1]);

    receiver.answer(() => ({ status: 204 }));
    const [second] = await reporter.runDay(DAY);
    assert.equal(second.state, 'sent');
    assert.equal(second.state === 'sent' && second.attempt, 2);
    assert.equal(second.state === 'sent' && first.state === 'failed' && second.reportId, first.state === 'failed' && first.reportId, 'the same report-id on retry');
    assert.deepEqual(receiver.requests.map((r) => r.url), ['/broken', '/moved', '/broken', '/moved']);
    assert.equal(env.submitted.length, 1, 'the mail that was queued is not queued again');
  } finally {
    await receiver.close();
    await env.close();
  }
});

test('a receiver whose certificate does not chain to a trusted root gets nothing', async () => {
  const env = await setup();
  const receiver = await startReceiver({ kind: 'self-signed' });
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: `v=TLSRPTv1; rua=${receiver.url('/tlsrpt')}` });
    const [outcome] = await env.reporter().runDay(DAY);
    assert.equal(outcome.state, 'failed');
    assert.match(outcome.state === 'failed' ? outcome.errors[0].error : '', /self[- ]signed/i);
    assert.equal(receiver.requests.length, 0);
  } finally {
    await receiver.close();
    await env.close();
  }
});

test('runDay is idempotent: a sent report is not sent again', async () => {
  const env = await setup();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    const reporter = env.reporter();
    assert.equal((await reporter.runDay(DAY))[0].state, 'sent');
    assert.deepEqual(await reporter.runDay(DAY), [{ day: DAY, domain: DOMAIN, state: 'skipped' }]);
    // Even a second reporter (another process) sees the report as done.
    assert.equal((await env.reporter().runDay(DAY))[0].state, 'skipped');
    assert.equal(env.submitted.length, 1);
  } finally {
    await env.close();
  }
});

test('no rua is recorded as no-rua and not asked again; a DNS failure is retried', async () => {
  const env = await setup();
  try {
    await env.seed('absent-probe.test');
    await env.seed('twice-probe.test');
    await env.seed('broken-probe.test');
    env.dns.add('_smtp._tls.twice-probe.test', { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:a@twice-probe.test' }, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:b@twice-probe.test' });
    env.dns.add('absent-probe.test', { type: 'A', address: '192.0.2.1' });
    env.dns.fail('_smtp._tls.broken-probe.test', 'SERVFAIL');
    const reporter = env.reporter();
    const outcomes = await reporter.runDay(DAY);
    const state = (d: string) => outcomes.find((o) => o.domain === d)?.state;
    assert.equal(state('absent-probe.test'), 'no-rua');
    assert.equal(state('twice-probe.test'), 'no-rua');
    assert.equal(state('broken-probe.test'), 'failed');
    for (const d of ['absent-probe.test', 'twice-probe.test']) {
      assert.equal((await env.table.report(DAY, env.table.domainHash(d)))!.state, 'no-rua');
    }
    env.dns.fail('_smtp._tls.broken-probe.test', null);
    env.dns.add('_smtp._tls.broken-probe.test', { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@broken-probe.test' });
    const again = await reporter.runDay(DAY);
    assert.deepEqual(again.map((o) => [o.domain, o.state]).sort(), [
      ['absent-probe.test', 'skipped'],
      ['broken-probe.test', 'sent'],
      ['twice-probe.test', 'skipped'],
    ]);
    assert.deepEqual(env.submitted.map((m) => m.recipients[0]), ['tls@broken-probe.test']);
  } finally {
    await env.close();
  }
});

test('retries stop after maxAttempts', async () => {
  const env = await setup();
  const receiver = await startReceiver();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: `v=TLSRPTv1; rua=${receiver.url('/down')}` });
    receiver.answer(() => ({ status: 503 }));
    const reporter = env.reporter({ maxAttempts: 2 });
    assert.equal((await reporter.runDay(DAY))[0].state, 'failed');
    assert.equal((await reporter.runDay(DAY))[0].state, 'failed');
    assert.equal((await reporter.runDay(DAY))[0].state, 'skipped');
    assert.equal(receiver.requests.length, 2);
    assert.equal((await env.table.report(DAY, env.table.domainHash(DOMAIN)))!.attempts, 2);
  } finally {
    await receiver.close();
    await env.close();
  }
});

test('a day that has not ended is not reported; buildReport shows a day without sending', async () => {
  const env = await setup();
  try {
    await env.seed();
    const reporter = env.reporter();
    await assert.rejects(reporter.runDay('2026-04-02'), /has not ended/);
    await assert.rejects(reporter.runDay('2026-4-1'), /not a day/);
    const report = await reporter.buildReport('RCPT-Probe.test.', DAY);
    assert.ok(rfc8460Validator()(report));
    assert.equal(report!.policies[0].policy['policy-domain'], DOMAIN);
    assert.equal(await reporter.buildReport('nothing-probe.test', DAY), null);
    assert.equal(await env.table.report(DAY, env.table.domainHash(DOMAIN)), null, 'building sends nothing and claims nothing');
    assert.equal(env.submitted.length, 0);
  } finally {
    await env.close();
  }
});

test('runDue catches up on recent days and deletes counts past retention', async () => {
  const env = await setup();
  try {
    await env.seed(DOMAIN, AT);
    await env.seed(DOMAIN, AT - 3 * 86_400_000);
    await env.seed(DOMAIN, AT - 40 * 86_400_000);
    await env.seed(DOMAIN, NOW); // today: not yet
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    let flushed = 0;
    const outcomes = await env.reporter({ flush: async () => void flushed++ }).runDue();
    assert.equal(flushed, 1);
    assert.deepEqual(outcomes.map((o) => [o.day, o.state]), [
      ['2026-03-29', 'sent'],
      ['2026-04-01', 'sent'],
    ]);
    assert.deepEqual(await env.table.daysWithCounts('2000-01-01', '2100-01-01'), ['2026-03-29', '2026-04-01', '2026-04-02']);
  } finally {
    await env.close();
  }
});

test('start() catches up on yesterday at once and stop() ends the schedule', async () => {
  const env = await setup();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    const reporter = env.reporter({ random: () => 0 });
    reporter.start();
    await reporter.idle();
    await reporter.stop();
    assert.equal((await env.table.report(DAY, env.table.domainHash(DOMAIN)))!.state, 'sent');
    assert.equal(env.submitted.length, 1);
  } finally {
    await env.close();
  }
});

test('the daily run is at a random minute after 00:00 UTC, within the spread', () => {
  const midnight = Date.UTC(2026, 3, 2);
  const offset = spreadOffsetMs(() => 0.5);
  assert.equal(offset % 60_000, 0);
  assert.ok(offset >= SPREAD_MINUTES.from * 60_000 && offset < SPREAD_MINUTES.to * 60_000);
  assert.equal(spreadOffsetMs(() => 0), SPREAD_MINUTES.from * 60_000);
  assert.equal(spreadOffsetMs(() => 0.999999), (SPREAD_MINUTES.to - 1) * 60_000);
  // Before today's slot: today; after it: tomorrow.
  assert.equal(nextRunAt(midnight + 60_000, offset), midnight + offset);
  assert.equal(nextRunAt(midnight + offset, offset), midnight + 86_400_000 + offset);
  assert.equal(nextRunAt(midnight + offset + 1, offset), midnight + 86_400_000 + offset);
});

test('one domain whose report cannot be built does not hold up the others', async () => {
  const env = await setup();
  try {
    await env.seed();
    // Counts no RFC 8460 report can carry (a bug upstream): building throws for this domain only.
    await env.table.addCounts([{ day: DAY, domain: 'bad-probe.test', policy: { type: 'dane', strings: [], mxHosts: [] }, success: 1, failure: 0, details: [] }]);
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    env.dns.add('_smtp._tls.bad-probe.test', { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@bad-probe.test' });
    const outcomes = await env.reporter().runDay(DAY);
    assert.deepEqual(outcomes.map((o) => [o.domain, o.state]).sort(), [
      ['bad-probe.test', 'failed'],
      [DOMAIN, 'sent'],
    ]);
    assert.equal((await env.table.report(DAY, env.table.domainHash('bad-probe.test')))!.state, 'failed');
    assert.deepEqual(env.submitted.map((m) => m.recipients[0]), ['tls@rcpt-probe.test']);
  } finally {
    await env.close();
  }
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('two reporters racing for the same (day, domain) send one report, though its sending outlasts the lease', async () => {
  const env = await setup();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    const leaseMs = 600;
    const started = Date.now();
    const clock = () => NOW + (Date.now() - started);
    // Queuing the report mail takes three leases: only renewal keeps the second reporter off.
    const submit = async (m: ReportMessage) => {
      env.submitted.push(m);
      await sleep(3 * leaseMs);
    };
    const first = env.reporter({ owner: 'node-1', leaseMs, clock, submit });
    const second = env.reporter({ owner: 'node-2', leaseMs, clock, submit });
    const [a, b] = await Promise.all([first.runDay(DAY), sleep(2 * leaseMs).then(() => second.runDay(DAY))]);
    assert.equal(a[0].state, 'sent');
    assert.deepEqual(b, [{ day: DAY, domain: DOMAIN, state: 'skipped' }]);
    assert.equal(env.submitted.length, 1);
    const row = await env.table.report(DAY, env.table.domainHash(DOMAIN));
    assert.deepEqual([row!.state, row!.attempts], ['sent', 1]);
  } finally {
    await env.close();
  }
});

test('a reporter whose lease was taken over cannot record the outcome', async () => {
  const env = await setup();
  try {
    await env.seed();
    env.dns.add(`_smtp._tls.${DOMAIN}`, { type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tls@rcpt-probe.test' });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let sending = false;
    // Stalls past its lease, then fails: recording that would undo the other run's success.
    const stalled = env.reporter({
      owner: 'node-1',
      submit: async () => {
        sending = true;
        await gate;
        throw new Error('the queue refused the report mail');
      },
    });
    const first = stalled.runDay(DAY);
    await waitFor(() => sending, { what: 'the first run to be sending', timeoutMs: 5_000 });
    const later = NOW + 10 * 60_000;
    const [taken] = await env.reporter({ owner: 'node-2', clock: () => later }).runDay(DAY);
    assert.equal(taken.state, 'sent');
    assert.equal(taken.state === 'sent' && taken.attempt, 2);
    release();
    assert.deepEqual(await first, [{ day: DAY, domain: DOMAIN, state: 'skipped' }]);
    const row = await env.table.report(DAY, env.table.domainHash(DOMAIN));
    assert.deepEqual([row!.state, row!.attempts, row!.updatedAt, row!.detail], ['sent', 2, later, { delivered: ['mailto:tls@rcpt-probe.test'] }]);
    assert.ok(env.logs.some((l) => l.level === 'warn' && /lease lost/.test(l.msg ?? '')));
  } finally {
    await env.close();
  }
});
