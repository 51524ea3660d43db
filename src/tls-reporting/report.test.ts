import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { buildReport, reportFileName, serializeReport, type CountedPolicy, type ReportInput } from './report.ts';
import { rfc8460Validator } from './rfc8460-schema.ts';

const STS: CountedPolicy = {
  policy: {
    type: 'sts',
    strings: ['version: STSv1', 'mode: enforce', 'mx: *.mail.rcpt.test', 'max_age: 86400'],
    mxHosts: ['*.mail.rcpt.test'],
  },
  success: 5326,
  failure: 303,
  details: [
    {
      detail: {
        resultType: 'starttls-not-supported',
        sendingMtaIp: '2001:db8:abcd:13::1',
        receivingMxHostname: 'mx2.mail.rcpt.test',
        receivingIp: '203.0.113.56',
        additionalInformation: 'https://www.rfc-editor.org/rfc/rfc3207#section-4',
        failureReasonCode: 'starttls-refused 454 4.7.0',
      },
      count: 200,
    },
    { detail: { resultType: 'certificate-expired', sendingMtaIp: '2001:db8:abcd:12::1', receivingMxHostname: 'mx1.mail.rcpt.test' }, count: 100 },
    {
      detail: { resultType: 'validation-failure', sendingMtaIp: '198.51.100.62', receivingIp: '203.0.113.58', receivingMxHostname: 'mx-backup.mail.rcpt.test', receivingMxHelo: 'backup.internal', failureReasonCode: 'X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED' },
      count: 3,
    },
  ],
};

const NONE: CountedPolicy = { policy: { type: 'no-policy-found', strings: [], mxHosts: [] }, success: 12, failure: 0, details: [] };

const INPUT: ReportInput = {
  organizationName: 'Lacre at mta.lacre.test',
  contactInfo: 'mailto:tlsrpt@lacre.test',
  reportId: '0f1e2d3c4b5a69788796a5b4c3d2e1f0',
  day: '2026-04-01',
  policyDomain: 'rcpt.test',
  policies: [STS, NONE],
};

const EXPECTED =
  '{"organization-name":"Lacre at mta.lacre.test","date-range":{"start-datetime":"2026-04-01T00:00:00Z","end-datetime":"2026-04-01T23:59:59Z"},' +
  '"contact-info":"mailto:tlsrpt@lacre.test","report-id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","policies":[' +
  '{"policy":{"policy-type":"no-policy-found","policy-domain":"rcpt.test"},"summary":{"total-successful-session-count":12,"total-failure-session-count":0}},' +
  '{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: *.mail.rcpt.test","max_age: 86400"],"policy-domain":"rcpt.test","mx-host":["*.mail.rcpt.test"]},' +
  '"summary":{"total-successful-session-count":5326,"total-failure-session-count":303},"failure-details":[' +
  '{"result-type":"certificate-expired","sending-mta-ip":"2001:db8:abcd:12::1","receiving-mx-hostname":"mx1.mail.rcpt.test","failed-session-count":100},' +
  '{"result-type":"starttls-not-supported","sending-mta-ip":"2001:db8:abcd:13::1","receiving-mx-hostname":"mx2.mail.rcpt.test","receiving-ip":"203.0.113.56","failed-session-count":200,' +
  '"additional-information":"https://www.rfc-editor.org/rfc/rfc3207#section-4","failure-reason-code":"starttls-refused 454 4.7.0"},' +
  '{"result-type":"validation-failure","sending-mta-ip":"198.51.100.62","receiving-mx-hostname":"mx-backup.mail.rcpt.test","receiving-mx-helo":"backup.internal","receiving-ip":"203.0.113.58","failed-session-count":3,' +
  '"failure-reason-code":"X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"}]}]}';

test('the report is schema-valid RFC 8460 §4.4 JSON', () => {
  const validate = rfc8460Validator();
  const report = JSON.parse(serializeReport(buildReport(INPUT)));
  assert.ok(validate(report), JSON.stringify(validate.errors));
});

test('the validator is not a rubber stamp: reports the RFC does not allow are refused', () => {
  const validate = rfc8460Validator();
  const good = () => JSON.parse(serializeReport(buildReport(INPUT)));
  const broken: Array<(r: any) => void> = [
    (r) => delete r['report-id'],
    (r) => (r['date-range']['start-datetime'] = '2026-04-01'),
    (r) => (r.policies[1]['failure-details'][0]['result-type'] = 'certificate-not-yet-valid'),
    (r) => (r.policies[1]['failure-details'][0]['failed-session-count'] = -1),
    (r) => (r.policies[1]['failure-details'][1]['additional-information'] = 'see the logs'),
    (r) => (r.policies[0].policy['policy-type'] = 'dane'),
    (r) => (r.policies[1]['failure-details'][0]['sending-mta-ip'] = 'not-an-ip'),
  ];
  for (const [i, breakIt] of broken.entries()) {
    const report = good();
    breakIt(report);
    assert.equal(validate(report), false, `mutation ${i} should not validate`);
  }
});

test('the same counts give the same bytes, whatever order they arrive in', () => {
  assert.equal(serializeReport(buildReport(INPUT)), EXPECTED);
  const shuffled: ReportInput = { ...INPUT, policies: [{ ...STS, details: [...STS.details].reverse() }, NONE].reverse() };
  assert.equal(serializeReport(buildReport(shuffled)), EXPECTED);
});

test('rows for the same failure detail are added up, not listed twice', () => {
  const doubled: ReportInput = {
    ...INPUT,
    policies: [{ ...STS, details: [...STS.details, { detail: { ...STS.details[1].detail }, count: 7 }] }],
  };
  const details = buildReport(doubled).policies[0]['failure-details']!;
  assert.equal(details.length, 3);
  assert.equal(details.find((d) => d['result-type'] === 'certificate-expired')!['failed-session-count'], 107);
});

test('the date-range is the whole UTC day, and the file name carries the same instants in seconds', () => {
  const report = buildReport({ ...INPUT, day: '2024-02-29' });
  assert.deepEqual(report['date-range'], { 'start-datetime': '2024-02-29T00:00:00Z', 'end-datetime': '2024-02-29T23:59:59Z' });
  assert.equal(
    reportFileName({ submitter: 'mta.lacre.test', policyDomain: 'rcpt.test', day: '2024-02-29', reportId: 'abc123' }),
    `mta.lacre.test!rcpt.test!${Date.UTC(2024, 1, 29) / 1000}!${Date.UTC(2024, 1, 29, 23, 59, 59) / 1000}!abc123.json.gz`,
  );
  assert.throws(() => reportFileName({ submitter: 's', policyDomain: 'd', day: '2024-02-29', reportId: 'a!b' }), /letters and digits/);
  assert.throws(() => buildReport({ ...INPUT, day: '2023-02-29' }), /not a day/);
});

test('gzip round trip gives back the exact JSON (RFC 8460 §5.1 application/tlsrpt+gzip)', () => {
  const json = serializeReport(buildReport(INPUT));
  const gz = gzipSync(json);
  assert.equal(gz[0], 0x1f);
  assert.equal(gz[1], 0x8b);
  assert.equal(gunzipSync(gz).toString('utf8'), json);
});

test('counts with a type RFC 8460 has no word for are a bug, not a report', () => {
  assert.throws(() => buildReport({ ...INPUT, policies: [{ ...NONE, policy: { type: 'dane', strings: [], mxHosts: [] } }] }), /policy type/);
  assert.throws(
    () => buildReport({ ...INPUT, policies: [{ ...NONE, failure: 1, details: [{ detail: { resultType: 'tls-version' }, count: 1 }] }] }),
    /result type/,
  );
});
