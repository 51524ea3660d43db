// `lacre policy show` as operators run it: a real process resolving a real (harness) DNS tree with
// the AD bit, TLSA records and an MTA-STS policy over HTTPS, and printing the plan with evidence.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { TestCA } from '../../test/harness/ca.ts';
import { MtaStsHttpsServer, formatMtaStsPolicy } from '../../test/harness/https-server.ts';
import { tempDir } from '../../test/harness/temp-data.ts';
import { runLacre } from '../../test/harness/lacre-cli.ts';

let dns: FakeDnsServer;
let ca: TestCA;
let https: MtaStsHttpsServer;
let caFile: string;

before(async () => {
  dns = await FakeDnsServer.start();
  ca = await TestCA.create();
  https = await MtaStsHttpsServer.start({ ca });
  caFile = await ca.writeCaFile(tempDir());
  const mxCert = await ca.issue({ names: ['mx.dane.test'] });

  // dane.test: signed, with a DANE-EE record for its MX, and an MTA-STS policy it outranks.
  dns.secure('dane.test');
  dns.add('dane.test', { type: 'MX', preference: 10, exchange: 'mx.dane.test' });
  dns.add('mx.dane.test', { type: 'A', address: '127.0.0.1' });
  dns.add('_25._tcp.mx.dane.test', { type: 'TLSA', usage: 3, selector: 1, matchingType: 1, data: Buffer.from(mxCert.spkiSha256, 'hex') });

  // sts.test: unsigned, MTA-STS enforce with one MX inside the policy and one outside.
  dns.add('sts.test', { type: 'MX', preference: 10, exchange: 'mx1.sts.test' }, { type: 'MX', preference: 20, exchange: 'backup.elsewhere.test' });
  dns.add('mx1.sts.test', { type: 'A', address: '127.0.0.1' });
  dns.add('backup.elsewhere.test', { type: 'A', address: '127.0.0.1' });
  dns.add('_mta-sts.sts.test', { type: 'TXT', data: 'v=STSv1; id=20261121' });
  dns.add('mta-sts.sts.test', { type: 'A', address: '127.0.0.1' });
  await https.setPolicy('sts.test', { body: formatMtaStsPolicy({ mode: 'enforce', mx: ['*.sts.test'], maxAge: 86400 }) });
});
after(async () => {
  await https.close();
  await dns.close();
});

const lacre = (args: string[], env: Record<string, string> = {}) =>
  runLacre(args, {
    LACRE_DATA_DIR: tempDir(),
    LACRE_DNS_SERVERS: dns.address,
    LACRE_DNS_TIMEOUT: '1s',
    LACRE_DNSSEC_TRUST_AD: '1',
    LACRE_CA_FILE: caFile,
    LACRE_MTA_STS_PORT: String(https.port),
    LACRE_HOSTNAME: 'mta.lacre.test',
    ...env,
  });

test('policy show --json: DANE with its TLSA records and the AD bit, ahead of MTA-STS', async () => {
  const out = await lacre(['policy', 'show', 'dane.test', '--json']);
  assert.equal(out.code, 0, out.stderr);
  const view = JSON.parse(out.stdout);
  assert.equal(view.dnssec.trustAd, true);
  assert.equal(view.mx.secure, true);
  const [hop] = view.mx.hosts;
  assert.equal(hop.tlsa.kind, 'usable');
  assert.match(hop.tlsa.usable[0], /^3 1 1 [0-9A-F]{64}$/i);
  assert.deepEqual([hop.plan.level, hop.plan.source], ['dane', 'dane']);
  assert.deepEqual([view.effective.level, view.effective.source], ['dane', 'dane']);

  // Without trusting the AD bit, the same domain has no DANE: the evidence says why.
  const untrusted = JSON.parse((await lacre(['policy', 'show', 'dane.test', '--json'], { LACRE_DNSSEC_TRUST_AD: '0' })).stdout);
  assert.equal(untrusted.mx.hosts[0].tlsa.kind, 'none');
  assert.equal(untrusted.effective.source, 'default:may');
});

test('policy show --json: MTA-STS enforce with the TXT record, the policy text and a skipped MX', async () => {
  const out = await lacre(['policy', 'show', 'sts.test', '--json']);
  assert.equal(out.code, 0, out.stderr);
  const view = JSON.parse(out.stdout);
  assert.equal(view.mtaSts.evidence.kind, 'policy');
  assert.equal(view.mtaSts.evidence.policy.mode, 'enforce');
  assert.equal(view.mtaSts.txt.kind, 'id');
  assert.match(view.mtaSts.policyText, /mode: enforce/);
  const [mx1, backup] = view.mx.hosts;
  assert.deepEqual([mx1.host, mx1.plan.level, mx1.plan.source], ['mx1.sts.test', 'verify', 'mta-sts:enforce']);
  assert.deepEqual([backup.host, backup.plan.action, backup.plan.failure], ['backup.elsewhere.test', 'skip', 'sts-mx-mismatch']);

  // REQUIRETLS: the MTA-STS-matched MX is a verified path; the other is not.
  const rt = JSON.parse((await lacre(['policy', 'show', 'sts.test', '--json', '--require-tls'])).stdout);
  assert.equal(rt.mx.hosts[0].plan.source, 'requiretls:mta-sts');
  assert.equal(rt.mx.hosts[1].plan.action, 'skip');
});

test('policy show names a bad domain and prints a readable plan without --json', async () => {
  const bad = await lacre(['policy', 'show', 'not a domain']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /"not a domain" is not a domain name/);
  const text = await lacre(['policy', 'show', 'sts.test', '--require-tls']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /effective: verify \(requiretls:mta-sts\)/);
  assert.match(text.stdout, /backup\.elsewhere\.test .* skip: sts-mx-mismatch/);
});
