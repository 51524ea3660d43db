// MTA-STS lookups against the harness: TXT and policy-host addresses from the fake DNS server, the
// policy from a real HTTPS server with TestCA certificates, the cache in a real SQLite store.
// Every failure RFC 8460 §4.3.2.3 names, the RFC 8461 §3.3/§5.1 cache rules, and the real port 443.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import net from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { TestCA } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { MtaStsHttpsServer, formatMtaStsPolicy, type PolicyHostScript } from '../../test/harness/https-server.ts';
import { openTempData, type TempData } from '../../test/harness/temp-data.ts';
import { Resolver } from '../dns/resolver.ts';
import { MtaStsTable } from '../store/mta-sts-table.ts';
import type { StsEvidence } from '../tls-policy/evidence.ts';
import { MAX_POLICY_BYTES, MtaStsPolicies, type MtaStsPoliciesOptions } from './mta-sts.ts';

let ca: TestCA;
let server: MtaStsHttpsServer;
let dns: FakeDnsServer;
let data: TempData;
let resolver: Resolver;

before(async () => {
  ca = await TestCA.create();
  server = await MtaStsHttpsServer.start({ ca });
  dns = await FakeDnsServer.start();
  data = await openTempData();
  resolver = new Resolver({ servers: [dns.address], timeoutMs: 2000, tries: 1 });
});

after(async () => {
  await server.close();
  await dns.close();
  await data.close();
});

let counter = 0;
/** A domain no other test uses, so request logs and cache rows never mix. */
function freshDomain(label: string): string {
  return `${label}-${++counter}.sts.test`;
}

function policies(options: Partial<MtaStsPoliciesOptions> = {}, store: TempData = data): MtaStsPolicies {
  return new MtaStsPolicies({
    resolver,
    cache: new MtaStsTable(store.store.engine, store.sealer),
    ca: [ca.certPem],
    httpsPort: server.port,
    fetchTimeoutMs: 10_000,
    failureHoldMs: 0,
    ...options,
  });
}

const ENFORCE = { mode: 'enforce' as const, mx: ['mx1.example.net', '*.backup.example.net'], maxAge: 86400 };

/** Publishes `_mta-sts.<domain>` with `id`, points mta-sts.<domain> at the HTTPS server and scripts it. */
async function publish(domain: string, id: string, script: PolicyHostScript = { body: formatMtaStsPolicy(ENFORCE) }, address = '127.0.0.1'): Promise<void> {
  setTxt(domain, `v=STSv1; id=${id}`);
  dns.remove(`mta-sts.${domain}`).add(`mta-sts.${domain}`, { type: 'A', address });
  await server.setPolicy(domain, script);
}

function setTxt(domain: string, ...records: string[]): void {
  dns.remove(`_mta-sts.${domain}`);
  for (const record of records) dns.add(`_mta-sts.${domain}`, { type: 'TXT', data: record });
}

function requestsFor(domain: string): number {
  return server.requests.filter((r) => r.host === `mta-sts.${domain}`).length;
}

function assertPolicy(evidence: StsEvidence): asserts evidence is Extract<StsEvidence, { kind: 'policy' }> {
  assert.equal(evidence.kind, 'policy', JSON.stringify(evidence));
}

function assertFailed(evidence: StsEvidence, failure: string, detail: RegExp): void {
  assert.equal(evidence.kind, 'failed', JSON.stringify(evidence));
  if (evidence.kind !== 'failed') return;
  assert.equal(evidence.failure, failure, evidence.detail);
  assert.match(evidence.detail, detail);
}

/** A clock the test moves by hand. */
function clock(start = Date.UTC(2030, 0, 1)): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

// ---------------------------------------------------------------------------------------------
// Fetching

