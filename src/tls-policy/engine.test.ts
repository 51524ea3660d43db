// The policy engine's precedence, exhaustively over the evidence it can be given:
// REQUIRETLS > DANE > MTA-STS enforce > static > default, and TLS-Required: No.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { judgeForReport, planHop, type DomainEvidence, type HopEvidence, type HopPlan } from './engine.ts';
import type { DaneEvidence, StsEvidence } from './evidence.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';
import type { PolicyDecision } from './levels.ts';

const TLSA: TlsaRecord = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7) };
const PKIX_TLSA: TlsaRecord = { usage: 1, selector: 1, matchingType: 1, data: Buffer.alloc(32, 9) };

const DANE: Record<string, DaneEvidence> = {
  usable: { kind: 'usable', qname: '_25._tcp.mx.dest.test', usable: [TLSA], all: [TLSA] },
  unusable: { kind: 'unusable', qname: '_25._tcp.mx.dest.test', all: [PKIX_TLSA], detail: 'PKIX-EE only' },
  none: { kind: 'none', reason: 'insecure' },
  failed: { kind: 'failed', failure: 'dnssec-invalid', detail: 'SERVFAIL' },
};

function sts(mode: 'enforce' | 'testing' | 'none', mx = ['*.dest.test']): StsEvidence {
  return {
    kind: 'policy',
    policy: { id: 'abc', mode, mx, maxAge: 86400, lines: ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), 'max_age: 86400'] },
    fromCache: false,
    fetchedAt: 0,
    expiresAt: 86_400_000,
  };
}
const STS_FAILED: StsEvidence = { kind: 'failed', failure: 'sts-policy-fetch-error', detail: '404' };
const STATIC_VERIFY: PolicyDecision = { level: 'verify', source: 'static:verify', match: 'dest.test' };
const STATIC_NONE: PolicyDecision = { level: 'none', source: 'static:none', match: 'dest.test' };
const DEFAULT_MAY: PolicyDecision = { level: 'may', source: 'default:may' };

function domain(over: Partial<DomainEvidence> = {}): DomainEvidence {
  return { domain: 'dest.test', requireTls: false, tlsRequiredNo: false, allowTlsRequiredNo: false, mxSecure: false, sts: { kind: 'none' }, static: DEFAULT_MAY, ...over };
}
function hop(dane: DaneEvidence = DANE.none, over: Partial<HopEvidence> = {}): HopEvidence {
  return { host: 'mx.dest.test', addressesSecure: dane.kind !== 'none', dane, ...over };
}
function connect(plan: HopPlan) {
  assert.equal(plan.action, 'connect', `expected connect, got ${JSON.stringify(plan)}`);
  return plan as Extract<HopPlan, { action: 'connect' }>;
}
function skip(plan: HopPlan) {
  assert.equal(plan.action, 'skip', `expected skip, got ${JSON.stringify(plan)}`);
  return plan as Extract<HopPlan, { action: 'skip' }>;
}

test('DANE beats MTA-STS, which beats the static policy, which beats the default', () => {
  const all = connect(planHop(domain({ sts: sts('enforce'), static: STATIC_NONE }), hop(DANE.usable)));
  assert.equal(all.level, 'dane');
  assert.equal(all.source, 'dane');
  assert.deepEqual(all.dane?.names, ['mx.dest.test']);
  assert.equal(all.report.type, 'tlsa');

  const noDane = connect(planHop(domain({ sts: sts('enforce'), static: STATIC_NONE }), hop()));
  assert.equal(noDane.level, 'verify');
  assert.equal(noDane.source, 'mta-sts:enforce');
  assert.equal(noDane.report.type, 'sts');

  const noSts = connect(planHop(domain({ static: STATIC_VERIFY }), hop()));
  assert.deepEqual([noSts.level, noSts.source, noSts.report.type], ['verify', 'static:verify', 'no-policy-found']);

  const nothing = connect(planHop(domain(), hop()));
  assert.deepEqual([nothing.level, nothing.source], ['may', 'default:may']);
});

test('REQUIRETLS beats everything, and needs a verified path', () => {
  // DANE path.
  const dane = connect(planHop(domain({ requireTls: true, static: STATIC_NONE }), hop(DANE.usable)));
  assert.deepEqual([dane.level, dane.source], ['dane', 'requiretls:dane']);
  // MTA-STS path, in testing mode too: the MX is authenticated by the policy's patterns.
  for (const mode of ['enforce', 'testing'] as const) {
    const p = connect(planHop(domain({ requireTls: true, sts: sts(mode), static: STATIC_NONE }), hop()));
    assert.deepEqual([p.level, p.source], ['verify', 'requiretls:mta-sts']);
  }
  // DNSSEC-signed MX and addresses, certificate checked by the WebPKI.
  const dnssec = connect(planHop(domain({ requireTls: true, mxSecure: true }), hop(DANE.none, { addressesSecure: true })));
  assert.deepEqual([dnssec.level, dnssec.source], ['verify', 'requiretls:dnssec']);
  // Nothing to authenticate the MX by: bounce, whatever the static policy or TLS-Required says.
  for (const s of [STATIC_VERIFY, STATIC_NONE, DEFAULT_MAY]) {
    const none = skip(planHop(domain({ requireTls: true, static: s, tlsRequiredNo: true, allowTlsRequiredNo: true }), hop()));
    assert.equal(none.failure, 'requiretls-unverifiable');
    assert.equal(none.permanent, true);
  }
  // An MTA-STS `none` policy is no policy (RFC 8461 §5).
  assert.equal(skip(planHop(domain({ requireTls: true, sts: sts('none') }), hop())).failure, 'requiretls-unverifiable');
  // An MX outside the policy's patterns is not on a verified path; a failed DNSSEC lookup defers.
  assert.equal(skip(planHop(domain({ requireTls: true, sts: sts('enforce', ['mx.other.test']) }), hop())).failure, 'sts-mx-mismatch');
  const bogus = skip(planHop(domain({ requireTls: true }), hop(DANE.failed)));
  assert.deepEqual([bogus.failure, bogus.permanent], ['dnssec-invalid', false]);
});

