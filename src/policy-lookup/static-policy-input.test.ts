import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { parseTlsPolicies } from '../tls-policy/levels.ts';
import { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import { StaticPolicies } from './static-policies.ts';
import { StaticPolicyError, removeStaticPolicy, setStaticPolicy } from './static-policy-changes.ts';
import { TlsPolicyInputError, policyKeyOf } from './static-policy-input.ts';

test('keys are normalised exactly as LACRE_TLS_POLICIES normalises them', () => {
  const cases: [raw: string, key: string][] = [
    ['Example.COM', 'example.com'],
    [' example.com. ', 'example.com'],
    ['.Example.com', '.example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['.BÜCHER.example.', '.xn--bcher-kva.example'],
  ];
  for (const [raw, key] of cases) {
    assert.equal(policyKeyOf(raw), key, raw);
    assert.deepEqual([...parseTlsPolicies(`${raw}=may`).keys()], [key], `${raw} in LACRE_TLS_POLICIES`);
  }
  for (const bad of ['', '.', '..example.com', 'exa mple.com', '*.example.com', '-x.example', 'a'.repeat(64) + '.example', 'user@example.com']) {
    assert.throws(() => policyKeyOf(bad), (err: TlsPolicyInputError) => err.field === 'domain' && err.message.includes(`"${bad}"`), bad);
    assert.throws(() => parseTlsPolicies(`${bad}=may`), `${bad} in LACRE_TLS_POLICIES`);
  }
});

test('bad levels, domains and notes are refused with the value and what is allowed named, and nothing is stored or audited', async () => {
  const data = await openTempData();
  try {
    const table = new TlsPoliciesTable(data.store.engine, data.store.sealer);
    const policies = new StaticPolicies({ table, configured: new Map(), defaultLevel: 'may' });
    const deps = { table, audit: data.store.audit, policies };
    const set = (domain: string, level: string, note?: string) => setStaticPolicy(deps, { domain, level, note, actor: 'cli:t' });
    await assert.rejects(set('example.com', 'strict'), (err: StaticPolicyError) => {
      assert.equal(err.kind, 'invalid');
      assert.match(err.message, /unknown TLS level "strict" \(allowed levels: none, may, encrypt, verify, dane-only\)/);
      return true;
    });
    // `dane` is what the engine runs at when TLSA records allow; an operator asks for `dane-only`.
    await assert.rejects(set('example.com', 'dane'), /unknown TLS level "dane"/);
    await assert.rejects(set('not a domain', 'may'), /"not a domain" is not a domain name/);
    await assert.rejects(set('example.com', 'may', 'x'.repeat(501)), /at most 500/);
    await assert.rejects(set('example.com', 'may', 'line\nbreak'), /control characters/);
    await assert.rejects(set('example.com', 'may', 'esc \u001b[31m'), /control characters/);
    await assert.rejects(removeStaticPolicy(deps, { domain: 'bad domain', actor: 'cli:t' }), (err: StaticPolicyError) => err.kind === 'invalid' && /"bad domain" is not a domain name/.test(err.message));
    assert.deepEqual(await table.list(), []);
    assert.deepEqual(await data.store.audit.list(), []);
  } finally {
    await data.close();
  }
});
