// Proves that personal data and content never reach the database files in plaintext: the raw
// bytes of lacre.db, its WAL and shared-memory file are scanned for an address and a body marker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';

const ADDRESS = 'zelda.plaintext-probe@example-probe.test';
const SENDER = 'sender.plaintext-probe@example-probe.test';
const MARKER = 'BODY-MARKER-7f3a9c1e-do-not-store-in-clear';

/** Every occurrence of any needle in any file of the dir, in UTF-8 and UTF-16LE (SQLite's other text encoding). */
function scanDir(dir: string, needles: string[]): string[] {
  const hits: string[] = [];
  for (const name of readdirSync(dir)) {
    const bytes = readFileSync(join(dir, name));
    for (const needle of needles) {
      for (const encoding of ['utf8', 'utf16le'] as const) {
        if (bytes.includes(Buffer.from(needle, encoding))) hits.push(`${name}: ${needle} (${encoding})`);
        if (bytes.includes(Buffer.from(needle.toLowerCase(), encoding))) hits.push(`${name}: ${needle} lower-case (${encoding})`);
      }
    }
  }
  return hits;
}

test('the scanner finds plaintext written to a WAL (control: the scan can fail)', () => {
  const dir = tempDir();
  const db = new DatabaseSync(join(dir, 'control.db'));
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('CREATE TABLE t (v TEXT)');
  db.prepare('INSERT INTO t VALUES (?)').run(`${ADDRESS} ${MARKER}`);
  assert.ok(readdirSync(dir).includes('control.db-wal'));
  const hits = scanDir(dir, [ADDRESS, MARKER]);
  db.close();
  assert.ok(hits.some((h) => h.startsWith('control.db-wal')), `expected hits in the WAL, got ${hits.join('; ')}`);
});

test('addresses and message bodies never appear in the database files, WAL included', async () => {
  const data = await openTempData();
  try {
    for (let i = 0; i < 5; i++) {
      const accepted = await data.queue.enqueue({
        sender: SENDER,
        recipients: [ADDRESS, `other${i}@example-probe.test`],
        content: Buffer.from(`From: <${SENDER}>\r\nTo: <${ADDRESS}>\r\nSubject: probe\r\n\r\n${MARKER}\r\n`),
        source: 'api',
        metadata: { customId: `for ${ADDRESS}` },
      });
      const [first] = await data.store.claimDue({ owner: 'w', now: Date.now(), leaseMs: 60_000, limit: 10 });
      await data.store.completeAttempt({
        recipientId: first.recipientId,
        attemptId: first.attemptId,
        outcome: 'bounced',
        state: 'bounced',
        nextAttemptAt: Date.now(),
        reason: `550 5.1.1 <${ADDRESS}>: user unknown`,
        replyCode: 550,
        enhancedCode: '5.1.1',
        detail: { reply: { code: 550, enhanced: '5.1.1', text: `<${ADDRESS}>: user unknown` }, error: MARKER },
        endedAt: Date.now(),
      });
      assert.ok(accepted.messageId);
    }
    const files = readdirSync(data.dataDir);
    assert.ok(files.includes('lacre.db-wal'), `expected a WAL file among ${files.join(', ')}`);
    assert.deepEqual(scanDir(data.dataDir, [ADDRESS, SENDER, MARKER]), []);
    // The data is still all there for whoever holds the key.
    const view = await data.store.getMessage((await data.store.engine.get<{ id: string }>('SELECT id FROM messages'))!.id);
    assert.equal(view?.recipients[0].address, ADDRESS);
    assert.match(view?.recipients[0].reason ?? '', /user unknown/);
  } finally {
    await data.close();
  }
});