test('an enforce policy is fetched over HTTPS with SNI and Host naming the policy host', async () => {
  const domain = freshDomain('enforce');
  await publish(domain, 'v1');
  dns.clearQueries();
  const c = clock();
  const evidence = await policies({ now: c.now }).lookup(`${domain.toUpperCase()}.`);
  assertPolicy(evidence);
  assert.deepEqual(evidence.policy, {
    id: 'v1',
    mode: 'enforce',
    mx: ['mx1.example.net', '*.backup.example.net'],
    maxAge: 86400,
    lines: ['version: STSv1', 'mode: enforce', 'mx: mx1.example.net', 'mx: *.backup.example.net', 'max_age: 86400'],
  });
  assert.equal(evidence.fromCache, false);
  assert.equal(evidence.refreshFailure, undefined);
  assert.equal(evidence.fetchedAt, c.now());
  assert.equal(evidence.expiresAt, c.now() + 86400_000);
  const [request] = server.requests.filter((r) => r.host === `mta-sts.${domain}`);
  assert.deepEqual({ servername: request.servername, method: request.method, path: request.path }, {
    servername: `mta-sts.${domain}`,
    method: 'GET',
    path: '/.well-known/mta-sts.txt',
  });
  // The policy host's address came from Lacre's resolver (the fake server), A first.
  assert.ok(dns.queries.some((q) => q.name.toLowerCase() === `mta-sts.${domain}` && q.type === 'A'));
});

test('testing and none policies are read as such; a none policy is cached too', async () => {
  const testing = freshDomain('testing');
  await publish(testing, 't1', { body: formatMtaStsPolicy({ mode: 'testing', mx: ['mx.example.net'], maxAge: 3600 }) });
  const t = await policies().lookup(testing);
  assertPolicy(t);
  assert.equal(t.policy.mode, 'testing');

  const none = freshDomain('none');
  await publish(none, 'n1', { body: formatMtaStsPolicy({ mode: 'none', mx: [], maxAge: 3600 }) });
  const lookups = policies();
  const n = await lookups.lookup(none);
  assertPolicy(n);
  assert.deepEqual({ mode: n.policy.mode, mx: n.policy.mx }, { mode: 'none', mx: [] });
  const again = await lookups.lookup(none);
  assertPolicy(again);
  assert.equal(again.fromCache, true);
  assert.equal(requestsFor(none), 1);
});

test('Content-Type text/plain with parameters is accepted', async () => {
  const domain = freshDomain('charset');
  await publish(domain, 'c1', { body: formatMtaStsPolicy(ENFORCE), contentType: 'Text/Plain; charset=utf-8' });
  assertPolicy(await policies().lookup(domain));
});

test('a certificate behind an intermediate CA is accepted', async () => {
  const domain = freshDomain('chain');
  await publish(domain, 'c1', { body: formatMtaStsPolicy(ENFORCE), cert: 'intermediate-chain' });
  assertPolicy(await policies().lookup(domain));
});

// ---------------------------------------------------------------------------------------------
// Each failure, with nothing cached: delivery goes on as if there were no policy, and it is reported

test('a redirect is not followed: sts-policy-fetch-error', async () => {
  const domain = freshDomain('redirect');
  const target = freshDomain('target');
  await publish(domain, 'r1', { redirect: `https://mta-sts.${target}/.well-known/mta-sts.txt` });
  await publish(target, 'r1');
  assertFailed(await policies().lookup(domain), 'sts-policy-fetch-error', /HTTP 301.*redirects are not followed/);
  assert.equal(requestsFor(domain), 1);
  assert.equal(requestsFor(target), 0);
});

test('HTTP 404: sts-policy-fetch-error', async () => {
  const domain = freshDomain('notfound');
  await publish(domain, 'x', { status: 404, body: 'gone' });
  assertFailed(await policies().lookup(domain), 'sts-policy-fetch-error', /HTTP 404/);
});

test('a 2xx other than 200 is not a policy either', async () => {
  const domain = freshDomain('nocontent');
  await publish(domain, 'x', { status: 203, body: formatMtaStsPolicy(ENFORCE) });
  assertFailed(await policies().lookup(domain), 'sts-policy-fetch-error', /HTTP 203/);
});

