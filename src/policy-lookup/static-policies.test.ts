import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import { parseTlsPolicies } from '../tls-policy/levels.ts';
import { StaticPolicies } from './static-policies.ts';

async function setup(config: string, options: { refreshMs?: number } = {}) {
  const data = await openTempData();
  const table = new TlsPoliciesTable(data.store.engine, data.store.sealer);
  let clock = 1_000_000;
  const policies = new StaticPolicies({
    table,
    configured: parseTlsPolicies(config),
    defaultLevel: 'may',
    refreshMs: options.refreshMs ?? 60_000,
    now: () => clock,
  });
  return { data, table, policies, advance: (ms: number) => (clock += ms) };
}

test('a table entry replaces the configured entry of the same key; removing it restores the configured one', async () => {
  const { data, table, policies } = await setup('bank.example=verify,.partner.example=encrypt');
  try {
    assert.deepEqual(await policies.decide('bank.example'), { level: 'verify', source: 'static:verify', match: 'bank.example', origin: 'config' });
    await table.set('bank.example', 'dane-only', 'cli:t');
    await table.set('.partner.example', 'none', 'cli:t');
    policies.invalidate();
    assert.deepEqual(await policies.decide('Bank.Example.'), {
      level: 'dane-only',
      source: 'static:dane-only',
      match: 'bank.example',
      origin: 'table',
    });
    assert.deepEqual(await policies.decide('mx.partner.example'), { level: 'none', source: 'static:none', match: '.partner.example', origin: 'table' });
    await table.remove('bank.example');
    policies.invalidate();
    assert.deepEqual(await policies.decide('bank.example'), { level: 'verify', source: 'static:verify', match: 'bank.example', origin: 'config' });
  } finally {
    await data.close();
  }
});

test('between different keys the exact domain beats the nearest parent, whichever place each is in', async () => {
  const { data, table, policies } = await setup('mail.corp.example=encrypt,.example=verify');
  try {
    await table.set('.corp.example', 'dane-only', 'cli:t');
    await table.set('shop.example', 'none', 'cli:t');
    // A configured exact key beats a table parent key.
    assert.deepEqual(await policies.decide('mail.corp.example'), { level: 'encrypt', source: 'static:encrypt', match: 'mail.corp.example', origin: 'config' });
    // The nearest parent wins: the table's .corp.example over the configured .example.
    assert.deepEqual(await policies.decide('a.b.corp.example'), { level: 'dane-only', source: 'static:dane-only', match: '.corp.example', origin: 'table' });
    assert.deepEqual(await policies.decide('other.example'), { level: 'verify', source: 'static:verify', match: '.example', origin: 'config' });
    // A parent key never covers its apex.
    assert.deepEqual(await policies.decide('corp.example'), { level: 'verify', source: 'static:verify', match: '.example', origin: 'config' });
    assert.deepEqual(await policies.decide('shop.example'), { level: 'none', source: 'static:none', match: 'shop.example', origin: 'table' });
    assert.deepEqual(await policies.decide('bücher.test'), { level: 'may', source: 'default:may', origin: 'default' });
    assert.deepEqual(await policies.decide('not a domain'), { level: 'may', source: 'default:may', origin: 'default' });
  } finally {
    await data.close();
  }
});

test('a change made through another Store instance is seen once the refresh period has passed, not before', async () => {
  const { data, policies, advance } = await setup('', { refreshMs: 60_000 });
  // Another process's view of the same data dir: what `lacre policy set` does beside a running server.
  const other = await openTempData({ dataDir: data.dataDir });
  try {
    assert.equal((await policies.decide('bank.example')).origin, 'default');
    await new TlsPoliciesTable(other.store.engine, other.store.sealer).set('bank.example', 'verify', 'cli:t');
    advance(59_999);
    assert.equal((await policies.decide('bank.example')).level, 'may', 'the snapshot is kept within the refresh period');
    advance(1);
    assert.deepEqual(await policies.decide('bank.example'), { level: 'verify', source: 'static:verify', match: 'bank.example', origin: 'table' });

    await new TlsPoliciesTable(other.store.engine, other.store.sealer).remove('bank.example');
    policies.invalidate();
    assert.equal((await policies.decide('bank.example')).origin, 'default', 'invalidate() reads again at once');
  } finally {
    await other.close();
    await data.close();
  }
});

test('list merges both places: table entries with what they override, configured entries no table entry replaces', async () => {
  const { data, table, policies } = await setup('bank.example=verify,.bank.example=encrypt,legacy.example=none');
  try {
    await table.set('bank.example', 'dane-only', 'cli:alice', 'DANE published 2024');
    await table.set('aaa.example', 'encrypt', 'key:k1');
    const listed = await policies.list();
    assert.deepEqual(
      listed.map(({ updatedAt: _u, ...rest }) => rest),
      [
        { domain: 'aaa.example', level: 'encrypt', origin: 'table', note: null, updatedBy: 'key:k1' },
        { domain: 'bank.example', level: 'dane-only', origin: 'table', overrides: 'verify', note: 'DANE published 2024', updatedBy: 'cli:alice' },
        { domain: '.bank.example', level: 'encrypt', origin: 'config' },
        { domain: 'legacy.example', level: 'none', origin: 'config' },
      ],
    );
    assert.ok(listed.filter((p) => p.origin === 'table').every((p) => typeof p.updatedAt === 'string'));
  } finally {
    await data.close();
  }
});

test('a table that cannot be read fails the decision instead of falling back to the default', async () => {
  const { data, policies } = await setup('bank.example=verify', { refreshMs: 0 });
  assert.equal((await policies.decide('bank.example')).level, 'verify');
  await data.close();
  await assert.rejects(policies.decide('bank.example'));
  await assert.rejects(policies.decide('elsewhere.example'));
});

test('a decision begun before an in-process change does not hide the change from later decisions', async () => {
  const { data, table, policies } = await setup('');
  try {
    const before = policies.decide('bank.example');
    await table.set('bank.example', 'verify', 'cli:t');
    policies.invalidate();
    const after = await policies.decide('bank.example');
    assert.equal((await before).origin, 'default');
    assert.equal(after.origin, 'table');
    assert.equal((await policies.decide('bank.example')).level, 'verify');
  } finally {
    await data.close();
  }
});
