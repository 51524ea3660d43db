// API keys against a real store: secrets exist only as scrypt hashes, authentication refuses
// unknown, disabled and wrong credentials (also when another process disabled the key), the
// verification cache is bounded and expires, and every change is audited.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openTempData } from '../../test/harness/temp-data.ts';
import { ApiKeys, KeyNameError } from './api-keys.ts';
import { ScopeError, parseScopes } from './scopes.ts';
import { SCRYPT_PARAMS, hashSecret, verifySecret } from './secret-hash.ts';

function filesContaining(dir: string, needle: string): string[] {
  return readdirSync(dir).filter((name) => {
    const bytes = readFileSync(join(dir, name));
    return bytes.includes(Buffer.from(needle, 'utf8')) || bytes.includes(Buffer.from(needle, 'utf16le'));
  });
}

test('the secret key is stored only as a scrypt hash: not in the row, not in the database files', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    const created = await keys.create({ name: 'billing app', scopes: ['send'], actor: 'test' });
    assert.match(created.apiKey, /^[0-9a-f]{32}$/);
    assert.match(created.secretKey, /^[0-9a-f]{32}$/);
    const row = await data.store.engine.get<Record<string, unknown>>('SELECT * FROM api_keys WHERE id = ?', [created.apiKey]);
    assert.ok(row);
    assert.match(String(row.secret_hash), /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    for (const value of Object.values(row)) assert.ok(!String(value).includes(created.secretKey), `secret found in the row: ${value}`);
    // Control: the scan finds what is stored in the clear (the API key), so its silence on the secret means something.
    assert.ok(filesContaining(data.dataDir, created.apiKey).length > 0, 'the scan should find the API key');
    assert.deepEqual(filesContaining(data.dataDir, created.secretKey), []);
    assert.equal((await keys.list()).some((k) => JSON.stringify(k).includes(created.secretKey) || JSON.stringify(k).includes('scrypt$')), false);
  } finally {
    await data.close();
  }
});

test('authenticate accepts the right secret and refuses a wrong secret, an unknown key and malformed input', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    const created = await keys.create({ name: 'app', scopes: ['read', 'send'], actor: 'test' });
    assert.deepEqual(await keys.authenticate(created.apiKey, created.secretKey), { id: created.apiKey, name: 'app', scopes: ['send', 'read'] });
    const wrong = created.secretKey.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    assert.equal(await keys.authenticate(created.apiKey, wrong), null);
    const before = keys.stats.hashVerifications;
    assert.equal(await keys.authenticate('0'.repeat(32), created.secretKey), null);
    assert.equal(keys.stats.hashVerifications, before + 1, 'an unknown key still costs a scrypt');
    assert.equal(await keys.authenticate(created.apiKey.toUpperCase(), created.secretKey), null);
    assert.equal(await keys.authenticate(created.apiKey, ''), null);
    assert.equal(await keys.authenticate('', ''), null);
    assert.equal(await keys.authenticate(created.apiKey, `${created.secretKey}0`), null);
  } finally {
    await data.close();
  }
});

test('a key disabled by another process stops authenticating at once, despite the cache; enabling restores it', async () => {
  const data = await openTempData();
  const other = await openTempData({ dataDir: data.dataDir });
  try {
    const server = new ApiKeys(data.store);
    const cli = new ApiKeys(other.store);
    const created = await cli.create({ name: 'app', scopes: ['send'], actor: 'cli:test' });
    assert.ok(await server.authenticate(created.apiKey, created.secretKey));
    assert.ok(await server.authenticate(created.apiKey, created.secretKey));
    assert.equal(server.stats.cacheHits, 1, 'the second authentication is served from the cache');
    const disabled = await cli.disable(created.apiKey, 'cli:test');
    assert.ok(disabled?.disabledAt);
    assert.equal(await server.authenticate(created.apiKey, created.secretKey), null);
    assert.ok(await cli.enable(created.apiKey, 'cli:test'));
    assert.ok(await server.authenticate(created.apiKey, created.secretKey));
    assert.equal(await cli.delete(created.apiKey, 'cli:test'), true);
    assert.equal(await server.authenticate(created.apiKey, created.secretKey), null);
    assert.equal(await cli.delete(created.apiKey, 'cli:test'), false);
    assert.equal(await cli.disable(created.apiKey, 'cli:test'), null);
    assert.equal(await cli.enable(created.apiKey, 'cli:test'), null);
  } finally {
    await other.close();
    await data.close();
  }
});