test('a Content-Type other than text/plain: sts-policy-invalid', async () => {
  const domain = freshDomain('html');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE), contentType: 'text/html' });
  assertFailed(await policies().lookup(domain), 'sts-policy-invalid', /Content-Type "text\/html", not text\/plain/);
});

test('a syntax error in the policy: sts-policy-invalid, naming it', async () => {
  const domain = freshDomain('syntax');
  await publish(domain, 'x', { body: 'version: STSv1\r\nmode: enforced\r\nmx: mx.example.net\r\nmax_age: 86400\r\n' });
  assertFailed(await policies().lookup(domain), 'sts-policy-invalid', /mode "enforced"/);
});

test('an expired certificate: sts-webpki-invalid', async () => {
  const domain = freshDomain('expired');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE), cert: 'expired' });
  assertFailed(await policies().lookup(domain), 'sts-webpki-invalid', /certificate-expired/);
  assert.equal(requestsFor(domain), 0, 'no request goes over a connection that failed verification');
});

test('a certificate for another name: sts-webpki-invalid', async () => {
  const domain = freshDomain('wrongname');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE), certNames: [`www.${domain}`] });
  assertFailed(await policies().lookup(domain), 'sts-webpki-invalid', /certificate-host-mismatch/);
});

test('a self-signed certificate: sts-webpki-invalid', async () => {
  const domain = freshDomain('selfsigned');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE), cert: 'self-signed' });
  assertFailed(await policies().lookup(domain), 'sts-webpki-invalid', /certificate-not-trusted/);
});

test('a certificate from a CA that is not trusted: sts-webpki-invalid', async () => {
  const domain = freshDomain('untrusted');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE) });
  // Without the test root only Node's and the system's roots are trusted.
  assertFailed(await policies({ ca: [] }).lookup(domain), 'sts-webpki-invalid', /certificate-not-trusted/);
});

test('a policy host slower than the timeout: sts-policy-fetch-error', async () => {
  const domain = freshDomain('slow');
  await publish(domain, 'x', { body: formatMtaStsPolicy(ENFORCE), delayMs: 30_000 });
  assertFailed(await policies({ fetchTimeoutMs: 300 }).lookup(domain), 'sts-policy-fetch-error', /timed out after 300 ms/);
});

test('a body over 64 KiB (by Content-Length): sts-policy-invalid', async () => {
  const domain = freshDomain('big');
  const body = formatMtaStsPolicy(ENFORCE) + `x-padding: ${'a'.repeat(MAX_POLICY_BYTES)}\r\n`;
  await publish(domain, 'x', { body });
  assertFailed(await policies().lookup(domain), 'sts-policy-invalid', /larger than 65536 bytes/);
});

test('a body over 64 KiB without Content-Length is cut off while streaming: sts-policy-invalid', async () => {
  const domain = freshDomain('stream');
  const host = `mta-sts.${domain}`;
  const cert = await ca.issue({ names: [host] });
  let sent = 0;
  const streaming = https.createServer({ key: cert.keyPem, cert: cert.chainPem, minVersion: 'TLSv1.2' }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write(formatMtaStsPolicy(ENFORCE));
    const chunk = `x-padding: ${'a'.repeat(4000)}\r\n`;
    // Bounded: 40 chunks is well past the limit, and the client hangs up long before.
    for (let i = 0; i < 40 && !res.destroyed; i++) {
      res.write(chunk);
      sent += chunk.length;
    }
    res.end();
  });
  await new Promise<void>((resolve) => streaming.listen(0, '127.0.0.1', resolve));
  try {
    setTxt(domain, 'v=STSv1; id=s1');
    dns.add(host, { type: 'A', address: '127.0.0.1' });
    const port = (streaming.address() as AddressInfo).port;
    assertFailed(await policies({ httpsPort: port }).lookup(domain), 'sts-policy-invalid', /larger than 65536 bytes/);
    assert.ok(sent > MAX_POLICY_BYTES);
  } finally {
    streaming.closeAllConnections();
    await new Promise<void>((resolve) => streaming.close(() => resolve()));
  }
});

