import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openTempData } from '../../test/harness/temp-data.ts';
import { SEALED_COLUMNS } from './sealed-columns.ts';
import { TlsPoliciesTable } from './tls-policies-table.ts';

test('set creates and replaces, keeping who created the key; get, list and remove see the key it was stored under', async () => {
  const data = await openTempData();
  try {
    const table = new TlsPoliciesTable(data.store.engine, data.store.sealer);
    const first = await table.set('bank.example', 'verify', 'cli:alice', 'ticket 42', 1_000);
    assert.equal(first.previous, null);
    assert.deepEqual(first.entry, {
      domain: 'bank.example',
      level: 'verify',
      note: 'ticket 42',
      createdAt: new Date(1_000).toISOString(),
      createdBy: 'cli:alice',
      updatedAt: new Date(1_000).toISOString(),
      updatedBy: 'cli:alice',
    });
    const second = await table.set('bank.example', 'dane-only', 'key:abc', null, 2_000);
    assert.equal(second.previous?.level, 'verify');
    assert.equal(second.entry.level, 'dane-only');
    assert.equal(second.entry.note, null, 'a set without a note replaces the old one');
    assert.equal(second.entry.createdBy, 'cli:alice');
    assert.equal(second.entry.updatedBy, 'key:abc');
    assert.equal(second.entry.updatedAt, new Date(2_000).toISOString());

    await table.set('.bank.example', 'encrypt', 'cli:alice');
    assert.deepEqual((await table.list()).map((e) => [e.domain, e.level]), [
      ['.bank.example', 'encrypt'],
      ['bank.example', 'dane-only'],
    ]);
    assert.deepEqual(await table.levels(), new Map([['.bank.example', 'encrypt'], ['bank.example', 'dane-only']]));
    assert.equal((await table.get('bank.example'))?.level, 'dane-only');

    assert.equal((await table.remove('bank.example'))?.level, 'dane-only');
    assert.equal(await table.remove('bank.example'), null);
    assert.equal(await table.get('bank.example'), null);
    assert.deepEqual([...(await table.levels()).keys()], ['.bank.example']);
  } finally {
    await data.close();
  }
});

test('the note is sealed at rest', async () => {
  const marker = 'NOTE-MARKER-2b7e4f-call-Zelda-at-the-bank';
  const data = await openTempData();
  try {
    const table = new TlsPoliciesTable(data.store.engine, data.store.sealer);
    for (let i = 0; i < 3; i++) await table.set(`d${i}.example`, 'verify', 'cli:t', marker);
    assert.equal((await table.get('d0.example'))?.note, marker);
    for (const name of readdirSync(data.dataDir)) {
      const bytes = readFileSync(join(data.dataDir, name));
      assert.ok(!bytes.includes(Buffer.from(marker, 'utf8')), `${name} holds the note in clear`);
      assert.ok(!bytes.includes(Buffer.from(marker, 'utf16le')), `${name} holds the note in clear (UTF-16)`);
    }
  } finally {
    await data.close();
  }
});

test('key rotation covers the note column', () => {
  // Rotation re-seals and counts only the columns SEALED_COLUMNS names; a missing entry would
  // let `lacre sealing rotate-key` delete the key the notes still need.
  assert.ok(
    (SEALED_COLUMNS as readonly { table: string; key: string; column: string }[]).some(
      (c) => c.table === 'tls_policies' && c.key === 'domain' && c.column === 'note_sealed',
    ),
    'SEALED_COLUMNS in src/store/sealed-columns.ts lacks { table: "tls_policies", key: "domain", column: "note_sealed" }',
  );
});