test('a key disabled through the same instance is refused, and its cached verification is dropped', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    const created = await keys.create({ name: 'app', scopes: ['send'], actor: 'test' });
    assert.ok(await keys.authenticate(created.apiKey, created.secretKey));
    await keys.disable(created.apiKey, 'test');
    assert.equal(await keys.authenticate(created.apiKey, created.secretKey), null);
    await keys.enable(created.apiKey, 'test');
    const hashes = keys.stats.hashVerifications;
    assert.ok(await keys.authenticate(created.apiKey, created.secretKey));
    assert.equal(keys.stats.hashVerifications, hashes + 1, 'verified again with scrypt after the cache entry was dropped');
  } finally {
    await data.close();
  }
});

test('cached verifications expire, are bounded in number, and never accept a different secret', async () => {
  const data = await openTempData();
  try {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const keys = new ApiKeys(data.store, { now: () => now, cacheTtlMs: 60_000, cacheMaxEntries: 2 });
    const [a, b, c] = [
      await keys.create({ name: 'a', scopes: ['send'], actor: 'test' }),
      await keys.create({ name: 'b', scopes: ['send'], actor: 'test' }),
      await keys.create({ name: 'c', scopes: ['send'], actor: 'test' }),
    ];
    assert.ok(await keys.authenticate(a.apiKey, a.secretKey));
    assert.ok(await keys.authenticate(a.apiKey, a.secretKey));
    assert.deepEqual(keys.stats, { hashVerifications: 1, cacheHits: 1 });
    assert.equal(await keys.authenticate(a.apiKey, b.secretKey), null, 'a cached key with the wrong secret');
    assert.deepEqual(keys.stats, { hashVerifications: 2, cacheHits: 1 });
    now += 60_001;
    assert.ok(await keys.authenticate(a.apiKey, a.secretKey));
    assert.deepEqual(keys.stats, { hashVerifications: 3, cacheHits: 1 }, 'expired entries are verified again');
    assert.ok(await keys.authenticate(b.apiKey, b.secretKey));
    assert.ok(await keys.authenticate(c.apiKey, c.secretKey));
    assert.deepEqual(keys.stats, { hashVerifications: 5, cacheHits: 1 });
    assert.ok(await keys.authenticate(a.apiKey, a.secretKey));
    assert.deepEqual(keys.stats, { hashVerifications: 6, cacheHits: 1 }, 'the oldest entry was evicted to keep two');
    assert.ok(await keys.authenticate(c.apiKey, c.secretKey));
    assert.deepEqual(keys.stats, { hashVerifications: 6, cacheHits: 2 });
  } finally {
    await data.close();
  }
});

test('concurrent logins with one key share one scrypt; a wrong secret among them is refused and not remembered', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    const key = await keys.create({ name: 'smtp relay', scopes: ['send'], actor: 'test' });
    const wrong = 'f'.repeat(32);
    const attempts = [...Array.from({ length: 20 }, () => key.secretKey), wrong, wrong, key.secretKey, wrong];
    const results = await Promise.all(attempts.map((secret) => keys.authenticate(key.apiKey, secret)));
    assert.deepEqual(
      results.map((r) => r?.id ?? null),
      attempts.map((secret) => (secret === key.secretKey ? key.apiKey : null)),
    );
    assert.equal(keys.stats.hashVerifications, 2, 'one scrypt for the right secret, one for the wrong one');

    // Nothing of the refusal is kept: the wrong secret costs a scrypt again, the right one is cached.
    assert.equal(await keys.authenticate(key.apiKey, wrong), null);
    assert.equal(keys.stats.hashVerifications, 3);
    assert.ok(await keys.authenticate(key.apiKey, key.secretKey));
    assert.equal(keys.stats.hashVerifications, 3);

    // Unknown keys share theirs too, per key and secret.
    const unknown = await Promise.all(Array.from({ length: 5 }, () => keys.authenticate('0'.repeat(32), wrong)));
    assert.deepEqual(unknown, [null, null, null, null, null]);
    assert.equal(keys.stats.hashVerifications, 4);
  } finally {
    await data.close();
  }
});

test('last use is recorded at most once a minute per key', async () => {
  const data = await openTempData();
  try {
    const start = Date.parse('2030-01-01T00:00:00Z');
    let now = start;
    const keys = new ApiKeys(data.store, { now: () => now });
    const created = await keys.create({ name: 'app', scopes: ['send'], actor: 'test' });
    assert.equal((await keys.get(created.apiKey))?.lastUsedAt, null);
    await keys.authenticate(created.apiKey, created.secretKey);
    assert.equal((await keys.get(created.apiKey))?.lastUsedAt, new Date(start).toISOString());
    now += 30_000;
    await keys.authenticate(created.apiKey, created.secretKey);
    assert.equal((await keys.get(created.apiKey))?.lastUsedAt, new Date(start).toISOString());
    now += 30_000;
    await keys.authenticate(created.apiKey, created.secretKey);
    assert.equal((await keys.get(created.apiKey))?.lastUsedAt, new Date(now).toISOString());
    assert.equal(await data.store.apiKeys.touch(created.apiKey, now + 1), false, 'the table itself refuses a write within the minute');
  } finally {
    await data.close();
  }
});