test('no address for the policy host, or nothing listening: sts-policy-fetch-error', async () => {
  const noHost = freshDomain('nohost');
  setTxt(noHost, 'v=STSv1; id=a1');
  assertFailed(await policies().lookup(noHost), 'sts-policy-fetch-error', /does not exist|no A or AAAA/);

  const refused = freshDomain('refused');
  await publish(refused, 'a1');
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  assertFailed(await policies({ httpsPort: port }).lookup(refused), 'sts-policy-fetch-error', /ECONNREFUSED/);
});

test('the policy host is reached over IPv6 when it has only an AAAA record', async (t) => {
  const v6 = await MtaStsHttpsServer.start({ ca, host: '::1' }).catch(() => undefined);
  if (!v6) {
    // Not skipped silently: the lack of ::1 is a property of the machine, stated here.
    assert.fail('no IPv6 loopback on this machine');
  }
  t.after(() => v6.close());
  const domain = freshDomain('v6');
  setTxt(domain, 'v=STSv1; id=six');
  dns.add(`mta-sts.${domain}`, { type: 'AAAA', address: '::1' });
  await v6.setPolicy(domain, { body: formatMtaStsPolicy(ENFORCE) });
  assertPolicy(await policies({ httpsPort: v6.port }).lookup(domain));
  assert.equal(v6.requests.length, 1);
});

// ---------------------------------------------------------------------------------------------
// TXT records

test('no TXT record and nothing cached: MTA-STS does not apply, and nothing is fetched', async () => {
  const domain = freshDomain('notxt');
  await server.setPolicy(domain, { body: formatMtaStsPolicy(ENFORCE) });
  dns.add(`mta-sts.${domain}`, { type: 'A', address: '127.0.0.1' });
  assert.deepEqual(await policies().lookup(domain), { kind: 'none' });
  assert.equal(requestsFor(domain), 0);
});

test('two STSv1 TXT records: no policy, even with a working policy host', async () => {
  const domain = freshDomain('twotxt');
  await publish(domain, 'a1');
  setTxt(domain, 'v=STSv1; id=a1', 'v=STSv1; id=a2');
  assert.deepEqual(await policies().lookup(domain), { kind: 'none' });
  assert.equal(requestsFor(domain), 0);
});

test('an address literal or a malformed name has no MTA-STS', async () => {
  const lookups = policies();
  assert.deepEqual(await lookups.lookup('[127.0.0.1]'), { kind: 'none' });
  assert.deepEqual(await lookups.lookup('127.0.0.1'), { kind: 'none' });
  assert.deepEqual(await lookups.lookup('bad..name'), { kind: 'none' });
});

// ---------------------------------------------------------------------------------------------
// The cache (RFC 8461 §3.3, §5.1)

test('an unexpired cached policy with the same id is used without a second request, across restarts', async () => {
  const domain = freshDomain('reuse');
  await publish(domain, 'same');
  const c = clock();
  assertPolicy(await policies({ now: c.now }).lookup(domain));
  c.advance(3600_000);
  const second = await policies({ now: c.now }).lookup(domain);
  assertPolicy(second);
  assert.equal(second.fromCache, true);
  assert.equal(second.policy.id, 'same');
  assert.equal(requestsFor(domain), 1);
});

test('a changed TXT id fetches the policy again and replaces the cached one', async () => {
  const domain = freshDomain('idchange');
  await publish(domain, 'first');
  const lookups = policies();
  assertPolicy(await lookups.lookup(domain));
  await publish(domain, 'second', { body: formatMtaStsPolicy({ mode: 'testing', mx: ['new.example.net'], maxAge: 600 }) });
  const next = await lookups.lookup(domain);
  assertPolicy(next);
  assert.deepEqual({ id: next.policy.id, mode: next.policy.mode, mx: next.policy.mx, fromCache: next.fromCache }, {
    id: 'second',
    mode: 'testing',
    mx: ['new.example.net'],
    fromCache: false,
  });
  assert.equal(requestsFor(domain), 2);
  const cached = await lookups.lookup(domain);
  assertPolicy(cached);
  assert.equal(cached.policy.id, 'second');
  assert.equal(requestsFor(domain), 2);
});