test('DANE evidence: failed lookups defer, unusable records mean unauthenticated but mandatory TLS', () => {
  const failed = skip(planHop(domain({ static: STATIC_NONE }), hop(DANE.failed)));
  assert.deepEqual([failed.failure, failed.permanent], ['dnssec-invalid', false]);
  const unusable = connect(planHop(domain({ sts: sts('enforce') }), hop(DANE.unusable)));
  assert.equal(unusable.level, 'encrypt');
  assert.equal(unusable.knownFailure?.failure, 'tlsa-invalid');
  assert.deepEqual(unusable.report.strings, ['1 1 1 ' + '09'.repeat(32)]);
});

test('dane-only: a host without usable TLSA records is not used (dane-required)', () => {
  const s: PolicyDecision = { level: 'dane-only', source: 'static:dane-only', match: 'dest.test' };
  assert.equal(skip(planHop(domain({ static: s }), hop())).failure, 'dane-required');
  assert.equal(connect(planHop(domain({ static: s }), hop(DANE.usable))).level, 'dane');
});

test('MTA-STS: enforce skips MX hosts outside the patterns; testing and fetch failures deliver as usual', () => {
  const mismatch = skip(planHop(domain({ sts: sts('enforce', ['mx.other.test']) }), hop()));
  assert.deepEqual([mismatch.failure, mismatch.permanent], ['sts-mx-mismatch', false]);
  // Wildcards match exactly one label (RFC 8461 §4.1).
  assert.equal(skip(planHop(domain({ sts: sts('enforce', ['*.test']) }), hop())).failure, 'sts-mx-mismatch');

  const testing = connect(planHop(domain({ sts: sts('testing', ['mx.other.test']), static: STATIC_NONE }), hop()));
  assert.deepEqual([testing.level, testing.source], ['none', 'static:none']);
  assert.deepEqual(testing.stsTesting, { mxMatches: false });

  const failed = connect(planHop(domain({ sts: STS_FAILED }), hop()));
  assert.deepEqual([failed.level, failed.source, failed.report.type], ['may', 'default:may', 'sts']);
  assert.equal(failed.knownFailure?.failure, 'sts-policy-fetch-error');

  const none = connect(planHop(domain({ sts: sts('none') }), hop()));
  assert.equal(none.report.type, 'no-policy-found');

  // A cached policy kept after a failed refresh still rules (RFC 8461 §5.1), and the failure is reported.
  const cached = sts('enforce');
  if (cached.kind === 'policy') cached.refreshFailure = { failure: 'sts-webpki-invalid', detail: 'expired certificate' };
  const kept = connect(planHop(domain({ sts: cached }), hop()));
  assert.deepEqual([kept.level, kept.source, kept.knownFailure?.failure], ['verify', 'mta-sts:enforce', 'sts-webpki-invalid']);
});

test('TLS-Required: No sets policies aside only when the operator allows it', () => {
  const e = { sts: sts('enforce', ['mx.other.test']), static: STATIC_VERIFY, tlsRequiredNo: true };
  assert.equal(skip(planHop(domain(e), hop())).failure, 'sts-mx-mismatch');
  const allowed = connect(planHop(domain({ ...e, allowTlsRequiredNo: true }), hop(DANE.usable)));
  assert.deepEqual([allowed.level, allowed.source, allowed.tlsRequiredNo], ['may', 'tls-required-no', true]);
  // It is still reported under the domain's policy.
  assert.equal(allowed.report.type, 'tlsa');
});

test('a session is judged for the report against the policy it was counted under', () => {
  const plain = connect(planHop(domain(), hop()));
  assert.deepEqual(judgeForReport(plain, { tls: true, verified: false }), { success: true });
  assert.equal((judgeForReport(plain, { tls: false, downgrade: { reason: 'starttls-not-supported', detail: 'x' } }) as { failure: string }).failure, 'starttls-not-supported');

  const testing = connect(planHop(domain({ sts: sts('testing') }), hop()));
  assert.equal((judgeForReport(testing, { tls: true, verified: false, verificationFailure: 'certificate-expired' }) as { failure: string }).failure, 'certificate-expired');
  assert.deepEqual(judgeForReport(testing, { tls: true, verified: true }), { success: true });

  const dane = connect(planHop(domain(), hop(DANE.usable)));
  assert.deepEqual(judgeForReport(dane, { tls: true, dane: { matched: true } }), { success: true });
  assert.equal((judgeForReport(dane, undefined, { failure: 'validation-failure', detail: 'no match' }) as { failure: string }).failure, 'validation-failure');

  const unusable = connect(planHop(domain(), hop(DANE.unusable)));
  assert.equal((judgeForReport(unusable, { tls: true }) as { failure: string }).failure, 'tlsa-invalid');
});
