// `lacre policy …` as operators run it: real processes, a real data dir. The processes run
// test/fixtures/policy-cli.ts, the CLI with the policy commands registered as main.ts registers
// a command group.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import { StaticPolicies } from '../policy-lookup/static-policies.ts';

const bin = fileURLToPath(new URL('../../test/fixtures/policy-cli.ts', import.meta.url));

function lacre(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [bin, ...args], {
    env: { ...process.env, LACRE_CONFIG: '', LACRE_TLS_POLICIES: '', USER: 'tester', SUDO_USER: '', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('policy set, list and remove edit the table, show configured entries beside it, and audit every change', async () => {
  const dataDir = tempDir();
  const env = { LACRE_DATA_DIR: dataDir, LACRE_TLS_POLICIES: 'bank.example=verify,.partner.example=encrypt', LACRE_TLS_DEFAULT_POLICY: 'may' };

  const set = lacre(['policy', 'set', 'Bank.Example', 'dane-only', '--note', 'TLSA published', '--json'], env);
  assert.equal(set.code, 0, set.stderr);
  const outcome = JSON.parse(set.stdout);
  assert.equal(outcome.entry.domain, 'bank.example');
  assert.equal(outcome.entry.level, 'dane-only');
  assert.equal(outcome.entry.note, 'TLSA published');
  assert.equal(outcome.entry.updatedBy, 'cli:tester');
  assert.equal(outcome.previous, null);
  assert.equal(outcome.overrides, 'verify');

  const text = lacre(['policy', 'set', 'bücher.example', 'encrypt'], env);
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout, 'xn--bcher-kva.example: encrypt (new table entry)\n');
  const again = lacre(['policy', 'set', 'bank.example', 'verify'], env);
  assert.equal(again.stdout, 'bank.example: verify (was dane-only; replaces LACRE_TLS_POLICIES bank.example=verify)\n');

  const listed = lacre(['policy', 'list', '--json'], env);
  assert.equal(listed.code, 0, listed.stderr);
  const list = JSON.parse(listed.stdout);
  assert.equal(list.defaultLevel, 'may');
  assert.deepEqual(
    list.policies.map((p: { domain: string; level: string; origin: string; overrides?: string }) => [p.domain, p.level, p.origin, p.overrides ?? null]),
    [
      ['bank.example', 'verify', 'table', 'verify'],
      ['.partner.example', 'encrypt', 'config', null],
      ['xn--bcher-kva.example', 'encrypt', 'table', null],
    ],
  );
  const listText = lacre(['policy', 'list'], env).stdout.split('\n');
  assert.equal(listText[0], 'default: may (LACRE_TLS_DEFAULT_POLICY)');
  assert.match(listText[1], /^bank\.example {2}verify {2}table {2}updated \S+ by cli:tester {2}overrides config verify$/);
  assert.equal(listText[2], '.partner.example  encrypt  config');

  const removed = lacre(['policy', 'remove', 'BANK.example.', '--json'], env);
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual(JSON.parse(removed.stdout), { domain: 'bank.example', removed: true, previous: 'verify' });
  assert.equal(lacre(['policy', 'remove', 'xn--bcher-kva.example'], env).stdout, 'removed xn--bcher-kva.example (was encrypt)\n');
  assert.deepEqual(
    JSON.parse(lacre(['policy', 'list', '--json'], env).stdout).policies.map((p: { domain: string; origin: string }) => [p.domain, p.origin]),
    [
      ['bank.example', 'config'],
      ['.partner.example', 'config'],
    ],
  );

  const data = await openTempData({ dataDir });
  try {
    const audit = await data.store.audit.list({ subject: 'bank.example' });
    assert.deepEqual(
      audit.map((a) => [a.actor, a.action, a.detail]),
      [
        ['cli:tester', 'tls-policy.set', { level: 'dane-only', previous: null, overrides: 'verify', note: 'TLSA published' }],
        ['cli:tester', 'tls-policy.set', { level: 'verify', previous: 'dane-only', overrides: 'verify' }],
        ['cli:tester', 'tls-policy.remove', { previous: 'verify' }],
      ],
    );
    assert.deepEqual((await data.store.audit.list({ subject: 'xn--bcher-kva.example' })).map((a) => a.action), ['tls-policy.set', 'tls-policy.remove']);
  } finally {
    await data.close();
  }
});

test('bad levels and domains exit 2 naming the problem, and change nothing', async () => {
  const dataDir = tempDir();
  const env = { LACRE_DATA_DIR: dataDir, LACRE_TLS_POLICIES: 'legacy.example=none' };
  const cases: [args: string[], message: RegExp][] = [
    [['policy', 'set', 'example.com', 'strict'], /^lacre: unknown TLS level "strict" \(allowed levels: none, may, encrypt, verify, dane-only\)\n$/],
    [['policy', 'set', 'example.com', 'dane', '--json'], /unknown TLS level "dane" \(allowed levels: none, may, encrypt, verify, dane-only\)/],
    [['policy', 'set', 'exa mple.com', 'verify'], /^lacre: "exa mple\.com" is not a domain name \(use example\.com, or \.example\.com for its subdomains\)\n$/],
    [['policy', 'set', '*.example.com', 'verify'], /"\*\.example\.com" is not a domain name/],
    [['policy', 'set', 'example.com', 'verify', '--note', 'a\nb'], /the note may not contain control characters/],
    [['policy', 'remove', 'no..dots'], /"no\.\.dots" is not a domain name/],
    [['policy', 'remove', 'example.com', '--json'], /^lacre: no TLS policy for example\.com in the policy table\n$/],
    [['policy', 'remove', 'Legacy.Example'], /legacy\.example=none is set in LACRE_TLS_POLICIES \(tls\.policies\), not in the policy table/],
  ];
  for (const [args, message] of cases) {
    const result = lacre(args, env);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.equal(result.stdout, '', args.join(' '));
    assert.match(result.stderr, message, args.join(' '));
  }
  const data = await openTempData({ dataDir });
  try {
    assert.deepEqual(await new TlsPoliciesTable(data.store.engine, data.store.sealer).list(), []);
    assert.deepEqual(await data.store.audit.list(), []);
  } finally {
    await data.close();
  }
});

test('a running process sees a policy set by the CLI once its snapshot refreshes', async () => {
  const data = await openTempData();
  let clock = 0;
  const policies = new StaticPolicies({
    table: new TlsPoliciesTable(data.store.engine, data.store.sealer),
    configured: new Map(),
    defaultLevel: 'may',
    refreshMs: 10_000,
    now: () => clock,
  });
  try {
    assert.equal((await policies.decide('mx.bank.example')).origin, 'default');
    const set = lacre(['policy', 'set', '.bank.example', 'verify'], { LACRE_DATA_DIR: data.dataDir });
    assert.equal(set.code, 0, set.stderr);
    clock += 10_000;
    assert.deepEqual(await policies.decide('mx.bank.example'), { level: 'verify', source: 'static:verify', match: '.bank.example', origin: 'table' });
  } finally {
    await data.close();
  }
});

test('every policy command answers --help', () => {
  for (const args of [['policy'], ['policy', 'set'], ['policy', 'remove'], ['policy', 'list']]) {
    const result = lacre([...args, '--help'], {});
    assert.equal(result.code, 0, `${args.join(' ')} --help: ${result.stderr}`);
    assert.match(result.stdout, /Usage: lacre policy/);
  }
  assert.match(lacre(['policy', 'set', '--help'], {}).stdout, /none, may, encrypt, verify, dane-only/);
});