test('a failed refetch keeps the unexpired cached policy in force, with the failure reported', async () => {
  const domain = freshDomain('keep');
  await publish(domain, 'old');
  const logged: Array<{ level: string; obj: object }> = [];
  const logger = {
    warn: (obj: object) => logged.push({ level: 'warn', obj }),
    debug: (obj: object) => logged.push({ level: 'debug', obj }),
  };
  const lookups = policies({ logger });
  const first = await lookups.lookup(domain);
  assertPolicy(first);
  await publish(domain, 'new', { status: 500, body: 'oops' });
  const evidence = await lookups.lookup(domain);
  assertPolicy(evidence);
  assert.equal(evidence.fromCache, true);
  assert.equal(evidence.policy.id, 'old');
  assert.equal(evidence.expiresAt, first.expiresAt);
  assert.deepEqual(evidence.refreshFailure?.failure, 'sts-policy-fetch-error');
  assert.match(evidence.refreshFailure?.detail ?? '', /HTTP 500/);
  // RFC 8461 §3.3: the administrator is alerted; the domain (personal data) only at debug level.
  const warnings = logged.filter((l) => l.level === 'warn');
  assert.equal(warnings.length, 1);
  assert.ok(!JSON.stringify(warnings).includes(domain), JSON.stringify(warnings));
  assert.ok(logged.some((l) => l.level === 'debug' && JSON.stringify(l.obj).includes(domain)));
});

test('a failed fetch is not repeated for the same id within the hold time (RFC 8461 §3.3)', async () => {
  const domain = freshDomain('hold');
  await publish(domain, 'h1', { status: 503 });
  const c = clock();
  const lookups = policies({ now: c.now, failureHoldMs: 300_000 });
  assertFailed(await lookups.lookup(domain), 'sts-policy-fetch-error', /HTTP 503/);
  assertFailed(await lookups.lookup(domain), 'sts-policy-fetch-error', /HTTP 503/);
  assert.equal(requestsFor(domain), 1);
  // A new id is a new policy: fetched at once.
  await publish(domain, 'h2');
  assertPolicy(await lookups.lookup(domain));
  assert.equal(requestsFor(domain), 2);
  // And the old id's hold runs out.
  await publish(domain, 'h1', { status: 503 });
  c.advance(300_001);
  const after = await lookups.lookup(domain);
  assertPolicy(after);
  assert.equal(after.refreshFailure?.failure, 'sts-policy-fetch-error');
  assert.equal(requestsFor(domain), 3);
});

test('an expired cached policy is not used', async () => {
  const domain = freshDomain('expiredcache');
  await publish(domain, 'e1', { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 60 }) });
  const c = clock();
  const lookups = policies({ now: c.now });
  assertPolicy(await lookups.lookup(domain));
  c.advance(61_000);
  // TXT gone: with the cache expired, nothing applies.
  dns.remove(`_mta-sts.${domain}`);
  assert.deepEqual(await lookups.lookup(domain), { kind: 'none' });
  // TXT back with the same id but the host failing: the expired copy does not stand in.
  setTxt(domain, 'v=STSv1; id=e1');
  await server.setPolicy(domain, { status: 404 });
  assertFailed(await lookups.lookup(domain), 'sts-policy-fetch-error', /HTTP 404/);
  // And with the host working, the same id is fetched again rather than read from the stale row.
  await server.setPolicy(domain, { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 60 }) });
  const fresh = await lookups.lookup(domain);
  assertPolicy(fresh);
  assert.equal(fresh.fromCache, false);
  assert.equal(fresh.expiresAt, c.now() + 60_000);
});