test('every create, disable, enable and delete is audited with name and scopes, never the secret', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    const created = await keys.create({ name: 'ops', scopes: ['admin', 'read'], actor: 'cli:alice' });
    await keys.disable(created.apiKey, 'cli:alice');
    await keys.disable(created.apiKey, 'cli:alice'); // already disabled: no change, no entry
    await keys.enable(created.apiKey, 'cli:bob');
    await keys.delete(created.apiKey, 'key:someone');
    const entries = await data.store.audit.list({ subject: created.apiKey });
    assert.deepEqual(
      entries.map((e) => [e.actor, e.action, e.subject, e.detail]),
      [
        ['cli:alice', 'key.create', created.apiKey, { name: 'ops', scopes: ['read', 'admin'] }],
        ['cli:alice', 'key.disable', created.apiKey, { name: 'ops', scopes: ['read', 'admin'] }],
        ['cli:bob', 'key.enable', created.apiKey, { name: 'ops', scopes: ['read', 'admin'] }],
        ['key:someone', 'key.delete', created.apiKey, { name: 'ops', scopes: ['read', 'admin'] }],
      ],
    );
    assert.ok(!JSON.stringify(entries).includes(created.secretKey));
  } finally {
    await data.close();
  }
});

test('create refuses an empty name and an empty or unknown scope list', async () => {
  const data = await openTempData();
  try {
    const keys = new ApiKeys(data.store);
    await assert.rejects(keys.create({ name: '  ', scopes: ['send'], actor: 'test' }), KeyNameError);
    await assert.rejects(keys.create({ name: 'a\nb', scopes: ['send'], actor: 'test' }), KeyNameError);
    await assert.rejects(keys.create({ name: 'x', scopes: [], actor: 'test' }), ScopeError);
    // @ts-expect-error: a scope from untyped input
    await assert.rejects(keys.create({ name: 'x', scopes: ['root'], actor: 'test' }), /unknown scope "root"/);
    assert.deepEqual(await keys.list(), []);
  } finally {
    await data.close();
  }
});

test('parseScopes returns canonical scopes and names the unknown one', () => {
  assert.deepEqual(parseScopes('send'), ['send']);
  assert.deepEqual(parseScopes(' admin , send,send '), ['send', 'admin']);
  assert.throws(() => parseScopes('send,delete'), (err: Error) => err instanceof ScopeError && /unknown scope "delete"/.test(err.message));
  assert.throws(() => parseScopes('Send'), /unknown scope "Send": expected one of send, read, admin/);
  assert.throws(() => parseScopes(' , '), /no scopes given/);
});

test('verifySecret accepts the hashed secret and rejects other secrets and tampered or malformed hashes', async () => {
  const secret = 'a'.repeat(32);
  const stored = await hashSecret(secret);
  const [, n, r, p, salt, hash] = stored.split('$');
  assert.deepEqual([Number(n), Number(r), Number(p)], [SCRYPT_PARAMS.N, SCRYPT_PARAMS.r, SCRYPT_PARAMS.p]);
  assert.equal(Buffer.from(salt, 'base64').length, 16);
  assert.equal(await verifySecret(secret, stored), true);
  assert.equal(await verifySecret('b'.repeat(32), stored), false);
  const flip = (b64: string) => {
    const bytes = Buffer.from(b64, 'base64');
    bytes[0] ^= 1;
    return bytes.toString('base64');
  };
  const tampered = [
    ['scrypt', n, r, p, salt, flip(hash)].join('$'),
    ['scrypt', n, r, p, flip(salt), hash].join('$'),
    ['scrypt', 16384, r, p, salt, hash].join('$'),
    ['scrypt', n, 4, p, salt, hash].join('$'),
    ['scrypt', n, r, 2, salt, hash].join('$'),
    ['bcrypt', n, r, p, salt, hash].join('$'),
    ['scrypt', 2 ** 30, r, p, salt, hash].join('$'), // would need 1 TiB: refused, not attempted
    ['scrypt', 3000, r, p, salt, hash].join('$'), // not a power of two
    ['scrypt', n, r, p, salt, hash.slice(0, 8)].join('$'),
    ['scrypt', n, r, p, salt, '!!!!'].join('$'),
    ['scrypt', '-1', r, p, salt, hash].join('$'),
    ['scrypt', n, r, p, salt].join('$'),
    `${stored}$extra`,
    stored.slice(0, -3),
    '',
    secret,
  ];
  for (const value of tampered) assert.equal(await verifySecret(secret, value), false, `accepted ${value}`);
  // @ts-expect-error: not a string at all
  assert.equal(await verifySecret(secret, null), false);
});