test('no TXT record but an unexpired cached policy: the cached policy applies', async () => {
  const domain = freshDomain('txtgone');
  await publish(domain, 'g1');
  const lookups = policies();
  assertPolicy(await lookups.lookup(domain));
  dns.remove(`_mta-sts.${domain}`);
  const evidence = await lookups.lookup(domain);
  assertPolicy(evidence);
  assert.equal(evidence.fromCache, true);
  assert.equal(evidence.refreshFailure, undefined);
  assert.equal(requestsFor(domain), 1);
});

test('a TXT lookup that fails (SERVFAIL) counts as no TXT: the cache if any, else none', async () => {
  const cachedDomain = freshDomain('servfail-cached');
  await publish(cachedDomain, 's1');
  const lookups = policies();
  assertPolicy(await lookups.lookup(cachedDomain));
  dns.fail(`_mta-sts.${cachedDomain}`, 'SERVFAIL', 'TXT');
  const evidence = await lookups.lookup(cachedDomain);
  assertPolicy(evidence);
  assert.equal(evidence.fromCache, true);

  const bare = freshDomain('servfail-bare');
  await publish(bare, 's1');
  dns.fail(`_mta-sts.${bare}`, 'SERVFAIL', 'TXT');
  assert.deepEqual(await lookups.lookup(bare), { kind: 'none' });
  assert.equal(requestsFor(bare), 0);
});

test('concurrent lookups of one domain share one fetch', async () => {
  const domain = freshDomain('concurrent');
  await publish(domain, 'c1', { body: formatMtaStsPolicy(ENFORCE), delayMs: 100 });
  const lookups = policies();
  const results = await Promise.all(Array.from({ length: 5 }, () => lookups.lookup(domain)));
  assert.equal(requestsFor(domain), 1);
  for (const r of results) assert.deepEqual(r, results[0]);
  assertPolicy(results[0]);
  // Settled lookups are not shared: a later change is seen.
  await publish(domain, 'c2');
  const later = await lookups.lookup(domain);
  assertPolicy(later);
  assert.equal(later.policy.id, 'c2');
});

test('the cached policy is sealed at rest: neither the domain nor an mx name is in the database files', async () => {
  const own = await openTempData();
  try {
    const domain = freshDomain('sealedprobe');
    const mx = 'plaintext-probe-mx.example-probe.test';
    await publish(domain, 'p1', { body: formatMtaStsPolicy({ mode: 'enforce', mx: [mx], maxAge: 86400 }) });
    const table = new MtaStsTable(own.store.engine, own.sealer);
    assertPolicy(await policies({}, own).lookup(domain));
    // Control: the row is there and opens to the policy.
    assert.deepEqual((await table.get(domain))?.policy.mx, [mx]);
    const files = readdirSync(own.dataDir);
    assert.ok(files.includes('lacre.db-wal'), files.join(', '));
    for (const name of files) {
      const bytes = readFileSync(join(own.dataDir, name));
      for (const needle of [mx, domain, 'STSv1']) {
        for (const encoding of ['utf8', 'utf16le'] as const) {
          assert.equal(bytes.includes(Buffer.from(needle, encoding)), false, `${needle} (${encoding}) found in ${name}`);
        }
      }
    }
    // The row is keyed by the same domain hash the queue uses.
    const row = await own.store.engine.get<{ domain_hash: string }>('SELECT domain_hash FROM mta_sts_policies');
    assert.equal(row?.domain_hash, own.sealer.domainHash(domain));
  } finally {
    await own.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Proactive refresh (RFC 8461 §3.3)

test('refreshExpiring re-fetches policies expiring within the window, and only those', async () => {
  const own = await openTempData();
  try {
    const soon = freshDomain('refresh-soon');
    const later = freshDomain('refresh-later');
    const broken = freshDomain('refresh-broken');
    const gone = freshDomain('refresh-gone');
    await publish(soon, 'r1', { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 3600 }) });
    await publish(later, 'r1', { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 86400 * 30 }) });
    await publish(broken, 'r1', { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 3600 }) });
    await publish(gone, 'r1', { body: formatMtaStsPolicy({ ...ENFORCE, maxAge: 3600 }) });
    const c = clock();
    const table = new MtaStsTable(own.store.engine, own.sealer);
    const lookups = policies({ now: c.now }, own);
    for (const d of [soon, later, broken, gone]) assertPolicy(await lookups.lookup(d));

    c.advance(3000_000);
    await server.setPolicy(broken, { status: 500 });
    dns.remove(`_mta-sts.${gone}`); // withdrawn (RFC 8461 §8.3): left to run out, not extended
    const before = await table.get(broken);
    assert.equal(await lookups.refreshExpiring(86400_000), 1);

    assert.equal(requestsFor(soon), 2, 'refreshed though its id did not change');
    assert.equal(requestsFor(later), 1);
    assert.equal(requestsFor(broken), 2);
    assert.equal(requestsFor(gone), 1);
    assert.equal((await table.get(soon))?.expiresAt, c.now() + 3600_000);
    const after = await table.get(broken);
    assert.equal(after?.expiresAt, before?.expiresAt, 'a failed refresh leaves the cached policy as it was');
    assert.equal(after?.checkedAt, c.now());

    // Once expired, rows are dropped rather than refreshed.
    c.advance(3600_000);
    assert.equal(await lookups.refreshExpiring(60_000), 0);
    assert.equal(await table.get(gone), undefined);
    assert.equal(await table.get(broken), undefined);
    assert.ok(await table.get(later));
  } finally {
    await own.close();
  }
});

// ---------------------------------------------------------------------------------------------
// show

test('show returns the evidence with the TXT records and the policy text', async () => {
  const domain = freshDomain('show');
  const body = formatMtaStsPolicy(ENFORCE);
  await publish(domain, 'w1', { body });
  setTxt(domain, 'v=STSv1; id=w1', 'v=spf1 -all');
  const lookups = policies();
  const shown = await lookups.show(domain);
  assert.equal(shown.domain, domain);
  assertPolicy(shown.evidence);
  assert.deepEqual(shown.txt, { kind: 'id', id: 'w1', records: ['v=STSv1; id=w1', 'v=spf1 -all'] });
  assert.equal(shown.policyText, body);
  // From the cache, the text is rebuilt from the stored lines.
  const cached = await lookups.show(domain);
  assertPolicy(cached.evidence);
  assert.equal(cached.evidence.fromCache, true);
  assert.equal(cached.policyText, body);

  // A refused policy is shown as served, so the operator sees what is wrong with it.
  const bad = freshDomain('showbad');
  await publish(bad, 'b1', { body: 'version: STSv1\nmode: sometimes\n' });
  const refused = await lookups.show(bad);
  assertFailed(refused.evidence, 'sts-policy-invalid', /mode "sometimes"/);
  assert.equal(refused.policyText, 'version: STSv1\nmode: sometimes\n');

  const none = freshDomain('shownone');
  const nothing = await lookups.show(none);
  assert.deepEqual(nothing.evidence, { kind: 'none' });
  assert.equal(nothing.txt.kind, 'none');
  await assert.rejects(lookups.show('not a domain'), /not a domain name/);
});

// ---------------------------------------------------------------------------------------------
// The real port

test('without a port override the policy is fetched from port 443', async (t) => {
  const real = await MtaStsHttpsServer.start({ ca, host: '127.0.0.43', port: 443 });
  t.after(() => real.close());
  const domain = freshDomain('port443');
  await real.setPolicy(domain, { body: formatMtaStsPolicy(ENFORCE) });
  setTxt(domain, 'v=STSv1; id=p443');
  dns.add(`mta-sts.${domain}`, { type: 'A', address: '127.0.0.43' });
  const lookups = new MtaStsPolicies({ resolver, cache: new MtaStsTable(data.store.engine, data.sealer), ca: [ca.certPem] });
  const evidence = await lookups.lookup(domain);
  assertPolicy(evidence);
  assert.equal(evidence.policy.id, 'p443');
  assert.deepEqual(
    real.requests.map((r) => ({ host: r.host, servername: r.servername })),
    [{ host: `mta-sts.${domain}`, servername: `mta-sts.${domain}` }],
  );
});
